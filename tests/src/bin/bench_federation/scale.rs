//! Scale-out: one gateway and one destination serving a federation of
//! several replicasets per cluster; aggregate rows/s against one replicaset
//! written alone, in the same setup.

use std::time::Instant;

use anyhow::Context;
use rmpv::Value;
use tcf_tests::{
    federation::{RunningDestination, cluster_options},
    gateway::{GatewayOptions, RunningGateway},
};

use crate::{LOAD_LUA, MEMTX, cpu::CpuProbe, wait_rows, writer};

/// Starts `count` replicasets per cluster, then writes `n` rows (transactions
/// of `b`) to the first one alone, then `n` rows to every one at once; prints
/// both rates and their ratio.
pub(crate) async fn run(count: u64, n: u64, b: u64) -> anyhow::Result<()> {
    let names: Vec<String> = (1..=count).map(|i| format!("s{i}")).collect();
    let mut a = Vec::new();
    let mut bs = Vec::new();
    for name in &names {
        a.push(
            cluster_options("a", name)
                .memtx_memory(MEMTX)
                .start_replicaset()
                .await
                .with_context(|| format!("starting source replicaset {name}"))?,
        );
        bs.push(
            cluster_options("b", name)
                .memtx_memory(MEMTX)
                .start_replicaset()
                .await
                .with_context(|| format!("starting target replicaset {name}"))?,
        );
    }
    let sources: Vec<(&str, Vec<String>)> = names
        .iter()
        .zip(&a)
        .map(|(n, r)| (n.as_str(), r.uris()))
        .collect();
    let targets: Vec<(&str, Vec<String>)> = names
        .iter()
        .zip(&bs)
        .map(|(n, r)| (n.as_str(), r.uris()))
        .collect();
    let gateway = RunningGateway::start(&sources, GatewayOptions::default())
        .await
        .context("starting the scale-out gateway")?;
    let dest = RunningDestination::start(&gateway, "B", &targets, &[])
        .await
        .context("starting the scale-out destination")?;
    for name in &names {
        dest.wait_state(name, "streaming")
            .await
            .with_context(|| format!("{name} never reached streaming"))?;
    }
    let mut procs: Vec<(&'static str, u32)> = vec![
        ("gateway", gateway.process.pid().context("gateway pid")?),
        (
            "destination",
            dest.process.pid().context("destination pid")?,
        ),
    ];
    for (i, (ra, rb)) in a.iter().zip(&bs).enumerate() {
        procs.push((leak(format!("a_s{}", i + 1)), ra.master().pid()));
        procs.push((leak(format!("b_s{}", i + 1)), rb.master().pid()));
    }
    let mut cpu = CpuProbe::new(procs);
    let mut writers = Vec::new();
    for r in &a {
        writers.push(writer(r.master()).await?);
    }
    let (Some(w1), Some(b1)) = (writers.first(), bs.first()) else {
        anyhow::bail!("no replicasets");
    };

    cpu.start();
    let t0 = Instant::now();
    w1.eval(LOAD_LUA, &[Value::from(0u64), n.into(), b.into()][..])
        .await
        .context("writing to s1 alone")?;
    wait_rows(b1.master(), n, Some(&dest)).await?;
    let one = n as f64 / t0.elapsed().as_secs_f64();
    cpu.report("scale-out one replicaset");

    cpu.start();
    let t0 = Instant::now();
    let args = [Value::from(n), n.into(), b.into()];
    let writes = writers.iter().map(|w| w.eval(LOAD_LUA, &args[..]));
    for r in futures::future::join_all(writes).await {
        r.context("writing to every replicaset")?;
    }
    for (i, r) in bs.iter().enumerate() {
        let want = if i == 0 { 2 * n } else { n };
        wait_rows(r.master(), want, Some(&dest)).await?;
    }
    let all = (count * n) as f64 / t0.elapsed().as_secs_f64();
    cpu.report(&format!("scale-out {count} replicasets"));
    println!(
        "scale_out replicasets={count} rows_per_replicaset={n} tx_rows={b} one_replicaset_rows_per_s={one:.0} \
         aggregate_rows_per_s={all:.0} ratio={:.2} (one gateway, one destination)",
        all / one
    );
    drop(dest);
    drop(gateway);
    Ok(())
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}
