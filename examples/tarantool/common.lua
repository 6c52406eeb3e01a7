-- Shared part of the example instances (examples/tarantool/master.lua and
-- replica.lua). Not run on its own: `dofile`d by both.
--
-- Settings, each from an argument or else the environment:
--
--   | what   | argument | environment   | default                     |
--   | ------ | -------- | ------------- | --------------------------- |
--   | port   | arg[1]   | TCF_PORT      | (required)                  |
--   | dir    | arg[2]   | TCF_DIR       | ./<name> (created if absent)|
--   | master | arg[3]   | TCF_MASTER    | (replica.lua only, required: HOST:PORT) |
--   | name   |          | TCF_NAME      | instance-<port> (process title) |
--   | secrets|          | TCF_SECRETS_DIR | examples/secrets next to this file |
--   | parent |          | TCF_PARENT_PID | none: if set, the instance exits when that process is gone |
--
-- Every instance listens on 127.0.0.1:<port>, keeps its data in <dir>, logs
-- to stderr (background = false: the caller redirects it) and defines the
-- Lua functions the demo's users call: demo_health() and demo_stats()
-- (monitor), demo_whoami() (app).

local fio = require('fio')
local log = require('log')

local M = {}

local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
M.here = here

local function setting(index, env, default)
    local v = arg[index]
    if v == nil or v == '' then v = os.getenv(env) end
    if v == nil or v == '' then v = default end
    return v
end

local function die(fmt, ...)
    io.stderr:write(string.format('tcf example instance: ' .. fmt .. '\n', ...))
    os.exit(2)
end
M.die = die

function M.settings(role)
    local s = {}
    s.port = tonumber(setting(1, 'TCF_PORT', nil))
    if s.port == nil then
        die('no port: give it as the first argument or in TCF_PORT')
    end
    s.name = os.getenv('TCF_NAME') or ('instance-' .. s.port)
    s.dir = fio.abspath(setting(2, 'TCF_DIR', s.name))
    if role == 'replica' then
        s.master = setting(3, 'TCF_MASTER', nil)
        if s.master == nil or not s.master:match('^[^:]+:%d+$') then
            die('no master: give HOST:PORT as the third argument or in TCF_MASTER')
        end
    end
    s.secrets = fio.abspath(os.getenv('TCF_SECRETS_DIR') or fio.pathjoin(here, '..', 'secrets'))
    if not fio.path.is_dir(s.dir) and not fio.mktree(s.dir) then
        die('cannot create %s', s.dir)
    end
    return s
end

-- Reads a secret file of examples/secrets (whitespace trimmed).
function M.secret(s, name)
    local path = fio.pathjoin(s.secrets, name)
    local f = io.open(path, 'r')
    if f == nil then die('cannot read %s', path) end
    local v = f:read('*a'):gsub('^%s+', ''):gsub('%s+$', '')
    f:close()
    if v == '' then die('%s is empty', path) end
    return v
end

-- box.cfg options common to every instance; `extra` is merged in.
function M.cfg(s, extra)
    local c = {
        listen = '127.0.0.1:' .. s.port,
        work_dir = s.dir,
        background = false,
        custom_proc_title = s.name,
        memtx_memory = 64 * 1024 * 1024,
        vinyl_memory = 32 * 1024 * 1024,
        vinyl_cache = 16 * 1024 * 1024,
        -- The gateway's `source_replication_timeout` must equal this.
        replication_timeout = 1,
        -- xlogs of this many checkpoints are kept: with checkpoint_interval,
        -- the longest outage of a gateway or destination that needs no resync.
        checkpoint_count = 2,
        checkpoint_interval = 3600,
    }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
end

-- Exits when the process that started this instance is gone (so a killed
-- demo leaves no server behind). Only with TCF_PARENT_PID.
function M.watch_parent()
    local parent = tonumber(os.getenv('TCF_PARENT_PID') or '')
    if parent == nil then return end
    local ffi = require('ffi')
    local fiber = require('fiber')
    pcall(ffi.cdef, 'int getppid(void);')
    fiber.create(function()
        fiber.self():name('parent-watchdog')
        while true do
            if ffi.C.getppid() ~= parent then
                log.warn('parent process %d is gone: exiting', parent)
                os.exit(1)
            end
            fiber.sleep(0.5)
        end
    end)
end

-- Functions the `monitor` and `app` users may call (granted in master.lua's
-- bootstrap; they exist in _func on every instance by replication, their
-- bodies are defined here on every instance).
function M.define_functions(s)
    local digest = require('digest')
    local msgpack = require('msgpack')

    -- The instance's name (TCF_NAME, e.g. a-rs1-master): tells the demo's
    -- writer which cluster its connection through HAProxy reached.
    rawset(_G, 'demo_whoami', function()
        return s.name
    end)

    -- {status, ro, vclock, upstream = 'follow'|...|nil}
    rawset(_G, 'demo_health', function()
        local upstream
        for _, r in pairs(box.info.replication) do
            if r.upstream ~= nil then upstream = r.upstream.status end
        end
        return {status = box.info.status, ro = box.info.ro,
                vclock = box.info.vclock, upstream = upstream}
    end)

    -- Per space: tuple count, sum of `balance` (accounts) or `amount`
    -- (events), and a CRC32 of every tuple in primary key order: two
    -- instances hold the same data iff these are equal.
    rawset(_G, 'demo_stats', function()
        local out = {}
        for _, name in ipairs({'accounts', 'events'}) do
            local space = box.space[name]
            local n, sum = 0, 0
            local crc = digest.crc32.new()
            for _, t in space:pairs({}, {iterator = 'ALL'}) do
                n = n + 1
                sum = sum + t[name == 'accounts' and 2 or 3]
                crc:update(msgpack.encode(t))
            end
            out[name] = {count = n, sum = sum, crc = crc:result()}
        end
        return out
    end)
end

return M
