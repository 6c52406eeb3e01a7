//! Running tcf's own binaries (`tcf-gateway`, `tcf-destination`,
//! `tcf-worker`) as real processes: config written to a temporary directory,
//! output logged there, stopped by PID, log tail printed if the test fails.
//!
//! The binaries must be built first (`cargo build --workspace --bins`;
//! `scripts/test.sh` does): they are looked up next to the test binary.
//! `cargo nextest run --workspace` does not rebuild them (cargo builds a
//! package's binaries only for that package's own integration tests), so a
//! stale `target/debug/tcf-*` is run as it is.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::{
    process::{ServerProcess, WorkDir, log_tail},
    wait::{Outcome, wait_until},
};

const LOG: &str = "output.log";
const CONFIG: &str = "config.yaml";

/// Path of a workspace binary (`target/<profile>/<name>`).
pub fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test binary> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .context("no target directory")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is not built: run `cargo build --workspace` first",
            path.display()
        );
    }
    Ok(path)
}

/// One tcf process and its directory.
#[derive(Debug)]
pub struct TcfProcess {
    binary: String,
    process: Mutex<Option<ServerProcess>>,
    dir: WorkDir,
    open_files: Mutex<Option<u64>>,
}

impl TcfProcess {
    /// A fresh directory for a process of `binary`; write certificates or
    /// other files into [`TcfProcess::dir`] before [`TcfProcess::start`].
    pub fn new(binary: &str) -> anyhow::Result<Self> {
        Ok(Self {
            binary: binary.to_owned(),
            process: Mutex::new(None),
            dir: WorkDir::new(binary, &[LOG])?,
            open_files: Mutex::new(None),
        })
    }

    /// Runs the process (from its next start on) under an open-file limit
    /// of `limit`, soft and hard (`ulimit -n`), as a systemd unit with
    /// `LimitNOFILE=limit` would.
    pub fn set_open_files_limit(&self, limit: u64) {
        *self.open_files.lock().unwrap_or_else(|p| p.into_inner()) = Some(limit);
    }

    /// The directory (config, log, anything the test puts there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `config` (YAML) as the process's config file and starts it with
    /// `--config`. Does not wait for readiness.
    pub fn start(&self, config: &str) -> anyhow::Result<()> {
        std::fs::write(self.dir().join(CONFIG), config)?;
        self.spawn()
    }

    /// Starts (again) with the config written by the last [`TcfProcess::start`].
    pub fn spawn(&self) -> anyhow::Result<()> {
        let binary = binary_path(&self.binary)?;
        let limit = *self.open_files.lock().unwrap_or_else(|p| p.into_inner());
        let mut cmd = match limit {
            // `exec` keeps the PID: signals and /proc/PID reach the binary.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg("ulimit -n \"$0\" && exec \"$@\"")
                    .arg(n.to_string())
                    .arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("--config")
            .arg(self.dir().join(CONFIG))
            .current_dir(self.dir());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let p = ServerProcess::spawn(cmd, &self.dir().join(LOG))?;
        *self.lock() = Some(p);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process id, if started.
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(ServerProcess::pid)
    }

    /// The exit status once it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lock().as_ref().and_then(ServerProcess::exit_status)
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.lock().as_ref().is_some_and(ServerProcess::is_running)
    }

    /// The last `n` lines of its output.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.dir().join(LOG), n)
    }

    /// Its whole output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join(LOG)).unwrap_or_default()
    }

    /// Sends a signal by PID (e.g. `SIGKILL`).
    pub fn kill(&self, sig: Signal) -> anyhow::Result<()> {
        match self.lock().as_ref() {
            Some(p) => p.signal(sig),
            None => bail!("{} was never started", self.binary),
        }
    }

    /// `SIGKILL` and reap.
    pub fn kill9(&self) -> anyhow::Result<()> {
        match self.lock().as_ref() {
            Some(p) => p.kill_and_reap(),
            None => Ok(()),
        }
    }

    /// `SIGTERM`, then `SIGKILL` after a grace period; returns once reaped.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let p = self.lock().take();
        if let Some(p) = p {
            p.stop().await?;
            *self.lock() = Some(p);
        }
        Ok(())
    }

    /// Waits until `GET path` on `addr` answers with any status but 503 (a
    /// worker answers 503 while it is starting), failing at once if the
    /// process exits (with its output).
    pub async fn wait_http(&self, addr: &str, path: &str) -> anyhow::Result<()> {
        let what = format!("{} to answer on http://{addr}{path}", self.binary);
        wait_until(&what, crate::DEFAULT_DEADLINE, || async {
            if let Some(status) = self.exit_status() {
                return Outcome::Failed(format!("it exited ({status}):\n{}", self.log_tail(30)));
            }
            match crate::http::get(addr, path).await {
                Ok(r) if r.status == 503 => Outcome::Pending(format!("503: {}", r.body)),
                Ok(_) => Outcome::Ready(()),
                Err(e) => Outcome::Pending(format!("{e:#}")),
            }
        })
        .await
    }

    /// Waits until the process exits by itself; returns its exit code.
    pub async fn wait_exit(&self, deadline: Duration) -> anyhow::Result<Option<i32>> {
        let what = format!("{} to exit", self.binary);
        wait_until(&what, deadline, || async {
            self.exit_status().map(|s| s.code())
        })
        .await
    }
}
