-- tcf destination: what it must know about a target instance before it
-- writes there, version 1. EVALed by tcf-destination (read only, any rights
-- that may EVAL); decoded by destination/src/instance.rs. Every field is
-- found by looking for it, never by comparing version strings:
--
-- * the replicaset: `box.info.replicaset` {uuid, name} where it exists
--   (3.0+, where `box.info.cluster` names the whole cluster), else
--   `box.info.cluster.uuid` (up to 2.11, where the cluster is the replicaset);
-- * whether this instance may write: `box.info.ro` (on 2.10+ it already
--   folds in the election state and the synchro queue's owner),
--   `box.info.ro_reason` (2.10+), the Raft state `box.info.election`
--   (2.6.1+) with `box.cfg.election_mode`, and the synchro queue's owner
--   `box.info.synchro.queue.owner` (2.8+).
local info = box.info
local out = setmetatable({}, {__serialize = 'map'})
local rs = info.replicaset
if type(rs) == 'table' and rs.uuid ~= nil then
    out.replicaset_uuid = rs.uuid
    out.replicaset_name = rs.name
else
    out.replicaset_uuid = info.cluster.uuid
end
out.instance_uuid = info.uuid
out.id = info.id
out.ro = info.ro
out.ro_reason = info.ro_reason
local e = info.election
if type(e) == 'table' then
    out.election_mode = box.cfg.election_mode
    out.election_state = e.state
    out.election_term = e.term
end
local s = info.synchro
if type(s) == 'table' and type(s.queue) == 'table' then
    out.queue_owner = s.queue.owner
end
return out
