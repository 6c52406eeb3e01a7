//! The open-file limit: raised to the hard limit at start, and the budget of
//! descriptors that accepted connections may use.

use std::sync::OnceLock;

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// Descriptors kept for the process's own use (outbound connections to etcd,
/// Tarantool and peers, log and spool files, the runtime's epoll and pipes):
/// accepted connections may use the open-file soft limit less this (less
/// half the limit when the limit is below 512).
pub const RESERVED_FDS: u64 = 256;

/// The most connections the budget ever allows, whatever the limit says.
const MAX_BUDGET: u64 = 1 << 20;

/// The open-file limits of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before [`raise_open_files_limit`].
    pub previous_soft: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Why the open-file limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenFilesError {
    /// `getrlimit(RLIMIT_NOFILE)` failed.
    #[error("cannot read the open-file limit (RLIMIT_NOFILE): {0}")]
    Read(#[source] nix::Error),
    /// `setrlimit(RLIMIT_NOFILE)` failed; the soft limit stays as it was.
    #[error("cannot raise the open-file soft limit from {soft} to the hard limit {hard}: {source}")]
    Raise {
        /// The soft limit, unchanged.
        soft: u64,
        /// The hard limit.
        hard: u64,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit and
/// returns both. Every binary calls it once at start (see
/// [`crate::cli::start`]); the listeners' connection caps are computed from
/// the result ([`open_files_budget`]).
pub fn raise_open_files_limit() -> Result<OpenFiles, OpenFilesError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(OpenFilesError::Read)?;
    // An unlimited hard limit: Linux still caps descriptors at fs.nr_open.
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(MAX_BUDGET)
    } else {
        hard
    };
    if soft >= target {
        return Ok(OpenFiles {
            previous_soft: soft,
            soft,
            hard,
        });
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => Ok(OpenFiles {
            previous_soft: soft,
            soft: target,
            hard,
        }),
        Err(source) => Err(OpenFilesError::Raise {
            soft,
            hard: target,
            source,
        }),
    }
}

/// How many connections all listeners of the process may hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The open-file soft limit it was computed from.
    pub soft_limit: u64,
    /// Descriptors kept back ([`RESERVED_FDS`], or half a small limit).
    pub reserve: u64,
    /// Connections allowed: `soft_limit - reserve`, at least 1.
    pub connections: usize,
}

impl Budget {
    /// The most one listener may hold: half of [`Budget::connections`] (at
    /// least 1). A process serves at most two ports (the gateway: HTTP and
    /// gRPC), so its listeners together stay within the budget.
    pub fn per_listener(&self) -> usize {
        (self.connections / 2).max(1)
    }
}

/// The budget for a soft limit of `soft` descriptors: `(reserve,
/// connections)` with `reserve = min(RESERVED_FDS, soft / 2)` and
/// `connections = soft - reserve` (at least 1, at most 2^20).
pub fn budget_for(soft: u64) -> (u64, usize) {
    let soft = if soft == RLIM_INFINITY {
        MAX_BUDGET
    } else {
        soft
    };
    let reserve = RESERVED_FDS.min(soft / 2);
    let connections = soft.saturating_sub(reserve).clamp(1, MAX_BUDGET);
    (reserve, usize::try_from(connections).unwrap_or(1 << 20))
}

/// The process-wide connection budget, computed once from the open-file soft
/// limit in force at the first call (after [`raise_open_files_limit`] in the
/// binaries).
pub fn open_files_budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) => soft,
            Err(e) => {
                tracing::warn!("cannot read the open-file limit ({e}); assuming 1024");
                1024
            }
        };
        let (reserve, connections) = budget_for(soft);
        Budget {
            soft_limit: soft,
            reserve,
            connections,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_keeps_a_reserve() {
        assert_eq!(budget_for(1024), (256, 768));
        assert_eq!(budget_for(65536), (256, 65280));
        assert_eq!(budget_for(300), (150, 150));
        assert_eq!(budget_for(1), (0, 1));
        assert_eq!(budget_for(0), (0, 1));
        assert_eq!(budget_for(RLIM_INFINITY), (256, (1 << 20) - 256));
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let limits = raise_open_files_limit().unwrap();
        if limits.hard != RLIM_INFINITY {
            assert_eq!(limits.soft, limits.hard);
        }
        assert!(limits.previous_soft <= limits.soft);
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).unwrap(),
            (limits.soft, limits.hard)
        );
    }
}
