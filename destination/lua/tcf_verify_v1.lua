-- tcf destination verification functions, version 1 (docs/verify.md).
-- Installed by tcf-destination on every connect, after tcf_v1.lua (whose
-- compare-and-set, mark and row application, `tcf_v1_lib`, they use).
--
-- A replicaset's walk lives in `_tcf_verify_memtx` and `_tcf_verify_vinyl`
-- (global; tcf's own, never shipped), keyed by (source cluster, source
-- replicaset, space, key):
--   ('', '')       the walk: its request and its next step (`data.seq`);
--   (space, '')    the space's counters;
--   (space, hex)   a mismatching key (hex of its MessagePack).
-- A chunk of a vinyl space that repairs rows writes its rows in the vinyl
-- space (2.6 refuses a transaction touching both engines); everything else
-- goes to the memtx one. Readers merge the two: the walk row with the higher
-- `seq`, counters summed. The rows' layout is tcf-api's
-- (api/lua/tcf_progress_v1.lua): read and written through it, by name.
local VERSION = 1
local L = rawget(_G, 'tcf_v1_lib')
local P = rawget(_G, 'tcf_progress_v1')

local SPACES = P and P.VERIFY
local FORMAT = P and P.VERIFY_FORMAT

local function fail(kind, fmt, ...)
    error('tcf_' .. kind .. ': ' .. string.format(fmt, ...), 0)
end

local as_map = P and P.as_map

local function ensure_space(name, engine)
    local s = box.space[name]
    if s == nil then
        s = box.schema.space.create(name, {engine = engine, format = FORMAT, if_not_exists = true})
        s:create_index('pk', {parts = {{1, 'string'}, {2, 'string'}, {3, 'string'}, {4, 'string'}},
                              if_not_exists = true})
        s = box.space[name]
    end
    if s.engine ~= engine or (s.is_local or false) then
        fail('schema', 'space %s exists with engine %s, is_local %s; expected %s, false',
             name, s.engine, tostring(s.is_local), engine)
    end
end

-- Creates the verification spaces if missing. Returns the version.
function tcf_verify_v1_ensure()
    if L == nil or P == nil then
        fail('schema', 'tcf_progress_v1.lua and tcf_v1.lua must be installed first')
    end
    ensure_space(SPACES.memtx, 'memtx')
    ensure_space(SPACES.vinyl, 'vinyl')
    return VERSION
end

-- Every row of (cluster, rs), named (tcf_progress_v1.verify_rows).
function tcf_verify_v1_load(cluster, rs)
    return P.verify_rows(cluster, rs)
end

-- The walk of (cluster, rs): the walk row with the higher seq, or nil.
local function current(cluster, rs)
    return P.walk(cluster, rs)
end

-- Deletes every row of (cluster, rs), one transaction per engine.
local function clear(cluster, rs)
    for _, engine in ipairs({'memtx', 'vinyl'}) do
        local s = box.space[SPACES[engine]]
        local keys = {}
        for _, t in s:pairs({cluster, rs}, {iterator = 'EQ'}) do
            local r = P.verify_decode(t)
            keys[#keys + 1] = {r.source_cluster, r.source_replicaset, r.space, r.key}
        end
        box.begin()
        for _, k in ipairs(keys) do s:delete(k) end
        box.commit()
    end
end

-- Starts a walk of (cluster, rs): forgets the previous one (refused while a
-- repair after a WAL gap runs), records `walk`.
tcf_verify_v1_start = L.marked(function(cluster, rs, walk)
    local cur = current(cluster, rs)
    if cur ~= nil and cur.state == 'running' and cur.reason == 'wal_gap' then
        fail('walk', 'a repair after a WAL gap is running (walk %s); it must end first',
             tostring(cur.id))
    end
    clear(cluster, rs)
    box.space[SPACES.memtx]:replace(P.verify_encode({source_cluster = cluster,
        source_replicaset = rs, space = '', key = '', data = walk}))
    return true
end)

-- After a WAL gap: the position jumps to m.new and a repair walk starts,
-- in one memtx transaction (after the previous walk's rows are deleted).
-- m as for tcf_v1_apply (engine memtx).
tcf_verify_v1_gap = L.marked(function(m, walk)
    clear(m.cluster, m.rs)
    local progress = box.space[L.PROGRESS.memtx]
    box.begin()
    local ok, err = pcall(function()
        L.check(progress, m)
        L.mark(progress, m)
        box.space[SPACES.memtx]:replace(P.verify_encode({source_cluster = m.cluster,
            source_replicaset = m.rs, space = '', key = '', data = walk}))
    end)
    if not ok then
        box.rollback()
        error(err, 0)
    end
    box.commit()
    return true
end)

-- Handles one chunk in one transaction of m.engine: the position
-- (compare-and-set, and the progress row that marks the transaction as
-- tcf's), the walk's next step, the space's counters (`delta` is added;
-- strings replace), the mismatching keys (`keys` = {{hex, data}, ...}, at
-- most `cap` per space and engine), and the repairs (`rows`, as
-- tcf_v1_apply's).
tcf_verify_v1_chunk = L.marked(function(m, walk, space, delta, keys, cap, rows)
    local progress = box.space[L.PROGRESS[m.engine]]
    local vs = box.space[SPACES[m.engine]]
    box.begin()
    local ok, err = pcall(function()
        L.check(progress, m)
        L.mark(progress, m)
        local function row(key, data)
            return P.verify_encode({source_cluster = m.cluster, source_replicaset = m.rs,
                                    space = space, key = key, data = data})
        end
        vs:replace(P.verify_encode({source_cluster = m.cluster, source_replicaset = m.rs,
                                    space = '', key = '', data = walk}))
        if space ~= '' then
            local sum = vs:get{m.cluster, m.rs, space, ''}
            local n = as_map({})
            local data = sum and P.verify_decode(sum).data
            if type(data) == 'table' then
                for k, v in pairs(data) do n[k] = v end
            end
            for k, v in pairs(delta) do
                if type(v) == 'number' then n[k] = (n[k] or 0) + v else n[k] = v end
            end
            local recorded = n.keys or 0
            for _, kr in ipairs(keys) do
                local exists = vs:get{m.cluster, m.rs, space, kr[1]} ~= nil
                if not exists and recorded >= cap then
                    n.keys_truncated = true
                else
                    if not exists then recorded = recorded + 1 end
                    vs:replace(row(kr[1], kr[2]))
                end
            end
            n.keys = recorded
            vs:replace(row('', n))
        end
        L.apply_rows(rows)
    end)
    if not ok then
        box.rollback()
        error(err, 0)
    end
    box.commit()
    return true
end)

return VERSION
