//! `tcf-gateway --config FILE`: the `gateway:` section, validated before
//! anything starts (see `docs/gateway.md` for every key).

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use tcf_common::{
    auth::{AuthConfig, Tokens},
    config::{
        ConfigDuration, ConfigError, ConfigFile, Secret, parse_host_port, parse_listen,
        resolve_secret,
    },
    tls::ServerTls,
};
use tcf_iproto::{ConnectOptions, Timing};

/// Environment variable that overrides the replication password.
pub const PASSWORD_ENV: &str = "TCF_REPLICATION_PASSWORD";

/// What to do when the source no longer has the rows after the position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnWalGap {
    /// Stop the replicaset's stream loudly (state `gapped`).
    #[default]
    Stop,
    /// Re-sync by an initial load that truncates the target's spaces first.
    Resync,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_alias")]
    alias: String,
    cluster: String,
    replication_user: String,
    replication_password: Option<Secret>,
    replication_password_file: Option<PathBuf>,
    stream_instances: Vec<RawInstance>,
    grpc_server: RawGrpc,
    http_server: RawHttp,
    auth: Option<AuthConfig>,
    #[serde(default)]
    on_wal_gap: OnWalGap,
    #[serde(default)]
    metrics_labels: BTreeMap<String, String>,
    spool_dir: Option<PathBuf>,
    #[serde(default = "default_queue_max_bytes")]
    queue_max_bytes: usize,
    #[serde(default = "default_queue_max_items")]
    queue_max_items: usize,
    #[serde(default = "default_max_transaction_memory")]
    max_transaction_memory: usize,
    #[serde(default = "default_chunk_bytes")]
    chunk_bytes: usize,
    #[serde(default = "default_diverged_timeout")]
    diverged_timeout: ConfigDuration,
    #[serde(default = "default_second")]
    source_replication_timeout: ConfigDuration,
    #[serde(default = "default_second")]
    poll_interval: ConfigDuration,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: ConfigDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    replicaset: String,
    uri: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    listen: String,
    tls: Option<ServerTls>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    allowed_clients: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
}

fn default_alias() -> String {
    "gateway".into()
}
/// 16 MiB of queued transactions per replicaset (estimated memory, see
/// `row_size`).
fn default_queue_max_bytes() -> usize {
    16 << 20
}
fn default_queue_max_items() -> usize {
    4096
}
/// A transaction above 16 MiB is spilled to disk while it is received.
fn default_max_transaction_memory() -> usize {
    16 << 20
}
/// gRPC messages of about 1 MiB (tonic's default limit is 4 MiB).
fn default_chunk_bytes() -> usize {
    1 << 20
}
fn default_diverged_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_second() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Label on logs and metrics.
    pub alias: String,
    /// The source cluster's name.
    pub cluster: String,
    /// User for FETCH_SNAPSHOT/SUBSCRIBE (needs `read` on `universe`).
    pub replication_user: String,
    /// Its password.
    pub replication_password: Secret,
    /// Source instances by replicaset label, in config order.
    pub replicasets: BTreeMap<String, Vec<String>>,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// mTLS for gRPC; `None` only with an explicit `insecure: true`.
    pub tls: Option<tcf_common::tls::LoadedServerTls>,
    /// Identities (certificate CN or SAN) allowed to stream.
    pub allowed_clients: Vec<String>,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Bearer tokens of the control API.
    pub tokens: Tokens,
    /// WAL gap policy.
    pub on_wal_gap: OnWalGap,
    /// Extra labels on every metric.
    pub metrics_labels: BTreeMap<String, String>,
    /// Where snapshots and large transactions are spooled.
    pub spool_dir: PathBuf,
    /// Bound of each replicaset's queue, bytes.
    pub queue_max_bytes: usize,
    /// Bound of each replicaset's queue, items.
    pub queue_max_items: usize,
    /// A transaction above this is spilled to disk while received.
    pub max_transaction_memory: usize,
    /// Target size of one gRPC message.
    pub chunk_bytes: usize,
    /// How long a position may stay ahead of every instance before `diverged`.
    pub diverged_timeout: Duration,
    /// The source's `replication_timeout` (heartbeat interval).
    pub source_replication_timeout: Duration,
    /// How often the source's vclock is polled for lag.
    pub poll_interval: Duration,
    /// Connect (and VOTE) timeout.
    pub connect_timeout: Duration,
}

