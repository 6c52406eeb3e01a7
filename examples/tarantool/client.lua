#!/usr/bin/env tarantool
-- The demo's application and monitor, a small net.box client:
--
--   tarantool examples/tarantool/client.lua health URI master|replica
--       exit 0 if the instance is up and in its role (master: writable;
--       replica: read-only and following its master), else 1 (reason on stderr)
--   tarantool examples/tarantool/client.lua write RS_URIS FROM COUNT EVENTS_FROM
--       as user `app`: REPLACE accounts FROM..FROM+COUNT-1 and INSERT COUNT
--       events (EVENTS_FROM...), pipelined; one source transaction per row;
--       prints the time taken, then which instance each URI reached
--       ("landed on: rs1 a-rs1-master, rs2 a-rs2-master")
--   tarantool examples/tarantool/client.lua tick RS_URIS TICK NEXT_ACCOUNT NEXT_EVENT
--       as user `app`, the trickle of one second: 2 new accounts
--       (NEXT_ACCOUNT, +1), 10 events (NEXT_EVENT...), 10 balance UPDATEs,
--       1 UPSERT of account 0 (on rs2), 1 DELETE (account TICK);
--       prints the number of requests sent and the cluster(s) they reached
--       (e.g. "24 A")
--   tarantool examples/tarantool/client.lua whoami URI...
--       as user `app`: one line per URI, the instance it reached
--   tarantool examples/tarantool/client.lua stats URI...
--       as user `monitor`: one line per URI:
--       URI accounts_count accounts_sum accounts_crc events_count events_sum events_crc
--
-- RS_URIS: the masters of the replicasets, comma-separated, in order
-- (rs1,rs2). Rows are sharded by account id: account N lives in replicaset
-- ((N - 1) mod #RS_URIS) + 1, its events with it (account 0 on the last one).
-- The URIs may be HAProxy's frontends (one per replicaset): the app then
-- writes to whichever cluster HAProxy sends it to, and `demo_whoami` (the
-- instance's name, e.g. b-rs1-master) tells which one that is.
-- Passwords come from examples/secrets (or TCF_SECRETS_DIR).
local fio = require('fio')
local netbox = require('net.box')
local clock = require('clock')

local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
local secrets = fio.abspath(os.getenv('TCF_SECRETS_DIR') or fio.pathjoin(here, '..', 'secrets'))

local function die(fmt, ...)
    io.stderr:write(string.format('client.lua: ' .. fmt .. '\n', ...))
    os.exit(1)
end

local function secret(name)
    local path = fio.pathjoin(secrets, name)
    local f = io.open(path, 'r')
    if f == nil then die('cannot read %s', path) end
    local v = f:read('*a'):gsub('^%s+', ''):gsub('%s+$', '')
    f:close()
    return v
end

local function connect(uri, user)
    local c = netbox.connect(uri, {
        user = user,
        password = secret(user .. '.password'),
        connect_timeout = 2,
        wait_connected = true,
        reconnect_after = nil,
    })
    if not c:is_connected() then
        die('%s as %s: %s', uri, user, tostring(c.error))
    end
    return c
end

-- The instance a connection reached (its name, e.g. a-rs1-master).
local function whoami(c, uri)
    local ok, name = pcall(c.call, c, 'demo_whoami', {}, {timeout = 5})
    if not ok then die('%s: demo_whoami: %s', uri, tostring(name)) end
    return name
end

-- Connections as `app` to RS_URIS, and the names of the instances reached.
local function masters(list)
    local out, names = {}, {}
    for uri in (list or ''):gmatch('[^,]+') do
        local c = connect(uri, 'app')
        out[#out + 1] = c
        names[#names + 1] = whoami(c, uri)
    end
    if #out == 0 then die('no replicaset URIs') end
    return out, names
end

-- "rs1 a-rs1-master, rs2 a-rs2-master"
local function landed(names)
    local parts = {}
    for i, n in ipairs(names) do parts[#parts + 1] = string.format('rs%d %s', i, n) end
    return table.concat(parts, ', ')
end

-- The clusters reached ("A", or "A+B" if HAProxy split the replicasets),
-- from the instance names' prefix.
local function clusters(names)
    local seen, out = {}, {}
    for _, n in ipairs(names) do
        local c = (n:match('^([^-]+)-') or n):upper()
        if not seen[c] then
            seen[c] = true
            out[#out + 1] = c
        end
    end
    return table.concat(out, '+')
end

local function shard(conns, account_id)
    if account_id == 0 then return conns[#conns] end
    return conns[(account_id - 1) % #conns + 1]
end

-- Waits for every future (a result may be nil: an UPDATE or DELETE of a
-- missing key); the first error ends the client.
local function pipeline(futures)
    for _, f in ipairs(futures) do
        local _, err = f:wait_result(30)
        if err ~= nil then die('write failed: %s', tostring(err)) end
    end
end

local cmd = arg[1]

if cmd == 'health' then
    local uri, role = arg[2], arg[3]
    local ok, c = pcall(netbox.connect, uri, {
        user = 'monitor', password = secret('monitor.password'),
        connect_timeout = 1, wait_connected = true,
    })
    if not ok or not c:is_connected() then
        die('%s: not reachable: %s', uri, ok and tostring(c.error) or tostring(c))
    end
    local ok2, h = pcall(c.call, c, 'demo_health', {}, {timeout = 2})
    if not ok2 then die('%s: demo_health: %s', uri, tostring(h)) end
    if h.status ~= 'running' then die('%s: status %s', uri, tostring(h.status)) end
    if role == 'master' and h.ro then die('%s: read-only', uri) end
    if role == 'replica' and (not h.ro or h.upstream ~= 'follow') then
        die('%s: ro %s, upstream %s', uri, tostring(h.ro), tostring(h.upstream))
    end
    os.exit(0)

elseif cmd == 'write' then
    local conns, names = masters(arg[2])
    local from, count, ev = tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
    if not (from and count and ev) then die('usage: write RS_URIS FROM COUNT EVENTS_FROM') end
    local started = clock.monotonic()
    local futures = {}
    for i = 0, count - 1 do
        local id = from + i
        local c = shard(conns, id)
        local now = clock.time()
        futures[#futures + 1] = c.space.accounts:replace(
            {id, 1000, 'account-' .. id, now}, {is_async = true})
        futures[#futures + 1] = c.space.events:insert(
            {ev + i, id, 1000, now}, {is_async = true})
        if #futures >= 256 then -- below the server's net_msg_max (768)
            pipeline(futures)
            futures = {}
        end
    end
    pipeline(futures)
    print(string.format('%d rows in %.2f s', 2 * count, clock.monotonic() - started))
    print('landed on: ' .. landed(names))
    os.exit(0)

elseif cmd == 'tick' then
    local conns, names = masters(arg[2])
    local tick, next_account, next_event = tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5])
    if not (tick and next_account and next_event) then
        die('usage: tick RS_URIS TICK NEXT_ACCOUNT NEXT_EVENT')
    end
    math.randomseed(tick)
    local now = clock.time()
    local futures = {}
    local function add(f) futures[#futures + 1] = f end
    for id = next_account, next_account + 1 do
        add(shard(conns, id).space.accounts:insert({id, 0, 'account-' .. id, now}, {is_async = true}))
    end
    for i = 0, 9 do
        local id = math.random(1, next_account - 1)
        local amount = math.random(-50, 50)
        add(shard(conns, id).space.events:insert({next_event + i, id, amount, now}, {is_async = true}))
        add(shard(conns, id).space.accounts:update(id, {{'+', 2, amount}, {'=', 4, now}},
                                                   {is_async = true}))
    end
    add(shard(conns, 0).space.accounts:upsert({0, tick, 'bank', now},
                                              {{'+', 2, tick}, {'=', 4, now}}, {is_async = true}))
    add(shard(conns, tick).space.accounts:delete(tick, {is_async = true}))
    pipeline(futures)
    print(string.format('%d %s', #futures, clusters(names)))
    os.exit(0)

elseif cmd == 'whoami' then
    for i = 2, #arg do
        local c = connect(arg[i], 'app')
        print(string.format('%s %s', arg[i], whoami(c, arg[i])))
        c:close()
    end
    os.exit(0)

elseif cmd == 'stats' then
    for i = 2, #arg do
        local uri = arg[i]
        local c = connect(uri, 'monitor')
        local ok, s = pcall(c.call, c, 'demo_stats', {}, {timeout = 10})
        if not ok then die('%s: demo_stats: %s', uri, tostring(s)) end
        print(string.format('%s %d %d %d %d %d %d', uri,
            s.accounts.count, s.accounts.sum, s.accounts.crc,
            s.events.count, s.events.sum, s.events.crc))
        c:close()
    end
    os.exit(0)

else
    die('usage: client.lua health|write|tick|whoami|stats ... (see the header of this file)')
end
