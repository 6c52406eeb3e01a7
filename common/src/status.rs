//! Per-replicaset status cells, shared by a replicator's loops (writers) and
//! its HTTP API and metrics (readers). The status type is the replicator's.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

/// One replicaset's status, shared and lockable. Clones share the cell.
#[derive(Debug, Default)]
pub struct Cell<T>(Arc<Mutex<T>>);

impl<T> Clone for Cell<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Cell<T> {
    /// Locks the status for reading or updating (a poisoned lock is taken
    /// over: a status is always safe to read).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every configured replicaset's cell, by label (fixed at start).
#[derive(Debug, Default)]
pub struct Registry<T>(BTreeMap<String, Cell<T>>);

impl<T> Clone for Registry<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Default> Registry<T> {
    /// One default cell per replicaset label.
    pub fn new<'a>(replicasets: impl Iterator<Item = &'a str>) -> Self {
        Self(
            replicasets
                .map(|r| (r.to_owned(), Cell::default()))
                .collect(),
        )
    }
}

impl<T> Registry<T> {
    /// The cell of `replicaset`, if configured.
    pub fn get(&self, replicaset: &str) -> Option<&Cell<T>> {
        self.0.get(replicaset)
    }

    /// Every cell, with its replicaset label, in label order.
    pub fn cells(&self) -> impl Iterator<Item = (&String, &Cell<T>)> {
        self.0.iter()
    }
}

impl<T: Clone> Registry<T> {
    /// A copy of every replicaset's status, each read under its own lock.
    pub fn snapshot(&self) -> BTreeMap<String, T> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.lock().clone()))
            .collect()
    }
}

/// Sets `replicaset`'s state in `cell` (`error`, when given, becomes its
/// last error) and the replicator's state gauge `gauge`
/// (`{replicaset="..."}`, the state's [`code`]).
///
/// [`code`]: tcf_api::replicator::ReplicasetState::code
pub fn set_state<T: tcf_api::replicator::Stateful>(
    cell: &Cell<T>,
    gauge: &'static str,
    replicaset: &str,
    state: tcf_api::replicator::ReplicasetState,
    error: Option<String>,
) {
    cell.lock().set_state(state, error);
    metrics::gauge!(gauge, "replicaset" => replicaset.to_owned()).set(state.code());
}
