//! A real `tcf-worker` process for tests.

use anyhow::{Context, bail};

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
    /// The peer cluster's workers (`http://host:port`).
    pub peer_workers: Vec<String>,
    /// etcd endpoint override for this worker (e.g. through a proxy).
    pub etcd_via: Option<String>,
    /// `replication.on_return` (`resync` when `None`).
    pub on_return: Option<String>,
    /// Extra lines for the `worker:` section.
    pub extra: Vec<String>,
    /// Open-file limit (soft and hard) to run the worker under, as
    /// `LimitNOFILE` would; `None` inherits the test's.
    pub open_files: Option<u64>,
}

impl WorkerSpec {
    /// A worker of cluster A (peer B, initially active) over `instances`
    /// and the etcd at `etcd`, with no peer workers and no replicators.
    pub fn lone(instances: Vec<String>, etcd: String) -> Self {
        Self {
            cluster: "A".into(),
            peer: "B".into(),
            initial_status: "active".into(),
            instances,
            etcd,
            replication: None,
            mode: "one_way".into(),
            peer_workers: Vec::new(),
            etcd_via: None,
            on_return: None,
            extra: Vec::new(),
            open_files: None,
        }
    }
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
        Self::spawn_with(spec, None, PortLease::allocate()?)
    }

    /// [`RunningWorker::start`] on a port leased beforehand (so that peers
    /// can be configured with its address first).
    pub async fn start_on(spec: &WorkerSpec, port: PortLease) -> anyhow::Result<Self> {
        let w = Self::spawn_with(spec, None, port)?;
        w.process.wait_http(&w.http_addr, "/metrics").await?;
        Ok(w)
    }

    /// [`RunningWorker::spawn`] with `http_server.tls`: the API is HTTPS
    /// only, so the plain-HTTP helpers of this type do not reach it (use
    /// `tcf_common::http_client::request_with` with the CA).
    pub fn spawn_tls(spec: &WorkerSpec, tls: &tcf_common::https::HttpTls) -> anyhow::Result<Self> {
        Self::spawn_with(spec, Some(tls), PortLease::allocate()?)
    }

    fn spawn_with(
        spec: &WorkerSpec,
        tls: Option<&tcf_common::https::HttpTls>,
        port: PortLease,
    ) -> anyhow::Result<Self> {
        let process = TcfProcess::new("tcf-worker")?;
        if let Some(n) = spec.open_files {
            process.set_open_files_limit(n);
        }
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
        let tls = tls.map_or(String::new(), |t| {
            format!(
                ", tls: {{cert_file: \"{}\", key_file: \"{}\"}}",
                t.cert_file.display(),
                t.key_file.display()
            )
        });
        y.push_str(&format!(
            "  http_server: {{listen: \"{http_addr}\"{tls}}}\n"
        ));
        y.push_str(&format!(
            "  auth:\n    tokens:\n      - {{role: admin, token: {ADMIN_TOKEN}}}\n      - {{role: toggle, token: {TOGGLE_TOKEN}}}\n      - {{role: info, token: {INFO_TOKEN}}}\n"
        ));
        y.push_str(&format!(
            "  storage: {{endpoints: [\"{}\"], prefix: /tcf-test}}\n",
            spec.etcd_via.as_deref().unwrap_or(&spec.etcd)
        ));
        if !spec.peer_workers.is_empty() {
            y.push_str("  peer_workers:\n");
            for p in &spec.peer_workers {
                y.push_str(&format!("    - \"{p}\"\n"));
            }
            y.push_str(&format!("  peer_token: {INFO_TOKEN}\n"));
        }
        y.push_str("  poll_interval: 200ms\n  switchover_timeout: 20s\n");
        if let Some([og, od, ig, id]) = &spec.replication {
            y.push_str(&format!(
                "  replication:\n    mode: {}\n    token: {ADMIN_TOKEN}\n    outgoing: {{gateway: \"http://{og}\", destination: \"http://{od}\"}}\n    incoming: {{gateway: \"http://{ig}\", destination: \"http://{id}\"}}\n",
                spec.mode
            ));
            if let Some(o) = &spec.on_return {
                y.push_str(&format!("    on_return: {o}\n"));
            }
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

    /// Waits until `GET /tcf/is_active` answers `code`, for at most `deadline`.
    pub async fn wait_is_active(
        &self,
        code: u16,
        deadline: std::time::Duration,
    ) -> anyhow::Result<()> {
        crate::wait_until(
            &format!("is_active of {} to answer {code}", self.http_addr),
            deadline,
            || async { self.is_active().await.ok() == Some(code) },
        )
        .await
    }

    /// `GET /tcf/api/v1/health` (this cluster's probe), typed.
    pub async fn health(&self) -> anyhow::Result<tcf_api::health::Health> {
        let r = http::request(
            "GET",
            &self.http_addr,
            tcf_api::health::PATH,
            Some(INFO_TOKEN),
            None,
        )
        .await?;
        if r.status != 200 {
            bail!("health answered {}: {}", r.status, r.body);
        }
        serde_json::from_str(&r.body).with_context(|| format!("health: {}", r.body))
    }

    /// `GET /tcf/api/v1/info` as JSON. Every answer must also parse as the
    /// contract's [`tcf_api::worker::Info`] (an error otherwise), so a
    /// worker that drifts from its contract fails the tests that read it.
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
        serde_json::from_str::<tcf_api::worker::Info>(&r.body)
            .map_err(|e| anyhow::anyhow!("info is not tcf_api::worker::Info: {e}: {}", r.body))?;
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
    /// Second replicasets (`rs2`) of A and B, with [`PairedOptions::two_replicasets`].
    pub rs2: Option<(crate::Replicaset, crate::Replicaset)>,
    /// With [`PairedOptions::isolate_a`]: the links of A's worker to etcd,
    /// to B's worker, and of B's worker to A's worker.
    pub a_links: Vec<crate::proxy::DelayProxy>,
    /// With [`PairedOptions::second_workers`]: a second worker of A, then of B.
    pub more: Vec<RunningWorker>,
}

/// How [`Paired::start_with`] sets the pair up.
#[derive(Debug, Clone, Default)]
pub struct PairedOptions {
    /// Both workers campaign as coordinators with short test timings
    /// ([`COORDINATOR`]). (The workers always know each other as
    /// `peer_workers`.)
    pub coordinator: bool,
    /// Route A's worker to etcd and to B's worker, and B's worker to A's,
    /// through proxies the test can cut ([`Paired::a_links`]).
    pub isolate_a: bool,
    /// Each cluster gets a second replicaset `rs2`.
    pub two_replicasets: bool,
    /// Each cluster gets a second worker ([`Paired::more`]).
    pub second_workers: bool,
    /// `replication.on_return` of every worker.
    pub on_return: Option<String>,
    /// `replication.mode: two_way` instead of `one_way`.
    pub two_way: bool,
    /// Open-file limit of A's worker (`LimitNOFILE`); `None`: the test's.
    pub a_worker_open_files: Option<u64>,
    /// Extra lines for the gateway reading A (e.g. `"  on_wal_gap: repair"`).
    pub gw_a_extra: Vec<String>,
    /// Extra lines for the destination writing B.
    pub d_b_extra: Vec<String>,
    /// `checkpoint_count` of A's instances (default 2).
    pub a_checkpoint_count: Option<u32>,
}

/// The coordinator settings of [`PairedOptions::coordinator`].
pub const COORDINATOR: &str = "  coordinator: {enabled: true, health_check_delay: 300ms, max_suspect_counts: 3, failover_timeout: 6s, fencing_timeout: 3s, lease_ttl: 2s, immunity_period: 60s}\n  connect_timeout: 1s";

impl Paired {
    /// Starts everything and waits until both pairs stream.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(PairedOptions::default()).await
    }

    /// [`Paired::start`] with options.
    pub async fn start_with(o: PairedOptions) -> anyhow::Result<Self> {
        use crate::{
            federation::{RunningDestination, cluster_options},
            gateway::{GatewayOptions, RunningGateway},
            proxy::DelayProxy,
        };
        let a = cluster_options("a", "rs1")
            .checkpoint_count(o.a_checkpoint_count.unwrap_or(2))
            .start_replicaset()
            .await?;
        let b = cluster_options("b", "rs1").start_replicaset().await?;
        let rs2 = if o.two_replicasets {
            Some((
                cluster_options("a", "rs2").start_replicaset().await?,
                cluster_options("b", "rs2").start_replicaset().await?,
            ))
        } else {
            None
        };
        let sets = |x: &crate::Replicaset, x2: Option<&crate::Replicaset>| {
            let mut v = vec![("rs1", x.uris())];
            if let Some(x2) = x2 {
                v.push(("rs2", x2.uris()));
            }
            v
        };
        let a_sets = sets(&a, rs2.as_ref().map(|r| &r.0));
        let b_sets = sets(&b, rs2.as_ref().map(|r| &r.1));
        let etcd = crate::Etcd::start().await?;
        let gw_a_opts = GatewayOptions {
            extra: o.gw_a_extra.clone(),
            ..GatewayOptions::default()
        };
        let gw_a = RunningGateway::start(&a_sets, gw_a_opts).await?;
        let gw_b_opts = GatewayOptions {
            cluster: "B".into(),
            ..GatewayOptions::default()
        };
        let gw_b = RunningGateway::start(&b_sets, gw_b_opts).await?;
        let d_b_extra: Vec<&str> = o.d_b_extra.iter().map(String::as_str).collect();
        let d_b = RunningDestination::start(&gw_a, "B", &b_sets, &d_b_extra).await?;
        let reverse = ["  initial_position: current"];
        let d_a = RunningDestination::start(&gw_b, "A", &a_sets, &reverse).await?;
        for (rs, _) in &a_sets {
            d_b.wait_state(rs, "streaming").await?;
            d_a.wait_state(rs, "streaming").await?;
        }
        let (pa, pb) = (PortLease::allocate()?, PortLease::allocate()?);
        let (addr_a, addr_b) = (
            format!("127.0.0.1:{}", pa.port()),
            format!("127.0.0.1:{}", pb.port()),
        );
        let second = if o.second_workers {
            Some((PortLease::allocate()?, PortLease::allocate()?))
        } else {
            None
        };
        let mut a_links = Vec::new();
        let (mut to_etcd, mut a_to_b, mut b_to_a) = (None, addr_b.clone(), addr_a.clone());
        if o.isolate_a {
            let no_delay = std::time::Duration::ZERO;
            let etcd_addr = etcd.endpoint().trim_start_matches("http://").to_owned();
            a_links.push(DelayProxy::start(&etcd_addr, no_delay).await?);
            a_links.push(DelayProxy::start(&addr_b, no_delay).await?);
            a_links.push(DelayProxy::start(&addr_a, no_delay).await?);
            to_etcd = Some(format!("http://{}", a_links[0].addr()));
            a_to_b = a_links[1].addr().to_owned();
            b_to_a = a_links[2].addr().to_owned();
        }
        let a_all: Vec<String> = a_sets.iter().flat_map(|(_, u)| u.clone()).collect();
        let b_all: Vec<String> = b_sets.iter().flat_map(|(_, u)| u.clone()).collect();
        let mut spec_a = Self::spec_parts("A", "active", &a, &etcd, &gw_a, &d_b, &gw_b, &d_a);
        let mut spec_b = Self::spec_parts("B", "passive", &b, &etcd, &gw_b, &d_a, &gw_a, &d_b);
        spec_a.instances = a_all;
        spec_b.instances = b_all;
        spec_a.on_return.clone_from(&o.on_return);
        spec_a.open_files = o.a_worker_open_files;
        spec_b.on_return.clone_from(&o.on_return);
        if o.two_way {
            spec_a.mode = "two_way".into();
            spec_b.mode = "two_way".into();
        }
        // Each worker knows the other cluster's workers: a switchover's
        // prechecks ask the passive cluster's workers for its health.
        spec_a.peer_workers = vec![format!("http://{a_to_b}")];
        spec_b.peer_workers = vec![format!("http://{b_to_a}")];
        if let Some((pa2, pb2)) = &second {
            spec_a
                .peer_workers
                .push(format!("http://127.0.0.1:{}", pb2.port()));
            spec_b
                .peer_workers
                .push(format!("http://127.0.0.1:{}", pa2.port()));
        }
        if o.coordinator {
            spec_a.extra.push(COORDINATOR.into());
            spec_b.extra.push(COORDINATOR.into());
        }
        let mut more = Vec::new();
        if let Some((pa2, pb2)) = second {
            more.push(RunningWorker::start_on(&spec_a, pa2).await?);
            more.push(RunningWorker::start_on(&spec_b, pb2).await?);
        }
        spec_a.etcd_via = to_etcd;
        let p = Self {
            more,
            wa: RunningWorker::start_on(&spec_a, pa).await?,
            wb: RunningWorker::start_on(&spec_b, pb).await?,
            a,
            b,
            etcd,
            gw_a,
            gw_b,
            d_b,
            d_a,
            rs2,
            a_links,
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
            peer_workers: Vec::new(),
            etcd_via: None,
            on_return: None,
            extra: Vec::new(),
            open_files: None,
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
