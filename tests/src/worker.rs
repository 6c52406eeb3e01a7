//! A real `tcf-worker` process for tests.

use anyhow::bail;

use crate::{
    PortLease, TcfProcess,
    gateway::{ADMIN_TOKEN, INFO_TOKEN},
    http,
};

/// The user the worker fences with (role `super`), created by
/// [`crate::federation::cluster_options`].
pub const ADMIN_USER: &str = "tcf-admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "tcf-admin-secret";
/// The application's dml user.
pub const APP_USER: &str = "app";
/// Its password.
pub const APP_PASSWORD: &str = "app-secret";
/// Token with role `toggle` on the worker.
pub const TOGGLE_TOKEN: &str = "toggle-token-for-tests";

/// What a worker needs to know.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// This cluster and its peer.
    pub cluster: String,
    /// The peer cluster.
    pub peer: String,
    /// `active` or `passive`.
    pub initial_status: String,
    /// Every instance of this cluster.
    pub instances: Vec<String>,
    /// etcd endpoint (`http://host:port`).
    pub etcd: String,
    /// `(outgoing gateway, outgoing destination, incoming gateway, incoming destination)`
    /// control API addresses (`host:port`), when the worker drives replicators.
    pub replication: Option<[String; 4]>,
    /// `one_way` or `two_way`.
    pub mode: String,
    /// Extra lines for the `worker:` section.
    pub extra: Vec<String>,
}

/// A running worker.
#[derive(Debug)]
pub struct RunningWorker {
    /// The process.
    pub process: TcfProcess,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub http_addr: String,
    _port: PortLease,
}

impl RunningWorker {
    /// Writes the config and starts the worker; waits until it answers HTTP
    /// unless it exits first (use [`TcfProcess::wait_exit`] then).
    pub async fn start(spec: &WorkerSpec) -> anyhow::Result<Self> {
        let w = Self::spawn(spec)?;
        w.process.wait_http(&w.http_addr, "/metrics").await?;
        Ok(w)
    }

    /// Writes the config and starts the worker without waiting.
    pub fn spawn(spec: &WorkerSpec) -> anyhow::Result<Self> {
        let process = TcfProcess::new("tcf-worker")?;
        let port = PortLease::allocate()?;
        let http_addr = format!("127.0.0.1:{}", port.port());
        let mut y = String::from("worker:\n  federation: test\n");
        y.push_str(&format!(
            "  cluster: {}\n  peer: {}\n  initial_status: {}\n",
            spec.cluster, spec.peer, spec.initial_status
        ));
        y.push_str("  instances:\n");
        for i in &spec.instances {
            y.push_str(&format!("    - \"{i}\"\n"));
        }
        y.push_str(&format!("  admin_user: {ADMIN_USER}\n  admin_password: {ADMIN_PASSWORD}\n  dml_users: [{APP_USER}]\n"));
        y.push_str(&format!("  http_server: {{listen: \"{http_addr}\"}}\n"));
        y.push_str(&format!(
            "  auth:\n    tokens:\n      - {{role: admin, token: {ADMIN_TOKEN}}}\n      - {{role: toggle, token: {TOGGLE_TOKEN}}}\n      - {{role: info, token: {INFO_TOKEN}}}\n"
        ));
        y.push_str(&format!(
            "  storage: {{endpoints: [\"{}\"], prefix: /tcf-test}}\n",
            spec.etcd
        ));
        y.push_str("  poll_interval: 200ms\n  switchover_timeout: 20s\n");
        if let Some([og, od, ig, id]) = &spec.replication {
            y.push_str(&format!(
                "  replication:\n    mode: {}\n    token: {ADMIN_TOKEN}\n    outgoing: {{gateway: \"http://{og}\", destination: \"http://{od}\"}}\n    incoming: {{gateway: \"http://{ig}\", destination: \"http://{id}\"}}\n",
                spec.mode
            ));
        }
        for l in &spec.extra {
            y.push_str(l);
            y.push('\n');
        }
        process.start(&y)?;
        Ok(Self {
            process,
            http_addr,
            _port: port,
        })
    }

    /// `GET /tcf/is_active`: the status code.
    pub async fn is_active(&self) -> anyhow::Result<u16> {
        Ok(http::get(&self.http_addr, "/tcf/is_active").await?.status)
    }

    /// `GET /tcf/api/v1/info` as JSON.
    pub async fn info(&self) -> anyhow::Result<serde_json::Value> {
        let r = http::request(
            "GET",
            &self.http_addr,
            "/tcf/api/v1/info",
            Some(INFO_TOKEN),
            None,
        )
        .await?;
        if r.status != 200 {
            bail!("info answered {}: {}", r.status, r.body);
        }
        http::json(&r)
    }

