//! Logging setup shared by the binaries.

use tracing_subscriber::{EnvFilter, fmt};

/// The environment variable that selects the log format: `json` for one JSON
/// object per line; anything else (or unset) for human-readable text.
pub const LOG_FORMAT_ENV: &str = "TCF_LOG_FORMAT";

/// Installs the global `tracing` subscriber, logging to stderr.
///
/// * Filter: `RUST_LOG` (e.g. `info,tcf_gateway=debug`); default `info`. An
///   invalid `RUST_LOG` falls back to `info` with a warning.
/// * Format: text, or JSON (flattened fields) when `TCF_LOG_FORMAT=json`.
///
/// Logs one `info` line naming `service` and the crate version. Calling it
/// again (or after another subscriber was installed, as in tests) does
/// nothing.
pub fn init_tracing(service: &str) {
    let (filter, bad_filter) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Err(_) => (EnvFilter::new("info"), None),
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new("info"), Some(format!("{spec:?}: {e}"))),
        },
    };
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // No colour codes in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
            .is_ok()
    } else {
        builder.try_init().is_ok()
    };
    if installed {
        if let Some(problem) = bad_filter {
            tracing::warn!("ignoring invalid RUST_LOG {problem}; logging at info");
        }
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            "logging started"
        );
    }
}
