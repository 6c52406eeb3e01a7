//! The accept loop shared by every listener: the connection cap, refusals
//! and accept errors with backoff, each logged rate-limited.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tracing::{info, warn};

use super::fdlimit::open_files_budget;
use crate::metrics as m;

/// At most one log line per this period for each kind of repeated event.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// First wait after an accept error; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait after repeated accept errors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A log line at most every [`LOG_EVERY`]; counts what it swallowed.
#[derive(Debug, Default)]
pub(crate) struct RateLimited {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    /// `Some(n)` when a line may be logged now (`n` events were not logged
    /// since the last line), `None` when this one must be swallowed.
    pub(crate) fn hit(&self) -> Option<u64> {
        let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match g.0 {
            Some(last) if now.duration_since(last) < LOG_EVERY => {
                g.1 += 1;
                None
            }
            _ => {
                let swallowed = g.1;
                *g = (Some(now), 0);
                Some(swallowed)
            }
        }
    }
}

/// One admitted connection's place under its listener's cap. Dropping it
/// frees the place and lowers [`crate::metrics::LISTENER_CONNECTIONS`].
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    listener: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!(m::LISTENER_CONNECTIONS, m::LISTENER => self.listener).decrement(1.0);
    }
}

/// The cap of one listener.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) listener: &'static str,
    pub(crate) addr: SocketAddr,
    /// The effective cap.
    pub(crate) cap: usize,
    slots: Arc<Semaphore>,
    refused: RateLimited,
    timeouts: RateLimited,
}

impl Gate {
    /// A gate admitting at most `configured` connections, clamped to half
    /// the process's open-file budget (a process has at most two listeners,
    /// so together they never eat the reserve, and a flood on one does not
    /// starve the other); logs the effective cap.
    pub(crate) fn new(listener: &'static str, addr: SocketAddr, configured: usize) -> Self {
        let budget = open_files_budget();
        let cap = configured.clamp(1, budget.per_listener());
        info!(
            listener,
            %addr,
            cap,
            configured,
            open_files_soft_limit = budget.soft_limit,
            reserved_fds = budget.reserve,
            process_budget = budget.connections,
            listener_budget = budget.per_listener(),
            "{listener} listener on {addr}: at most {cap} connections"
        );
        if cap < configured {
            warn!(
                listener,
                %addr,
                "the {listener} connection cap is lowered from {configured} to {cap} by the \
                 open-file limit {} (raise LimitNOFILE)",
                budget.soft_limit
            );
        }
        metrics::gauge!(m::LISTENER_CAP, m::LISTENER => listener).set(cap as f64);
        metrics::gauge!(m::LISTENER_CONNECTIONS, m::LISTENER => listener).increment(0.0);
        Self {
            listener,
            addr,
            cap,
            slots: Arc::new(Semaphore::new(cap)),
            refused: RateLimited::default(),
            timeouts: RateLimited::default(),
        }
    }

    /// A place for one more connection, or `None` at the cap.
    fn admit(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        metrics::gauge!(m::LISTENER_CONNECTIONS, m::LISTENER => self.listener).increment(1.0);
        Some(Slot {
            _permit: permit,
            listener: self.listener,
        })
    }

    /// Counts a timeout of `kind` (`handshake`, `header`, `body`) and logs it
    /// (rate-limited).
    pub(crate) fn timed_out(&self, kind: &'static str, peer: SocketAddr, after: Duration) {
        count_timeout(self.listener, kind);
        if let Some(more) = self.timeouts.hit() {
            info!(
                listener = self.listener,
                addr = %self.addr,
                %peer,
                "{} connection from {peer} dropped: {kind} not complete within {after:?} \
                 ({more} more timeouts since the last message)",
                self.listener
            );
        }
    }

    /// Accepts connections for ever, handing each admitted one to `admit`.
    /// Runs until the future is dropped (the caller selects it against its
    /// shutdown signal).
    pub(crate) async fn accept_loop(
        &self,
        listener: &TcpListener,
        mut admit: impl FnMut(TcpStream, SocketAddr, Slot),
    ) {
        let errors = RateLimited::default();
        let mut backoff = MIN_BACKOFF;
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    backoff = MIN_BACKOFF;
                    match self.admit() {
                        Some(slot) => {
                            let _ = tcp.set_nodelay(true);
                            admit(tcp, peer, slot);
                        }
                        None => self.refuse(tcp, peer),
                    }
                }
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(listener = self.listener, "accept: {e}");
                }
                Err(e) => {
                    metrics::counter!(m::LISTENER_ACCEPT_ERRORS, m::LISTENER => self.listener)
                        .increment(1);
                    if let Some(more) = errors.hit() {
                        warn!(
                            listener = self.listener,
                            addr = %self.addr,
                            "{} accept on {} failed: {e} ({}); retrying in {backoff:?} \
                             ({more} more accept errors since the last message)",
                            self.listener,
                            self.addr,
                            cause(&e)
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn refuse(&self, tcp: TcpStream, peer: SocketAddr) {
        drop(tcp);
        metrics::counter!(m::LISTENER_REFUSED, m::LISTENER => self.listener).increment(1);
        if let Some(more) = self.refused.hit() {
            warn!(
                listener = self.listener,
                addr = %self.addr,
                %peer,
                "{} connection from {peer} refused: {} holds its cap of {} \
                 connections ({more} more refused since the last message)",
                self.listener,
                self.addr,
                self.cap
            );
        }
    }
}

/// Counts a timeout of `kind` on `listener`.
pub(crate) fn count_timeout(listener: &'static str, kind: &'static str) {
    metrics::counter!(m::LISTENER_TIMEOUTS, m::LISTENER => listener, m::KIND => kind).increment(1);
}

/// Errors about one connection (it went away before it was accepted), not
/// about the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(nix::libc::EPROTO)
}

/// What an accept error means for an operator.
fn cause(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(nix::libc::EMFILE) => {
            "the process is out of file descriptors: raise LimitNOFILE (see docs/config.md)"
        }
        Some(nix::libc::ENFILE) => "the system is out of file descriptors (fs.file-max)",
        Some(nix::libc::ENOBUFS | nix::libc::ENOMEM) => "the system is out of socket memory",
        _ => "accept error",
    }
}
