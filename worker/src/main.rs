//! `tcf-worker --config FILE`: parses the config (exit status 2 on any
//! config error), sets up logging and runs until SIGINT/SIGTERM. A contradicting
//! `initial_status` at the bootstrap term exits with status 3.

use std::path::PathBuf;

use tcf_common::config::EXIT_CONFIG;
use tokio_util::sync::CancellationToken;

/// Exit status when the worker refuses to start against the stored state.
const EXIT_REFUSED: i32 = 3;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--config"), Some(p), None) => PathBuf::from(p),
        _ => {
            eprintln!("usage: tcf-worker --config FILE");
            std::process::exit(EXIT_CONFIG);
        }
    };
    tcf_common::tls::install_crypto_provider();
    let config = match tcf_worker::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tcf-worker: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    tcf_common::telemetry::init_tracing("tcf-worker");
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            tcf_common::http::termination_signal().await;
            s.cancel();
        });
        tcf_worker::run(config, shutdown).await
    });
    match result {
        Err(e @ tcf_worker::RunError::Contradiction { .. }) => {
            eprintln!("tcf-worker: refusing to start: {e}");
            std::process::exit(EXIT_REFUSED);
        }
        other => other.map_err(anyhow::Error::from),
    }
}
