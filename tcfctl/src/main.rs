//! `tcfctl`: the operator's command line for a tcf federation. It talks to
//! the workers' HTTP API (`docs/worker.md`), reads and writes only the
//! `tcf_api` types, prints aligned tables (or `--json`) and exits with a
//! status a script can branch on. `tcfctl --help` is the reference;
//! `docs/tcfctl.md` is the runbook.

mod client;
mod ops;
mod render;
mod status;
mod verify;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use tcf_api::{
    operator::{Overview, SwitchoverRequest},
    verify::{WalkMode, WalkRequest},
};

use client::{Client, CtlError, exit};

const EXIT_CODES: &str = "\
Exit status:
  0  done (status/history: read; switchover --dry-run: every precheck passed)
  1  failed: rolled back, a replicator or instance failed, an unexpected answer;
     verify: the clusters differ
  2  usage: bad arguments, unreadable token or CA file, not confirmed
  3  refused: a precheck failed or the state does not allow it (nothing changed)
  4  unavailable: no worker answers, or the worker cannot reach etcd
  5  no outcome within the timeout (the switch may still finish: tcfctl status)
  6  unauthorized: token missing or unknown (401), or its role too low (403)

Environment: TCF_WORKERS (comma-separated URLs), TCF_TOKEN (the token itself),
TCF_TOKEN_FILE, TCF_CA_FILE. Roles: info reads, toggle switches over, admin
fails over and resyncs. Runbook: docs/tcfctl.md.";

