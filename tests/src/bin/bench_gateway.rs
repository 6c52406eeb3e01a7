//! Benchmark: the memory of `tcf-gateway` under backpressure (figures, not a
//! timed test).
//!
//! One source replicaset (a master, `memtx_memory` 1 GiB, space `test`
//! `{unsigned, string, integer}`), the real `tcf-gateway` binary with default
//! settings, and an in-process gRPC client playing the destination:
//!
//! * **A, backlog**: `ROWS` rows `{i, 'payload-'..i, i*2}` are written in
//!   transactions of 100 before the gateway starts; a fresh gateway then
//!   streams them from the position recorded before the writes to a consumer
//!   that reads slowly (it sleeps `SLOW_MS` after every `Batch` message and
//!   keeps below `CONSUMER_ROWS_PER_S`) and acks every `ACK_EVERY` batches.
//!   Every row must arrive exactly once, in order.
//! * **B, one big transaction**: a fresh gateway; one transaction of
//!   `BIG_TX_ROWS` rows is committed while a consumer reads at full speed; it
//!   must arrive whole, in `partial` pieces that are counted.
//!
//! Environment (defaults): `ROWS` (1000000), `BIG_TX_ROWS` (200000),
//! `SLOW_MS` (2), `CONSUMER_ROWS_PER_S` (50000), `ACK_EVERY` (10).
//! `GATEWAY_EXTRA` adds lines to the gateway's config, `;`-separated (e.g.
//! `GATEWAY_EXTRA='queue_max_bytes: 4194304'`); the default is none.
//!
//! The gateway's RSS (`VmRSS`) is sampled every 100 ms; its peak is `VmHWM`
//! from `/proc/PID/status` (or the highest sample, if higher). The source Tarantool's RSS is printed as a
//! reference. The gateway binary is the one next to this executable, so build
//! both in the same profile:
//!
//! ```text
//! cargo build --release -p tcf-gateway -p tcf-tests && target/release/bench-gateway
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use tcf_iproto::Vclock;
use tcf_proto::v1::{self, open::Start};
use tcf_tests::{
    Grant, Privileges, Replicaset, SpaceSpec, TarantoolOptions, UserSpec,
    gateway::{GatewayOptions, Message, REPL_PASSWORD, REPL_USER, RunningGateway, Stream},
};

/// How long any single message may take to arrive.
const MESSAGE_LIMIT: Duration = Duration::from_secs(120);
/// RSS sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Rows per source transaction in the backlog.
const TX_ROWS: u64 = 100;
/// Rows written per EVAL while building the backlog (keeps each request short).
const ROWS_PER_EVAL: u64 = 100_000;
const MIB: f64 = 1024.0 * 1024.0;

fn env_or(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

struct Settings {
    backlog: u64,
    big_tx: u64,
    slow: Duration,
    consumer_rate: u64,
    ack_every: u64,
    /// Extra `gateway:` config lines (`GATEWAY_EXTRA`, `;`-separated).
    extra: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        backlog: env_or("ROWS", 1_000_000)?,
        big_tx: env_or("BIG_TX_ROWS", 200_000)?,
        slow: Duration::from_millis(env_or("SLOW_MS", 2)?),
        consumer_rate: env_or("CONSUMER_ROWS_PER_S", 50_000)?,
        ack_every: env_or("ACK_EVERY", 10)?.max(1),
        extra: std::env::var("GATEWAY_EXTRA")
            .unwrap_or_default()
            .split(';')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("  {l}"))
            .collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(&settings))
}

async fn run(settings: &Settings) -> anyhow::Result<()> {
    // Figures on stdout; the harness's own progress only from `warn` on
    // (`RUST_LOG` overrides, and is also what the gateway process inherits).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rs = TarantoolOptions::new("bench-gw")
        .memtx_memory(1 << 30)
        .space(
            SpaceSpec::new("test")
                .field("id", "unsigned")
                .field("name", "string")
                .field("n", "integer"),
        )
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::Universe(Privileges::READ)))
        // What the harness's gateway config says (`source_replication_timeout`).
        .replication_timeout(Duration::from_millis(250))
        .start_replicaset()
        .await
        .context("starting the source")?;
    let gateway_binary = tcf_tests::tcf::binary_path("tcf-gateway")?;
    eprintln!(
        "gateway binary: {}; extra config: {:?}",
        gateway_binary.display(),
        settings.extra
    );

    backlog(&rs, settings).await?;
    big_transaction(&rs, settings).await?;

    let source_pid = rs.master().pid();
    let source = proc_status(source_pid)?;
    println!(
        "source_tarantool_peak_rss_mib={:.1} source_tarantool_rss_mib={:.1} source_rows={}",
        source.hwm_kib as f64 / 1024.0,
        source.rss_kib as f64 / 1024.0,
        settings.backlog + settings.big_tx,
    );
    Ok(())
}

