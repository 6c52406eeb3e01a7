-- tcf unmarked-write detection, version 1: installed by tcf-worker on every
-- master of its cluster while the cluster is not active (EVAL; defining
-- again is harmless), run as the worker's admin user (role `super`).
--
-- An on_replace trigger on every user space counts the writes that nobody
-- marked as tcf's own, while this instance is fenced. tcf's destination
-- marks its writes with `fiber.self().storage.tcf_mark = true`. These writes
-- are not counted either: writes of the replication applier (the
-- replicaset's own replication), writes to system spaces (id < 512), to
-- spaces named `_tcf_*` (the fence, the progress rows), to local and
-- temporary spaces, and writes while the last fence call on this instance
-- opened it (`tcf_fence_state_v1`, set by tcf_fence_v1).
local fiber = require('fiber')
local uuid = require('uuid')

local STATE = '_tcf_unmarked_v1'
local S = rawget(_G, STATE)
if S == nil then
    -- Kept across EVALs: the same trigger functions, so nothing is installed twice.
    S = {count = 0, epoch = uuid.str(), installed = false}
    rawset(_G, STATE, S)
    S.on_write = function()
        if fiber.self().storage.tcf_mark then return end
        if box.session.type() == 'applier' then return end
        -- A global, not a read of `_tcf_fence`: reading a memtx space inside
        -- a vinyl transaction fails it ("multiple storage engines").
        if rawget(_G, 'tcf_fence_state_v1') == 'open' then return end
        S.count = S.count + 1
    end
    local function watched(s)
        return s ~= nil and s.id >= 512 and s.name:sub(1, 5) ~= '_tcf_'
            and not s.is_local and not s.temporary
    end
    local function has(list, fn)
        for _, t in ipairs(list) do
            if t == fn then return true end
        end
        return false
    end
    S.install = function(s)
        if watched(s) and not has(s:on_replace(), S.on_write) then
            s:on_replace(S.on_write)
        end
    end
    S.uninstall = function(s)
        if has(s:on_replace(), S.on_write) then
            s:on_replace(nil, S.on_write)
        end
    end
    -- A space is created in the cache after this trigger returns: install
    -- from a fiber, which runs once the creating statement yields.
    S.on_space = function(old, new)
        if S.installed and old == nil and new ~= nil then
            fiber.new(function(id)
                if S.installed then S.install(box.space[id]) end
            end, new[1])
        end
    end
end

-- The replicaset's uuid: box.info.replicaset (3.0+; box.info.cluster is the
-- whole cluster there), else box.info.cluster (up to 2.11).
local function replicaset_uuid()
    local rs = box.info.replicaset
    if type(rs) == 'table' and rs.uuid ~= nil then return rs.uuid end
    return box.info.cluster.uuid
end

local function spaces()
    local out = {}
    for k, s in pairs(box.space) do
        if type(k) == 'number' then out[#out + 1] = s end
    end
    return out
end

-- `watch` true: makes sure every watched space (and every space created
-- later) has the trigger. `watch` false: removes the triggers and resets
-- the count (and a new epoch starts). Returns the unmarked writes counted
-- since the epoch began, the epoch, the instance uuid and the replicaset uuid.
function tcf_unmarked_v1(watch)
    if watch then
        S.installed = true
        local sp = box.space._space
        local triggers = sp:on_replace()
        local found = false
        for _, t in ipairs(triggers) do
            if t == S.on_space then found = true end
        end
        if not found then sp:on_replace(S.on_space) end
        for _, s in ipairs(spaces()) do S.install(s) end
    elseif S.installed then
        S.installed = false
        pcall(box.space._space.on_replace, box.space._space, nil, S.on_space)
        for _, s in ipairs(spaces()) do S.uninstall(s) end
        S.count = 0
        S.epoch = uuid.str()
    end
    return S.count, S.epoch, box.info.uuid, replicaset_uuid()
end

return 1
