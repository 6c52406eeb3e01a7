//! What every tcf binary's `main` does, once: `--config FILE` (and
//! `--check-config`), exit status 2 on any config error, crypto provider,
//! the open-file limit raised to the hard limit, logging, a runtime that
//! stops on SIGINT/SIGTERM.

use std::{
    fmt::{Debug, Display},
    future::Future,
    path::PathBuf,
};

use tokio_util::sync::CancellationToken;

use crate::config::EXIT_CONFIG;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `--config FILE`: run.
    Run(PathBuf),
    /// `--config FILE --check-config` (either order): validate, print the
    /// resolved config and exit.
    Check(PathBuf),
}

/// Parses the arguments after the binary's name; `None` for anything else
/// than `--config FILE` with an optional `--check-config`.
pub fn parse_args(args: &[String]) -> Option<Invocation> {
    let mut config = None;
    let mut check = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" if config.is_none() => config = Some(PathBuf::from(it.next()?)),
            "--check-config" if !check => check = true,
            _ => return None,
        }
    }
    let path = config?;
    Some(if check {
        Invocation::Check(path)
    } else {
        Invocation::Run(path)
    })
}

/// Parses `BINARY --config FILE [--check-config]`, installs the crypto
/// provider and loads the config with `load`; prints the usage or the config
/// error and exits with [`EXIT_CONFIG`] when either is wrong.
///
/// With `--check-config` it stops there: it prints `BINARY: config FILE is
/// valid` and the resolved config (defaults applied, secret files read;
/// every secret, token and private key shown as `***` or left out: the
/// config types' `Debug` never prints them) and exits 0. Nothing is started,
/// bound or contacted; certificate files are read and checked.
///
/// Otherwise it raises the open-file soft limit to the hard limit
/// ([`crate::listen::raise_open_files_limit`]; the listeners' connection
/// caps are derived from it), sets up logging and logs both limits (a
/// warning when the soft limit could not be raised or is below 4096: set
/// `LimitNOFILE`, see `docs/config.md`).
pub fn start<C: Debug, E: Display>(
    binary: &str,
    load: impl FnOnce(&std::path::Path) -> Result<C, E>,
) -> C {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(invocation) = parse_args(&args) else {
        eprintln!("usage: {binary} --config FILE [--check-config]");
        std::process::exit(EXIT_CONFIG);
    };
    let path = match &invocation {
        Invocation::Run(p) | Invocation::Check(p) => p.clone(),
    };
    crate::tls::install_crypto_provider();
    let config = match load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{binary}: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    if matches!(invocation, Invocation::Check(_)) {
        println!(
            "{binary}: config {} is valid; resolved (secrets shown as ***):",
            path.display()
        );
        println!("{config:#?}");
        std::process::exit(0);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn check_config_goes_before_or_after_the_file() {
        let p = PathBuf::from("f.yaml");
        assert_eq!(
            parse_args(&args(&["--config", "f.yaml"])),
            Some(Invocation::Run(p.clone()))
        );
        assert_eq!(
            parse_args(&args(&["--config", "f.yaml", "--check-config"])),
            Some(Invocation::Check(p.clone()))
        );
        assert_eq!(
            parse_args(&args(&["--check-config", "--config", "f.yaml"])),
            Some(Invocation::Check(p))
        );
        for bad in [
            &[][..],
            &["--check-config"][..],
            &["--config"][..],
            &["--config", "a", "--config", "b"][..],
            &["--config", "a", "--check-config", "--check-config"][..],
            &["--config", "a", "extra"][..],
        ] {
            assert_eq!(parse_args(&args(bad)), None, "{bad:?}");
        }
    }
}
