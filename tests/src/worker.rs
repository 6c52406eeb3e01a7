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
