//! What the destination knows about one target instance: the replicaset it
//! belongs to and whether it is the replicaset's writable master, read by
//! `lua/tcf_instance_v1.lua` on every Tarantool version by the fields each
//! version has (`docs/compat.md`, "Target side").

use rmpv::Value;
use uuid::Uuid;

/// The Lua chunk returning the map [`TargetInstance::decode`] reads.
pub(crate) const LUA: &str = include_str!("../lua/tcf_instance_v1.lua");

/// One target instance as `lua/tcf_instance_v1.lua` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetInstance {
    /// The replicaset's UUID (`box.info.replicaset.uuid` on 3.x,
    /// `box.info.cluster.uuid` before).
    pub(crate) replicaset_uuid: Uuid,
    /// The replicaset's name, where the server has names (3.x, when set).
    pub(crate) replicaset_name: Option<String>,
    /// `box.info.id`.
    pub(crate) id: u64,
    /// `box.info.ro`.
    pub(crate) ro: bool,
    /// `box.info.ro_reason` (2.10+): `config`, `election`, `synchro`, `orphan`.
    pub(crate) ro_reason: Option<String>,
    /// `box.cfg.election_mode` where the server has Raft (2.6.1+).
    pub(crate) election_mode: Option<String>,
    /// `box.info.election.state`: `leader`, `follower`, `candidate`.
    pub(crate) election_state: Option<String>,
    /// The Raft term.
    pub(crate) election_term: Option<u64>,
    /// `box.info.synchro.queue.owner` (2.8+): the instance id owning the
    /// synchronous transaction queue, 0 when nobody claimed it.
    pub(crate) queue_owner: Option<u64>,
}

/// The instance's answer was not the expected map.
#[derive(Debug, thiserror::Error)]
#[error("unexpected instance description {0}")]
pub(crate) struct DecodeError(String);

impl TargetInstance {
    /// Decodes the map the Lua chunk returns (the EVAL's first value).
    pub(crate) fn decode(v: &Value) -> Result<Self, DecodeError> {
        let bad = || DecodeError(v.to_string());
        let map = v.as_map().ok_or_else(bad)?;
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v)
                .filter(|v| !v.is_nil())
        };
        let text = |k: &str| get(k).and_then(Value::as_str).map(str::to_owned);
        let replicaset_uuid = text("replicaset_uuid")
            .and_then(|s| Uuid::parse_str(&s).ok())
            .ok_or_else(bad)?;
        Ok(Self {
            replicaset_uuid,
            replicaset_name: text("replicaset_name"),
            id: get("id").and_then(Value::as_u64).ok_or_else(bad)?,
            ro: get("ro").and_then(Value::as_bool).ok_or_else(bad)?,
            ro_reason: text("ro_reason"),
            election_mode: text("election_mode"),
            election_state: text("election_state"),
            election_term: get("election_term").and_then(Value::as_u64),
            queue_owner: get("queue_owner").and_then(Value::as_u64),
        })
    }

    /// Why tcf must not write here, if it must not: the instance is
    /// read-only (`read_only`, an election follower, the synchro queue
    /// owned elsewhere, an orphan), or Raft is on and it is not the leader,
    /// or another instance owns the synchronous queue. Each check stands on
    /// its own, so a server that folds fewer of them into `box.info.ro`
    /// (2.6 does not fold the election state) is still judged right.
    pub(crate) fn not_writable(&self) -> Option<String> {
        if self.ro {
            let why = self.ro_reason.as_deref().unwrap_or("read-only");
            return Some(format!("it is read-only ({why})"));
        }
        if self.election_mode.as_deref().is_some_and(|m| m != "off")
            && self.election_state.as_deref() != Some("leader")
        {
            return Some(format!(
                "election_mode is {} and it is the Raft {} (term {})",
                self.election_mode.as_deref().unwrap_or_default(),
                self.election_state.as_deref().unwrap_or("non-leader"),
                self.election_term.unwrap_or_default()
            ));
        }
        if let Some(owner) = self.queue_owner
            && owner != 0
            && owner != self.id
        {
            return Some(format!(
                "the synchronous queue belongs to instance id {owner}, not to this one (id {})",
                self.id
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), v.clone()))
                .collect(),
        )
    }

    const U: &str = "8d34f8ee-1dbb-4875-afaa-d7cfc78533fe";

    #[test]
    fn a_2_6_master_is_writable() {
        let i = TargetInstance::decode(&map(&[
            ("replicaset_uuid", U.into()),
            ("id", 1.into()),
            ("ro", false.into()),
        ]))
        .unwrap();
        assert_eq!(i.replicaset_uuid.to_string(), U);
        assert_eq!(i.replicaset_name, None);
        assert_eq!(i.not_writable(), None);
    }

    #[test]
    fn raft_followers_and_foreign_queues_are_not_writable() {
        // `extra` comes first: a key found there wins over the defaults.
        let base = |extra: &[(&str, Value)]| {
            let mut p = extra.to_vec();
            p.extend([
                ("replicaset_uuid", Value::from(U)),
                ("replicaset_name", Value::Nil),
                ("id", 2.into()),
                ("ro", false.into()),
            ]);
            TargetInstance::decode(&map(&p)).unwrap()
        };
        let leader = base(&[
            ("election_mode", "candidate".into()),
            ("election_state", "leader".into()),
            ("queue_owner", 2.into()),
        ]);
        assert_eq!(leader.not_writable(), None);
        let follower = base(&[
            ("election_mode", "candidate".into()),
            ("election_state", "follower".into()),
            ("election_term", 7.into()),
        ]);
        assert!(
            follower
                .not_writable()
                .is_some_and(|w| w.contains("follower") && w.contains("term 7"))
        );
        let off = base(&[
            ("election_mode", "off".into()),
            ("election_state", "follower".into()),
            ("queue_owner", 0.into()),
        ]);
        assert_eq!(off.not_writable(), None);
        let foreign = base(&[("queue_owner", 1.into())]);
        assert!(
            foreign
                .not_writable()
                .is_some_and(|w| w.contains("instance id 1"))
        );
        let ro = base(&[("ro", true.into()), ("ro_reason", "synchro".into())]);
        assert!(ro.not_writable().is_some_and(|w| w.contains("synchro")));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for v in [
            Value::Nil,
            Value::from(1),
            map(&[("replicaset_uuid", "not-a-uuid".into())]),
            map(&[("replicaset_uuid", U.into()), ("id", 1.into())]),
            map(&[
                ("replicaset_uuid", Value::Nil),
                ("id", 1.into()),
                ("ro", false.into()),
            ]),
        ] {
            assert!(TargetInstance::decode(&v).is_err(), "{v}");
        }
    }
}
