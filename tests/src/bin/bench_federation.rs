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
//! 2. **Lag at a steady rate**: transactions of `LAG_TX_ROWS` rows at
//!    `LAG_ROWS_PER_S` for `LAG_SECS`, one EVAL per transaction, paced by a
//!    tokio interval. The writer records the `Instant` each EVAL returned
//!    (committed on A); a reader polls B's largest key every ~1 ms and
//!    records the `Instant` each transaction's last row first appeared.
//!    Lag = appearance - commit, both on this process's clock.
//! 3. **Peak RSS** (`VmHWM`) of the gateway and the destination(s).
//! 4. **WAN**: the destination is replaced by one that reaches the gateway
//!    through [`DelayProxy`] (`WAN_DELAY_MS` added each way, no bandwidth
//!    cap); throughput of `N2` rows in transactions of `B`, next to the same
//!    `N2` rows through the first destination just before (no proxy).
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
//! [2], `LAG_ROWS_PER_S` [20000], `LAG_SECS` [20], `LAG_TX_ROWS` [100], `N2`
//! [200000], `WAN_DELAY_MS` [30], `SOURCE_REPLICATION_TIMEOUT_MS` [the
//! harness's 250 ms: A's `replication_timeout` and the gateway's
//! `source_replication_timeout`; the native pair keeps Tarantool's 1 s].
//!
//! Any wait fails after 60 s without progress, with the destination's status
//! and log tails.
//!
//! ```text
//! cargo build --release --workspace --bins && target/release/bench-federation
//! N=200000 ROUNDS=1 target/release/bench-federation   # a quicker run
//! ```

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use rmpv::Value;
use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    ADMIN_PASSWORD, ADMIN_USER, Side, SpaceSpec, Tarantool, TarantoolOptions,
    federation::{RunningDestination, cluster_options},
    gateway::{GatewayOptions, RunningGateway},
    proxy::DelayProxy,
};
use tokio::time::MissedTickBehavior;

/// A wait fails after this long without progress.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// Poll period of the throughput runs (the anchor's `fiber.sleep(0.01)`).
const LEN_POLL: Duration = Duration::from_millis(10);
/// Poll period of the lag reader.
const LAG_POLL: Duration = Duration::from_millis(1);
/// `memtx_memory` of every instance.
const MEMTX: u64 = 1 << 30;
/// The peak RSS each tcf process should stay under, MiB.
const RSS_TARGET_MIB: f64 = 64.0;
/// Linux `USER_HZ`: the unit of utime/stime in `/proc/PID/stat`.
const TICKS_PER_S: f64 = 100.0;

/// The anchor's writer: rows `base + 0 .. base + n - 1`, `b` per transaction.
const LOAD_LUA: &str = "local base, N, B = ... local s = box.space.test \
    for i = 0, N - 1, B do \
      box.begin() \
      for j = i, math.min(i + B, N) - 1 do local k = base + j s:replace{k, 'payload-' .. k, k * 2} end \
      box.commit() \
    end";

/// One transaction of the lag phase: rows `first ..= last`.
const TX_LUA: &str = "local first, last = ... local s = box.space.test \
    box.begin() \
    for k = first, last do s:replace{k, 'payload-' .. k, k * 2} end \
    box.commit()";

