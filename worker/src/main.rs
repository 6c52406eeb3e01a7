//! `tcf-worker --config FILE`: parses the config (exit status 2 on any
//! config error), sets up logging and runs until SIGINT/SIGTERM. A contradicting
//! `initial_status` at the bootstrap term exits with status 3.

/// Exit status when the worker refuses to start against the stored state.
const EXIT_REFUSED: i32 = 3;

fn main() -> anyhow::Result<()> {
    let config = tcf_common::cli::start("tcf-worker", tcf_worker::Config::load);
    match tcf_common::cli::run_until_signal(|shutdown| tcf_worker::run(config, shutdown))? {
        Err(e @ tcf_worker::RunError::Contradiction { .. }) => {
            eprintln!("tcf-worker: refusing to start: {e}");
            std::process::exit(EXIT_REFUSED);
        }
        other => other.map_err(anyhow::Error::from),
    }
}