    /// `POST /tcf/toggle` with `token`; returns (status, JSON body).
    pub async fn toggle(&self, token: Option<&str>) -> anyhow::Result<(u16, serde_json::Value)> {
        let limit = std::time::Duration::from_secs(90);
        let r = http::request_within("POST", &self.http_addr, "/tcf/toggle", token, limit).await?;
        let body =
            serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body.clone()));
        Ok((r.status, body))
    }
}

/// Two one-replicaset clusters A (active) and B (passive) with both pairs
/// (A -> B, B -> A with `initial_position: current`), etcd, and one worker per
/// cluster driving the pairs in `one_way` mode.
#[derive(Debug)]
pub struct Paired {
    /// Cluster A's replicaset.
    pub a: crate::Replicaset,
    /// Cluster B's replicaset.
    pub b: crate::Replicaset,
    /// etcd.
    pub etcd: crate::Etcd,
    /// Gateway reading A.
    pub gw_a: crate::gateway::RunningGateway,
    /// Gateway reading B.
    pub gw_b: crate::gateway::RunningGateway,
    /// Destination writing B (A -> B).
    pub d_b: crate::federation::RunningDestination,
    /// Destination writing A (B -> A).
    pub d_a: crate::federation::RunningDestination,
    /// A's worker.
    pub wa: RunningWorker,
    /// B's worker.
    pub wb: RunningWorker,
}

impl Paired {
    /// Starts everything and waits until both pairs stream.
    pub async fn start() -> anyhow::Result<Self> {
        use crate::{
            federation::{RunningDestination, cluster_options},
            gateway::{GatewayOptions, RunningGateway},
        };
        let a = cluster_options("a", "rs1").start_replicaset().await?;
        let b = cluster_options("b", "rs1").start_replicaset().await?;
        let etcd = crate::Etcd::start().await?;
        let gw_a = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default()).await?;
        let gw_b_opts = GatewayOptions {
            cluster: "B".into(),
            ..GatewayOptions::default()
        };
        let gw_b = RunningGateway::start(&[("rs1", b.uris())], gw_b_opts).await?;
        let d_b = RunningDestination::start(&gw_a, "B", &[("rs1", b.uris())], &[]).await?;
        let reverse = ["  initial_position: current"];
        let d_a = RunningDestination::start(&gw_b, "A", &[("rs1", a.uris())], &reverse).await?;
        d_b.wait_state("rs1", "streaming").await?;
        d_a.wait_state("rs1", "streaming").await?;
        let p = Self {
            wa: RunningWorker::start(&Self::spec_parts(
                "A", "active", &a, &etcd, &gw_a, &d_b, &gw_b, &d_a,
            ))
            .await?,
            wb: RunningWorker::start(&Self::spec_parts(
                "B", "passive", &b, &etcd, &gw_b, &d_a, &gw_a, &d_b,
            ))
            .await?,
            a,
            b,
            etcd,
            gw_a,
            gw_b,
            d_b,
            d_a,
        };
        Ok(p)
    }

    #[allow(clippy::too_many_arguments)]
    fn spec_parts(
        cluster: &str,
        status: &str,
        rs: &crate::Replicaset,
        etcd: &crate::Etcd,
        out_gw: &crate::gateway::RunningGateway,
        out_d: &crate::federation::RunningDestination,
        in_gw: &crate::gateway::RunningGateway,
        in_d: &crate::federation::RunningDestination,
    ) -> WorkerSpec {
        let peer = if cluster == "A" { "B" } else { "A" };
        WorkerSpec {
            cluster: cluster.into(),
            peer: peer.into(),
            initial_status: status.into(),
            instances: rs.uris(),
            etcd: etcd.endpoint(),
            replication: Some([
                out_gw.http_addr.clone(),
                out_d.http_addr.clone(),
                in_gw.http_addr.clone(),
                in_d.http_addr.clone(),
            ]),
            mode: "one_way".into(),
            extra: Vec::new(),
        }
    }

    /// The spec of another worker of `cluster` (`A` or `B`) with
    /// `initial_status`, driving the same pairs.
    pub fn spec(&self, cluster: &str, status: &str) -> WorkerSpec {
        if cluster == "A" {
            Self::spec_parts(
                "A", status, &self.a, &self.etcd, &self.gw_a, &self.d_b, &self.gw_b, &self.d_a,
            )
        } else {
            Self::spec_parts(
                "B", status, &self.b, &self.etcd, &self.gw_b, &self.d_a, &self.gw_a, &self.d_b,
            )
        }
    }
}
