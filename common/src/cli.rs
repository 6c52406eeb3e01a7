//! What every tcf binary's `main` does, once: `--config FILE`, exit status 2
//! on any config error, crypto provider, logging, a runtime that stops on
//! SIGINT/SIGTERM.

use std::{fmt::Display, future::Future, path::PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::EXIT_CONFIG;

/// Parses `BINARY --config FILE`, installs the crypto provider and loads the
/// config with `load`; prints the usage or the config error and exits with
/// [`EXIT_CONFIG`] when either is wrong. Then sets up logging.
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
    crate::telemetry::init_tracing(binary);
    config
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