impl Config {
    /// Reads and validates the `gateway:` section of `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ConfigFile::read(path)?;
        let raw: Raw = file.section("gateway")?;
        Self::validate(raw).map_err(|e| e.in_file(&file))
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("gateway.{k}");
        if raw.cluster.trim().is_empty() {
            return Err(ConfigError::invalid(key("cluster"), "must not be empty"));
        }
        if raw.replication_user.trim().is_empty() {
            return Err(ConfigError::invalid(
                key("replication_user"),
                "must not be empty",
            ));
        }
        let replication_password = resolve_secret(
            &key("replication_password"),
            raw.replication_password,
            raw.replication_password_file.as_deref(),
            PASSWORD_ENV,
        )?;
        if raw.stream_instances.is_empty() {
            return Err(ConfigError::invalid(
                key("stream_instances"),
                "must list at least one instance",
            ));
        }
        let mut replicasets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (i, inst) in raw.stream_instances.iter().enumerate() {
            let k = key(&format!("stream_instances[{i}]"));
            if inst.replicaset.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{k}.replicaset"),
                    "must not be empty",
                ));
            }
            parse_host_port(&format!("{k}.uri"), &inst.uri)?;
            if !seen.insert(inst.uri.clone()) {
                return Err(ConfigError::invalid(
                    format!("{k}.uri"),
                    format!("{} is listed twice", inst.uri),
                ));
            }
            replicasets
                .entry(inst.replicaset.clone())
                .or_default()
                .push(inst.uri.clone());
        }
        let grpc_listen = parse_listen(&key("grpc_server.listen"), &raw.grpc_server.listen)?;
        let tls = match (raw.grpc_server.tls, raw.grpc_server.insecure) {
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    key("grpc_server"),
                    "give either 'tls' or 'insecure: true', not both",
                ));
            }
            (None, false) => {
                return Err(ConfigError::invalid(
                    key("grpc_server"),
                    "'tls' is required (plaintext only with an explicit 'insecure: true')",
                ));
            }
            (None, true) => None,
            (Some(t), false) => Some(tcf_common::tls::server_tls(&key("grpc_server.tls"), &t)?),
        };
        if tls.is_some() && raw.grpc_server.allowed_clients.is_empty() {
            return Err(ConfigError::invalid(
                key("grpc_server.allowed_clients"),
                "list the client certificate identities (CN or SAN) allowed to stream",
            ));
        }
        let http_listen = parse_listen(&key("http_server.listen"), &raw.http_server.listen)?;
        let tokens = Tokens::load(&key("auth"), raw.auth.as_ref())?;
        let spool_dir = raw.spool_dir.unwrap_or_else(std::env::temp_dir);
        if !spool_dir.is_dir() {
            return Err(ConfigError::invalid(
                key("spool_dir"),
                format!("{} is not a directory", spool_dir.display()),
            ));
        }
        for (k, v) in [
            ("queue_max_bytes", raw.queue_max_bytes),
            ("queue_max_items", raw.queue_max_items),
            ("max_transaction_memory", raw.max_transaction_memory),
            ("chunk_bytes", raw.chunk_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key(k), "must be positive"));
            }
        }
        if raw.chunk_bytes > 3 << 20 {
            return Err(ConfigError::invalid(
                key("chunk_bytes"),
                "must be at most 3 MiB (gRPC messages are limited to 4 MiB)",
            ));
        }
        Ok(Self {
            alias: raw.alias,
            cluster: raw.cluster,
            replication_user: raw.replication_user,
            replication_password,
            replicasets,
            grpc_listen,
            tls,
            allowed_clients: raw.grpc_server.allowed_clients,
            http_listen,
            tokens,
            on_wal_gap: raw.on_wal_gap,
            metrics_labels: raw.metrics_labels,
            spool_dir,
            queue_max_bytes: raw.queue_max_bytes,
            queue_max_items: raw.queue_max_items,
            max_transaction_memory: raw.max_transaction_memory,
            chunk_bytes: raw.chunk_bytes,
            diverged_timeout: raw.diverged_timeout.get(),
            source_replication_timeout: raw.source_replication_timeout.get(),
            poll_interval: raw.poll_interval.get(),
            connect_timeout: raw.connect_timeout.get(),
        })
    }

    /// How to connect to source instances.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .credentials(
                self.replication_user.clone(),
                self.replication_password.expose(),
            )
            .connect_timeout(self.connect_timeout)
    }

    /// Heartbeat/ack timing against the source.
    pub fn timing(&self) -> Timing {
        // Acks must reach the source well within 4 x its replication_timeout.
        let ack = (self.source_replication_timeout / 2).min(Duration::from_secs(1));
        Timing {
            heartbeat_interval: self.source_replication_timeout,
            dead_after_heartbeats: 4,
            ack_interval: ack,
        }
    }
}
