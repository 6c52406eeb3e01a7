//! [`Replicaset`]: a master and read-only replicas replicating from it.

use std::time::Duration;

use anyhow::Context;

use crate::lua::{Role, lua_str};
use crate::options::TarantoolOptions;
use crate::tarantool::Tarantool;
use crate::wait::{DEFAULT_DEADLINE, Outcome, wait_until};
use crate::{ADMIN_PASSWORD, ADMIN_USER};

/// A Tarantool replicaset: one writable master (replica id 1, which
/// bootstraps users and spaces in `box.once`) and `N` read-only replicas,
/// each with `replication = {master, the replicas started before it}`
/// (2.11+ refuses a joining replica not connected to every member).
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
                peers: replicas.iter().map(Tarantool::uri).collect(),
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

    /// Whether the server has Raft (`box.info.election`, 2.6.1+).
    pub async fn has_election(&self) -> anyhow::Result<bool> {
        let v = self
            .master
            .eval1("return box.info.election ~= nil", &[])
            .await?;
        Ok(v.as_bool() == Some(true))
    }

    /// Turns the replicaset into a Raft-managed one: every instance
    /// replicates from every other (full mesh, as the harness admin),
    /// `read_only = false`, `election_mode = 'candidate'` with
    /// `election_timeout` 1 s, and `replication_synchro_quorum` a majority.
    /// From then on only the elected leader is writable (the others are
    /// election followers); it claims the synchronous queue. Returns the
    /// index ([`Replicaset::instance`]) of the first leader. Needs
    /// [`Replicaset::has_election`]. A restarted instance comes back with
    /// its original `box.cfg`.
    pub async fn enable_election(&self) -> anyhow::Result<usize> {
        let uris: Vec<String> = self
            .uris()
            .iter()
            .map(|u| lua_str(&format!("{ADMIN_USER}:{ADMIN_PASSWORD}@{u}")))
            .collect();
        let instances = self.replicas.len() + 1;
        let quorum = instances / 2 + 1;
        let mesh = format!(
            "box.cfg{{replication = {{{}}}, replication_synchro_quorum = {quorum}, read_only = false}}",
            uris.join(", ")
        );
        for t in self.instances() {
            t.eval(&mesh, &[]).await.context("full mesh")?;
        }
        for t in self.instances() {
            t.eval(
                "box.cfg{election_timeout = 1, election_mode = 'candidate'}",
                &[],
            )
            .await
            .context("election_mode = candidate")?;
        }
        self.wait_leader(None).await
    }

    /// Waits until exactly one instance (other than `except`, e.g. a killed
    /// leader) is the Raft leader and writable; returns its index.
    pub async fn wait_leader(&self, except: Option<usize>) -> anyhow::Result<usize> {
        let what = format!("a Raft leader in replicaset {}", self.name);
        wait_until(&what, DEFAULT_DEADLINE, || async {
            let mut leaders = Vec::new();
            let mut states = Vec::new();
            for (i, t) in self.instances().enumerate() {
                if Some(i) == except {
                    continue;
                }
                match t
                    .eval(
                        "return box.info.election.state, box.info.ro, box.info.election.term",
                        &[],
                    )
                    .await
                {
                    Ok(v) => {
                        let a = v.as_array().cloned().unwrap_or_default();
                        let state = a.first().and_then(|s| s.as_str()).unwrap_or("?").to_owned();
                        let ro = a.get(1).and_then(|r| r.as_bool()).unwrap_or(true);
                        if state == "leader" && !ro {
                            leaders.push(i);
                        }
                        states.push(format!("{i}: {state} ro={ro}"));
                    }
                    Err(e) => states.push(format!("{i}: {e:#}")),
                }
            }
            match leaders.as_slice() {
                [one] => Outcome::Ready(*one),
                _ => Outcome::Pending(states.join(", ")),
            }
        })
        .await
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
