//! [`Tarantool`]: one real `tarantool` server process owned by a test.

mod ready;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rmpv::Value;
use tcf_iproto::{ConnectOptions, Connection};

use crate::lua::{DECLARATIVE_INSTANCE, Role, declarative_config, init_script, with_credentials};
use crate::options::TarantoolOptions;
use crate::ports::{PortLease, is_addr_in_use_log};
use crate::process::{ServerProcess, WorkDir, log_tail};
use crate::value::first;
use crate::vclock::{VCLOCK_LUA, Vclock, parse_vclock};
use crate::{ADMIN_PASSWORD, ADMIN_USER, Signal};

/// Name of the log file (the server's stdout and stderr) in the work directory.
pub const TARANTOOL_LOG: &str = "tarantool.log";

/// See [`Tarantool::make_master`].
const MAKE_MASTER_LUA: &str = r"
box.cfg{read_only = false}
local synchro = box.info.synchro
if type(synchro) == 'table' and type(synchro.queue) == 'table' and synchro.queue.owner ~= nil
        and synchro.queue.owner ~= 0 and synchro.queue.owner ~= box.info.id then
    box.ctl.promote()
end
box.ctl.wait_rw(10)
return box.info.ro
";

/// Name of a declarative instance's YAML config in the work directory.
pub const CONFIG_YAML: &str = "config.yaml";

/// How many times a first start is retried on a fresh port when the log says
/// the port was taken.
const PORT_RETRIES: usize = 5;

/// One Tarantool instance running as a child process of the test.
///
/// It listens on `127.0.0.1:<port>` (a [`PortLease`] held for its whole
/// life), keeps its data and `tarantool.log` in its own temporary directory,
/// and runs the generated `init.lua` there. Dropping it stops the process
/// (`SIGTERM`, then `SIGKILL`) and deletes the directory, unless the thread is
/// panicking: then the directory is kept and the log tail printed.
///
/// All methods take `&self`, so instances borrowed from a [`crate::Replicaset`]
/// can be stopped and restarted.
#[derive(Debug)]
pub struct Tarantool {
    // Field order is drop order: connection, process, port, then directory.
    admin_conn: tokio::sync::Mutex<Option<Connection>>,
    process: Mutex<Option<Arc<ServerProcess>>>,
    port: PortLease,
    dir: WorkDir,
    label: String,
    role: Role,
    start_deadline: Duration,
    binary: PathBuf,
    /// For an instance started from a declarative config: its YAML without
    /// the `credentials:` section.
    declarative: Option<String>,
}

impl Tarantool {
    /// Starts a standalone instance (a master without replicas) from `opts`
    /// and waits until it is ready (see [`Tarantool::wait_ready`]).
    pub async fn start(opts: TarantoolOptions) -> anyhow::Result<Tarantool> {
        let label = format!("{}-master", opts.name);
        Tarantool::launch(&opts, label, Role::Master).await
    }

