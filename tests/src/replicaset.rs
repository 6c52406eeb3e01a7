//! [`Replicaset`]: a master and read-only replicas replicating from it.

use std::time::Duration;

use anyhow::Context;

use crate::lua::Role;
use crate::options::TarantoolOptions;
use crate::tarantool::Tarantool;
use crate::wait::DEFAULT_DEADLINE;

/// A Tarantool replicaset: one writable master (replica id 1, which
/// bootstraps users and spaces in `box.once`) and `N` read-only replicas,
/// each with `replication = {master}`.
///
/// Replicas are started one after another once the master is ready, and each
/// is ready only when it follows the master and has caught up with it.
/// Dropping the replicaset stops the replicas first, then the master.
#[derive(Debug)]
pub struct Replicaset {
    // Field order is drop order: replicas before the master.
    replicas: Vec<Tarantool>,
    master: Tarantool,
    name: String,
}

impl Replicaset {
    /// Starts the master, then `opts.replicas` replicas, and waits until all
    /// are ready (see [`Tarantool::wait_ready`]).
    pub async fn start(opts: TarantoolOptions) -> anyhow::Result<Replicaset> {
        let master =
            Tarantool::launch(&opts, format!("{}-master", opts.name), Role::Master).await?;
        let mut replicas = Vec::with_capacity(opts.replicas);
        for i in 1..=opts.replicas {
            let role = Role::Replica {
                master_uri: master.uri(),
            };
            let label = format!("{}-replica-{i}", opts.name);
            let replica = Tarantool::launch(&opts, label, role)
                .await
                .with_context(|| format!("starting replica {i} of replicaset {}", opts.name))?;
            replicas.push(replica);
        }
        tracing::info!(
            name = opts.name,
            master = master.uri(),
            replicas = replicas.len(),
            "replicaset ready"
        );
        Ok(Replicaset {
            replicas,
            master,
            name: opts.name,
        })
    }

    /// The replicaset's name (from [`TarantoolOptions::name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The master.
    pub fn master(&self) -> &Tarantool {
        &self.master
    }

    /// The replicas, in start order.
    pub fn replicas(&self) -> &[Tarantool] {
        &self.replicas
    }

    /// Instance `i`: 0 is the master, `1..=N` the replicas. Panics if out of range.
    pub fn instance(&self, i: usize) -> &Tarantool {
        if i == 0 {
            return &self.master;
        }
        match self.replicas.get(i - 1) {
            Some(r) => r,
            None => panic!(
                "replicaset {} has no instance {i} (it has {} replicas)",
                self.name,
                self.replicas.len()
            ),
        }
    }

    /// All instances, master first.
    pub fn instances(&self) -> impl Iterator<Item = &Tarantool> {
        std::iter::once(&self.master).chain(self.replicas.iter())
    }

    /// `host:port` of every instance, master first.
    pub fn uris(&self) -> Vec<String> {
        self.instances().map(Tarantool::uri).collect()
    }

    /// Waits (up to [`DEFAULT_DEADLINE`]) until every replica's vclock is at
    /// least the master's vclock as read when this is called.
    pub async fn wait_replicas_caught_up(&self) -> anyhow::Result<()> {
        self.wait_replicas_caught_up_within(DEFAULT_DEADLINE).await
    }

    /// [`Replicaset::wait_replicas_caught_up`] with an explicit deadline
    /// (shared by all replicas).
    pub async fn wait_replicas_caught_up_within(&self, deadline: Duration) -> anyhow::Result<()> {
        let target = self
            .master
            .vclock()
            .await
            .context("reading the master's vclock")?;
        let end = tokio::time::Instant::now() + deadline;
        for r in &self.replicas {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            r.wait_vclock(&target, left).await?;
        }
        Ok(())
    }
}
