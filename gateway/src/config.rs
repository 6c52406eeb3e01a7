//! `tcf-gateway --config FILE`: the `gateway:` section, validated before
//! anything starts (see `docs/gateway.md` for every key).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use tcf_common::{
    auth::{AuthConfig, Tokens},
    config::{
        ConfigDuration, ConfigError, ConfigFile, DurationRange, InstanceEntry, Secret,
        check_metric_labels, parse_instances, parse_listen, resolve_secret,
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
    /// Continue from the source's current position and let the destination
    /// run a repair walk (`docs/verify.md`): nothing is truncated, and the
    /// target is not promotable until the walk ends.
    Repair,
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
    stream_instances: Vec<InstanceEntry>,
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

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
/// Accepted values of each duration key (`docs/gateway.md`).
const DIVERGED_TIMEOUT: DurationRange = DurationRange::new(SECOND, Duration::from_secs(86400));
const SOURCE_REPLICATION_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(10), Duration::from_secs(600));
const POLL_INTERVAL: DurationRange = DurationRange::new(Duration::from_millis(10), MINUTE);
const CONNECT_TIMEOUT: DurationRange = DurationRange::new(Duration::from_millis(100), MINUTE);

/// The label the gateway adds to every metric itself.
pub(crate) const ALIAS_LABEL: &str = "gateway";

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
        let replicasets = parse_instances(&key("stream_instances"), &raw.stream_instances)?;
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
        check_writable_dir(&spool_dir).map_err(|e| ConfigError::invalid(key("spool_dir"), e))?;
        check_metric_labels(&key("metrics_labels"), &raw.metrics_labels, &[ALIAS_LABEL])?;
        let diverged_timeout =
            DIVERGED_TIMEOUT.check(&key("diverged_timeout"), raw.diverged_timeout)?;
        let source_replication_timeout = SOURCE_REPLICATION_TIMEOUT.check(
            &key("source_replication_timeout"),
            raw.source_replication_timeout,
        )?;
        let poll_interval = POLL_INTERVAL.check(&key("poll_interval"), raw.poll_interval)?;
        let connect_timeout =
            CONNECT_TIMEOUT.check(&key("connect_timeout"), raw.connect_timeout)?;
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
            diverged_timeout,
            source_replication_timeout,
            poll_interval,
            connect_timeout,
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
            ..Timing::default()
        }
    }
}

/// Whether `dir` is a directory this process can create files in: a file is
/// created and removed there (the spool must not fail at the first load).
fn check_writable_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let probe = dir.join(format!(".tcf-gateway-write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    std::fs::remove_file(&probe)
        .map_err(|e| format!("{}: cannot remove {}: {e}", dir.display(), probe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"gateway:
  cluster: A
  replication_user: u
  replication_password: p
  stream_instances: [{replicaset: rs1, uri: "127.0.0.1:3301"}]
  grpc_server: {listen: "127.0.0.1:0", insecure: true}
  http_server: {listen: "127.0.0.1:0"}
  auth: {disabled: true}
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::from_text(Path::new("/g.yaml"), text);
        let raw: Raw = file.section("gateway")?;
        Config::validate(raw).map_err(|e| e.in_file(&file))
    }

    fn with(line: &str) -> String {
        format!("{GOOD}{line}\n")
    }

    #[test]
    fn zero_and_huge_durations_are_refused_naming_the_key() {
        assert!(load(GOOD).is_ok());
        for k in [
            "diverged_timeout",
            "source_replication_timeout",
            "poll_interval",
            "connect_timeout",
        ] {
            for value in ["0s", "18446744073709551615s"] {
                let e = load(&with(&format!("  {k}: {value}"))).unwrap_err();
                assert_eq!(e.key(), Some(format!("gateway.{k}").as_str()), "{e}");
            }
        }
    }

    #[test]
    fn an_unwritable_spool_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("tcf-ro-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut perms = std::fs::metadata(&dir).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o500);
        std::fs::set_permissions(&dir, perms).unwrap();
        let result = load(&with(&format!("  spool_dir: {}", dir.display())));
        let writable_anyway = std::fs::File::create(dir.join("probe")).is_ok();
        let _ = std::fs::remove_file(dir.join("probe"));
        let _ = std::fs::remove_dir(&dir);
        if writable_anyway {
            // Root ignores the mode bits: a read-only bind is what refuses it then.
            assert!(result.is_ok());
            let e = load(&with("  spool_dir: /proc/self")).unwrap_err();
            assert_eq!(e.key(), Some("gateway.spool_dir"), "{e}");
        } else {
            let e = result.unwrap_err();
            assert_eq!(e.key(), Some("gateway.spool_dir"), "{e}");
            assert!(e.to_string().contains("not writable"), "{e}");
        }
        let e = load(&with("  spool_dir: /nonexistent/spool")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn bad_metric_label_names_are_refused() {
        for bad in ["\"\": x", "gateway: x", "1a: x"] {
            let e = load(&with(&format!("  metrics_labels: {{{bad}}}"))).unwrap_err();
            assert!(
                e.key()
                    .is_some_and(|k| k.starts_with("gateway.metrics_labels")),
                "{e}"
            );
        }
        assert!(load(&with("  metrics_labels: {dc: msk}")).is_ok());
    }

    /// Config parsing never panics, whatever the text: a short fuzz run.
    #[test]
    fn mutated_configs_never_panic() {
        for text in tcf_common::config::mutations(GOOD, 500, 7) {
            let _ = load(&text);
        }
    }
}
