-- tcf progress and verification rows, layout version 1: the one definition
-- of the tuples tcf-destination writes on its target cluster
-- (`_tcf_progress_*`, `_tcf_verify_*`; docs/progress.md, docs/verify.md)
-- and of the operations other components need on them. Owned by tcf-api
-- (api/src/progress.rs decodes what these functions return). tcf-destination
-- EVALs it before its own functions, which use it; tcf-worker EVALs it with
-- an operation and reads the typed answer. Nothing else indexes these
-- tuples by position.
--
-- EVAL with no arguments: (re)defines the global `tcf_progress_v1` and
-- returns the layout version. EVAL with (op, ...): the same, then returns
-- `tcf_progress_v1[op](...)`, for a caller that installs nothing.
-- The on-disk tuple format is a federation-wide constant: existing clusters
-- hold these tuples.
local VERSION = 1
local clock = require('clock')

local P = {VERSION = VERSION}

-- The progress spaces by the engine (or kind) of the writes they mark.
P.PROGRESS = {memtx = '_tcf_progress_memtx', vinyl = '_tcf_progress_vinyl',
              ['local'] = '_tcf_progress_local'}
P.PROGRESS_FORMAT = {
    {name = 'source_cluster', type = 'string'},
    {name = 'source_replicaset', type = 'string'},
    {name = 'vclock', type = 'map'},
    {name = 'source_uuid', type = 'string'},
    {name = 'state', type = 'string'},
    {name = 'updated_at', type = 'number'},
    {name = 'destination', type = 'string'},
    {name = 'writer', type = 'string'},
}
-- The verification spaces by engine.
P.VERIFY = {memtx = '_tcf_verify_memtx', vinyl = '_tcf_verify_vinyl'}
P.VERIFY_FORMAT = {
    {name = 'source_cluster', type = 'string'},
    {name = 'source_replicaset', type = 'string'},
    {name = 'space', type = 'string'},
    {name = 'key', type = 'string'},
    {name = 'data', type = 'any'},
}
local ENGINES = {'memtx', 'vinyl'}
local ALL = {'memtx', 'vinyl', 'local'}

-- An empty Lua table encodes as an array; these fields are maps.
local function as_map(v)
    return setmetatable(v or {}, {__serialize = 'map'})
end
P.as_map = as_map

-- A progress tuple as a row with named fields (nil for nil).
function P.decode(t)
    if t == nil then return nil end
    return as_map({
        source_cluster = t[1], source_replicaset = t[2], vclock = as_map(t[3]),
        source_uuid = t[4] or '', state = t[5], updated_at = t[6] or 0,
        destination = t[7] or '', writer = t[8] or '',
    })
end

-- The tuple of a row with named fields; `updated_at` is now.
function P.encode(r)
    return {r.source_cluster, r.source_replicaset, as_map(r.vclock), r.source_uuid, r.state,
            clock.time(), r.destination, r.writer}
end

-- The rows of `spaces[engine]` for each of `engines` keyed by `cluster`
-- (and `rs` when given), decoded, each with its space's `engine`; none
-- where a space does not exist.
local function rows_of(spaces, engines, decode, cluster, rs)
    local out = {}
    local key = rs == nil and {cluster} or {cluster, rs}
    for _, engine in ipairs(engines) do
        local s = box.space[spaces[engine]]
        if s ~= nil then
            for _, t in s:pairs(key, {iterator = 'EQ'}) do
                local r = decode(t)
                r.engine = engine
                out[#out + 1] = r
            end
        end
    end
    return out
end

-- Every progress row from source cluster `cluster` (of replicaset `rs`
-- when given), each with its space's `engine` ('memtx', 'vinyl', 'local').
function P.read(cluster, rs)
    return rows_of(P.PROGRESS, ALL, P.decode, cluster, rs)
end

-- Marks (cluster, rs) for reload: both global rows `loading` at the empty
-- vclock (keeping source_uuid, destination and writer), the local row
-- deleted. The destination that finds `loading` starts an initial load
-- that truncates the replicated spaces first, also after a restart.
function P.mark_reload(cluster, rs)
    for _, engine in ipairs(ENGINES) do
        local s = box.space[P.PROGRESS[engine]]
        if s == nil then
            error('tcf_schema: no space ' .. P.PROGRESS[engine] ..
                  ': the incoming destination never ran here', 0)
        end
        local cur = P.decode(s:get{cluster, rs})
        s:replace(P.encode({
            source_cluster = cluster, source_replicaset = rs, vclock = {},
            source_uuid = cur and cur.source_uuid or '', state = 'loading',
            destination = cur and cur.destination or 'tcf-worker', writer = cur and cur.writer or '',
        }))
    end
    local l = box.space[P.PROGRESS['local']]
    if l ~= nil then l:delete{cluster, rs} end
    return true
end

-- A verification tuple as a row with named fields.
function P.verify_decode(t)
    return as_map({source_cluster = t[1], source_replicaset = t[2], space = t[3], key = t[4],
                   data = t[5]})
end

-- The verification tuple of a row with named fields (`data` a map).
function P.verify_encode(r)
    return {r.source_cluster, r.source_replicaset, r.space, r.key, as_map(r.data)}
end

-- The key of (cluster, rs)'s walk row: the one whose space and key are ''.
function P.walk_key(cluster, rs)
    return {cluster, rs, '', ''}
end

-- Every verification row of source cluster `cluster` (of replicaset `rs`
-- when given), each with its space's `engine` ('memtx', 'vinyl').
function P.verify_rows(cluster, rs)
    return rows_of(P.VERIFY, ENGINES, P.verify_decode, cluster, rs)
end

-- The walk of (cluster, rs): the `data` of the walk row with the higher
-- `seq` of the two engines', or nil.
function P.walk(cluster, rs)
    local best
    for _, engine in ipairs(ENGINES) do
        local s = box.space[P.VERIFY[engine]]
        local t = s and s:get(P.walk_key(cluster, rs))
        if t ~= nil and type(t[5]) == 'table' and (best == nil or (t[5].seq or 0) > (best.seq or 0)) then
            best = t[5]
        end
    end
    return best
end

-- The walks of every source replicaset of `cluster`, each as the walk
-- row's head: {source_replicaset, engine, id, mode, reason, state, seq}
-- (both engines' rows; the one with the higher seq counts).
function P.walks(cluster)
    local out = {}
    for _, engine in ipairs(ENGINES) do
        local s = box.space[P.VERIFY[engine]]
        if s ~= nil then
            for _, t in s:pairs({cluster}, {iterator = 'EQ'}) do
                local d = t[5]
                if t[3] == '' and t[4] == '' and type(d) == 'table' then
                    out[#out + 1] = as_map({
                        source_replicaset = t[2], engine = engine, id = d.id, mode = d.mode,
                        reason = d.reason, state = d.state, seq = d.seq or 0,
                    })
                end
            end
        end
    end
    return out
end

rawset(_G, 'tcf_progress_v1', P)

local op = ...
if op == nil then return VERSION end
local f = P[op]
if type(f) ~= 'function' then
    error('tcf_schema: tcf_progress_v1 has no operation ' .. tostring(op), 0)
end
return f(select(2, ...))
