//! The federation's state in etcd (schema in `docs/state.md`).
//!
//! * `PREFIX/FED/state`: both clusters' statuses and the term. Changed only
//!   by a transaction that compares its previous revision, so the store never
//!   holds two actives and the term grows by exactly one per switch.
//! * `PREFIX/FED/switch`: the switch in progress (or the last one): the only
//!   source of truth for a switch, so any worker can finish or roll it back.
//! * `PREFIX/FED/history/<unix ms>-<outcome>`: one entry per switch outcome.

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::Serialize;

pub use tcf_api::worker::{
    FedState, HistoryEntry, HistoryOutcome, Phase, SwitchKind, SwitchRecord,
};

/// An etcd failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd did not answer or refused.
    #[error("etcd at {endpoints}: {}", cause_chain(source))]
    Etcd {
        /// The endpoints asked (comma-separated).
        endpoints: String,
        /// Why.
        #[source]
        source: etcd_client::Error,
    },
    /// A stored value is not what this version writes.
    #[error("malformed value at {key}")]
    Malformed {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A value with the revision it was read at (0: absent).
pub type Versioned<T> = (Option<T>, i64);

/// The federation's keys.
#[derive(Clone)]
pub struct Store {
    client: Client,
    endpoints: String,
    state_key: String,
    switch_key: String,
    history_prefix: String,
    members_prefix: String,
    alive_prefix: String,
}

impl Store {
    /// Connects to `endpoints`; `key(name)` maps names into the key space;
    /// every request fails after `timeout`.
    pub async fn connect(
        endpoints: &[String],
        key: impl Fn(&str) -> String,
        timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let joined = endpoints.join(",");
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|source| StoreError::Etcd {
                endpoints: joined.clone(),
                source,
            })?;
        Ok(Self {
            client,
            endpoints: joined,
            state_key: key("state"),
            switch_key: key("switch"),
            history_prefix: key("history/"),
            members_prefix: key("members/"),
            alive_prefix: key("alive/"),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Versioned<T>, StoreError> {
        let mut c = self.client.clone();
        let resp = c.get(key, None).await.map_err(|e| self.etcd(e))?;
        decode(
            key,
            resp.kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
        )
    }

    /// The state and the switch record, read in one transaction (one
    /// consistent revision), each with its revision.
    pub async fn snapshot(
        &self,
    ) -> Result<(Versioned<FedState>, Versioned<SwitchRecord>), StoreError> {
        let txn = Txn::new().and_then(vec![
            TxnOp::get(self.state_key.as_str(), None),
            TxnOp::get(self.switch_key.as_str(), None),
        ]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await.map_err(|e| self.etcd(e))?;
        let mut kvs = resp.op_responses().into_iter().map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
            _ => None,
        });
        let state = decode(&self.state_key, kvs.next().flatten())?;
        let switch = decode(&self.switch_key, kvs.next().flatten())?;
        Ok((state, switch))
    }

    /// The state and its revision.
    pub async fn state(&self) -> Result<Versioned<FedState>, StoreError> {
        self.get(&self.state_key).await
    }

    /// The switch record and its revision.
    pub async fn switch(&self) -> Result<Versioned<SwitchRecord>, StoreError> {
        self.get(&self.switch_key).await
    }

    /// Writes the bootstrap state only if no state exists; returns whether written.
    pub async fn bootstrap(&self, state: &FedState) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                self.state_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(self.state_key.as_str(), json(state), None)]);
        let mut c = self.client.clone();
        Ok(c.txn(txn).await.map_err(|e| self.etcd(e))?.succeeded())
    }

    /// Creates or replaces the switch record if the state and the record are
    /// still at the revisions read (`0` = absent) and, with `leader`, this
    /// worker still holds that election key. Returns the record's new
    /// revision, or `None` when a comparison failed.
    pub async fn put_switch(
        &self,
        state_rev: i64,
        switch_rev: i64,
        rec: &SwitchRecord,
        leader: Option<(&[u8], i64)>,
    ) -> Result<Option<i64>, StoreError> {
        let mut when = vec![
            Compare::mod_revision(self.state_key.as_str(), CompareOp::Equal, state_rev),
            Compare::mod_revision(self.switch_key.as_str(), CompareOp::Equal, switch_rev),
        ];
        if let Some((key, rev)) = leader {
            when.push(Compare::create_revision(key, CompareOp::Equal, rev));
        }
        let txn = Txn::new().when(when).and_then(vec![TxnOp::put(
            self.switch_key.as_str(),
            json(rec),
            None,
        )]);
        let mut c = self.client.clone();
        let resp = c.txn(txn).await.map_err(|e| self.etcd(e))?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// Flips the state and closes the switch in one transaction, if neither
    /// changed since read (and, with `leader`, this worker still holds the
    /// election key `(key, create revision)`); appends the history entry.
    pub async fn flip(
        &self,
        state_rev: i64,
        new_state: &FedState,
        switch_rev: i64,
        done: &SwitchRecord,
        entry: &HistoryEntry,
        leader: Option<(&[u8], i64)>,
    ) -> Result<bool, StoreError> {
        let mut when = vec![
            Compare::mod_revision(self.state_key.as_str(), CompareOp::Equal, state_rev),
            Compare::mod_revision(self.switch_key.as_str(), CompareOp::Equal, switch_rev),
        ];
        if let Some((key, rev)) = leader {
            when.push(Compare::create_revision(key, CompareOp::Equal, rev));
        }
        let txn = Txn::new().when(when).and_then(vec![
            TxnOp::put(self.state_key.as_str(), json(new_state), None),
            TxnOp::put(self.switch_key.as_str(), json(done), None),
            TxnOp::put(self.history_key(entry), json(entry), None),
        ]);
        let mut c = self.client.clone();
        Ok(c.txn(txn).await.map_err(|e| self.etcd(e))?.succeeded())
    }

    /// Closes the switch as rolled back (state unchanged), with history.
    pub async fn roll_back(
        &self,
        switch_rev: i64,
        rec: &SwitchRecord,
        entry: &HistoryEntry,
    ) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                self.switch_key.as_str(),
                CompareOp::Equal,
                switch_rev,
            )])
            .and_then(vec![
                TxnOp::put(self.switch_key.as_str(), json(rec), None),
                TxnOp::put(self.history_key(entry), json(entry), None),
            ]);
        let mut c = self.client.clone();
        Ok(c.txn(txn).await.map_err(|e| self.etcd(e))?.succeeded())
    }

    /// Replaces the state if it is still at `state_rev`, with a history entry.
    pub async fn set_state(
        &self,
        state_rev: i64,
        new_state: &FedState,
        entry: &HistoryEntry,
    ) -> Result<bool, StoreError> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                self.state_key.as_str(),
                CompareOp::Equal,
                state_rev,
            )])
            .and_then(vec![
                TxnOp::put(self.state_key.as_str(), json(new_state), None),
                TxnOp::put(self.history_key(entry), json(entry), None),
            ]);
        let mut c = self.client.clone();
        Ok(c.txn(txn).await.map_err(|e| self.etcd(e))?.succeeded())
    }

    /// Which replicaset (UUID) each instance of `cluster` belongs to, as
    /// last recorded by any of its workers.
    pub async fn members(&self, cluster: &str) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self
            .get(&format!("{}{cluster}", self.members_prefix))
            .await?
            .0
            .unwrap_or_default())
    }

    /// Records `cluster`'s instance -> replicaset map (last writer wins: the
    /// map only grows with what a worker saw, and a replicaset UUID never
    /// changes).
    pub async fn put_members(
        &self,
        cluster: &str,
        members: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        c.put(
            format!("{}{cluster}", self.members_prefix),
            json(members),
            None,
        )
        .await
        .map_err(|e| self.etcd(e))?;
        Ok(())
    }

    fn etcd(&self, source: etcd_client::Error) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    /// The presence key of worker `id` of `cluster`: present while the
    /// worker keeps its etcd lease alive (see `crate::election`).
    pub fn presence_key(&self, cluster: &str, id: &str) -> String {
        format!("{}{cluster}/{id}", self.alive_prefix)
    }

    /// The ids of `cluster`'s workers whose lease is alive: they reach etcd,
    /// so they fence their cluster when told (none: its workers are dead or
    /// cut off, and fence it themselves after `fencing_timeout`).
    pub async fn live_workers(&self, cluster: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.client.clone();
        let resp = c
            .get(
                format!("{}{cluster}/", self.alive_prefix),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.etcd(e))?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect())
    }

    /// The client (for the election's leader lookup).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn history_key(&self, e: &HistoryEntry) -> String {
        format!(
            "{}{:020}-{}",
            self.history_prefix,
            e.at_ms,
            e.outcome.as_str()
        )
    }

    /// The newest `limit` history entries, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut c = self.client.clone();
        let resp = c
            .get(
                self.history_prefix.as_str(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.etcd(e))?;
        let mut out: Vec<HistoryEntry> = resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        out.truncate(limit);
        Ok(out)
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    kv: Option<(Vec<u8>, i64)>,
) -> Result<Versioned<T>, StoreError> {
    match kv {
        None => Ok((None, 0)),
        Some((value, rev)) => {
            let v = serde_json::from_slice(&value).map_err(|source| StoreError::Malformed {
                key: key.to_owned(),
                source,
            })?;
            Ok((Some(v), rev))
        }
    }
}

/// `e` and each of its sources, joined by ": " (etcd's own messages are
/// terse; the transport cause is in the chain).
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
