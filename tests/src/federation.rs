//! A federation for end-to-end tests: source cluster A, target cluster B
//! (same spaces), a real `tcf-gateway` reading A and a real
//! `tcf-destination` applying to B, over mutual TLS.

use std::time::Duration;

use anyhow::{Context, bail};
use rmpv::Value;

use crate::{
    Engine, Grant, PortLease, Privileges, Replicaset, SpaceSpec, Tarantool, TarantoolOptions,
    TcfProcess, UserSpec,
    gateway::{
        ADMIN_TOKEN, GatewayOptions, INFO_TOKEN, REPL_PASSWORD, REPL_USER, RunningGateway, cert,
    },
    http, wait_until,
};

/// The spaces of both test clusters: memtx `test`, `counters`, vinyl `vtest`,
/// synchronous `stest`, replication-local `loc`.
pub fn spaces() -> Vec<SpaceSpec> {
    vec![
        SpaceSpec::new("test")
            .field("id", "unsigned")
            .field("name", "string")
            .field("n", "integer"),
        SpaceSpec::new("counters")
            .field("id", "unsigned")
            .field("n", "integer"),
        SpaceSpec::new("vtest").engine(Engine::Vinyl),
        SpaceSpec::new("stest").sync(),
        SpaceSpec::new("loc").local(),
    ]
}

/// Options for a replicaset of cluster `cluster` with tcf's users: the
/// replication user may read everything (source side) and write, run the
/// apply functions and create the progress spaces (target side).
///
/// Clusters `b`, `b2` run the target side's binary (`TCF_TARANTOOL_TARGET`),
/// every other cluster the source side's (`TCF_TARANTOOL_SOURCE`); both
/// default to `TCF_TARANTOOL` (see [`crate::binary`]).
pub fn cluster_options(cluster: &str, rs: &str) -> TarantoolOptions {
    crate::init_tracing();
    let mut o = TarantoolOptions::new(format!("{cluster}-{rs}"))
        .side(crate::Side::of_cluster(cluster))
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::Universe(Privileges::READ)))
        .user(
            UserSpec::new(crate::worker::APP_USER, crate::worker::APP_PASSWORD)
                .grant(Grant::Universe(Privileges::READ_WRITE)),
        )
        .user(
            UserSpec::new(crate::worker::ADMIN_USER, crate::worker::ADMIN_PASSWORD)
                .grant(Grant::super_role()),
        )
        .bootstrap_lua(format!(
            "box.schema.user.grant('{REPL_USER}', 'write,execute,create', 'universe')"
        ))
        .replication_timeout(Duration::from_millis(250));
    for s in spaces() {
        o = o.space(s);
    }
    o
}

/// A running destination.
#[derive(Debug)]
pub struct RunningDestination {
    /// The process.
    pub process: TcfProcess,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub http_addr: String,
    _port: PortLease,
}

impl RunningDestination {
    /// Starts `tcf-destination` applying `gateway`'s stream to `targets`
    /// (`(label, [uri...])`), with extra lines for the `destination:` section.
    pub async fn start(
        gateway: &RunningGateway,
        target_cluster: &str,
        targets: &[(&str, Vec<String>)],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_pool(&[gateway], target_cluster, targets, extra).await
    }

    /// Like [`RunningDestination::start`] with a pool of gateways (sharing
    /// the first one's certificates).
    pub async fn start_pool(
        gateways: &[&RunningGateway],
        target_cluster: &str,
        targets: &[(&str, Vec<String>)],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let gateway = *gateways.first().context("no gateway")?;
        let addresses: Vec<String> = gateways.iter().map(|g| g.grpc_addr.clone()).collect();
        Self::start_addresses(&addresses, gateway, target_cluster, targets, extra).await
    }

