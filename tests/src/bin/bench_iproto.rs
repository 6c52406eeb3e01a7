//! Benchmark: pipelined REPLACE of N rows `{i, 'payload-'..i, i*2}` into one
//! Tarantool, through tcf's `iproto` client and through Tarantool's own
//! net.box, alternating in the same run against the same instance.
//!
//! Both clients use the same pattern as `shared/anchors/native_apply_paths.sh`:
//! windows of `W` asynchronous requests, each window awaited whole. Each
//! client runs on a single thread. Prints the median of `R` rounds for each
//! and their ratio (tcf / net.box).
//!
//! ```text
//! cargo run --release -p tcf-tests --bin bench-iproto   # N=200000 W=1000 R=3
//! ```

use std::{process::Command, time::Instant};

use anyhow::{Context, bail};
use rmpv::Value;
use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{Grant, Privileges, SpaceSpec, Tarantool, TarantoolOptions, UserSpec};

const USER: &str = "bench";
const PASSWORD: &str = "bench";

fn env_or(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let n = env_or("N", 200_000)?;
    let window = env_or("W", 1000)?;
    let rounds = env_or("R", 3)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = rt.block_on(
        TarantoolOptions::new("bench")
            .memtx_memory(1 << 30)
            .space(SpaceSpec::new("test"))
            .user(UserSpec::new(USER, PASSWORD).grant(Grant::Universe(Privileges::ALL)))
            .start_single(),
    )?;
    let mut netbox = Vec::new();
    let mut tcf = Vec::new();
    for round in 1..=rounds {
        rt.block_on(truncate(&server))?;
        netbox.push(netbox_rate(&server, n, window)?);
        rt.block_on(truncate(&server))?;
        tcf.push(rt.block_on(tcf_rate(&server, n, window))?);
        let (nb, ours) = (netbox.last().copied(), tcf.last().copied());
        eprintln!("round {round}: netbox={nb:.0?} tcf_iproto={ours:.0?} rows/s");
    }
    let (nb, ours) = (median(&mut netbox), median(&mut tcf));
    println!(
        "rows={n} window={window} rounds={rounds} netbox_pipelined_replace_rows_per_s={nb:.0} \
         tcf_iproto_pipelined_replace_rows_per_s={ours:.0} ratio={:.2}",
        ours / nb
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn truncate(t: &Tarantool) -> anyhow::Result<()> {
    t.eval("box.space.test:truncate() collectgarbage()", &[])
        .await?;
    Ok(())
}

async fn tcf_rate(t: &Tarantool, n: u64, window: u64) -> anyhow::Result<f64> {
    let opts = ConnectOptions::new().credentials(USER, PASSWORD);
    let c = Connection::connect(&t.uri(), &opts).await?;
    let sid = t.eval1("return box.space.test.id", &[]).await?;
    let sid = sid
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .context("space id")?;
    let start = Instant::now();
    let mut i = 1;
    while i <= n {
        let end = (i + window).min(n + 1);
        let batch = (i..end).map(|j| {
            let c = &c;
            async move {
                let tuple = [
                    Value::from(j),
                    Value::from(format!("payload-{j}")),
                    Value::from(j * 2),
                ];
                c.replace(sid, &tuple[..]).await
            }
        });
        for r in futures::future::join_all(batch).await {
            r?;
        }
        i = end;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let count = t.eval1("return box.space.test:count()", &[]).await?;
    if count.as_u64() != Some(n) {
        bail!("tcf run left {count} rows, expected {n}");
    }
    Ok(rate)
}

fn netbox_rate(t: &Tarantool, n: u64, window: u64) -> anyhow::Result<f64> {
    let script = format!(
        r#"
local nb = require('net.box'); local clock = require('clock')
local c = nb.connect('{USER}:{PASSWORD}@{uri}')
local N, W = {n}, {window}
local t0 = clock.monotonic()
local fs = {{}}
for i = 1, N do
  fs[#fs + 1] = c.space.test:replace({{i, 'payload-' .. i, i * 2}}, {{is_async = true}})
  if #fs >= W then for _, f in ipairs(fs) do assert(f:wait_result()) end fs = {{}} end
end
for _, f in ipairs(fs) do assert(f:wait_result()) end
local rate = N / (clock.monotonic() - t0)
assert(c:eval('return box.space.test:count()') == N)
print(string.format('rows_per_s=%.0f', rate))
os.exit(0)
"#,
        uri = t.uri()
    );
    let path = t.dir().join("netbox_client.lua");
    std::fs::write(&path, script)?;
    let out = Command::new(tcf_tests::tarantool_binary())
        .arg(&path)
        .output()
        .context("running tarantool")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "net.box client failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("rows_per_s="))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no rate in net.box output: {stdout}"))
}
