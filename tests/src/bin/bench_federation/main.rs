//! Benchmark: tcf's end-to-end replication (source Tarantool -> `tcf-gateway`
//! -> gRPC over mutual TLS -> `tcf-destination` -> target Tarantool) against
//! Tarantool's own asynchronous replication, in the same run (figures, not a
//! timed test).
//!
//! Setup, all on loopback: a native pair (a master and one replica,
//! `memtx_memory` 1 GiB), and a federation: source cluster A and target
//! cluster B (one master each, `memtx_memory` 1 GiB, the harness's
//! `cluster_options` spaces), the real release `tcf-gateway` reading A and
//! `tcf-destination` writing B, already streaming before anything is written.
//!
//! 1. **Throughput** (the workload of `shared/anchors/native_replication.sh`):
//!    `N` rows `{i, 'payload-'..i, i*2}` in transactions of `B`, written by one
//!    EVAL on the master looping over `box.begin()`/`box.commit()`; timed from
//!    sending that EVAL until `box.space.test:len()` on the replica (native)
//!    or on B (tcf) shows every row (polled every 10 ms, as the anchor does).
//!    `ROUNDS` rounds in alternating order (native first in odd rounds, tcf
//!    first in even ones); each round writes fresh keys.
//! 2. **Lag at a steady rate**: transactions of `LAG_TX_ROWS` rows (over a
//!    rotating key range, plus a mark row carrying the transaction's sequence
//!    number) at `LAG_ROWS_PER_S` for `LAG_SECS`, one CALL per transaction,
//!    paced by a tokio interval (up to 4 CALLs in flight). The writer records
//!    the `Instant` each CALL returned (committed on A); a reader polls B's
//!    mark row every ~1 ms and records the `Instant` each transaction first
//!    appeared. Lag = appearance - commit, both on this process's clock.
//!    Then (`LAG_SWEEP`, 1) steps of 1.25x the rate while a step is
//!    *sustained* (the writer kept 95 % of the rate and p99 stayed within
//!    `LAG_BOUND_MS`), the highest sustained rate and what stopped the
//!    sweep, and a step at 80 % of that rate.
//! 3. **Peak RSS** (`VmHWM`) of the gateway and the destination(s).
//! 4. **WAN**: the destination is replaced by one that reaches the gateway
//!    through [`DelayProxy`] (`WAN_DELAY_MS` added each way, no bandwidth
//!    cap); throughput of `N2` rows in transactions of `B`, next to the same
//!    `N2` rows through the first destination just before (no proxy).
//! 5. **Backlog**: with no destination running, `BACKLOG_ROWS` rows are
//!    written on A; a fresh destination then catches up. Peak RSS of the
//!    gateway (whole run) and of that destination.
//! 6. **Scale-out**: a second federation of `SCALE_RS` replicasets per
//!    cluster, one gateway and one destination; `SCALE_N` rows written to
//!    one replicaset alone, then `SCALE_N` to each at once: aggregate rows/s
//!    against one.
//!
//! CPU-µs per row (`cpu_us_per_row` lines, per round): CPU time of the
//! gateway and destination processes (`utime + stime` of `/proc/PID/stat`)
//! over the tcf leg, and of the tx (main) thread of B against the native
//! replica's over the native leg, divided by the rows written.
//!
//! CPU use of every process (and of each Tarantool thread) during each phase
//! is printed on `cpu` lines, from `/proc/PID/stat` and
//! `/proc/PID/task/*/stat`; the gateway's and destination's counters
//! (source reconnects, batches, time spent in apply calls) on `pipeline`
//! lines.
//!
//! The Tarantool binaries: `TCF_TARANTOOL` for the native pair,
//! `TCF_TARANTOOL_SOURCE` / `TCF_TARANTOOL_TARGET` for A and B (both
//! default to `TCF_TARANTOOL`, itself `tarantool` on `PATH`); the first line
//! of stdout names each one's version.
//!
//! Environment (defaults in brackets): `N` [1000000], `B` [100], `ROUNDS`
//! [2], `LAG_ROWS_PER_S` [100000], `LAG_SECS` [20], `LAG_TX_ROWS` [100],
//! `LAG_BOUND_MS` [500], `LAG_SWEEP` [1], `LAG_SWEEP_MAX` [2000000], `N2`
//! [200000], `BACKLOG_ROWS` [5000000], `SCALE_RS` [4], `SCALE_N` [`N`],
//! `WAN_DELAY_MS` [30], `SOURCE_REPLICATION_TIMEOUT_MS` [the
//! harness's 250 ms: A's `replication_timeout` and the gateway's
//! `source_replication_timeout`; the native pair keeps Tarantool's 1 s].
//!
//! Any wait fails after 60 s without progress, with the destination's status
//! and log tails.
//!
//! ```text
//! cargo build --release --workspace --bins && target/release/bench-federation
//! N=200000 ROUNDS=1 LAG_SECS=5 BACKLOG_ROWS=500000 target/release/bench-federation   # quicker
//! ```

