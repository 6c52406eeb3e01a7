//! `tcf-gateway --config FILE`: parses the config (exit status 2 on any
//! config error), sets up logging and runs until SIGINT/SIGTERM.

fn main() -> anyhow::Result<()> {
    let config = tcf_common::cli::start("tcf-gateway", tcf_gateway::Config::load);
    tcf_common::cli::run_until_signal(|shutdown| tcf_gateway::run(config, shutdown))??;
    Ok(())
}