/// The largest key of `test` (-1 when empty).
const MAX_LUA: &str = "local t = box.space.test.index[0]:max() return t and t[1] or -1";

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
    n2: u64,
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
        lag_rows_per_s: env_or("LAG_ROWS_PER_S", 20_000)?.max(1),
        lag_secs: env_or("LAG_SECS", 20)?.max(1),
        lag_tx_rows: env_or("LAG_TX_ROWS", 100)?.max(1),
        n2: env_or("N2", 200_000)?,
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
        for leg in 0..2 {
            if (leg == 0) == native_first {
                cpu.start();
                let r = throughput(&native_writer, replica, native_next, s, None)
                    .await
                    .context("native run")?;
                native_next += s.n;
                cpu.report(&format!("round {round} native"));
                eprintln!("round {round} native: {r}");
                native_rate = r.rows_per_s();
            } else {
                cpu.start();
                let before = PipelineCounters::read(&gateway, &destination).await;
                let r = throughput(&a_writer, b.master(), a_next, s, Some(&destination))
                    .await
                    .context("tcf run")?;
                a_next += s.n;
                cpu.report(&format!("round {round} tcf"));
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

    // 2. Lag at a steady rate.
    cpu.start();
    let before = PipelineCounters::read(&gateway, &destination).await;
    let lag_started = Instant::now();
    let lag = steady_lag(&a_writer, b.master(), a_next, s, &destination)
        .await
        .context("lag run")?;
    a_next += lag.rows;
    cpu.report("lag");
    let after = PipelineCounters::read(&gateway, &destination).await;
    before.report(&after, "lag", lag_started.elapsed());
    println!("{lag}");

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

    // 3, printed last: peaks over the whole run.
    let gw = proc_status(gateway_pid)?;
    let wan = proc_status(wan_pid)?;
    let gw_hwm = gw.hwm_kib as f64 / 1024.0;
    let wan_hwm = wan.hwm_kib as f64 / 1024.0;
    let verdict = |v: f64| if v <= RSS_TARGET_MIB { "ok" } else { "OVER" };
    println!(
        "gateway_peak_rss_mib={gw_hwm:.1} ({}) destination_peak_rss_mib={dest_hwm:.1} ({}) \
         wan_destination_peak_rss_mib={wan_hwm:.1} ({}) target_mib={RSS_TARGET_MIB:.0} \
         gateway_rss_mib={:.1} destination_rss_mib_at_end={dest_rss:.1}",
        verdict(gw_hwm),
        verdict(dest_hwm),
        verdict(wan_hwm),
        gw.rss_kib as f64 / 1024.0,
    );
    drop(proxy);
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
    let want = base + s.n;
    let t0 = Instant::now();
    w.eval(LOAD_LUA, &[Value::from(base), s.n.into(), s.b.into()][..])
        .await
        .context("the writer's EVAL")?;
    let write = t0.elapsed();
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
            return Ok(Run {
                rows: s.n,
                write,
                total: t0.elapsed(),
            });
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

/// Result of the steady-rate phase.
struct Lag {
    rows: u64,
    txs: usize,
    target_rows_per_s: u64,
    achieved_rows_per_s: f64,
    /// appearance - commit, milliseconds, sorted.
    lags_ms: Vec<f64>,
}

impl std::fmt::Display for Lag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = |q: usize| percentile(&self.lags_ms, q);
        let early = self.lags_ms.iter().filter(|l| **l < 0.0).count();
        write!(
            f,
            "lag_target_rows_per_s={} achieved_rows_per_s={:.0} txs={} rows={} \
             lag_ms_p50={:.1} lag_ms_p99={:.1} lag_ms_max={:.1} lag_ms_min={:.1} seen_before_commit_reply={early}",
            self.target_rows_per_s,
            self.achieved_rows_per_s,
            self.txs,
            self.rows,
            p(50),
            p(99),
            p(100),
            self.lags_ms.first().copied().unwrap_or(f64::NAN),
        )
    }
}

/// Transactions of `s.lag_tx_rows` rows at `s.lag_rows_per_s` for
/// `s.lag_secs`, keys from `base`; lag of each on this process's clock.
async fn steady_lag(
    w: &Connection,
    target: &Tarantool,
    base: u64,
    s: &Settings,
    dest: &RunningDestination,
) -> anyhow::Result<Lag> {
    let tx_rows = s.lag_tx_rows;
    let tx_per_s = (s.lag_rows_per_s as f64 / tx_rows as f64).max(1.0);
    let txs = (tx_per_s * s.lag_secs as f64).round() as u64;
    let period = Duration::from_secs_f64(1.0 / tx_per_s);
    let reader_conn = writer(target).await?;
    // The reader: every ~1 ms, B's largest key; transaction k is visible once
    // key `base + (k + 1) * tx_rows - 1` is (B applies in source order).
    let reader = tokio::spawn(async move {
        let mut seen: Vec<Instant> = Vec::with_capacity(txs as usize);
        let mut progress = Instant::now();
        while (seen.len() as u64) < txs {
            let max = reader_conn
                .eval(MAX_LUA, &[][..] as &[Value])
                .await
                .context("polling B's largest key")?;
            let now = Instant::now();
            let max = tcf_tests::first(max).as_i64().context("max key")?;
            let visible = if max < base as i64 {
                0
            } else {
                ((max as u64 - base + 1) / tx_rows).min(txs)
            };
            if visible > seen.len() as u64 {
                seen.resize(visible as usize, now);
                progress = now;
            } else if progress.elapsed() > STALL_LIMIT {
                bail!(
                    "no progress for {STALL_LIMIT:?}: {} of {txs} transactions visible on B",
                    seen.len()
                );
            }
            tokio::time::sleep(LAG_POLL).await;
        }
        anyhow::Ok(seen)
    });
    let mut committed = Vec::with_capacity(txs as usize);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let t0 = Instant::now();
    for k in 0..txs {
        tick.tick().await;
        let first = base + k * tx_rows;
        let last = first + tx_rows - 1;
        w.eval(TX_LUA, &[Value::from(first), last.into()][..])
            .await
            .with_context(|| format!("transaction {k} of the lag run"))?;
        committed.push(Instant::now());
    }
    let write = t0.elapsed();
    let seen = match reader.await.context("the lag reader panicked")? {
        Ok(seen) => seen,
        Err(e) => bail!("{e:#}{}", diagnostics(Some(dest)).await),
    };
    let mut lags_ms: Vec<f64> = committed
        .iter()
        .zip(&seen)
        .map(|(c, s)| {
            if s >= c {
                s.duration_since(*c).as_secs_f64() * 1e3
            } else {
                -(c.duration_since(*s).as_secs_f64() * 1e3)
            }
        })
        .collect();
    lags_ms.sort_by(f64::total_cmp);
    Ok(Lag {
        rows: txs * tx_rows,
        txs: txs as usize,
        target_rows_per_s: s.lag_rows_per_s,
        achieved_rows_per_s: (txs * tx_rows) as f64 / write.as_secs_f64(),
        lags_ms,
    })
}