mod cpu;
mod lag;
mod scale;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rmpv::Value;
use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    ADMIN_PASSWORD, ADMIN_USER, Side, SpaceSpec, Tarantool, TarantoolOptions,
    federation::{RunningDestination, cluster_options},
    gateway::{GatewayOptions, RunningGateway},
    proxy::DelayProxy,
};

use crate::{
    cpu::{CpuProbe, proc_status},
    lag::{Lagger, Step},
};

/// A wait fails after this long without progress.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Poll period of the throughput runs (the anchor's `fiber.sleep(0.01)`).
const LEN_POLL: Duration = Duration::from_millis(10);
/// `memtx_memory` of every instance.
const MEMTX: u64 = 1 << 30;
/// The peak RSS each tcf process should stay under, MiB.
const RSS_TARGET_MIB: f64 = 64.0;
/// The anchor's writer: rows `base + 0 .. base + n - 1`, `b` per transaction.
const LOAD_LUA: &str = "local base, N, B = ... local s = box.space.test \
    for i = 0, N - 1, B do \
      box.begin() \
      for j = i, math.min(i + B, N) - 1 do local k = base + j s:replace{k, 'payload-' .. k, k * 2} end \
      box.commit() \
    end";

fn env_or(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

struct Settings {
    n: u64,
    b: u64,
    rounds: u64,
    lag_rows_per_s: u64,
    lag_secs: u64,
    lag_tx_rows: u64,
    /// A step of the lag sweep counts as sustained while its p99 stays
    /// within this many ms (and the writer keeps 95 % of the rate).
    lag_bound_ms: u64,
    /// Run the sweep for the highest sustained rate (`LAG_SWEEP`, 1).
    lag_sweep: bool,
    /// The sweep's upper limit, rows/s.
    lag_sweep_max: u64,
    n2: u64,
    /// Rows written on A while no destination runs (`BACKLOG_ROWS`,
    /// 5,000,000; 0 skips the phase).
    backlog_rows: u64,
    /// Replicasets per cluster of the scale-out federation (`SCALE_RS`, 4;
    /// 0 skips the phase) and rows written to each (`SCALE_N`, `N`).
    scale_rs: u64,
    scale_n: u64,
    wan_delay: Duration,
    /// `SOURCE_REPLICATION_TIMEOUT_MS`: A's `replication_timeout` and the
    /// gateway's `source_replication_timeout` (default: the harness's).
    source_replication_timeout: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    let s = Settings {
        n: env_or("N", 1_000_000)?,
        b: env_or("B", 100)?.max(1),
        rounds: env_or("ROUNDS", 2)?.max(1),
        lag_rows_per_s: env_or("LAG_ROWS_PER_S", 100_000)?.max(1),
        lag_secs: env_or("LAG_SECS", 20)?.max(1),
        lag_tx_rows: env_or("LAG_TX_ROWS", 100)?.max(1),
        lag_bound_ms: env_or("LAG_BOUND_MS", 500)?,
        lag_sweep: env_or("LAG_SWEEP", 1)? != 0,
        lag_sweep_max: env_or("LAG_SWEEP_MAX", 2_000_000)?,
        n2: env_or("N2", 200_000)?,
        backlog_rows: env_or("BACKLOG_ROWS", 5_000_000)?,
        scale_rs: env_or("SCALE_RS", 4)?,
        scale_n: env_or("SCALE_N", env_or("N", 1_000_000)?)?,
        wan_delay: Duration::from_millis(env_or("WAN_DELAY_MS", 30)?),
        source_replication_timeout: match std::env::var("SOURCE_REPLICATION_TIMEOUT_MS") {
            Ok(_) => Some(Duration::from_millis(env_or(
                "SOURCE_REPLICATION_TIMEOUT_MS",
                250,
            )?)),
            Err(_) => None,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(&s))
}

fn space() -> SpaceSpec {
    SpaceSpec::new("test")
        .field("id", "unsigned")
        .field("name", "string")
        .field("n", "integer")
}

async fn run(s: &Settings) -> anyhow::Result<()> {
    // Figures on stdout; the harness's own progress only from `warn` on
    // (`RUST_LOG` overrides; the tcf processes get `info` unless it is set).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    eprintln!(
        "gateway: {}; destination: {}",
        tcf_tests::tcf::binary_path("tcf-gateway")?.display(),
        tcf_tests::tcf::binary_path("tcf-destination")?.display()
    );

    // Which Tarantool each side runs (TCF_TARANTOOL for the native pair,
    // TCF_TARANTOOL_SOURCE / _TARGET for A and B), on stdout with the figures.
    let version = |side: Option<Side>| {
        let b = side.map_or_else(tcf_tests::tarantool_binary, tcf_tests::tarantool_binary_for);
        let v = tcf_tests::binary::version(&b).unwrap_or_else(|e| format!("unknown: {e:#}"));
        format!("\"{v}\" ({})", b.display())
    };
    println!(
        "tarantool native={} source={} target={}",
        version(None),
        version(Some(Side::Source)),
        version(Some(Side::Target))
    );

    let native = TarantoolOptions::new("native")
        .replicas(1)
        .memtx_memory(MEMTX)
        .space(space())
        .start_replicaset()
        .await
        .context("starting the native master and replica")?;
    let mut a_opts = cluster_options("a", "rs1").memtx_memory(MEMTX);
    if let Some(t) = s.source_replication_timeout {
        a_opts = a_opts.replication_timeout(t);
    }
    let a = a_opts
        .start_replicaset()
        .await
        .context("starting source cluster A")?;
    let b = cluster_options("b", "rs1")
        .memtx_memory(MEMTX)
        .start_replicaset()
        .await
        .context("starting target cluster B")?;
    let mut gateway = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .context("starting tcf-gateway")?;
    if let Some(t) = s.source_replication_timeout {
        set_source_replication_timeout(&gateway, t).await?;
    }
    let destination = RunningDestination::start(&gateway, "B", &[("rs1", b.uris())], &[])
        .await
        .context("starting tcf-destination")?;
    destination
        .wait_state("rs1", "streaming")
        .await
        .context("the destination never reached streaming")?;
    let replica = native
        .replicas()
        .first()
        .context("the native replicaset has no replica")?;
    let gateway_pid = gateway
        .process
        .pid()
        .context("the gateway is not running")?;
    let dest_pid = destination
        .process
        .pid()
        .context("the destination is not running")?;
    eprintln!(
        "native master pid {}, replica pid {}; A pid {}; B pid {}; gateway pid {gateway_pid}; destination pid {dest_pid}",
        native.master().pid(),
        replica.pid(),
        a.master().pid(),
        b.master().pid()
    );
    let mut cpu = CpuProbe::new(vec![
        ("native_master", native.master().pid()),
        ("native_replica", replica.pid()),
        ("a_master", a.master().pid()),
        ("b_master", b.master().pid()),
        ("gateway", gateway_pid),
        ("destination", dest_pid),
    ]);

    // 1. Throughput, alternating order.
    let native_writer = writer(native.master()).await?;
    let a_writer = writer(a.master()).await?;
    let mut native_next = 0u64;
    let mut a_next = 0u64;
    let (mut native_rates, mut tcf_rates) = (Vec::new(), Vec::new());
    for round in 1..=s.rounds {
        let native_first = round % 2 == 1;
        let mut native_rate = 0.0;
        let mut tcf_rate = 0.0;
        let (mut native_cpu, mut tcf_cpu) = (None, None);
        for leg in 0..2 {
            if (leg == 0) == native_first {
                cpu.start();
                let r = throughput(&native_writer, replica, native_next, s, None)
                    .await
                    .context("native run")?;
                native_next += s.n;
                native_cpu = Some(cpu.report(&format!("round {round} native")));
                eprintln!("round {round} native: {r}");
                native_rate = r.rows_per_s();
            } else {
                cpu.start();
                let before = PipelineCounters::read(&gateway, &destination).await;
                let r = throughput(&a_writer, b.master(), a_next, s, Some(&destination))
                    .await
                    .context("tcf run")?;
                a_next += s.n;
                tcf_cpu = Some(cpu.report(&format!("round {round} tcf")));
                let after = PipelineCounters::read(&gateway, &destination).await;
                before.report(&after, &format!("round {round} tcf"), r.total);
                eprintln!("round {round} tcf: {r}");
                tcf_rate = r.rows_per_s();
            }
        }
        println!(
            "round={round} order={} rows={} tx_rows={} native_rows_per_s={native_rate:.0} \
             tcf_rows_per_s={tcf_rate:.0} ratio={:.2}",
            if native_first {
                "native,tcf"
            } else {
                "tcf,native"
            },
            s.n,
            s.b,
            tcf_rate / native_rate
        );
        if let (Some(nc), Some(tc)) = (&native_cpu, &tcf_cpu) {
            cpu::print_per_row(round, nc, tc, s.n);
        }
        native_rates.push(native_rate);
        tcf_rates.push(tcf_rate);
    }
    if s.rounds > 1 {
        let (nr, tr) = (mean(&native_rates), mean(&tcf_rates));
        println!(
            "rows={} tx_rows={} native_rows_per_s={nr:.0} tcf_rows_per_s={tr:.0} ratio={:.2} (mean of {} rounds)",
            s.n,
            s.b,
            tr / nr,
            s.rounds
        );
    }

    // 2. Lag at a steady rate, then the highest rate sustained with a
    // bounded lag, then the lag at 80 % of that.
    cpu.start();
    let before = PipelineCounters::read(&gateway, &destination).await;
    let lag_started = Instant::now();
    let mut lagger = Lagger {
        w: &a_writer,
        target: b.master(),
        dest: &destination,
        next_row: 0,
        next_seq: 0,
    };
    let step = |rows_per_s: u64| Step {
        rows_per_s,
        secs: s.lag_secs,
        tx_rows: s.lag_tx_rows,
    };
    let lag = lagger
        .step(&step(s.lag_rows_per_s))
        .await
        .context("lag run")?;
    cpu.report("lag");
    let after = PipelineCounters::read(&gateway, &destination).await;
    before.report(&after, "lag", lag_started.elapsed());
    println!("{lag}");
    if s.lag_sweep {
        lag::sweep(
            &mut lagger,
            &lag,
            s.lag_bound_ms as f64,
            s.lag_sweep_max,
            step,
        )
        .await?;
    }

    // The WAN run's reference: the same N2 without the proxy.
    let wan_s = Settings { n: s.n2, ..*s };
    cpu.start();
    let lan = throughput(&a_writer, b.master(), a_next, &wan_s, Some(&destination))
        .await
        .context("LAN reference run")?;
    a_next += s.n2;
    cpu.report("lan reference");
    eprintln!("lan reference: {lan}");

    // 3. Peak RSS of the first destination (it is replaced for the WAN run).
    let dest_hwm = proc_status(dest_pid)?.hwm_kib as f64 / 1024.0;
    let dest_rss = proc_status(dest_pid)?.rss_kib as f64 / 1024.0;

    // 4. WAN: a fresh destination reaching the gateway through the proxy. The
    // first one is stopped (both would write the same progress row of B), and
    // the second resumes from B's stored position.
    destination
        .process
        .stop()
        .await
        .context("stopping the first destination")?;
    let proxy = DelayProxy::start(&gateway.grpc_addr, s.wan_delay).await?;
    // `RunningDestination::start` dials `gateway.grpc_addr`: point it at the
    // proxy for the start, then restore the real address.
    let real = std::mem::replace(&mut gateway.grpc_addr, proxy.addr().to_owned());
    let wan_dest = RunningDestination::start(&gateway, "B", &[("rs1", b.uris())], &[]).await;
    gateway.grpc_addr = real;
    let wan_dest = wan_dest.context("starting the destination behind the delay proxy")?;
    wan_dest
        .wait_state("rs1", "streaming")
        .await
        .context("the destination behind the proxy never reached streaming")?;
    let wan_pid = wan_dest
        .process
        .pid()
        .context("the WAN destination is not running")?;
    cpu.replace("destination", wan_pid);
    cpu.start();
    let before = PipelineCounters::read(&gateway, &wan_dest).await;
    let r = throughput(&a_writer, b.master(), a_next, &wan_s, Some(&wan_dest))
        .await
        .context("WAN run")?;
    a_next += s.n2;
    cpu.report("wan");
    let after = PipelineCounters::read(&gateway, &wan_dest).await;
    before.report(&after, "wan", r.total);
    eprintln!("wan: {r}");
    println!(
        "wan_rtt_added_ms={} rows={} tx_rows={} tcf_rows_per_s={:.0} \
         same_rows_without_proxy_rows_per_s={:.0} proxy_bytes={}",
        2 * s.wan_delay.as_millis(),
        s.n2,
        s.b,
        r.rows_per_s(),
        lan.rows_per_s(),
        proxy.bytes_forwarded()
    );

    let wan_hwm = proc_status(wan_pid)?.hwm_kib as f64 / 1024.0;
    drop(proxy);

    // 5. A backlog: `BACKLOG_ROWS` written on A while no destination runs,
    // then a fresh destination catches up; peak RSS of both.
    let mut backlog_hwm = None;
    wan_dest
        .process
        .stop()
        .await
        .context("stopping the WAN destination")?;
    if s.backlog_rows > 0 {
        let want = len(&a_writer).await? + s.backlog_rows;
        let t0 = Instant::now();
        a_writer
            .eval(
                LOAD_LUA,
                &[Value::from(a_next), s.backlog_rows.into(), s.b.into()][..],
            )
            .await
            .context("writing the backlog on A")?;
        let written = t0.elapsed();
        let dest = RunningDestination::start(&gateway, "B", &[("rs1", b.uris())], &[])
            .await
            .context("starting the destination for the backlog")?;
        let pid = dest
            .process
            .pid()
            .context("the backlog destination is not running")?;
        cpu.replace("destination", pid);
        cpu.start();
        let t1 = Instant::now();
        wait_rows(b.master(), want, Some(&dest))
            .await
            .context("backlog catch-up")?;
        let caught_up = t1.elapsed();
        cpu.report("backlog");
        let hwm = proc_status(pid)?.hwm_kib as f64 / 1024.0;
        println!(
            "backlog_rows={} written_in_s={:.1} caught_up_in_s={:.1} catch_up_rows_per_s={:.0} \
             backlog_destination_peak_rss_mib={hwm:.1}",
            s.backlog_rows,
            written.as_secs_f64(),
            caught_up.as_secs_f64(),
            s.backlog_rows as f64 / caught_up.as_secs_f64().max(1e-9)
        );
        backlog_hwm = Some(hwm);
        dest.process
            .stop()
            .await
            .context("stopping the backlog destination")?;
    }

    // 3, printed last: peaks over the whole run.
    let gw = proc_status(gateway_pid)?;
    let gw_hwm = gw.hwm_kib as f64 / 1024.0;
    let verdict = |v: f64| if v <= RSS_TARGET_MIB { "ok" } else { "OVER" };
    println!(
        "gateway_peak_rss_mib={gw_hwm:.1} ({}) destination_peak_rss_mib={dest_hwm:.1} ({}) \
         wan_destination_peak_rss_mib={wan_hwm:.1} ({}) backlog_destination_peak_rss_mib={} \
         backlog_rows={} target_mib={RSS_TARGET_MIB:.0} \
         gateway_rss_mib={:.1} destination_rss_mib_at_end={dest_rss:.1}",
        verdict(gw_hwm),
        verdict(dest_hwm),
        verdict(wan_hwm),
        backlog_hwm.map_or("-".to_owned(), |h| format!("{h:.1} ({})", verdict(h))),
        s.backlog_rows,
        gw.rss_kib as f64 / 1024.0,
    );

    // 6. Scale-out: a federation of `SCALE_RS` replicasets per cluster.
    if s.scale_rs > 0 {
        gateway
            .process
            .stop()
            .await
            .context("stopping the gateway")?;
        scale::run(s.scale_rs, s.scale_n, s.b)
            .await
            .context("scale-out")?;
    }
    Ok(())
}

/// Restarts the gateway with `source_replication_timeout` set to `t` (the
/// harness writes 250ms into its config, and a repeated key is refused).
async fn set_source_replication_timeout(gw: &RunningGateway, t: Duration) -> anyhow::Result<()> {
    let path = gw.process.dir().join("config.yaml");
    let config = std::fs::read_to_string(&path)?;
    let mut found = false;
    let edited: Vec<String> = config
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("source_replication_timeout:") {
                found = true;
                format!("  source_replication_timeout: {}ms", t.as_millis())
            } else {
                l.to_owned()
            }
        })
        .collect();
    ensure!(found, "no source_replication_timeout in {}", path.display());
    std::fs::write(&path, edited.join("\n") + "\n")?;
    gw.process.stop().await?;
    gw.process.spawn()?;
    gw.process.wait_http(&gw.http_addr, "/metrics").await
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A dedicated admin connection for writing (the 1M-row EVAL takes seconds).
async fn writer(t: &Tarantool) -> anyhow::Result<Connection> {
    let opts = ConnectOptions::new()
        .credentials(ADMIN_USER, ADMIN_PASSWORD)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(3600));
    Connection::connect(&t.uri(), &opts)
        .await
        .with_context(|| format!("connecting to {}", t.uri()))
}

