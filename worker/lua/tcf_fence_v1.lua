-- tcf worker fencing, version 1: installed by tcf-worker on every master it
-- fences (EVAL; defining again is harmless), run as the worker's admin user
-- (role `super`). A `super` user may disable a user but not enable one on
-- 2.6: enabling goes through box.session.su('admin', ...).
local function ensure()
    local s = box.space._tcf_fence
    if s == nil then
        s = box.schema.space.create('_tcf_fence', {format = {
            {name = 'key', type = 'string'}, {name = 'term', type = 'unsigned'},
            {name = 'state', type = 'string'}}, if_not_exists = true})
        s:create_index('pk', {parts = {{1, 'string'}}, if_not_exists = true})
        s = box.space._tcf_fence
    end
    return s
end

-- Fences (`fence` true: dml users disabled) or unfences this instance's
-- cluster for `term`; refuses a term older than the newest recorded here.
-- Returns this instance's vclock (without component 0) after the change
-- committed, and its replicaset uuid.
function tcf_fence_v1(term, fence, users)
    if box.info.ro then
        error('tcf_readonly: ' .. box.info.uuid .. ' is read-only', 0)
    end
    local s = ensure()
    local cur = s:get{'term'}
    if cur ~= nil and cur[2] > term then
        error(string.format('tcf_stale_term: term %d is older than %d recorded here', term, cur[2]), 0)
    end
    s:replace{'term', term, fence and 'fenced' or 'open'}
    rawset(_G, 'tcf_fence_state_v1', fence and 'fenced' or 'open')
    for _, u in ipairs(users) do
        if box.schema.user.exists(u) then
            if fence then
                box.session.su('admin', box.schema.user.disable, u)
            else
                box.session.su('admin', box.schema.user.enable, u)
            end
        end
    end
    local vc = setmetatable({}, {__serialize = 'map'})
    for id, lsn in pairs(box.info.vclock) do
        if id ~= 0 then vc[id] = lsn end
    end
    return vc, box.info.cluster.uuid
end

return 1
