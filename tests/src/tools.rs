//! Running command-line tools from tests (`tcfctl`, `node`, `promtool`,
//! `prometheus`): output captured to files, a deadline, the exit status.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    tests.parent().map(PathBuf::from).unwrap_or(tests)
}

/// The cargo target directory of the running test binary
/// (`target/<profile>/deps/<test>` -> `target`).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test binary has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("no profile directory")?;
    }
    Ok(dir.parent().context("no target directory")?.to_owned())
}

/// What a finished tool did.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit status code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl std::fmt::Display for ToolOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (stdin closed) to its end, at most `deadline` (then it is
/// killed and this fails), on a blocking thread.
pub async fn run(mut cmd: Command, deadline: Duration) -> anyhow::Result<ToolOutput> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?);
    let what = format!("{cmd:?}");
    let mut child = crate::spawn::spawn_tied_to_parent(cmd)?;
    let status = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await??;
    let output = ToolOutput {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    if status.is_none() {
        bail!("{what} did not end within {deadline:?}\n{output}");
    }
    Ok(output)
}

/// `tcfctl ARGS...` (the workspace binary).
pub fn tcfctl<I, S>(args: I) -> anyhow::Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(crate::tcf::binary_path("tcfctl")?);
    c.args(args)
        .env_remove("TCF_TOKEN")
        .env_remove("TCF_TOKEN_FILE")
        .env_remove("TCF_WORKERS")
        .env_remove("TCF_CA_FILE");
    Ok(c)
}

/// A long-running tool (e.g. `prometheus`), its output in `log`; stopped
/// (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Background {
    child: std::process::Child,
    /// Its output.
    pub log: PathBuf,
}

impl Background {
    /// Starts `cmd` with stdin closed and its output in `log`.
    pub fn start(mut cmd: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = crate::spawn::spawn_tied_to_parent(cmd)?;
        Ok(Self { child, log })
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines of its output.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