/// One throughput run.
struct Run {
    rows: u64,
    /// Until the writer's EVAL returned.
    write: Duration,
    /// Until the last row was visible on the reader.
    total: Duration,
}

impl Run {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.total.as_secs_f64()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "master_apply_rows_per_s={:.0} caught_up_after_s={:.3} end_to_end_rows_per_s={:.0}",
            self.rows as f64 / self.write.as_secs_f64(),
            self.total.saturating_sub(self.write).as_secs_f64(),
            self.rows_per_s()
        )
    }
}

/// Writes `s.n` rows from key `base` with `w`, then waits until `reader`
/// holds `base + s.n` rows (keys start at 0 and every run writes fresh ones).
async fn throughput(
    w: &Connection,
    reader: &Tarantool,
    base: u64,
    s: &Settings,
    dest: Option<&RunningDestination>,
) -> anyhow::Result<Run> {
    // The lag phase's rows are not counted from 0: the reader must reach
    // the source's count.
    let want = len(w).await? + s.n;
    let t0 = Instant::now();
    w.eval(LOAD_LUA, &[Value::from(base), s.n.into(), s.b.into()][..])
        .await
        .context("the writer's EVAL")?;
    let write = t0.elapsed();
    wait_rows(reader, want, dest).await?;
    Ok(Run {
        rows: s.n,
        write,
        total: t0.elapsed(),
    })
}

