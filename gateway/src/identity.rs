//! The gateway's identity towards a source replicaset.
//!
//! A gateway subscribes to each source replicaset under one **stable**
//! instance UUID, derived from its alias, the source cluster and the
//! replicaset label (a name-based UUID, version 5). On Tarantool 3.3+ a
//! source keeps a persistent WAL GC consumer for every anonymous replica
//! UUID it has seen (`_gc_consumers`, until `replication_anon_ttl` after the
//! last disconnect): a fresh UUID per connection would leave one pinned
//! consumer behind per reconnect; a stable one reuses its consumer, and
//! `POST /api/v1/release` can find it again when the gateway is retired.

use sha1::{Digest, Sha1};
use uuid::{Builder, Uuid};

/// The namespace of tcf's name-based UUIDs (random, fixed forever).
const NAMESPACE: Uuid = Uuid::from_u128(0x7c3e_51f0_8a1d_4b6e_9f02_d5a4_c8e1_3b79);

/// The instance UUID a gateway called `alias` uses towards replicaset
/// `replicaset` of cluster `cluster`: the same on every connection and
/// after restarts, different for every (alias, cluster, replicaset).
pub fn subscriber_uuid(alias: &str, cluster: &str, replicaset: &str) -> Uuid {
    let mut h = Sha1::new();
    h.update(NAMESPACE.as_bytes());
    // Length-prefixed parts: ("a", "bc") and ("ab", "c") differ.
    for part in [alias, cluster, replicaset] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest: [u8; 20] = h.finalize().into();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
    Builder::from_sha1_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct() {
        let a = subscriber_uuid("gw-a", "A", "rs1");
        assert_eq!(a, subscriber_uuid("gw-a", "A", "rs1"));
        assert_eq!(a.get_version_num(), 5);
        assert!(!a.is_nil());
        assert_ne!(a, subscriber_uuid("gw-b", "A", "rs1"));
        assert_ne!(a, subscriber_uuid("gw-a", "A", "rs2"));
        assert_ne!(
            subscriber_uuid("a", "bc", "x"),
            subscriber_uuid("ab", "c", "x")
        );
    }
}
