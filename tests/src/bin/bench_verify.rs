//! Benchmark: online verification (`docs/verify.md`), figures, not a timed
//! test.
//!
//! A federation A -> B (one master each, `memtx_memory` 1 GiB, the release
//! `tcf-gateway` and `tcf-destination` next to this executable) holding `N`
//! (1,000,000) rows `{i, 'payload-'..i, i*2}` in memtx space `test`:
//!
//! 1. **Write latency without a walk**: a client on A commits one-row
//!    REPLACEs at `WRITE_RATE` (2000/s) for `WRITE_SECS` (10); the latency of
//!    each (request to reply, one clock) gives p50/p99/max.
//! 2. **Verify rate and write latency with a walk**: a verify walk of `test`
//!    (chunks of `CHUNK_ROWS`, 1000; no pacing: `rows_per_second` 10^9) runs
//!    while the same writer runs; prints rows/s of the walk and the latency
//!    again, with the ratio of the two p99s.
//! 3. **Initial load, snapshot against a repair walk** (issue item 6): an
//!    empty target B2 loaded by the snapshot path (`initial_position:
//!    snapshot`), and an empty target B3 started at the source's current
//!    position and filled by a repair walk; prints both rates.
//!
//! ```text
//! cargo build --release --workspace --bins && target/release/bench-verify
//! N=200000 target/release/bench-verify     # quicker
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmpv::Value;
use tcf_api::verify::{WalkMode, WalkRequest};
use tcf_tests::{
    Tarantool,
    federation::{RunningDestination, cluster_options, count},
    gateway::{GatewayOptions, RunningGateway},
    wait_until,
};

const MEMTX: u64 = 1 << 30;
const ROWS_PER_EVAL: u64 = 100_000;