    /// Like [`RunningDestination::start_pool`] with gateway addresses given
    /// as they are (e.g. one that is not a gateway at all), using
    /// `certs_of`'s certificates.
    pub async fn start_addresses(
        addresses: &[String],
        certs_of: &RunningGateway,
        target_cluster: &str,
        targets: &[(&str, Vec<String>)],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let gateway = certs_of;
        let process = TcfProcess::new("tcf-destination")?;
        let port = PortLease::allocate()?;
        let http_addr = format!("127.0.0.1:{}", port.port());
        let mut y =
            format!("destination:\n  alias: test-destination\n  cluster: {target_cluster}\n");
        y.push_str("  gateways:\n");
        for a in addresses {
            y.push_str(&format!("    - {{address: \"{a}\"}}\n"));
        }
        match &gateway.certs {
            Some(c) => {
                let d = cert(c, "destination")?;
                y.push_str(&format!(
                    "  tls: {{ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\", server_name: gateway}}\n",
                    c.ca.cert.display(),
                    d.cert.display(),
                    d.key.display()
                ));
            }
            None => y.push_str("  insecure: true\n"),
        }
        y.push_str(&format!(
            "  replication_user: {REPL_USER}\n  replication_password: {REPL_PASSWORD}\n"
        ));
        y.push_str("  target_instances:\n");
        for (rs, uris) in targets {
            for uri in uris {
                y.push_str(&format!("    - {{replicaset: {rs}, uri: \"{uri}\"}}\n"));
            }
        }
        y.push_str(&format!("  http_server: {{listen: \"{http_addr}\"}}\n"));
        y.push_str(&format!(
            "  auth:\n    tokens:\n      - {{role: admin, token: {ADMIN_TOKEN}}}\n      - {{role: info, token: {INFO_TOKEN}}}\n"
        ));
        for line in extra {
            y.push_str(line);
            y.push('\n');
        }
        process.start(&y)?;
        process.wait_http(&http_addr, "/metrics").await?;
        Ok(Self {
            process,
            http_addr,
            _port: port,
        })
    }

    /// `GET /api/v1/status` as JSON.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let r = http::request(
            "GET",
            &self.http_addr,
            "/api/v1/status",
            Some(INFO_TOKEN),
            None,
        )
        .await?;
        if r.status != 200 {
            bail!("status answered {}: {}", r.status, r.body);
        }
        http::json(&r)
    }

    /// Waits until replicaset `rs` reports `state`; returns its status.
    pub async fn wait_state(&self, rs: &str, state: &str) -> anyhow::Result<serde_json::Value> {
        let what = format!("destination replicaset {rs} to be {state}");
        wait_until(&what, crate::DEFAULT_DEADLINE, || async {
            let s = self.status().await.ok()?;
            let r = s["replicasets"][rs].clone();
            (r["state"] == state).then_some(r)
        })
        .await
    }

    /// Starts it again with the same config (after a kill).
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.process.stop().await?;
        self.process.spawn()?;
        self.process.wait_http(&self.http_addr, "/metrics").await
    }
}

/// A one-replicaset federation A -> B: `a` and `b` have `replicas` replicas.
#[derive(Debug)]
pub struct Federation {
    /// Source replicaset `rs1` of cluster A.
    pub a: Replicaset,
    /// Target replicaset `rs1` of cluster B.
    pub b: Replicaset,
    /// The gateway reading A.
    pub gateway: RunningGateway,
    /// The destination writing B.
    pub destination: RunningDestination,
}

impl Federation {
    /// Starts everything; `dest_extra` lines go into `destination:`.
    pub async fn start(replicas: usize, dest_extra: &[&str]) -> anyhow::Result<Self> {
        let a = cluster_options("a", "rs1")
            .replicas(replicas)
            .start_replicaset()
            .await?;
        let b = cluster_options("b", "rs1")
            .replicas(replicas)
            .start_replicaset()
            .await?;
        let gateway =
            RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default()).await?;
        let destination =
            RunningDestination::start(&gateway, "B", &[("rs1", b.uris())], dest_extra).await?;
        Ok(Self {
            a,
            b,
            gateway,
            destination,
        })
    }

    /// Waits until every replicated space of B's master equals A's, row by row.
    pub async fn wait_equal(&self) -> anyhow::Result<()> {
        wait_equal(
            self.a.master(),
            self.b.master(),
            &["test", "counters", "vtest", "stest"],
        )
        .await
    }
}

/// Every tuple of `space`, in primary key order, as raw MessagePack values.
pub async fn dump(t: &Tarantool, space: &str) -> anyhow::Result<Vec<Value>> {
    let v = t
        .eval1(
            "return box.space[...]:select({}, {iterator = 'ALL'})",
            &[space.into()],
        )
        .await?;
    match v {
        Value::Array(rows) => Ok(rows),
        other => bail!("select returned {other}"),
    }
}

/// Waits until `spaces` hold the same tuples on `a` and `b`.
pub async fn wait_equal(a: &Tarantool, b: &Tarantool, spaces: &[&str]) -> anyhow::Result<()> {
    let what = format!(
        "spaces {spaces:?} of {} and {} to be equal",
        a.uri(),
        b.uri()
    );
    wait_until(&what, Duration::from_secs(120), || async {
        for s in spaces {
            let (x, y) = match (dump(a, s).await, dump(b, s).await) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(e), _) | (_, Err(e)) => return Err(format!("{e:#}")),
            };
            if x != y {
                return Err(format!(
                    "space {s}: {} rows on the source, {} on the target",
                    x.len(),
                    y.len()
                ));
            }
        }
        Ok(true)
    })
    .await
    .context("clusters differ")
}

