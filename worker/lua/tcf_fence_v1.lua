-- tcf worker fencing, version 1: installed by tcf-worker on every master it
-- fences (EVAL; defining again is harmless), run as the worker's admin user
-- (role `super`). A `super` user may disable a user but not enable one on
-- 2.6: enabling goes through box.session.su('admin', ...).
--
-- Fencing revokes `session,usage` on universe from each dml user
-- (box.schema.user.disable). Without `usage` a user can do nothing, in new
-- sessions and in the ones already open. The revoke removes only what was
-- granted outside a declarative config: on 3.1+ a privilege carries the
-- origins that granted it, and the config's origin stays; on 3.0 a config
-- reload grants again what the config lists. So after disabling, the fence
-- checks that no user still has `usage` (granted under another origin,
-- through the role `super` -- `session` and `usage` cannot be granted to
-- other roles -- or listed by the running declarative config) and fails,
-- naming the user and where the privilege comes from, if one does
-- (docs/worker.md, Fencing).
local PRIV_X, PRIV_U = 4, 16 -- box.priv.X, box.priv.U: on-disk bits, the same on every version

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

-- The replicaset's uuid: box.info.replicaset (3.0+; box.info.cluster is the
-- whole cluster there), else box.info.cluster (up to 2.11).
local function replicaset_uuid()
    local rs = box.info.replicaset
    if type(rs) == 'table' and rs.uuid ~= nil then return rs.uuid end
    return box.info.cluster.uuid
end

local function user_id(name)
    local u = box.space._user.index.name:get{name}
    return u and u[1]
end

-- Where user or role `uid` gets `usage` on universe from: a list of
-- descriptions (empty: it has none), following granted roles.
local function usage_sources(uid, seen)
    seen = seen or {}
    if seen[uid] then return {} end
    seen[uid] = true
    local out = {}
    for _, p in box.space._priv:pairs({uid}) do
        local otype, oid, bits = p[3], p[4], p[5]
        if otype == 'universe' and bit.band(bits, PRIV_U) ~= 0 then
            local origins = type(p[6]) == 'table' and p[6].origins or nil
            local names = {}
            for origin, obits in pairs(origins or {}) do
                if bit.band(obits, PRIV_U) ~= 0 then
                    names[#names + 1] = origin == 'config' and 'the declarative config'
                        or (origin == '' and 'a grant' or 'origin ' .. origin)
                end
            end
            table.sort(names)
            out[#out + 1] = #names > 0 and 'granted by ' .. table.concat(names, ' and ')
                or 'a grant'
        elseif otype == 'role' and bit.band(bits, PRIV_X) ~= 0 then
            if #usage_sources(oid, seen) > 0 then
                local r = box.space._user:get{oid}
                out[#out + 1] = 'role ' .. (r and r[3] or tostring(oid))
            end
        end
    end
    return out
end

-- The running declarative config (3.x, `tarantool --config`), or nil.
local function running_config()
    local cfg = package.loaded.config
    if type(cfg) ~= 'table' or type(cfg.get) ~= 'function' or type(cfg.info) ~= 'function' then
        return nil
    end
    local ok, info = pcall(cfg.info, cfg)
    if not ok or type(info) ~= 'table' or info.status == 'uninitialized' then return nil end
    return cfg
end

-- Whether the running declarative config gives user `name` `usage` on
-- universe (listed in its privileges, or the role `super`; `session` and
-- `usage` cannot be granted to other roles): a reload grants it again.
-- Returns where in the config, or nil.
local function config_usage(cfg, name)
    local ok, users = pcall(cfg.get, cfg, 'credentials.users')
    local user = ok and type(users) == 'table' and users[name] or nil
    if type(user) ~= 'table' then return nil end
    local path = 'credentials.users.' .. name
    for _, p in ipairs(user.privileges or {}) do
        if p.universe then
            for _, perm in ipairs(p.permissions or {}) do
                if perm == 'usage' then return path .. '.privileges' end
            end
        end
    end
    for _, role in ipairs(user.roles or {}) do
        if role == 'super' then return path .. '.roles (super)' end
    end
    return nil
end

-- Fences (`fence` true: dml users disabled) or unfences this instance's
-- cluster for `term`; refuses a term older than the newest recorded here.
-- Returns this instance's vclock (without component 0) after the change
-- committed, and its replicaset uuid. A fence that leaves a user able to
-- work fails with `tcf_fence_ineffective: ...` after disabling every user
-- it can.
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
    local cfg = fence and running_config() or nil
    local problems = {}
    for _, u in ipairs(users) do
        if box.schema.user.exists(u) then
            if fence then
                box.session.su('admin', box.schema.user.disable, u)
                local why = usage_sources(user_id(u))
                local listed = cfg and config_usage(cfg, u)
                if listed then why[#why + 1] = 'listed in ' .. listed end
                if #why > 0 then
                    problems[#problems + 1] = string.format("user '%s' keeps usage on universe (%s)",
                                                            u, table.concat(why, '; '))
                end
            else
                box.session.su('admin', box.schema.user.enable, u)
            end
        end
    end
    if #problems > 0 then
        error('tcf_fence_ineffective: ' .. table.concat(problems, '; ') ..
              '; disabling takes away only what box.schema.user.create/grant gave:' ..
              ' remove usage and session from the declarative config and the roles of dml users', 0)
    end
    local vc = setmetatable({}, {__serialize = 'map'})
    for id, lsn in pairs(box.info.vclock) do
        if id ~= 0 then vc[id] = lsn end
    end
    return vc, replicaset_uuid()
end

return 1
