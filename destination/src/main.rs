//! `tcf-destination --config FILE`: parses the config (exit status 2 on any
//! config error), sets up logging and runs until SIGINT/SIGTERM.

use std::path::PathBuf;

use tcf_common::config::EXIT_CONFIG;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--config"), Some(p), None) => PathBuf::from(p),
        _ => {
            eprintln!("usage: tcf-destination --config FILE");
            std::process::exit(EXIT_CONFIG);
        }
    };
    tcf_common::tls::install_crypto_provider();
    let config = match tcf_destination::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tcf-destination: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    tcf_common::telemetry::init_tracing("tcf-destination");
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            tcf_common::http::termination_signal().await;
            s.cancel();
        });
        tcf_destination::run(config, shutdown).await
    })?;
    Ok(())
}
