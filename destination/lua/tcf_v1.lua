-- tcf destination functions, version 1. Installed by tcf-destination on every
-- connect (EVAL of this file; defining them again is harmless) and CALLed by it.
-- Contract: docs/progress.md. Everything here runs with the caller's rights.
-- The progress rows' layout is tcf-api's (api/lua/tcf_progress_v1.lua,
-- EVALed first): rows are read and written through it, by field name.
local VERSION = 1
local ffi = require('ffi')
local fiber = require('fiber')

pcall(ffi.cdef, [[
int box_insert(uint32_t space_id, const char *tuple, const char *tuple_end, box_tuple_t **result);
int box_replace(uint32_t space_id, const char *tuple, const char *tuple_end, box_tuple_t **result);
int box_delete(uint32_t space_id, uint32_t index_id, const char *key, const char *key_end,
               box_tuple_t **result);
int box_update(uint32_t space_id, uint32_t index_id, const char *key, const char *key_end,
               const char *ops, const char *ops_end, int index_base, box_tuple_t **result);
int box_upsert(uint32_t space_id, uint32_t index_id, const char *tuple, const char *tuple_end,
               const char *ops, const char *ops_end, int index_base, box_tuple_t **result);
]])
local C = ffi.C

local P = rawget(_G, 'tcf_progress_v1')
if P == nil then error('tcf_schema: tcf_progress_v1.lua must be installed first', 0) end
local PROGRESS = P.PROGRESS
local FORMAT = P.PROGRESS_FORMAT

-- Ops: 1 INSERT, 2 REPLACE, 3 UPDATE, 4 DELETE, 5 UPSERT, 6 TRUNCATE (tcf.stream.v1.Op).
local OP_INSERT, OP_REPLACE, OP_UPDATE, OP_DELETE, OP_UPSERT, OP_TRUNCATE = 1, 2, 3, 4, 5, 6

local function fail(kind, fmt, ...)
    error('tcf_' .. kind .. ': ' .. string.format(fmt, ...), 0)
end

-- A vclock is a Lua table {[id] = lsn}; absent components are 0.
local function vc_le(a, b)
    for id, lsn in pairs(a or {}) do
        if lsn > ((b or {})[id] or 0) then return false end
    end
    return true