/// `box.space.test:len()` over `c`.
async fn len(c: &Connection) -> anyhow::Result<u64> {
    let v = c
        .eval("return box.space.test:len()", &[][..] as &[Value])
        .await
        .context("reading the source's row count")?;
    tcf_tests::first(v)
        .as_u64()
        .context("len() is not a number")
}

/// Waits until `reader` holds exactly `want` rows in `test`.
async fn wait_rows(
    reader: &Tarantool,
    want: u64,
    dest: Option<&RunningDestination>,
) -> anyhow::Result<()> {
    let mut last = (u64::MAX, Instant::now());
    loop {
        let len = reader
            .eval1("return box.space.test:len()", &[])
            .await?
            .as_u64()
            .context("len() is not a number")?;
        if len >= want {
            ensure!(
                len == want,
                "{} holds {len} rows, expected {want}",
                reader.label()
            );
            return Ok(());
        }
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() > STALL_LIMIT {
            bail!(
                "no progress for {STALL_LIMIT:?}: {} holds {len} of {want} rows{}",
                reader.label(),
                diagnostics(dest).await
            );
        }
        tokio::time::sleep(LEN_POLL).await;
    }
}

/// The destination's status and both log tails, for an error message.
async fn diagnostics(dest: Option<&RunningDestination>) -> String {
    let Some(d) = dest else {
        return String::new();
    };
    let status = match d.status().await {
        Ok(s) => s.to_string(),
        Err(e) => format!("unavailable: {e:#}"),
    };
    format!(
        "\ndestination status: {status}\ndestination log tail:\n{}",
        d.process.log_tail(30)
    )
}

