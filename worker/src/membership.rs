//! Which replicaset each instance of this cluster belongs to, as last seen
//! by the health probe and recorded in etcd (`members/<cluster>`): an
//! instance that does not answer still counts against its replicaset, also
//! after a worker restarted while a whole replicaset is down.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard, PoisonError},
};

use crate::store::Store;

/// The instances' replicasets (instance URI → replicaset UUID).
#[derive(Debug, Default)]
pub(crate) struct Membership(Mutex<HashMap<String, String>>);

impl Membership {
    /// Adds the map recorded in etcd for `cluster`; a failure is logged and
    /// leaves the map as it is (the probe learns it again).
    pub(crate) async fn load(&self, store: &Store, cluster: &str) {
        match store.members(cluster).await {
            Ok(m) => self.lock().extend(m),
            Err(e) => {
                tracing::warn!(%cluster, "cannot read the recorded replicaset membership: {e}")
            }
        }
    }

    /// Records what the instances that answered said (`(uri, replicaset)`);
    /// the whole map when anything changed, to be [`Membership::save`]d.
    pub(crate) fn learn<'a>(
        &self,
        seen: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<BTreeMap<String, String>> {
        let mut m = self.lock();
        let mut changed = false;
        for (uri, rs) in seen {
            changed |= m.insert(uri.to_owned(), rs.to_owned()).as_deref() != Some(rs);
        }
        changed.then(|| m.iter().map(|(u, r)| (u.clone(), r.clone())).collect())
    }

    /// The replicaset `uri` was last seen in.
    pub(crate) fn replicaset_of(&self, uri: &str) -> Option<String> {
        self.lock().get(uri).cloned()
    }

    /// Records `members` in etcd for `cluster`; a failure is logged (the
    /// next change records it again).
    pub(crate) async fn save(store: &Store, cluster: &str, members: &BTreeMap<String, String>) {
        if let Err(e) = store.put_members(cluster, members).await {
            tracing::warn!(%cluster, "cannot record the replicaset membership: {e}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_membership_asks_to_record_it() {
        let m = Membership::default();
        let first = m.learn([("a:1", "rs1"), ("a:2", "rs1")]);
        assert_eq!(first.map(|x| x.len()), Some(2));
        assert_eq!(m.learn([("a:1", "rs1")]), None);
        let moved = m.learn([("a:2", "rs2")]);
        assert_eq!(
            moved.and_then(|x| x.get("a:2").cloned()).as_deref(),
            Some("rs2")
        );
        assert_eq!(m.replicaset_of("a:1").as_deref(), Some("rs1"));
        assert_eq!(m.replicaset_of("a:3"), None);
    }
}