/// Scenario A: a backlog streamed to a slow consumer.
async fn backlog(rs: &Replicaset, settings: &Settings) -> anyhow::Result<()> {
    let m = rs.master();
    let n = settings.backlog;
    let from = m.vclock().await?;
    let t = Instant::now();
    let mut first = 1;
    while first <= n {
        let last = (first + ROWS_PER_EVAL - 1).min(n);
        m.eval(
            "local first, last, per_tx = ... local s = box.space.test \
             for b = first, last, per_tx do \
               box.begin() \
               for i = b, math.min(b + per_tx - 1, last) do s:insert{i, 'payload-' .. i, i * 2} end \
               box.commit() \
             end",
            &[first.into(), last.into(), TX_ROWS.into()],
        )
        .await?;
        first = last + 1;
    }
    eprintln!(
        "backlog: {n} rows written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let target = m.vclock().await?;

    let gw = start_gateway(rs, settings).await?;
    let sampler = Sampler::start(gateway_pid(&gw)?);
    let start_rss = proc_status(gateway_pid(&gw)?)?.rss_kib;
    let mut s = open(&gw, &from).await?;
    let t = Instant::now();
    let (mut next_id, mut batches, mut acked) = (1u64, 0u64, from.clone());
    let mut last = from.clone();
    while next_id <= n {
        let batch = match s.expect(MESSAGE_LIMIT).await? {
            Message::Batch(b) => b,
            Message::Heartbeat(_) => continue,
            other => bail!("expected a batch, got {other:?}"),
        };
        let mut rows = 0;
        for tx in batch.transactions {
            for row in &tx.rows {
                let id = first_field(row)?;
                ensure!(
                    id == next_id,
                    "row {id} arrived where row {next_id} was expected"
                );
                next_id += 1;
                rows += 1;
            }
            if let Some(v) = tx.vclock {
                last = Vclock::from(v);
            }
        }
        batches += 1;
        if batches.is_multiple_of(settings.ack_every) {
            s.ack(&last).await?;
            acked = last.clone();
        }
        // The slow consumer: a pause per message, and a bounded row rate.
        let pace = Duration::from_secs_f64(rows as f64 / settings.consumer_rate.max(1) as f64);
        tokio::time::sleep(settings.slow.max(pace)).await;
    }
    let elapsed = t.elapsed().as_secs_f64();
    if acked != last {
        s.ack(&last).await?;
    }
    ensure!(
        last == target,
        "the last transaction's vclock {last} is not the source's {target}"
    );
    let samples = sampler.stop().await;
    let status = proc_status(gateway_pid(&gw)?)?;
    println!(
        "backlog_rows={n} gateway_peak_rss_mib={:.1} gateway_rss_mib_p50={:.1} elapsed_s={elapsed:.1} \
         rows_per_s={:.0} gateway_start_rss_mib={:.1} gateway_rss_mib_max_sampled={:.1} batches={batches} \
         slow_ms_per_batch={} consumer_rows_per_s_cap={}",
        peak_mib(&status, &samples),
        percentile(&samples, 50) / MIB,
        n as f64 / elapsed,
        start_rss as f64 / 1024.0,
        percentile(&samples, 100) / MIB,
        settings.slow.as_millis(),
        settings.consumer_rate,
    );
    drop(s);
    gw.process.stop().await?;
    Ok(())
}

/// Scenario B: one big transaction to a consumer reading at full speed.
async fn big_transaction(rs: &Replicaset, settings: &Settings) -> anyhow::Result<()> {
    let m = rs.master();
    let n = settings.big_tx;
    let base = settings.backlog;
    let gw = start_gateway(rs, settings).await?;
    let sampler = Sampler::start(gateway_pid(&gw)?);
    let from = m.vclock().await?;
    let mut s = open(&gw, &from).await?;
    let t = Instant::now();
    let write = async {
        m.eval(
            "local first, last = ... local s = box.space.test \
             box.begin() \
             for i = first, last do s:insert{i, 'payload-' .. i, i * 2} end \
             box.commit()",
            &[(base + 1).into(), (base + n).into()],
        )
        .await?;
        m.vclock().await
    };
    let (target, read) = tokio::join!(write, read_one_transaction(&mut s, base + 1));
    let (target, read) = (target?, read?);
    let elapsed = t.elapsed().as_secs_f64();
    s.ack(&read.vclock).await?;
    ensure!(
        read.rows == n,
        "the transaction arrived with {} rows, not {n}",
        read.rows
    );
    ensure!(
        read.vclock == target,
        "its vclock {} is not the source's {target}",
        read.vclock
    );
    let samples = sampler.stop().await;
    let status = proc_status(gateway_pid(&gw)?)?;
    println!(
        "big_tx_rows={n} gateway_peak_rss_mib={:.1} pieces={} batches={} elapsed_s={elapsed:.1} \
         gateway_rss_mib_p50={:.1}",
        peak_mib(&status, &samples),
        read.pieces,
        read.batches,
        percentile(&samples, 50) / MIB,
    );
    drop(s);
    gw.process.stop().await?;
    Ok(())
}

struct ReadTx {
    rows: u64,
    pieces: u64,
    batches: u64,
    vclock: Vclock,
}

/// Reads raw messages until one whole transaction arrived, checking that its
/// pieces follow each other and its rows are `first_id, first_id + 1, …`.
async fn read_one_transaction(s: &mut Stream, first_id: u64) -> anyhow::Result<ReadTx> {
    let mut read = ReadTx {
        rows: 0,
        pieces: 0,
        batches: 0,
        vclock: Vclock::new(),
    };
    let mut id_of: Option<(u32, u64)> = None;
    loop {
        let batch = match s.expect(MESSAGE_LIMIT).await? {
            Message::Batch(b) => b,
            Message::Heartbeat(_) => continue,
            other => bail!("expected a batch, got {other:?}"),
        };
        read.batches += 1;
        let mut txs = batch.transactions.into_iter();
        for tx in txs.by_ref() {
            if *id_of.get_or_insert((tx.origin, tx.tsn)) != (tx.origin, tx.tsn) {
                bail!("another transaction came between the pieces: {tx:?}");
            }
            read.pieces += 1;
            for row in &tx.rows {
                let id = first_field(row)?;
                ensure!(
                    id == first_id + read.rows,
                    "row {id} arrived where row {} was expected",
                    first_id + read.rows
                );
                read.rows += 1;
            }
            if !tx.partial {
                read.vclock = Vclock::from(tx.vclock.context("the last piece has no vclock")?);
                ensure!(
                    txs.next().is_none(),
                    "a second transaction after the big one"
                );
                return Ok(read);
            }
            ensure!(tx.vclock.is_none(), "a partial piece carries a vclock");
        }
    }
}

async fn start_gateway(rs: &Replicaset, settings: &Settings) -> anyhow::Result<RunningGateway> {
    let opts = GatewayOptions {
        extra: settings.extra.clone(),
        ..GatewayOptions::default()
    };
    RunningGateway::start(&[("rs1", rs.uris())], opts).await
}

async fn open(gw: &RunningGateway, from: &Vclock) -> anyhow::Result<Stream> {
    let mut client = gw.client().await?;
    let mut s = client.open("rs1", Start::After(from.into())).await?;
    match s.expect(MESSAGE_LIMIT).await? {
        Message::Started(_) => Ok(s),
        other => bail!("expected Started, got {other:?}"),
    }
}

fn first_field(row: &v1::Row) -> anyhow::Result<u64> {
    let mut raw = &row.tuple[..];
    let tuple = rmpv::decode::read_value(&mut raw)?;
    tuple
        .as_array()
        .and_then(|a| a.first())
        .and_then(rmpv::Value::as_u64)
        .with_context(|| format!("a tuple without an unsigned first field: {tuple}"))
}

fn gateway_pid(gw: &RunningGateway) -> anyhow::Result<u32> {
    gw.process.pid().context("the gateway is not running")
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

/// Samples a process's `VmRSS` every [`SAMPLE_EVERY`] until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok(s) = proc_status(pid) {
                    samples.push(s.rss_kib as f64 * 1024.0);
                }
            }
            samples
        });
        Self { stop, task }
    }

    /// The samples, in bytes.
    async fn stop(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The peak RSS in MiB: `VmHWM`, or the highest sample if that is higher (the
/// kernel updates `VmHWM` lazily).
fn peak_mib(status: &ProcStatus, samples: &[f64]) -> f64 {
    (status.hwm_kib as f64 / 1024.0).max(percentile(samples, 100) / MIB)
}

/// The `p`-th percentile (nearest rank) of `samples`; NaN when empty.
fn percentile(samples: &[f64], p: usize) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}
