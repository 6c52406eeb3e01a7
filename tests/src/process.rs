//! A server child process and its working directory.
//!
//! [`ServerProcess`] wraps one child (spawned through [`crate::spawn`], so it
//! dies with the test process) and knows how to signal it by PID and stop it.
//! [`WorkDir`] is the server's temporary directory: deleted on drop, except
//! when the thread is panicking (a failed test), when it is kept and its path
//! and the tail of each log are printed to stderr for the post-mortem.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::wait::wait_until;

/// How long `stop` waits after `SIGTERM` before it sends `SIGKILL`.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Lines of each log printed when a failed test keeps its directory.
const LOG_TAIL_LINES: usize = 40;

/// Environment variable: if set (to anything but `0`), work directories are
/// kept even when the test passes.
pub const KEEP_DIRS_ENV: &str = "TCF_KEEP_TEST_DIRS";

/// One running (or exited) server process.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Mutex<Child>,
    pid: u32,
}

impl ServerProcess {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<ServerProcess> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let mut marker = out.try_clone()?;
        let _ = writeln!(marker, "==== tcf-tests: starting {cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = crate::spawn::spawn_tied_to_parent(cmd)?;
        let pid = child.id();
        Ok(ServerProcess {
            child: Mutex::new(child),
            pid,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        // A panic while holding this lock cannot corrupt a `Child`.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(status)` once the process has exited (and is reaped).
    pub(crate) fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// True while the process has not exited.
    pub(crate) fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends `sig` to the process by PID. Fails if it has already exited.
    pub(crate) fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        if let Some(status) = self.exit_status() {
            return Err(anyhow!("process {} already exited ({status})", self.pid));
        }
        let pid = Pid::from_raw(i32::try_from(self.pid)?);
        signal::kill(pid, sig).with_context(|| format!("kill({}, {sig})", self.pid))
    }

    /// `SIGTERM` (plus `SIGCONT`, in case it is paused), waits up to
    /// [`STOP_GRACE`], then `SIGKILL`; returns once the process is reaped.
    pub(crate) async fn stop(&self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let _ = self.signal(Signal::SIGTERM);
        let _ = self.signal(Signal::SIGCONT);
        let what = format!("process {} to exit after SIGTERM", self.pid);
        if wait_until(&what, STOP_GRACE, || async { !self.is_running() })
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, "no exit after SIGTERM; sending SIGKILL");
            self.kill_and_reap()?;
        }
        Ok(())
    }

    /// The blocking variant of [`ServerProcess::stop`], for `Drop`.
    pub(crate) fn stop_blocking(&self) {
        if !self.is_running() {
            return;
        }
        let _ = self.signal(Signal::SIGTERM);
        let _ = self.signal(Signal::SIGCONT);
        let end = Instant::now() + STOP_GRACE;
        while Instant::now() < end {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(pid = self.pid, "no exit after SIGTERM; sending SIGKILL");
        if let Err(e) = self.kill_and_reap() {
            tracing::error!(pid = self.pid, error = %e, "cannot kill server process");
        }
    }

    /// `SIGKILL` and a blocking `wait` (a killed process is reaped at once).
    pub(crate) fn kill_and_reap(&self) -> anyhow::Result<()> {
        let mut child = self.lock();
        if child.try_wait()?.is_none() {
            child
                .kill()
                .with_context(|| format!("SIGKILL {}", self.pid))?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_blocking();
    }
}

/// A server's temporary working directory (data, config, logs).
#[derive(Debug)]
pub(crate) struct WorkDir {
    dir: Option<TempDir>,
    path: PathBuf,
    /// Log files (relative to the directory) to print if the test fails.
    logs: Vec<String>,
}

impl WorkDir {
    /// Creates `$TMPDIR/tcf-<label>-XXXXXX`.
    pub(crate) fn new(label: &str, logs: &[&str]) -> anyhow::Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tcf-{label}-"))
            .tempdir()
            .context("creating a temporary work directory")?;
        let path = dir.path().to_path_buf();
        let logs = logs.iter().map(|s| (*s).to_owned()).collect();
        Ok(WorkDir {
            dir: Some(dir),
            path,
            logs,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory on disk after drop.
    fn keep(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let keep_env = std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v != "0");
        if std::thread::panicking() {
            self.keep();
            let mut report = format!("tcf-tests: test failed; kept {}\n", self.path.display());
            for log in &self.logs {
                let p = self.path.join(log);
                report.push_str(&format!("---- last lines of {}:\n", p.display()));
                report.push_str(&log_tail(&p, LOG_TAIL_LINES));
                report.push('\n');
            }
            eprint!("{report}");
        } else if keep_env {
            self.keep();
            eprintln!("tcf-tests: kept {} ({KEEP_DIRS_ENV})", self.path.display());
        }
    }
}

/// The last `n` lines of a log file (or a note why it cannot be read).
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(n);
            lines.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
