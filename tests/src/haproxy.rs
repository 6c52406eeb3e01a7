//! Debian's HAProxy in TCP mode in front of both clusters, health-checking
//! the workers' `GET /tcf/is_active` (a real load balancer for tests).

use std::process::Command;

use crate::{
    PortLease,
    process::{ServerProcess, WorkDir},
};

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    /// `127.0.0.1:PORT` clients connect to.
    pub frontend: String,
    _process: ServerProcess,
    _dir: WorkDir,
    _port: PortLease,
}

impl Haproxy {
    /// Balances `127.0.0.1:PORT` over `backends` (`(server, worker http)`),
    /// sending connections only where the worker answers 200.
    pub fn start(backends: &[(String, String)]) -> anyhow::Result<Self> {
        Self::start_with(backends, "")
    }

    /// [`Haproxy::start`] with `check_options` added to every `server` line
    /// (e.g. `check-ssl verify required ca-file CA.pem` for workers serving
    /// HTTPS).
    pub fn start_with(backends: &[(String, String)], check_options: &str) -> anyhow::Result<Self> {
        let dir = WorkDir::new("haproxy", &["haproxy.log"])?;
        let port = PortLease::allocate()?;
        let frontend = format!("127.0.0.1:{}", port.port());
        let mut cfg = format!(
            "global\n  log stdout format raw local0\ndefaults\n  mode tcp\n  log global\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
             frontend app\n  bind {frontend}\n  default_backend clusters\n\
             backend clusters\n  option httpchk GET /tcf/is_active\n  http-check expect status 200\n"
        );
        for (i, (server, worker)) in backends.iter().enumerate() {
            let check_port = worker.rsplit(':').next().unwrap_or_default();
            cfg.push_str(&format!(
                "  server s{i} {server} check port {check_port} {check_options} inter 200 fall 1 rise 3\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&path);
        let process = ServerProcess::spawn(cmd, &dir.path().join("haproxy.log"))?;
        Ok(Self {
            frontend,
            _process: process,
            _dir: dir,
            _port: port,
        })
    }
}
