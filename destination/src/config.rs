//! `tcf-destination --config FILE`: the `destination:` section, validated
//! before anything starts (see `docs/destination.md` for every key).

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
        check_metric_labels, parse_host_port, parse_instances, parse_listen, resolve_secret,
    },
    tls::ClientTls,
};
use tcf_iproto::ConnectOptions;

/// Environment variable that overrides the replication password.
pub const PASSWORD_ENV: &str = "TCF_REPLICATION_PASSWORD";

/// Where to start when the target holds no position for a replicaset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialPosition {
    /// Load the source's snapshot first (the target's spaces must be empty,
    /// unless `truncate_on_load` is set).
    #[default]
    Snapshot,
    /// Start after the source's current position (clusters already equal).
    Current,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_alias")]
    alias: String,
    cluster: String,
    gateways: Vec<RawGateway>,
    tls: Option<ClientTls>,
    #[serde(default)]
    insecure: bool,
    replication_user: String,
    replication_password: Option<Secret>,
    replication_password_file: Option<PathBuf>,
    target_instances: Vec<InstanceEntry>,
    #[serde(default)]
    initial_position: InitialPosition,
    #[serde(default)]
    truncate_on_load: bool,
    #[serde(default = "default_repair_rows_per_second")]
    repair_rows_per_second: u64,
    http_server: RawHttp,
    auth: Option<AuthConfig>,
    #[serde(default)]
    metrics_labels: BTreeMap<String, String>,
    #[serde(default)]
    batch: RawBatch,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: ConfigDuration,
    #[serde(default = "default_request_timeout")]
    request_timeout: ConfigDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    #[serde(default = "default_max_rows")]
    max_rows: usize,
    #[serde(default = "default_max_bytes")]
    max_bytes: usize,
}

impl Default for RawBatch {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_alias() -> String {
    "destination".into()
}
/// Rows per target transaction (several source transactions are coalesced;
/// one is never split).
fn default_max_rows() -> usize {
    4000
}
/// Bytes of row payload per target transaction.
fn default_max_bytes() -> usize {
    4 << 20
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_request_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

/// Accepted values of each duration key (`docs/destination.md`).
const CONNECT_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(100), Duration::from_secs(60));
const REQUEST_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(3600));

/// The label the destination adds to every metric itself.
pub(crate) const ALIAS_LABEL: &str = "destination";

/// Batching of source transactions into target transactions.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Rows per target transaction (a larger source transaction goes alone).
    pub max_rows: usize,
    /// Payload bytes per target transaction.
    pub max_bytes: usize,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Label on logs, metrics and progress rows.
    pub alias: String,
    /// The target cluster's name.
    pub cluster: String,
    /// Gateway addresses (`host:port`), tried in order.
    pub gateways: Vec<String>,
    /// mTLS to the gateways; `None` only with `insecure: true`.
    pub tls: Option<tcf_common::tls::LoadedClientTls>,
    /// Target user (never one of the application's dml users).
    pub replication_user: String,
    /// Its password.
    pub replication_password: Secret,
    /// Target instances by replicaset label.
    pub replicasets: BTreeMap<String, Vec<String>>,
    /// Start for replicasets without a stored position.
    pub initial_position: InitialPosition,
    /// Truncate non-empty target spaces before an initial load.
    pub truncate_on_load: bool,
    /// Pace of the repair walk after a WAL gap (`on_wal_gap: repair` on the
    /// gateway), rows per second read on the source master.
    pub repair_rows_per_second: u64,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Bearer tokens of the control API.
    pub tokens: Tokens,
    /// Extra labels on every metric.
    pub metrics_labels: BTreeMap<String, String>,
    /// Batching.
    pub batching: Batching,
    /// Connect timeout (gateways and target instances).
    pub connect_timeout: Duration,
    /// Timeout of one apply call.
    pub request_timeout: Duration,
}