end
local function vc_eq(a, b) return vc_le(a, b) and vc_le(b, a) end
local function vc_str(v)
    local parts = {}
    for id, lsn in pairs(v or {}) do parts[#parts + 1] = id .. ': ' .. lsn end
    table.sort(parts)
    return '{' .. table.concat(parts, ', ') .. '}'
end

local as_map = P.as_map

local function ensure_space(name, engine, is_local)
    local s = box.space[name]
    if s == nil then
        s = box.schema.space.create(name, {engine = engine, is_local = is_local, format = FORMAT,
                                           if_not_exists = true})
        s:create_index('pk', {parts = {{1, 'string'}, {2, 'string'}}, if_not_exists = true})
        s = box.space[name]
    end
    if s.engine ~= engine or (s.is_local or false) ~= is_local then
        fail('schema', 'space %s exists with engine %s, is_local %s; expected %s, %s',
             name, s.engine, tostring(s.is_local), engine, tostring(is_local))
    end
end

-- Creates the progress spaces if missing. Returns the function version.
function tcf_v1_ensure()
    ensure_space(PROGRESS.memtx, 'memtx', false)
    ensure_space(PROGRESS.vinyl, 'vinyl', false)
    ensure_space(PROGRESS['local'], 'memtx', true)
    return VERSION
end

-- The progress rows of (cluster, rs), named (tcf_progress_v1.read).
function tcf_v1_position(cluster, rs)
    return P.read(cluster, rs)
end

-- Checks a progress row against what the caller believes is stored.
local function check(space, m)
    local cur = P.decode(space:get{m.cluster, m.rs})
    local stored = cur and cur.vclock or {}
    if not vc_eq(stored, m.expected) then
        fail('position', '%s of %s/%s holds %s (writer %s), the batch expects %s',
             space.name, m.cluster, m.rs, vc_str(stored), cur and cur.writer or '-', vc_str(m.expected))
    end
    if cur ~= nil and m.source_uuid ~= '' and cur.source_uuid ~= '' and cur.source_uuid ~= m.source_uuid then
        fail('source', '%s/%s was replicated from source replicaset %s, the stream is from %s',
             m.cluster, m.rs, cur.source_uuid, m.source_uuid)
    end
    if m.state ~= 'loading' and not (vc_le(stored, m.new) and not vc_eq(stored, m.new)) then
        fail('position', 'new position %s does not advance %s', vc_str(m.new), vc_str(stored))
    end
    if m.state == 'loading' and cur ~= nil and cur.state ~= 'loading' then
        fail('position', '%s/%s is not loading', m.cluster, m.rs)
    end
end

-- The box_* functions as function pointers taking addresses as integers:
-- called with Lua numbers, a row costs no cdata allocation and no type
-- parsing (the apply loop runs interpreted, where both are expensive).
local ADDR = 'uintptr_t'
local box_insert = ffi.cast('int (*)(uint32_t, uintptr_t, uintptr_t, void *)', C.box_insert)
local box_replace = ffi.cast('int (*)(uint32_t, uintptr_t, uintptr_t, void *)', C.box_replace)
local box_delete = ffi.cast('int (*)(uint32_t, uint32_t, uintptr_t, uintptr_t, void *)', C.box_delete)
local box_update = ffi.cast('int (*)(uint32_t, uint32_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, int, void *)',
                            C.box_update)
local box_upsert = ffi.cast('int (*)(uint32_t, uint32_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, int, void *)',
                            C.box_upsert)
local byte = string.byte

-- Applies a packed batch: rows back to back, each a 19-byte header (op u8,
-- index_id u8, index_base u8, space_id u32, key, tuple and ops lengths u32;
-- integers little-endian) then the key, tuple and ops MsgPack (written by
-- tcf-destination's `target::write_rows`). `packed` is a Lua string: it is
-- neither moved nor collected while this runs, so addresses into it hold.
local function apply_rows(packed)
    if type(packed) ~= 'string' then
        fail('row', 'the rows are a %s, not a packed batch: tcf-destination and the functions it installed differ', type(packed))
    end
    local n = #packed
    local addr = tonumber(ffi.cast(ADDR, ffi.cast('const char *', packed)))
    local pos, count = 0, 0
    while pos < n do
        if pos + 19 > n then fail('row', 'packed batch truncated in a row header at byte %d of %d', pos, n) end
        local op, iid, base, s0, s1, s2, s3, k0, k1, k2, k3, t0, t1, t2, t3, o0, o1, o2, o3 =
            byte(packed, pos + 1, pos + 19)
        local sid = s0 + s1 * 256 + s2 * 65536 + s3 * 16777216
        local klen = k0 + k1 * 256 + k2 * 65536 + k3 * 16777216
        local tlen = t0 + t1 * 256 + t2 * 65536 + t3 * 16777216
        local olen = o0 + o1 * 256 + o2 * 65536 + o3 * 16777216
        local k = pos + 19
        local t = k + klen
        local o = t + tlen
        pos = o + olen
        if pos > n then fail('row', 'packed batch truncated in a row body at byte %d of %d', k, n) end
        local rc
        if op == OP_INSERT then
            rc = box_insert(sid, addr + t, addr + o, nil)
        elseif op == OP_REPLACE then
            rc = box_replace(sid, addr + t, addr + o, nil)
        elseif op == OP_UPDATE then
            rc = box_update(sid, iid, addr + k, addr + t, addr + t, addr + o, base, nil)
        elseif op == OP_DELETE then
            rc = box_delete(sid, iid, addr + k, addr + t, nil)
        elseif op == OP_UPSERT then
            rc = box_upsert(sid, iid, addr + t, addr + o, addr + o, addr + pos, base, nil)
        elseif op == OP_TRUNCATE then
            local s = box.space[sid]
            if s == nil then fail('schema', 'no space %d on the target', sid) end
            s:truncate()
            rc = 0
        else
            fail('row', 'unknown op %s', tostring(op))
        end
        if rc ~= 0 then box.error() end
        count = count + 1
    end
    return count
end
-- Never compiled: a Lua on_replace trigger (the worker's unmarked-write
-- trigger, or the application's own) fired from inside an FFI box_* call made
-- by a JIT trace aborts Tarantool ("Lua VM re-entrancy is detected while
-- executing the trace"). From the interpreter the same calls are safe.
jit.off(apply_rows)

-- Runs fn with this fiber's writes marked as tcf's own
-- (`fiber.self().storage.tcf_mark`, read by tcf-worker's unmarked-write
-- triggers on a passive cluster); the mark is cleared on every exit.
local function marked(fn)
    return function(...)
        local st = fiber.self().storage
        st.tcf_mark = true
        local ok, res = pcall(fn, ...)
        st.tcf_mark = nil
        if not ok then error(res, 0) end
        return res
    end
end

local function mark(space, m)
    space:replace(P.encode({source_cluster = m.cluster, source_replicaset = m.rs, vclock = m.new,
                            source_uuid = m.source_uuid, state = m.state,
                            destination = m.destination, writer = m.writer}))
end

-- Applies whole source transactions and the progress row in one transaction.
-- m = {cluster, rs, engine = 'memtx'|'vinyl', expected, new, source_uuid,
--      state = 'streaming'|'loading', destination, writer}
-- rows: a packed batch (apply_rows above).
tcf_v1_apply = marked(function(m, rows)
    local space = box.space[PROGRESS[m.engine]]
    box.begin()
    local ok, res = pcall(function()
        check(space, m)
        -- The mark first: it is what the opposite gateway recognises.
        mark(space, m)
        return apply_rows(rows)
    end)
    if not ok then
        box.rollback()
        error(res, 0)
    end
    box.commit()
    return res
end)

-- Persists an advance that covers only skipped rows, in the local space.
-- m = {cluster, rs, expected (local row), new, source_uuid, destination, writer}
tcf_v1_advance_local = marked(function(m)
    local space = box.space[PROGRESS['local']]
    box.begin()
    local ok, err = pcall(function()
        check(space, m)
        mark(space, m)
    end)
    if not ok then
        box.rollback()
        error(err, 0)
    end
    box.commit()
    return true
end)

-- Starts an initial load: refuses non-empty spaces unless `truncate`, then
-- truncates them (each with a progress mark) and marks every engine's
-- progress row `loading` at the empty vclock.
-- m = {cluster, rs, source_uuid, destination, writer}; spaces = {space_id, ...}
tcf_v1_load_begin = marked(function(m, spaces, truncate)
    for _, sid in ipairs(spaces) do
        local s = box.space[sid]
        if s == nil then fail('schema', 'no space %s on the target', tostring(sid)) end
        if s:len() > 0 and not truncate then
            fail('nonempty', 'space %s holds %d tuples; an initial load needs it empty (or the config to allow truncating it)', s.name, s:len())
        end
    end
    local lm = {cluster = m.cluster, rs = m.rs, new = {}, source_uuid = m.source_uuid,
                state = 'loading', destination = m.destination, writer = m.writer}
    for _, engine in ipairs({'memtx', 'vinyl'}) do
        local space = box.space[PROGRESS[engine]]
        box.begin()
        mark(space, lm)
        box.commit()
    end
    for _, sid in ipairs(spaces) do
        local s = box.space[sid]
        if s:len() > 0 then
            box.begin()
            mark(box.space[PROGRESS.memtx], lm)
            s:truncate()
            box.commit()
        end
    end
    local l = box.space[PROGRESS['local']]
    l:delete{m.cluster, m.rs}
    return true
end)

-- Ends an initial load (or records a resolved `current` position): every
-- engine's row gets `new` and state `streaming`, one engine at a time.
tcf_v1_set_position = marked(function(m)
    -- Only over rows this writer made (its own load) or none (a fresh
    -- `current` start): another destination's rows are never overwritten.
    for _, engine in ipairs({'memtx', 'vinyl'}) do
        local cur = P.decode(box.space[PROGRESS[engine]]:get{m.cluster, m.rs})
        if cur ~= nil and cur.writer ~= m.writer then
            fail('position', '%s/%s was written by writer %s; not overwriting it',
                 m.cluster, m.rs, cur.writer)
        end
    end
    for _, engine in ipairs({'memtx', 'vinyl'}) do
        local space = box.space[PROGRESS[engine]]
        box.begin()
        mark(space, {cluster = m.cluster, rs = m.rs, new = m.new, source_uuid = m.source_uuid,
                     state = 'streaming', destination = m.destination, writer = m.writer})
        box.commit()
    end
    return true
end)

-- Shared with tcf_verify_v1.lua (EVALed after this file): the same
-- compare-and-set, mark and row application for verification chunks.
rawset(_G, 'tcf_v1_lib', {check = check, mark = mark, marked = marked,
                          apply_rows = apply_rows, PROGRESS = PROGRESS, as_map = as_map})

return VERSION