/// The `p`-th percentile (nearest rank) of sorted `v`; NaN when empty.
fn percentile(v: &[f64], p: usize) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// `VmRSS` and `VmHWM` of a process, KiB.
struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
}

fn proc_status(pid: u32) -> anyhow::Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// `(comm, utime + stime)` from the text of a `/proc/.../stat` file.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after comm.
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some((comm, ticks(11) + ticks(12)))
}

/// CPU ticks of a process: its total (exited threads included) and the
/// live threads' ticks summed by thread name.
fn cpu_ticks(pid: u32) -> (u64, BTreeMap<String, u64>) {
    let total = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_ticks(&s))
        .map_or(0, |(_, t)| t);
    let mut threads = BTreeMap::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some((comm, t)) = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|s| stat_ticks(&s))
            {
                *threads.entry(comm).or_default() += t;
            }
        }
    }
    (total, threads)
}

/// Per-process (and per-thread-name) CPU share over a phase.
struct CpuProbe {
    procs: Vec<(&'static str, u32)>,
    start: Vec<(u64, BTreeMap<String, u64>)>,
    at: Instant,
}

impl CpuProbe {
    fn new(procs: Vec<(&'static str, u32)>) -> Self {
        Self {
            procs,
            start: Vec::new(),
            at: Instant::now(),
        }
    }

    fn replace(&mut self, label: &str, pid: u32) {
        for p in &mut self.procs {
            if p.0 == label {
                p.1 = pid;
            }
        }
    }

    fn start(&mut self) {
        self.start = self.procs.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
        self.at = Instant::now();
    }

    /// Prints `cpu phase=… label=P% (thread=P% …) …` in percent of one core;
    /// `exited=` is the time of threads that ended during the phase.
    fn report(&self, phase: &str) {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let pct = |ticks: u64| ticks as f64 / TICKS_PER_S / wall * 100.0;
        let mut line = format!("cpu phase=\"{phase}\" wall_s={wall:.2}");
        let mut sum = 0;
        for ((label, pid), (total_before, before)) in self.procs.iter().zip(&self.start) {
            let (total_now, now) = cpu_ticks(*pid);
            let total = total_now.saturating_sub(*total_before);
            sum += total;
            let mut threads = Vec::new();
            let mut live = 0;
            for (name, t) in &now {
                let d = t.saturating_sub(before.get(name).copied().unwrap_or(0));
                live += d;
                if d > 0 {
                    threads.push(format!("{name}={:.0}", pct(d)));
                }
            }
            if total > live {
                threads.push(format!("exited={:.0}", pct(total - live)));
            }
            line.push_str(&format!(
                " {label}={:.0}% ({})",
                pct(total),
                threads.join(" ")
            ));
        }
        line.push_str(&format!(" all={:.0}%", pct(sum)));
        println!("{line}");
    }
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