// ---------------------------------------------------------------------------
// Helpers of the crash and switch tests (`federation_crash`, `federation_switch`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

/// The replicated spaces compared by [`Federation::wait_equal`].
pub const REPLICATED_SPACES: [&str; 4] = ["test", "counters", "vtest", "stest"];

/// How many rows `counters` holds for a [`Writer`] (ids `1..=COUNTERS`).
pub const COUNTERS: u64 = 10;

impl RunningDestination {
    /// Starts the process again with the same config (after a kill or an
    /// exit) and waits until its HTTP API answers.
    pub async fn respawn(&self) -> anyhow::Result<()> {
        self.process.spawn()?;
        self.process.wait_http(&self.http_addr, "/metrics").await
    }

    /// `SIGKILL`, then [`RunningDestination::respawn`].
    pub async fn kill9_and_respawn(&self) -> anyhow::Result<()> {
        self.process.kill9()?;
        self.respawn().await
    }

    /// `(state, last_error)` of replicaset `rs`.
    pub async fn rs_state(&self, rs: &str) -> anyhow::Result<(String, Option<String>)> {
        let s = self.status().await?;
        let r = &s["replicasets"][rs];
        let state = r["state"]
            .as_str()
            .with_context(|| format!("no state of {rs} in {s}"))?
            .to_owned();
        Ok((state, r["last_error"].as_str().map(str::to_owned)))
    }
}

impl RunningGateway {
    /// `SIGKILL`, then starts it again with the same config and waits until
    /// its HTTP API answers.
    pub async fn kill9_and_respawn(&self) -> anyhow::Result<()> {
        self.process.kill9()?;
        self.process.spawn()?;
        self.process.wait_http(&self.http_addr, "/metrics").await
    }

    /// The source instance the gateway reads for replicaset `rs`, if any.
    pub async fn instance(&self, rs: &str) -> anyhow::Result<Option<String>> {
        let s = self.status().await?;
        Ok(s["replicasets"][rs]["instance"].as_str().map(str::to_owned))
    }

    /// Waits until the gateway reads `uri` for replicaset `rs`.
    pub async fn wait_instance(&self, rs: &str, uri: &str) -> anyhow::Result<()> {
        let what = format!("gateway to read {uri} for {rs}");
        wait_until(&what, crate::DEFAULT_DEADLINE, || async {
            match self.instance(rs).await {
                Ok(Some(i)) if i == uri => crate::Outcome::Ready(()),
                Ok(other) => crate::Outcome::Pending(format!("reads {other:?}")),
                Err(e) => crate::Outcome::Pending(format!("{e:#}")),
            }
        })
        .await
    }
}

/// The number of tuples in `space`.
pub async fn count(t: &Tarantool, space: &str) -> anyhow::Result<u64> {
    let v = t
        .eval1("return box.space[...]:count()", &[space.into()])
        .await?;
    v.as_u64().with_context(|| format!("count of {space}: {v}"))
}

/// Waits until `space` on `t` holds at least `at_least` tuples.
pub async fn wait_count(t: &Tarantool, space: &str, at_least: u64) -> anyhow::Result<()> {
    let what = format!("{space} on {} to hold {at_least} tuples", t.uri());
    wait_until(&what, Duration::from_secs(120), || async {
        match count(t, space).await {
            Ok(n) if n >= at_least => crate::Outcome::Ready(()),
            Ok(n) => crate::Outcome::Pending(format!("{n} tuples")),
            Err(e) => crate::Outcome::Pending(format!("{e:#}")),
        }
    })
    .await
}

/// Waits until `space` on `t` holds `more` tuples more than now.
pub async fn wait_growth(t: &Tarantool, space: &str, more: u64) -> anyhow::Result<()> {
    let now = count(t, space).await?;
    wait_count(t, space, now + more).await
}

/// Inserts the [`COUNTERS`] rows `{id, 0}` into `counters` (one memtx
/// transaction) and the vinyl counter `{0, 0}` into `vtest` (another).
pub async fn insert_counters(t: &Tarantool) -> anyhow::Result<()> {
    t.eval(
        "box.begin() for i = 1, ... do box.space.counters:insert{i, 0} end box.commit() \
         box.space.vtest:insert{0, 0}",
        &[COUNTERS.into()],
    )
    .await?;
    Ok(())
}

