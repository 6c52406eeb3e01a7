//! Spawning server processes that die with the test process.
//!
//! This is the only module of the crate with `unsafe` code: setting
//! `PR_SET_PDEATHSIG` must happen in the child between `fork` and `exec`, which
//! only `CommandExt::pre_exec` (an `unsafe fn`) allows. The closure it runs makes
//! only async-signal-safe system calls (`prctl`, `getppid`) and allocates nothing.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::mpsc;

use anyhow::{Context, anyhow};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The process-wide spawner thread's inbox.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

/// Starts `cmd` so that the kernel sends it `SIGKILL` when the test process
/// exits, however it exits (panic, `SIGKILL`, nextest timeout).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// the process. Tokio worker and blocking threads come and go, so every child is
/// forked by one dedicated thread that lives as long as the process.
pub(crate) fn spawn_tied_to_parent(mut cmd: Command) -> anyhow::Result<Child> {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec. It only calls
    // `prctl` and `getppid` (async-signal-safe, no allocation, no locks) and
    // builds an `io::Error` from a raw errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || pdeathsig_hook(parent));
    }
    let program = format!("{:?}", cmd.get_program());
    let (reply_tx, reply_rx) = mpsc::channel();
    let inbox = SPAWNER.get_or_init(start_spawner);
    inbox
        .lock()
        .map_err(|_| anyhow!("spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| anyhow!("spawner thread is gone"))?;
    let child = reply_rx
        .recv()
        .map_err(|_| anyhow!("spawner thread dropped the request"))?
        .with_context(|| format!("spawning {program}"))?;
    tracing::debug!(pid = child.id(), program, "spawned server process");
    Ok(child)
}

/// Runs in the child: ask for `SIGKILL` on parent death, then make sure the
/// parent did not die before the request took effect.
fn pdeathsig_hook(parent: Pid) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL))
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    if nix::unistd::getppid() != parent {
        return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
    }
    Ok(())
}

fn start_spawner() -> Mutex<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    let spawned = std::thread::Builder::new()
        .name("tcf-tests-spawner".to_owned())
        .spawn(move || {
            // Lives until the process exits: the static keeps the sender alive.
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
    if let Err(e) = spawned {
        // Without the thread every spawn fails with "spawner thread is gone".
        tracing::error!(error = %e, "cannot start the spawner thread");
    }
    Mutex::new(tx)
}