    /// Starts an instance with `role`, retrying on a fresh port if the chosen
    /// one turns out to be taken.
    pub(crate) async fn launch(
        opts: &TarantoolOptions,
        label: String,
        role: Role,
    ) -> anyhow::Result<Tarantool> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = PortLease::allocate()?;
            let dir = WorkDir::new(&label, &[TARANTOOL_LOG])?;
            let script = init_script(opts, &role, &label, port.port());
            let init = dir.path().join("init.lua");
            std::fs::write(&init, script).context("writing init.lua")?;
            let declarative = match &opts.declarative {
                None => None,
                Some(d) => {
                    anyhow::ensure!(
                        role == Role::Master && opts.replicas == 0,
                        "a declarative instance runs alone (no replicas)"
                    );
                    anyhow::ensure!(
                        crate::binary::supports_declarative_config(&opts.binary)?,
                        "{} does not start from a declarative config (no --config)",
                        opts.binary.display()
                    );
                    let base = declarative_config(opts, port.port(), &init.to_string_lossy());
                    std::fs::write(
                        dir.path().join(CONFIG_YAML),
                        with_credentials(&base, &d.credentials),
                    )
                    .context("writing config.yaml")?;
                    Some(base)
                }
            };
            let t = Tarantool {
                declarative,
                binary: opts.binary.clone(),
                admin_conn: tokio::sync::Mutex::new(None),
                process: Mutex::new(None),
                port,
                dir,
                label: label.clone(),
                role: role.clone(),
                start_deadline: opts.start_deadline,
            };
            t.spawn()?;
            match t.wait_ready().await {
                Ok(()) => {
                    tracing::info!(label, uri = t.uri(), pid = t.pid(), "tarantool ready");
                    return Ok(t);
                }
                Err(e) => {
                    let log = std::fs::read_to_string(t.log_path()).unwrap_or_default();
                    if is_addr_in_use_log(&log) && attempt < PORT_RETRIES {
                        tracing::warn!(label, port = t.port(), "port taken; retrying on another");
                        continue;
                    }
                    let tail = t.log_tail(40);
                    return Err(e.context(format!(
                        "starting tarantool {label} on {}; last lines of its log:\n{tail}",
                        t.uri()
                    )));
                }
            }
        }
    }

    fn spawn(&self) -> anyhow::Result<()> {
        let mut cmd = std::process::Command::new(&self.binary);
        if self.declarative.is_some() {
            cmd.args(["--config", CONFIG_YAML, "--name", DECLARATIVE_INSTANCE]);
        } else {
            cmd.arg("init.lua");
        }
        cmd.current_dir(self.dir.path());
        let p = ServerProcess::spawn(cmd, &self.log_path())
            .with_context(|| format!("spawning tarantool for {}", self.label))?;
        *self.lock_process() = Some(Arc::new(p));
        Ok(())
    }

    fn lock_process(&self) -> std::sync::MutexGuard<'_, Option<Arc<ServerProcess>>> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current_process(&self) -> Option<Arc<ServerProcess>> {
        self.lock_process().clone()
    }

    /// The label (`<replicaset>-master`, `<replicaset>-replica-<n>`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// True for a master (writable, bootstraps the schema).
    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }

    /// `127.0.0.1:<port>`: the address to connect to.
    pub fn uri(&self) -> String {
        format!("127.0.0.1:{}", self.port.port())
    }

    /// The listen port (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// PID of the current (or, once stopped, the last) server process.
    pub fn pid(&self) -> u32 {
        self.current_process().map_or(0, |p| p.pid())
    }

    /// The work directory (data files, `init.lua`, the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of `tarantool.log` (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(TARANTOOL_LOG)
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path(), n)
    }

    /// True while the server process has not exited.
    pub fn is_running(&self) -> bool {
        self.current_process().is_some_and(|p| p.is_running())
    }

    /// A new connection authenticated as `user` (`password`).
    pub async fn connect(&self, user: &str, password: &str) -> anyhow::Result<Connection> {
        let opts = ConnectOptions::new()
            .credentials(user, password)
            .connect_timeout(Duration::from_secs(5))
            .request_timeout(Duration::from_secs(60));
        Connection::connect(&self.uri(), &opts)
            .await
            .with_context(|| format!("connecting to {} ({}) as {user}", self.label, self.uri()))
    }

    /// A new connection as the harness admin ([`ADMIN_USER`], role `super`).
    pub async fn admin(&self) -> anyhow::Result<Connection> {
        self.connect(ADMIN_USER, ADMIN_PASSWORD).await
    }

    /// The cached admin connection, reconnecting if it is missing or broken.
    async fn admin_cached(&self) -> anyhow::Result<Connection> {
        let mut guard = self.admin_conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = self.admin().await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `lua` as the harness admin (IPROTO_EVAL) and returns the DATA
    /// array (all returned values, as an `rmpv::Value::Array`).
    pub async fn eval(&self, lua: &str, args: &[Value]) -> anyhow::Result<Value> {
        let conn = self.admin_cached().await?;
        conn.eval(lua, args)
            .await
            .with_context(|| format!("eval on {}: {}", self.label, lua.trim()))
    }

    /// Like [`Tarantool::eval`], returning only the first value (`Nil` if none).
    pub async fn eval1(&self, lua: &str, args: &[Value]) -> anyhow::Result<Value> {
        Ok(first(self.eval(lua, args).await?))
    }

    /// `box.info.vclock` without component 0 (local rows).
    pub async fn vclock(&self) -> anyhow::Result<Vclock> {
        let v = self.eval1(VCLOCK_LUA, &[]).await?;
        parse_vclock(&v)
    }

    /// Sends `sig` to the server process by PID (e.g. `SIGKILL`, `SIGSTOP`,
    /// `SIGCONT`). Fails if the process has exited.
    pub fn kill(&self, sig: Signal) -> anyhow::Result<()> {
        let p = self
            .current_process()
            .context("tarantool was never started")?;
        p.signal(sig)
    }

    /// Stops the server: `SIGTERM`, then `SIGKILL` if it has not exited within
    /// [`crate::STOP_GRACE`]. Returns once the process is reaped. A
    /// no-op if it is not running. Data stay in [`Tarantool::dir`].
    pub async fn stop(&self) -> anyhow::Result<()> {
        *self.admin_conn.lock().await = None;
        if let Some(p) = self.current_process() {
            p.stop().await?;
        }
        Ok(())
    }

    /// Makes this instance its replicaset's writable master (e.g. a replica
    /// after its master died): `read_only = false` and, where the server
    /// has a synchronous queue owned by another instance (2.10+), claims it
    /// with `box.ctl.promote()`: until then the instance stays read-only.
    /// Waits (10 s) until it is writable; returns `box.info.ro` (false).
    pub async fn make_master(&self) -> anyhow::Result<Value> {
        self.eval1(MAKE_MASTER_LUA, &[])
            .await
            .with_context(|| format!("making {} the master", self.label))
    }

    /// The binary this instance runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// For an instance started from a declarative config
    /// ([`TarantoolOptions::declarative`]): writes its config again with
    /// `credentials` as the body of the `credentials:` section and calls
    /// `config:reload()`. Returns `config:info()` after the reload (`status`,
    /// `alerts`), whatever the status; fails if the reload raised.
    pub async fn reload_config(&self, credentials: &str) -> anyhow::Result<Value> {
        let base = self
            .declarative
            .as_ref()
            .with_context(|| format!("{} was not started from a config", self.label))?;
        std::fs::write(
            self.dir.path().join(CONFIG_YAML),
            with_credentials(base, credentials),
        )
        .context("writing config.yaml")?;
        self.eval1(
            "local config = require('config') config:reload() return config:info()",
            &[],
        )
        .await
    }

    /// Stops the server (if running) and starts it again on the same port with
    /// the same directory and data, then waits for [`Tarantool::wait_ready`].
    /// A replica's readiness needs its master to be up.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn()?;
        self.wait_ready().await.with_context(|| {
            format!(
                "restarting {}; log tail:\n{}",
                self.label,
                self.log_tail(40)
            )
        })
    }
}