/// One writer transaction `(id, k, COUNTERS)`: every 4th id is a vinyl
/// transaction (Tarantool 2.6 refuses memtx and vinyl in one), which inserts
/// `{id, k}` into `vtest` and adds 1 to the vinyl counter `vtest[0]`; the
/// others insert `{id, 'w', k}` into `test` and add 1 to `counters` row
/// `id % COUNTERS + 1`.
const WRITER_TX_LUA: &str = "local function tcf_test_tx(id, k, counters) \
     if id % 4 == 0 then \
       box.begin() box.space.vtest:insert{id, k} \
       box.space.vtest:update(0, {{'+', 2, 1}}) box.commit() \
     else \
       box.begin() box.space.test:insert{id, 'w', k} \
       box.space.counters:update(id % counters + 1, {{'+', 2, 1}}) box.commit() \
     end \
   end ";

/// What the writer transactions left on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The sum of every counter (memtx `counters` and the vinyl `vtest[0]`):
    /// one per transaction applied.
    pub increments: u64,
    /// Rows inserted by the transactions (`test` plus `vtest` without its
    /// counter): one per transaction.
    pub rows: u64,
}

/// The [`Tally`] of `t`. After `n` writer transactions applied exactly
/// once, both numbers are `n`.
pub async fn tally(t: &Tarantool) -> anyhow::Result<Tally> {
    let v = t
        .eval(
            "local s = 0 for _, t in box.space.counters:pairs() do s = s + t[2] end \
             local v = box.space.vtest:get{0} \
             return s + (v and v[2] or 0), \
                    box.space.test:count() + box.space.vtest:count() - (v and 1 or 0)",
            &[],
        )
        .await?;
    let a = v.as_array().with_context(|| format!("tally: {v}"))?;
    let n = |i: usize| {
        a.get(i)
            .and_then(Value::as_u64)
            .with_context(|| format!("tally: {v}"))
    };
    Ok(Tally {
        increments: n(0)?,
        rows: n(1)?,
    })
}

/// A background writer of transactions `k = 0, 1, ...` with ids
/// `first_id + k` (see `WRITER_TX_LUA`: memtx, every 4th vinyl). Each
/// transaction is distinct (a second apply of it fails as a duplicate
/// insert) and adds exactly 1 to the [`Tally`].
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl Writer {
    /// Starts writing to `t` (after [`insert_counters`]), one transaction
    /// per `pace`, until [`Writer::stop`] and at least `min` transactions.
    pub async fn start(
        t: &Tarantool,
        first_id: u64,
        min: u64,
        pace: Duration,
    ) -> anyhow::Result<Self> {
        let conn = t.admin().await?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (stop2, done2) = (Arc::clone(&stop), Arc::clone(&done));
        let lua = format!("{WRITER_TX_LUA} tcf_test_tx(...)");
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(pace);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = 0u64;
            while k < min || !stop2.load(Ordering::Relaxed) {
                tick.tick().await;
                let id = first_id + k;
                let args = [Value::from(id), k.into(), COUNTERS.into()];
                conn.eval(&lua, &args[..])
                    .await
                    .with_context(|| format!("writer transaction {k} (id {id})"))?;
                k += 1;
                done2.store(k, Ordering::Relaxed);
            }
            Ok(k)
        });
        Ok(Self { stop, done, task })
    }

    /// Transactions committed so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops after at least `min` transactions; returns how many committed.
    pub async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("writer task")?
    }
}

impl Federation {
    /// [`Federation::start`] with gateway options (e.g. a small queue).
    pub async fn start_with(
        replicas: usize,
        gateway: GatewayOptions,
        dest_extra: &[&str],
    ) -> anyhow::Result<Self> {
        let a = cluster_options("a", "rs1")
            .replicas(replicas)
            .start_replicaset()
            .await?;
        let b = cluster_options("b", "rs1")
            .replicas(replicas)
            .start_replicaset()
            .await?;
        let gateway = RunningGateway::start(&[("rs1", a.uris())], gateway).await?;
        let destination =
            RunningDestination::start(&gateway, "B", &[("rs1", b.uris())], dest_extra).await?;
        Ok(Self {
            a,
            b,
            gateway,
            destination,
        })
    }
}

/// `n` writer transactions (ids from `first_id`, as a [`Writer`]'s) in one
/// Lua loop on `t`: a burst, much faster than the stream applies it.
pub async fn write_burst(t: &Tarantool, first_id: u64, n: u64) -> anyhow::Result<()> {
    let lua = format!(
        "{WRITER_TX_LUA} local first, n, counters = ... \
         for k = 0, n - 1 do tcf_test_tx(first + k, k, counters) end"
    );
    t.eval(&lua, &[first_id.into(), n.into(), COUNTERS.into()])
        .await?;
    Ok(())
}
