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
pub fn cluster_options(cluster: &str, rs: &str) -> TarantoolOptions {
    crate::init_tracing();
    let mut o = TarantoolOptions::new(format!("{cluster}-{rs}"))
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::Universe(Privileges::READ)))
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
        let process = TcfProcess::new("tcf-destination")?;
        let port = PortLease::allocate()?;
        let http_addr = format!("127.0.0.1:{}", port.port());
        let mut y =
            format!("destination:\n  alias: test-destination\n  cluster: {target_cluster}\n");
        y.push_str(&format!(
            "  gateways: [{{address: \"{}\"}}]\n",
            gateway.grpc_addr
        ));
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
        r.json()
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
