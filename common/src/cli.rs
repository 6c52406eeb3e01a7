//! What every tcf binary's `main` does, once: `--config FILE`, exit status 2
//! on any config error, crypto provider, the open-file limit raised to the
//! hard limit, logging, a runtime that stops on SIGINT/SIGTERM.

use std::{fmt::Display, future::Future, path::PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::EXIT_CONFIG;

/// Parses `BINARY --config FILE`, installs the crypto provider and loads the
/// config with `load`; prints the usage or the config error and exits with
/// [`EXIT_CONFIG`] when either is wrong. Then raises the open-file soft
/// limit to the hard limit ([`crate::listen::raise_open_files_limit`]; the
/// listeners' connection caps are derived from it), sets up logging and
/// logs both limits (a warning when the soft limit could not be raised or is
/// below 4096: set `LimitNOFILE`, see `docs/config.md`).
pub fn start<C, E: Display>(
    binary: &str,
    load: impl FnOnce(&std::path::Path) -> Result<C, E>,
) -> C {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--config"), Some(p), None) => PathBuf::from(p),
        _ => {
            eprintln!("usage: {binary} --config FILE");
            std::process::exit(EXIT_CONFIG);
        }
    };
    crate::tls::install_crypto_provider();
    let config = match load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{binary}: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let limits = crate::listen::raise_open_files_limit();
    crate::telemetry::init_tracing(binary);
    log_open_files(&limits);
    config
}

/// Below this soft limit a warning suggests raising `LimitNOFILE`.
const LOW_OPEN_FILES: u64 = 4096;

fn log_open_files(limits: &Result<crate::listen::OpenFiles, crate::listen::OpenFilesError>) {
    let budget = crate::listen::open_files_budget();
    match limits {
        Ok(l) => {
            tracing::info!(
                soft = l.soft,
                hard = l.hard,
                previous_soft = l.previous_soft,
                reserved = budget.reserve,
                per_listener = budget.per_listener(),
                "open-file limit: soft {} (was {}), hard {}; each listener may hold up to {} \
                 connections, {} descriptors are kept for outbound connections",
                l.soft,
                l.previous_soft,
                l.hard,
                budget.per_listener(),
                budget.reserve
            );
            if l.soft < LOW_OPEN_FILES {
                tracing::warn!(
                    soft = l.soft,
                    "the open-file limit {} is low: set LimitNOFILE=65536 (systemd) or \
                     `ulimit -n 65536`",
                    l.soft
                );
            }
        }
        Err(e) => tracing::warn!(
            per_listener = budget.per_listener(),
            "{e}; each listener may hold up to {} connections",
            budget.per_listener()
        ),
    }
}

/// Runs `run(shutdown)` on a multi-thread runtime; `shutdown` fires on
/// SIGINT/SIGTERM.
pub fn run_until_signal<T, F, Fut>(run: F) -> std::io::Result<T>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = tokio::runtime::Runtime::new()?;
    Ok(rt.block_on(async {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            crate::http::termination_signal().await;
            s.cancel();
        });
        run(shutdown).await
    }))
}
