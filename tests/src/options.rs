//! [`TarantoolOptions`]: how to configure a Tarantool instance or replicaset.

use std::path::PathBuf;
use std::time::Duration;

use crate::binary::{Side, tarantool_binary, tarantool_binary_for};
use crate::replicaset::Replicaset;
use crate::schema::SpaceSpec;
use crate::tarantool::Tarantool;
use crate::users::UserSpec;

/// Configuration of a replicaset (or of a single instance), built by chaining.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use tcf_tests::{SpaceSpec, TarantoolOptions};
/// let rs = TarantoolOptions::new("rs1")
///     .replicas(1)
///     .space(SpaceSpec::new("test"))
///     .start_replicaset()
///     .await?;
/// rs.master().eval("box.space.test:insert{1}", &[]).await?;
/// rs.wait_replicas_caught_up().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TarantoolOptions {
    /// Replicaset name: a label for directories and logs (not a Tarantool setting).
    pub name: String,
    /// Number of read-only replicas next to the master (used by
    /// [`Replicaset::start`]; a single [`Tarantool`] ignores it). Default 0.
    pub replicas: usize,
    /// Spaces created on the master at bootstrap.
    pub spaces: Vec<SpaceSpec>,
    /// Users created on the master at bootstrap (after the spaces).
    pub users: Vec<UserSpec>,
    /// `box.cfg.replication_timeout`. Default 1 s.
    pub replication_timeout: Duration,
    /// `box.cfg.checkpoint_count`. Default 2.
    pub checkpoint_count: u32,
    /// `box.cfg.memtx_memory` in bytes. Default 128 MiB.
    pub memtx_memory: u64,
    /// `box.cfg.replication_synchro_quorum`; `None` keeps Tarantool's default.
    pub replication_synchro_quorum: Option<u32>,
    /// `box.cfg.replication_synchro_timeout`; `None` keeps Tarantool's default.
    pub replication_synchro_timeout: Option<Duration>,
    /// Extra `box.cfg` entries: `(key, raw Lua value)`, e.g. `("wal_mode", "'write'")`.
    pub box_cfg: Vec<(String, String)>,
    /// Lua run inside the master's `box.once` bootstrap, after spaces and users.
    pub bootstrap_lua: Vec<String>,
    /// Lua appended to the init script of every instance (after `box.cfg` and
    /// the bootstrap). Replicas are read-only: no DDL or DML here for them.
    pub extra_lua: Vec<String>,
    /// How long starting (and restarting) an instance may take. Default 60 s.
    pub start_deadline: Duration,
    /// The `tarantool` binary. Default: [`tarantool_binary`] (`TCF_TARANTOOL`);
    /// see [`crate::binary`] for the per-side variables.
    pub binary: PathBuf,
    /// Start from a declarative YAML config (`tarantool --config`, 3.x)
    /// instead of an init script calling `box.cfg`: see
    /// [`TarantoolOptions::declarative`]. `None` (default): `box.cfg`.
    pub declarative: Option<Declarative>,
}

/// How an instance started from a declarative config (`tarantool --config
/// config.yaml --name <label>`) is configured.
///
/// The harness writes `iproto.listen`, `memtx.memory`, `replication.timeout`,
/// `snapshot.count` and an `app.file` (the generated script without
/// `box.cfg`: the watchdog, the `box.once` bootstrap with the spaces and
/// [`TarantoolOptions::users`], the extra Lua) and this `credentials:`
/// section. Only a single instance: a replicaset of declarative instances is
/// not supported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declarative {
    /// The body of the config's `credentials:` section, YAML indented by two
    /// spaces (e.g. `"  users:\n    app:\n      password: x\n"`); empty: no
    /// `credentials:` section.
    pub credentials: String,
}

impl TarantoolOptions {
    /// Defaults as documented on each field; `name` labels the replicaset.
    pub fn new(name: impl Into<String>) -> TarantoolOptions {
        TarantoolOptions {
            name: name.into(),
            replicas: 0,
            spaces: Vec::new(),
            users: Vec::new(),
            replication_timeout: Duration::from_secs(1),
            checkpoint_count: 2,
            memtx_memory: 128 * 1024 * 1024,
            replication_synchro_quorum: None,
            replication_synchro_timeout: None,
            box_cfg: Vec::new(),
            bootstrap_lua: Vec::new(),
            extra_lua: Vec::new(),
            start_deadline: crate::wait::DEFAULT_DEADLINE,
            binary: tarantool_binary(),
            declarative: None,
        }
    }

    /// Runs `binary` instead of [`tarantool_binary`].
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = binary.into();
        self
    }

    /// Runs the binary of `side` ([`tarantool_binary_for`]).
    pub fn side(self, side: Side) -> Self {
        self.binary(tarantool_binary_for(side))
    }

    /// Starts from a declarative config with this `credentials:` body (see
    /// [`Declarative`]); needs a binary that supports it
    /// ([`crate::binary::supports_declarative_config`]).
    pub fn declarative(mut self, credentials: impl Into<String>) -> Self {
        self.declarative = Some(Declarative {
            credentials: credentials.into(),
        });
        self
    }

    /// Sets the number of read-only replicas.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Adds a space.
    pub fn space(mut self, space: SpaceSpec) -> Self {
        self.spaces.push(space);
        self
    }

    /// Adds a user.
    pub fn user(mut self, user: UserSpec) -> Self {
        self.users.push(user);
        self
    }

    /// Sets `replication_timeout`.
    pub fn replication_timeout(mut self, t: Duration) -> Self {
        self.replication_timeout = t;
        self
    }

    /// Sets `checkpoint_count`.
    pub fn checkpoint_count(mut self, n: u32) -> Self {
        self.checkpoint_count = n;
        self
    }

    /// Sets `memtx_memory` in bytes.
    pub fn memtx_memory(mut self, bytes: u64) -> Self {
        self.memtx_memory = bytes;
        self
    }

    /// Sets `replication_synchro_quorum`.
    pub fn synchro_quorum(mut self, quorum: u32) -> Self {
        self.replication_synchro_quorum = Some(quorum);
        self
    }

    /// Sets `replication_synchro_timeout`.
    pub fn synchro_timeout(mut self, t: Duration) -> Self {
        self.replication_synchro_timeout = Some(t);
        self
    }

    /// Adds a raw `box.cfg` entry; `value` is Lua source (quote strings yourself).
    pub fn cfg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.box_cfg.push((key.into(), value.into()));
        self
    }

    /// Adds Lua to the master's `box.once` bootstrap.
    pub fn bootstrap_lua(mut self, lua: impl Into<String>) -> Self {
        self.bootstrap_lua.push(lua.into());
        self
    }

    /// Appends Lua to every instance's init script.
    pub fn lua(mut self, lua: impl Into<String>) -> Self {
        self.extra_lua.push(lua.into());
        self
    }

    /// Sets the deadline for starting or restarting one instance.
    pub fn start_deadline(mut self, d: Duration) -> Self {
        self.start_deadline = d;
        self
    }

    /// Starts a master and `self.replicas` replicas: see [`Replicaset::start`].
    pub async fn start_replicaset(self) -> anyhow::Result<Replicaset> {
        Replicaset::start(self).await
    }

    /// Starts one standalone (master) instance: see [`Tarantool::start`].
    pub async fn start_single(self) -> anyhow::Result<Tarantool> {
        Tarantool::start(self).await
    }
}
