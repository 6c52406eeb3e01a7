//! [`Etcd`]: a real single-member `etcd` server owned by a test.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::Signal;
use crate::ports::{PortLease, is_addr_in_use_log};
use crate::process::{ServerProcess, WorkDir, log_tail};
use crate::wait::{DEFAULT_DEADLINE, Outcome, wait_until};

/// Name of the log file (etcd's stdout and stderr) in the work directory.
pub const ETCD_LOG: &str = "etcd.log";

/// How many times a first start is retried on fresh ports.
const PORT_RETRIES: usize = 5;

/// A single-member etcd cluster on free loopback client and peer ports, with
/// its data in its own temporary directory.
///
/// Dropping it stops the process (`SIGTERM`, then `SIGKILL`) and deletes the
/// directory, unless the thread is panicking: then the directory is kept and
/// the log tail printed.
#[derive(Debug)]
pub struct Etcd {
    // Field order is drop order: process, ports, then directory.
    process: Mutex<Option<Arc<ServerProcess>>>,
    client: PortLease,
    peer: PortLease,
    dir: WorkDir,
    name: String,
    start_deadline: Duration,
}

impl Etcd {
    /// Starts etcd (member name `tcf-test`) and waits until `GET /health`
    /// answers `"health":"true"` (up to [`DEFAULT_DEADLINE`]).
    pub async fn start() -> anyhow::Result<Etcd> {
        Etcd::start_named("tcf-test").await
    }

    /// Like [`Etcd::start`] with another member name (labels the directory).
    pub async fn start_named(name: &str) -> anyhow::Result<Etcd> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = Etcd {
                process: Mutex::new(None),
                client: PortLease::allocate()?,
                peer: PortLease::allocate()?,
                dir: WorkDir::new(&format!("etcd-{name}"), &[ETCD_LOG])?,
                name: name.to_owned(),
                start_deadline: DEFAULT_DEADLINE,
            };
            e.spawn()?;
            match e.wait_healthy().await {
                Ok(()) => {
                    tracing::info!(endpoint = e.endpoint(), pid = e.pid(), "etcd ready");
                    return Ok(e);
                }
                Err(err) => {
                    let log = std::fs::read_to_string(e.log_path()).unwrap_or_default();
                    if is_addr_in_use_log(&log) && attempt < PORT_RETRIES {
                        tracing::warn!("etcd port taken; retrying on others");
                        continue;
                    }
                    let tail = e.log_tail(40);
                    return Err(
                        err.context(format!("starting etcd; last lines of its log:\n{tail}"))
                    );
                }
            }
        }
    }

    fn spawn(&self) -> anyhow::Result<()> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer.port());
        let mut cmd = std::process::Command::new("etcd");
        cmd.current_dir(self.dir.path())
            .args(["--name", &self.name, "--data-dir", "data"])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("{}={peer}", self.name)])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("tcf-tests-{}", uuid::Uuid::new_v4()),
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        let p = ServerProcess::spawn(cmd, &self.log_path()).context("spawning etcd")?;
        *self.lock_process() = Some(Arc::new(p));
        Ok(())
    }

    fn lock_process(&self) -> std::sync::MutexGuard<'_, Option<Arc<ServerProcess>>> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current_process(&self) -> Option<Arc<ServerProcess>> {
        self.lock_process().clone()
    }

    /// The client URL, `http://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client.port())
    }

    /// The client port (kept across restarts).
    pub fn client_port(&self) -> u16 {
        self.client.port()
    }

    /// PID of the current (or, once stopped, the last) etcd process.
    pub fn pid(&self) -> u32 {
        self.current_process().map_or(0, |p| p.pid())
    }

    /// The work directory (data in `data/`, the log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of `etcd.log` (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(ETCD_LOG)
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path(), n)
    }

    /// True while the etcd process has not exited.
    pub fn is_running(&self) -> bool {
        self.current_process().is_some_and(|p| p.is_running())
    }

    /// Sends `sig` to the etcd process by PID. Fails if it has exited.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        self.current_process()
            .context("etcd was never started")?
            .signal(sig)
    }

    /// `SIGKILL`, and waits until the process is reaped.
    pub fn kill(&self) -> anyhow::Result<()> {
        match self.current_process() {
            Some(p) => p.kill_and_reap(),
            None => Ok(()),
        }
    }

    /// Freezes the process (`SIGSTOP`): it keeps its sockets but answers nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes a paused process (`SIGCONT`).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Stops etcd: `SIGTERM`, then `SIGKILL` after a grace period; returns once
    /// reaped. A no-op if it is not running. Data are kept.
    pub async fn stop(&self) -> anyhow::Result<()> {
        match self.current_process() {
            Some(p) => p.stop().await,
            None => Ok(()),
        }
    }

    /// Stops etcd (if running) and starts it again with the same ports and
    /// data, then waits until it is healthy.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn()?;
        self.wait_healthy()
            .await
            .with_context(|| format!("restarting etcd; log tail:\n{}", self.log_tail(40)))
    }

    /// One `GET /health`: `Ok(true)` if the body says `"health":"true"`.
    pub async fn health(&self) -> anyhow::Result<bool> {
        let resp =
            crate::http::get(&format!("127.0.0.1:{}", self.client.port()), "/health").await?;
        Ok(resp.body.contains("\"health\":\"true\""))
    }

    /// Polls `GET /health` until it reports healthy (fails at once if the
    /// process exits).
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let what = format!("etcd at {} to be healthy", self.endpoint());
        wait_until(&what, self.start_deadline, || async {
            if let Some(status) = self.current_process().and_then(|p| p.exit_status()) {
                return Outcome::Failed(format!("the process exited ({status})"));
            }
            match self.health().await {
                Ok(true) => Outcome::Ready(()),
                Ok(false) => Outcome::Pending("/health says not healthy".to_owned()),
                Err(e) => Outcome::Pending(format!("{e:#}")),
            }
        })
        .await
    }
}
