//! Free loopback ports that stay reserved across parallel test processes.
//!
//! nextest runs every test in its own process, so an in-process counter cannot
//! keep two tests from picking the same port. A [`PortLease`] therefore holds an
//! exclusive advisory lock (`flock`) on `/tmp/tcf-ports/<port>.lock` for as long
//! as it lives; any other process using this module skips a locked port. The
//! lock is released by the kernel when the lease is dropped or the process dies,
//! so a crashed test never leaks a reservation.
//!
//! Ports are drawn at random *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so that outgoing connections of
//! other processes, which take their source ports from that range, do not grab
//! a port between our check and the server's `bind`. A candidate is used only
//! if it is unlocked and `127.0.0.1:<port>` can be bound right now. If the
//! range cannot be read or is too small, `bind(127.0.0.1:0)` picks the port.
//!
//! Nothing outside this harness honours the lock, so a server may still find
//! its port taken; the servers of this crate then retry with a fresh lease
//! (see [`is_addr_in_use_log`]).

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// Directory that holds one lock file per reserved port.
pub const LOCK_DIR: &str = "/tmp/tcf-ports";

/// Lowest port ever handed out.
const MIN_PORT: u16 = 10_000;

/// How many candidates to try before giving up.
const MAX_ATTEMPTS: usize = 500;

/// An exclusively reserved loopback TCP port.
///
/// The port stays reserved (for every process that allocates through this
/// module) until the lease is dropped. Keep the lease alive for the whole life
/// of the server listening on it, restarts included.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    // Held only for its flock; released on drop.
    _lock: File,
}

impl PortLease {
    /// Reserves a port that is currently free on 127.0.0.1 and not reserved by
    /// any other lease, in this or another process.
    pub fn allocate() -> anyhow::Result<PortLease> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let range = candidate_range();
        for _ in 0..MAX_ATTEMPTS {
            let port = match range {
                Some((lo, hi)) => random_in(lo, hi),
                None => ephemeral_port()?,
            };
            if let Some(lease) = try_lease(port)? {
                tracing::debug!(port, "reserved loopback port");
                return Ok(lease);
            }
        }
        bail!("no free loopback port found after {MAX_ATTEMPTS} attempts")
    }

    /// The reserved port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Tries to lock `port` and checks that it can be bound; `None` if either fails.
fn try_lease(port: u16) -> anyhow::Result<Option<PortLease>> {
    let path: PathBuf = [LOCK_DIR, &format!("{port}.lock")].iter().collect();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening port lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    // Locked by us; is the port actually free right now?
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => {
            drop(listener);
            Ok(Some(PortLease { port, _lock: file }))
        }
        Err(_) => Ok(None),
    }
}

/// The range `[lo, hi)` to draw from: below the ephemeral range, if it leaves
/// at least a few thousand ports.
fn candidate_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = text.split_whitespace().next()?.parse().ok()?;
    (low >= MIN_PORT + 2_000).then_some((MIN_PORT, low))
}

/// A port chosen by the kernel (from the ephemeral range).
fn ephemeral_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A uniformly random port in `[lo, hi)`.
fn random_in(lo: u16, hi: u16) -> u16 {
    let span = u128::from(hi.saturating_sub(lo).max(1));
    let r = uuid::Uuid::new_v4().as_u128() % span;
    // `r < span <= u16::MAX`, so the conversion cannot fail.
    lo.saturating_add(u16::try_from(r).unwrap_or(0))
}

/// True if a server log says its listen address was taken (then the server is
/// restarted on a fresh [`PortLease`]).
pub fn is_addr_in_use_log(log: &str) -> bool {
    let lower = log.to_ascii_lowercase();
    lower.contains("address already in use") || lower.contains("eaddrinuse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_and_exclusive() {
        let a = PortLease::allocate().expect("lease a");
        let b = PortLease::allocate().expect("lease b");
        assert_ne!(a.port(), b.port());
        // The same process cannot take a held port either (flock is per open file).
        assert!(try_lease(a.port()).expect("try").is_none());
        let port = a.port();
        drop(a);
        // Released: lockable again (unless something else bound it meanwhile).
        let again = try_lease(port).expect("try again");
        assert!(again.is_none() || again.map(|l| l.port()) == Some(port));
    }

    #[test]
    fn detects_addr_in_use() {
        assert!(is_addr_in_use_log("bind: Address already in use"));
        assert!(!is_addr_in_use_log("ready"));
    }
}