fn env_or(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

/// Latencies of one-row writes at `rate` per second for `secs`, ms, sorted.
async fn write_latencies(
    t: &Tarantool,
    rate: u64,
    secs: u64,
    base: u64,
) -> anyhow::Result<Vec<f64>> {
    let conn = t.admin().await?;
    let space = t
        .eval1("return box.space.lat.id", &[])
        .await?
        .as_u64()
        .context("lat space id")? as u32;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let n = rate * secs;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        tick.tick().await;
        let tuple = [Value::from(base + i), Value::from(i)];
        let started = Instant::now();
        conn.replace(space, &tuple[..]).await.context("write")?;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn fill(t: &Tarantool, n: u64) -> anyhow::Result<()> {
    let mut from = 1;
    while from <= n {
        let to = (from + ROWS_PER_EVAL - 1).min(n);
        t.eval(
            "local from, to = ... for i = from, to, 100 do box.begin() \
             for j = i, math.min(i + 99, to) do box.space.test:replace{j, 'payload-' .. j, j * 2} end \
             box.commit() end",
            &[from.into(), to.into()],
        )
        .await?;
        from = to + 1;
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let n = env_or("N", 1_000_000)?;
    let write_rate = env_or("WRITE_RATE", 2000)?.max(1);
    let write_secs = env_or("WRITE_SECS", 10)?.max(1);
    let chunk_rows = u32::try_from(env_or("CHUNK_ROWS", 1000)?).unwrap_or(1000);

    let lat = "box.schema.space.create('lat', {if_not_exists = true}) \
               box.space.lat:create_index('pk', {if_not_exists = true})";
    let a = cluster_options("a", "rs1")
        .memtx_memory(MEMTX)
        .lua(lat)
        .start_replicaset()
        .await
        .context("A")?;
    let b = cluster_options("b", "rs1")
        .memtx_memory(MEMTX)
        .lua(lat)
        .start_replicaset()
        .await
        .context("B")?;
    let gateway = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default()).await?;
    let destination = RunningDestination::start(&gateway, "B", &[("rs1", b.uris())], &[]).await?;
    destination.wait_state("rs1", "streaming").await?;
    fill(a.master(), n).await?;
    wait_until("B to hold every row", Duration::from_secs(600), || async {
        count(b.master(), "test").await.map(|c| c >= n)
    })
    .await?;

    // 1. Without a walk.
    let quiet = write_latencies(a.master(), write_rate, write_secs, 0).await?;

    // 2. With a walk.
    let req = WalkRequest {
        mode: WalkMode::Verify,
        spaces: vec!["test".into()],
        chunk_rows: Some(chunk_rows),
        rows_per_second: Some(1_000_000_000),
    };
    let walk_started = Instant::now();
    let walk = destination.start_walk_when_ready(&req).await?;
    let lat_task = write_latencies(a.master(), write_rate, write_secs, 10_000_000);
    let (busy, report) = tokio::join!(lat_task, destination.wait_walk(&walk));
    let busy = busy?;
    let report = report?;
    let walk_secs = walk_started.elapsed().as_secs_f64();
    let w = report
        .replicasets
        .get("rs1")
        .and_then(Option::as_ref)
        .context("no walk on rs1")?;
    let compared = w.by_space.get("test").map_or(0, |s| s.compared);
    if w.mismatches() != 0 {
        bail!("the walk found mismatches on an untouched federation: {w:#?}");
    }
    println!(
        "verify_rows={compared} chunk_rows={chunk_rows} elapsed_s={walk_secs:.2} verify_rows_per_s={:.0} chunks={}",
        compared as f64 / walk_secs,
        w.seq
    );
    let line = |name: &str, l: &[f64]| {
        println!(
            "write_latency_{name} writes={} rate_per_s={write_rate} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            l.len(),
            pct(l, 0.5),
            pct(l, 0.99),
            l.last().copied().unwrap_or_default()
        );
    };
    line("without_walk", &quiet);
    line("with_walk", &busy);
    println!(
        "write_latency_p99_ratio_with_over_without={:.2} (walk ran for {walk_secs:.1}s of the {write_secs}s of writes)",
        pct(&busy, 0.99) / pct(&quiet, 0.99).max(1e-9)
    );

    // 3. Initial load: snapshot against a repair walk. The gateway serves
    // one stream per replicaset: one destination at a time.
    drop(destination);
    let b2 = cluster_options("b2", "rs1")
        .memtx_memory(MEMTX)
        .lua(lat)
        .start_replicaset()
        .await?;
    let started = Instant::now();
    let d2 = RunningDestination::start(&gateway, "B2", &[("rs1", b2.uris())], &[]).await?;
    wait_until(
        "B2 loaded by the snapshot",
        Duration::from_secs(900),
        || async {
            let s = d2.status().await.ok()?;
            (s.pointer("/replicasets/rs1/state")? == "streaming").then_some(())
        },
    )
    .await?;
    let snap_secs = started.elapsed().as_secs_f64();
    let loaded = count(b2.master(), "test").await?;
    drop(d2);
    drop(b2);
    wait_until(
        "the gateway to see no destination",
        Duration::from_secs(60),
        || async {
            let s = gateway.status().await.ok()?;
            (s.pointer("/replicasets/rs1/state")? == "idle").then_some(())
        },
    )
    .await?;
    let b3 = cluster_options("b3", "rs1")
        .memtx_memory(MEMTX)
        .lua(lat)
        .start_replicaset()
        .await?;
    let started = Instant::now();
    let d3 = RunningDestination::start(
        &gateway,
        "B3",
        &[("rs1", b3.uris())],
        &["  initial_position: current"],
    )
    .await?;
    let req = WalkRequest {
        mode: WalkMode::Repair,
        spaces: vec!["test".into()],
        chunk_rows: Some(chunk_rows),
        rows_per_second: Some(1_000_000_000),
    };
    let walk = d3.start_walk_when_ready(&req).await?;
    d3.wait_walk(&walk).await?;
    let walk_load_secs = started.elapsed().as_secs_f64();
    let walked = count(b3.master(), "test").await?;
    println!(
        "initial_load_snapshot rows={loaded} elapsed_s={snap_secs:.2} rows_per_s={:.0}",
        loaded as f64 / snap_secs
    );
    println!(
        "initial_load_repair_walk rows={walked} elapsed_s={walk_load_secs:.2} rows_per_s={:.0} ratio_walk_over_snapshot={:.2}",
        walked as f64 / walk_load_secs,
        (walked as f64 / walk_load_secs) / (loaded as f64 / snap_secs).max(1e-9)
    );
    Ok(())
}