impl Config {
    /// Reads and validates the `destination:` section of `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ConfigFile::read(path)?;
        let raw: Raw = file.section("destination")?;
        Self::validate(raw).map_err(|e| e.in_file(&file))
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("destination.{k}");
        if raw.cluster.trim().is_empty() {
            return Err(ConfigError::invalid(key("cluster"), "must not be empty"));
        }
        if raw.gateways.is_empty() {
            return Err(ConfigError::invalid(
                key("gateways"),
                "list at least one gateway",
            ));
        }
        let mut gateways = Vec::new();
        for (i, g) in raw.gateways.iter().enumerate() {
            gateways.push(parse_host_port(
                &key(&format!("gateways[{i}].address")),
                &g.address,
            )?);
        }
        let tls = match (raw.tls, raw.insecure) {
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    key("tls"),
                    "give either 'tls' or 'insecure: true', not both",
                ));
            }
            (None, false) => {
                return Err(ConfigError::invalid(
                    key("tls"),
                    "required (plaintext only with an explicit 'insecure: true')",
                ));
            }
            (None, true) => None,
            (Some(t), false) => Some(tcf_common::tls::client_tls(&key("tls"), &t)?),
        };
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
        let replicasets = parse_instances(&key("target_instances"), &raw.target_instances)?;
        let http_listen = parse_listen(&key("http_server.listen"), &raw.http_server.listen)?;
        let tokens = Tokens::load(&key("auth"), raw.auth.as_ref())?;
        check_metric_labels(&key("metrics_labels"), &raw.metrics_labels, &[ALIAS_LABEL])?;
        let connect_timeout =
            CONNECT_TIMEOUT.check(&key("connect_timeout"), raw.connect_timeout)?;
        let request_timeout =
            REQUEST_TIMEOUT.check(&key("request_timeout"), raw.request_timeout)?;
        if raw.batch.max_rows == 0 || raw.batch.max_bytes == 0 {
            return Err(ConfigError::invalid(
                key("batch"),
                "max_rows and max_bytes must be positive",
            ));
        }
        if raw.repair_rows_per_second == 0 {
            return Err(ConfigError::invalid(
                key("repair_rows_per_second"),
                "must be positive",
            ));
        }
        Ok(Self {
            alias: raw.alias,
            cluster: raw.cluster,
            gateways,
            tls,
            replication_user: raw.replication_user,
            replication_password,
            replicasets,
            initial_position: raw.initial_position,
            truncate_on_load: raw.truncate_on_load,
            repair_rows_per_second: raw.repair_rows_per_second,
            http_listen,
            tokens,
            metrics_labels: raw.metrics_labels,
            batching: Batching {
                max_rows: raw.batch.max_rows,
                max_bytes: raw.batch.max_bytes,
            },
            connect_timeout,
            request_timeout,
        })
    }

    /// How to connect to target instances.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .credentials(
                self.replication_user.clone(),
                self.replication_password.expose(),
            )
            .connect_timeout(self.connect_timeout)
            .request_timeout(self.request_timeout)
    }
}

fn default_repair_rows_per_second() -> u64 {
    tcf_api::verify::WalkRequest::DEFAULT_ROWS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"destination:
  cluster: B
  gateways: [{address: "127.0.0.1:7000"}]
  insecure: true
  replication_user: u
  replication_password: p
  target_instances: [{replicaset: rs1, uri: "127.0.0.1:3301"}]
  http_server: {listen: "127.0.0.1:0"}
  auth: {disabled: true}
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::from_text(Path::new("/d.yaml"), text);
        let raw: Raw = file.section("destination")?;
        Config::validate(raw).map_err(|e| e.in_file(&file))
    }

    #[test]
    fn zero_and_huge_durations_are_refused_naming_the_key() {
        assert!(load(GOOD).is_ok());
        for k in ["connect_timeout", "request_timeout"] {
            for value in ["0s", "18446744073709551615s"] {
                let e = load(&format!("{GOOD}  {k}: {value}\n")).unwrap_err();
                assert_eq!(e.key(), Some(format!("destination.{k}").as_str()), "{e}");
            }
        }
    }

    #[test]
    fn bad_metric_label_names_are_refused() {
        let e = load(&format!("{GOOD}  metrics_labels: {{\"\": x}}\n")).unwrap_err();
        assert!(
            e.key()
                .is_some_and(|k| k.starts_with("destination.metrics_labels")),
            "{e}"
        );
        let e = load(&format!("{GOOD}  metrics_labels: {{destination: x}}\n")).unwrap_err();
        assert!(e.to_string().contains("set by the binary"), "{e}");
    }

    /// Config parsing never panics, whatever the text: a short fuzz run.
    #[test]
    fn mutated_configs_never_panic() {
        for text in tcf_common::config::mutations(GOOD, 500, 7) {
            let _ = load(&text);
        }
    }
}
