#!/usr/bin/env tarantool
-- The master (the writable instance) of one replicaset of an example
-- cluster. Both clusters, A and B, run this same file: they are identical.
--
--   tarantool examples/tarantool/master.lua PORT [DIR]
--   TCF_PORT=3301 TCF_DIR=/tmp/a-rs1-master tarantool examples/tarantool/master.lua
--
-- Settings and defaults: see common.lua. On first start it bootstraps the
-- schema (once): the spaces, the users and their grants, with the passwords
-- read from examples/secrets (TCF_SECRETS_DIR):
--
--   | user           | grants                                             | why |
--   | -------------- | -------------------------------------------------- | --- |
--   | cluster-repl   | role `replication`                                 | the replica of this replicaset replicates from here |
--   | tcf-replicator | read,write,execute,create on universe              | tcf: `read` for tcf-gateway reading this cluster (source side); `write,execute,create` for tcf-destination writing it (target side: it installs its Lua functions and creates the _tcf_progress_* spaces). In a two-way federation every cluster is both |
--   | tcf-admin      | role `super`                                       | tcf-worker: fences this cluster (disables/enables `app`, writes _tcf_fence; docs/worker.md, Fencing) |
--   | app            | read,write on `accounts` and `events`; execute on demo_whoami | the application (the demo's writer, through HAProxy); tcf-worker disables it while this cluster is not active |
--   | monitor        | execute on demo_health, demo_stats; read on both spaces | the demo's readiness checks and row counts |
--
-- Spaces (identical on A and B, as tcf requires):
--   accounts (memtx) {id unsigned, balance integer, name string, updated_at number}, pk id
--   events   (vinyl) {id unsigned, account_id unsigned, amount integer, ts number}, pk id, index account
local fio = require('fio')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
local common = dofile(fio.pathjoin(here, 'common.lua'))

local s = common.settings('master')
-- Read before box.cfg (work_dir changes the current directory).
local passwords = {
    ['cluster-repl'] = common.secret(s, 'cluster-repl.password'),
    ['tcf-replicator'] = common.secret(s, 'tcf-replicator.password'),
    ['tcf-admin'] = common.secret(s, 'tcf-admin.password'),
    app = common.secret(s, 'app.password'),
    monitor = common.secret(s, 'monitor.password'),
}

common.watch_parent()
box.cfg(common.cfg(s, {read_only = false}))

box.once('tcf-example-schema-v1', function()
    local accounts = box.schema.space.create('accounts', {
        engine = 'memtx',
        format = {
            {name = 'id', type = 'unsigned'},
            {name = 'balance', type = 'integer'},
            {name = 'name', type = 'string'},
            {name = 'updated_at', type = 'number'},
        },
    })
    accounts:create_index('pk', {parts = {{1, 'unsigned'}}})

    local events = box.schema.space.create('events', {
        engine = 'vinyl',
        format = {
            {name = 'id', type = 'unsigned'},
            {name = 'account_id', type = 'unsigned'},
            {name = 'amount', type = 'integer'},
            {name = 'ts', type = 'number'},
        },
    })
    events:create_index('pk', {parts = {{1, 'unsigned'}}})
    events:create_index('account', {parts = {{2, 'unsigned'}, {1, 'unsigned'}}})

    box.schema.user.create('cluster-repl', {password = passwords['cluster-repl']})
    box.schema.user.grant('cluster-repl', 'replication')

    box.schema.user.create('tcf-replicator', {password = passwords['tcf-replicator']})
    box.schema.user.grant('tcf-replicator', 'read,write,execute,create', 'universe')

    -- tcf-worker's fencing user: `super` to create and write _tcf_fence, to
    -- EVAL its function and to enable/disable `app` (docs/worker.md).
    box.schema.user.create('tcf-admin', {password = passwords['tcf-admin']})
    box.schema.user.grant('tcf-admin', 'super')

    box.schema.user.create('app', {password = passwords.app})
    box.schema.user.grant('app', 'read,write', 'space', 'accounts')
    box.schema.user.grant('app', 'read,write', 'space', 'events')
    -- Which instance a connection reached (through HAProxy).
    box.schema.func.create('demo_whoami')
    box.schema.user.grant('app', 'execute', 'function', 'demo_whoami')

    box.schema.user.create('monitor', {password = passwords.monitor})
    box.schema.user.grant('monitor', 'read', 'space', 'accounts')
    box.schema.user.grant('monitor', 'read', 'space', 'events')
    for _, f in ipairs({'demo_health', 'demo_stats'}) do
        box.schema.func.create(f)
        box.schema.user.grant('monitor', 'execute', 'function', f)
    end
end)

common.define_functions(s)
require('log').info('%s: master ready on 127.0.0.1:%d, data in %s', s.name, s.port, s.dir)