/// Counters of the gateway and the destination, from `/metrics`.
#[derive(Default, Clone, Copy)]
struct PipelineCounters {
    gateway_reconnects: f64,
    gateway_streams_opened: f64,
    gateway_rows_shipped: f64,
    dest_batches: f64,
    dest_rows: f64,
    dest_apply_seconds: f64,
}

/// The sum over every label set of metric `name` in a Prometheus text page.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl PipelineCounters {
    async fn read(gateway: &RunningGateway, dest: &RunningDestination) -> Self {
        let page = |addr: String| async move {
            tcf_tests::http::get(&addr, "/metrics")
                .await
                .map(|r| r.body)
                .unwrap_or_default()
        };
        let g = page(gateway.http_addr.clone()).await;
        let d = page(dest.http_addr.clone()).await;
        Self {
            gateway_reconnects: metric_sum(&g, "tcf_gateway_reconnects_total"),
            gateway_streams_opened: gateway.process.log().matches("stream opened").count() as f64,
            gateway_rows_shipped: metric_sum(&g, "tcf_gateway_rows_shipped_total"),
            dest_batches: metric_sum(&d, "tcf_destination_batches_applied_total"),
            dest_rows: metric_sum(&d, "tcf_destination_rows_applied_total"),
            dest_apply_seconds: metric_sum(&d, "tcf_destination_apply_seconds_sum"),
        }
    }

    /// Prints what happened between `self` and `end` over `wall`.
    fn report(&self, end: &Self, phase: &str, wall: Duration) {
        let d = |f: fn(&Self) -> f64| f(end) - f(self);
        let batches = d(|c| c.dest_batches);
        let apply = d(|c| c.dest_apply_seconds);
        println!(
            "pipeline phase=\"{phase}\" gateway_reconnects={:.0} gateway_streams_opened={:.0} gateway_rows_shipped={:.0} \
             dest_batches={batches:.0} dest_rows_per_batch={:.0} \
             dest_apply_ms_mean={:.2} dest_apply_busy_pct={:.0}",
            d(|c| c.gateway_reconnects),
            d(|c| c.gateway_streams_opened),
            d(|c| c.gateway_rows_shipped),
            d(|c| c.dest_rows) / batches.max(1.0),
            apply / batches.max(1.0) * 1e3,
            apply / wall.as_secs_f64().max(1e-9) * 100.0,
        );
    }
}
