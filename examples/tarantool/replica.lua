#!/usr/bin/env tarantool
-- A read-only replica of one replicaset of an example cluster, replicating
-- from its master (examples/tarantool/master.lua) as user `cluster-repl`.
--
--   tarantool examples/tarantool/replica.lua PORT DIR MASTER_HOST:PORT
--   TCF_PORT=3302 TCF_DIR=/tmp/a-rs1-replica TCF_MASTER=127.0.0.1:3301 \
--       tarantool examples/tarantool/replica.lua
--
-- Settings and defaults: see common.lua. The schema, users and grants come
-- from the master by replication. tcf-gateway prefers reading a replica;
-- tcf-destination writes only to the single writable instance (the master).
local fio = require('fio')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
local common = dofile(fio.pathjoin(here, 'common.lua'))

local s = common.settings('replica')
local password = common.secret(s, 'cluster-repl.password')

common.watch_parent()
box.cfg(common.cfg(s, {
    read_only = true,
    replication = {'cluster-repl:' .. password .. '@' .. s.master},
}))

common.define_functions(s)
require('log').info('%s: replica of %s ready on 127.0.0.1:%d, data in %s',
                    s.name, s.master, s.port, s.dir)