/// The operator's command line for a tcf federation.
#[derive(Debug, Parser)]
#[command(
    name = "tcfctl",
    version,
    about = "Operate a tcf federation through its workers' HTTP API",
    after_long_help = EXIT_CODES,
    after_help = EXIT_CODES
)]
struct Cli {
    /// A worker's URL, http(s)://HOST:PORT; repeat the option or separate
    /// URLs with commas. Reads go to the first that answers; a change is
    /// sent once, to the first that answers GET /tcf/is_active.
    #[arg(
        short,
        long = "worker",
        env = "TCF_WORKERS",
        value_delimiter = ',',
        global = true
    )]
    workers: Vec<String>,
    /// A file holding the bearer token (else the TCF_TOKEN variable).
    #[arg(long, env = "TCF_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// PEM CA bundle that https:// workers must chain to (no system roots).
    #[arg(long, env = "TCF_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the worker's answer as JSON (its tcf_api type) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Limit of each read request, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = duration, global = true)]
    request_timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Both clusters: who is active, term, coordinator, what each worker
    /// answers load balancers, fence, each replicaset's state, applied
    /// position and lag (time and rows), the switch, alarms.
    Status,
    /// Planned switchover of the active cluster to the passive one, guarded
    /// by the worker's prechecks (state, target promotable, lag gate,
    /// unmarked writes, reverse pair). Waits for the outcome, showing the
    /// phase on stderr.
    Switchover(SwitchoverArgs),
    /// Fail the active cluster over to its peer now, without waiting for it
    /// (role admin). Asks to type the active cluster's name, or --yes.
    Failover {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
    /// Reload a diverged cluster from the active one, discarding its tail
    /// (role admin). Sent to a worker of the diverged cluster among those
    /// given. Asks to type its name, or --yes.
    Resync {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
    /// The newest switches, failovers and resyncs, newest first.
    History {
        /// At most this many entries (the worker keeps the 20 newest).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Compare the passive cluster with the active one, row by row, while
    /// replication runs (role toggle); with --repair also make it equal
    /// (role admin). Waits for the walk and prints its report; exit 1 when
    /// a verify found differences. --report prints the last walk's report.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct SwitchoverArgs {
    /// Run every precheck and show what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Refuse when the passive side lags more than this (default 10s).
    #[arg(long, value_parser = duration)]
    max_lag: Option<Duration>,
    /// Roll the switch back unless it completes within this (at least 1s;
    /// capped by the worker's switchover_timeout).
    #[arg(long, default_value = "30s", value_parser = duration)]
    timeout: Duration,
    /// Switch even though the passive cluster's unmarked-write alarm is
    /// raised (or cannot be read): you have dealt with those writes.
    #[arg(long)]
    accept_unmarked_writes: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Print the last walk's report; start nothing.
    #[arg(long, conflicts_with_all = ["repair", "spaces", "chunk_rows", "rows_per_second", "no_wait"])]
    report: bool,
    /// Replace differing rows, insert missing ones and delete extra ones on
    /// the passive cluster (role admin).
    #[arg(long)]
    repair: bool,
    /// Walk only this source space (repeat, or separate with commas);
    /// default every replicated space.
    #[arg(long = "space", value_delimiter = ',')]
    spaces: Vec<String>,
    /// Rows per chunk, 1..=10000 (the worker's default: 1000).
    #[arg(long)]
    chunk_rows: Option<u32>,
    /// Rows per second read on the source master (default 50000).
    #[arg(long)]
    rows_per_second: Option<u64>,
    /// Start the walk and return at once (follow it with --report).
    #[arg(long)]
    no_wait: bool,
    /// Stop waiting after this long (exit 5; the walk goes on).
    #[arg(long, default_value = "1h", value_parser = duration)]
    timeout: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    tcf_common::config::parse_duration(text)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The token: `--token-file` / `TCF_TOKEN_FILE`, else `TCF_TOKEN`.
fn token(cli: &Cli) -> Result<Option<String>, CtlError> {
    if let Some(path) = &cli.token_file {
        let t = std::fs::read_to_string(path)
            .map_err(|e| CtlError::Usage(format!("token file {}: {e}", path.display())))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(CtlError::Usage(format!(
                "token file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(t.to_owned()));
    }
    Ok(std::env::var("TCF_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

fn client(cli: &Cli) -> Result<Client, CtlError> {
    let urls: Vec<String> = cli
        .workers
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(CtlError::Usage(
            "no worker: give --worker URL (or TCF_WORKERS)".into(),
        ));
    }
    for u in &urls {
        tcf_common::http_client::authority(u).map_err(|e| {
            CtlError::Usage(format!("--worker {u}: {e} (want http(s)://HOST:PORT)"))
        })?;
    }
    let roots = match &cli.ca_file {
        Some(p) => Some(
            tcf_common::https::HttpsRoots::load("--ca-file", p)
                .map_err(|e| CtlError::Usage(e.to_string()))?,
        ),
        None => None,
    };
    Ok(Client::new(urls, token(cli)?, roots, cli.request_timeout))
}

async fn run(cli: Cli) -> Result<i32, CtlError> {
    let c = client(&cli)?;
    match cli.command {
        Command::Status | Command::History { .. } => {
            let a = c.get("/tcf/api/v1/overview").await?;
            if let Some(e) = a.common_error() {
                return Err(e);
            }
            if a.response.status != 200 {
                return Err(CtlError::Failed(format!(
                    "{} answered {}: {}",
                    a.url,
                    a.response.status,
                    a.error_text()
                )));
            }
            let ov: Overview = a.parse()?;
            match (cli.command, cli.json) {
                (Command::History { limit }, true) => {
                    ops::print_json(&ov.worker.history.iter().take(limit).collect::<Vec<_>>())?;
                }
                (Command::History { limit }, false) => {
                    let h: Vec<_> = ov.worker.history.into_iter().take(limit).collect();
                    print!("{}", status::history(&h));
                }
                (_, true) => ops::print_json(&ov)?,
                (_, false) => print!("{}", status::render(&ov)),
            }
            Ok(exit::OK)
        }
        Command::Switchover(s) => {
            let req = SwitchoverRequest {
                dry_run: s.dry_run,
                max_lag_ms: s.max_lag.map(millis),
                timeout_ms: Some(millis(s.timeout)),
                accept_unmarked_writes: s.accept_unmarked_writes,
            };
            ops::switchover(&c, req, cli.json).await
        }
        Command::Failover { yes, timeout } => ops::failover(&c, yes, timeout, cli.json).await,
        Command::Resync { yes, timeout } => ops::resync(&c, yes, timeout, cli.json).await,
        Command::Verify(v) if v.report => verify::report(&c, cli.json).await,
        Command::Verify(v) => {
            let req = WalkRequest {
                mode: if v.repair {
                    WalkMode::Repair
                } else {
                    WalkMode::Verify
                },
                spaces: v.spaces,
                chunk_rows: v.chunk_rows,
                rows_per_second: v.rows_per_second,
            };
            let wait = (!v.no_wait).then_some(v.timeout);
            verify::start(&c, &req, wait, cli.json).await
        }
    }
}

fn main() {
    let cli = Cli::parse();
    tcf_common::tls::install_crypto_provider();
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => match rt.block_on(run(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("tcfctl: {e}");
                e.exit_code()
            }
        },
        Err(e) => {
            eprintln!("tcfctl: cannot start: {e}");
            exit::FAILED
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn switchover_options_parse() {
        let cli = Cli::try_parse_from([
            "tcfctl",
            "-w",
            "http://a:1,http://b:2",
            "switchover",
            "--dry-run",
            "--max-lag",
            "500ms",
        ])
        .expect("parses");
        assert_eq!(cli.workers, ["http://a:1", "http://b:2"]);
        let Command::Switchover(s) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert!(s.dry_run);
        assert_eq!(s.max_lag, Some(Duration::from_millis(500)));
        assert!(Cli::try_parse_from(["tcfctl", "switchover", "--max-lag", "soon"]).is_err());
    }
}
