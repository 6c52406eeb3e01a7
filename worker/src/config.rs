//! `tcf-worker --config FILE`: the `worker:` section, validated before
//! anything starts (see `docs/worker.md`).

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
        ConfigDuration, ConfigError, ConfigFile, DurationRange, Secret, parse_endpoint,
        parse_host_port, parse_listen, resolve_secret,
    },
};
use tcf_iproto::ConnectOptions;

/// Environment variable that overrides the admin password.
pub const PASSWORD_ENV: &str = "TCF_ADMIN_PASSWORD";

pub use tcf_api::worker::{Mode, Status};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    federation: String,
    cluster: String,
    peer: String,
    initial_status: Status,
    instances: Vec<String>,
    admin_user: String,
    admin_password: Option<Secret>,
    admin_password_file: Option<PathBuf>,
    #[serde(default)]
    dml_users: Vec<String>,
    #[serde(default)]
    peer_workers: Vec<String>,
    peer_token: Option<Secret>,
    peer_token_file: Option<PathBuf>,
    http_server: RawHttp,
    http_client: Option<RawHttpClient>,
    auth: Option<AuthConfig>,
    storage: RawStorage,
    #[serde(default)]
    coordinator: RawCoordinator,
    replication: Option<RawReplication>,
    #[serde(default = "default_switchover_timeout")]
    switchover_timeout: ConfigDuration,
    #[serde(default = "default_poll")]
    poll_interval: ConfigDuration,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: ConfigDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
    tls: Option<tcf_common::https::HttpTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpClient {
    ca_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinator {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_health_check_delay")]
    health_check_delay: ConfigDuration,
    #[serde(default = "default_max_suspect_counts")]
    max_suspect_counts: u32,
    #[serde(default = "default_failover_timeout")]
    failover_timeout: ConfigDuration,
    #[serde(default = "default_fencing_timeout")]
    fencing_timeout: ConfigDuration,
    #[serde(default = "default_lease_ttl")]
    lease_ttl: ConfigDuration,
    #[serde(default = "default_immunity")]
    immunity_period: ConfigDuration,
}

impl Default for RawCoordinator {
    fn default() -> Self {
        Self {
            enabled: false,
            health_check_delay: default_health_check_delay(),
            max_suspect_counts: default_max_suspect_counts(),
            failover_timeout: default_failover_timeout(),
            fencing_timeout: default_fencing_timeout(),
            lease_ttl: default_lease_ttl(),
            immunity_period: default_immunity(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    on_return: OnReturn,
    token_file: Option<PathBuf>,
    token: Option<Secret>,
    outgoing: RawPairs,
    incoming: RawPairs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    gateway: String,
    destination: String,
}

/// One pair (the original form) or a list of pairs.
#[derive(Debug)]
enum RawPairs {
    One(RawPair),
    Many(Vec<RawPair>),
}

impl<'de> Deserialize<'de> for RawPairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a {gateway, destination} pair or a list of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawPairs, A::Error> {
                RawPair::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(RawPairs::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<RawPairs, A::Error> {
                Vec::<RawPair>::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(RawPairs::Many)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn default_prefix() -> String {
    "/tcf".into()
}
fn default_switchover_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_poll() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(500))
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3))
}
fn default_health_check_delay() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(2))
}
fn default_max_suspect_counts() -> u32 {
    3
}
fn default_failover_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(20))
}
fn default_fencing_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_lease_ttl() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_immunity() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(300))
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);
/// Accepted values of each duration key (`docs/worker.md`).
const SWITCHOVER_TIMEOUT: DurationRange = DurationRange::new(SECOND, HOUR);
const POLL_INTERVAL: DurationRange = DurationRange::new(Duration::from_millis(10), MINUTE);
const CONNECT_TIMEOUT: DurationRange = DurationRange::new(Duration::from_millis(100), MINUTE);
const HEALTH_CHECK_DELAY: DurationRange =
    DurationRange::new(Duration::from_millis(100), Duration::from_secs(600));
const FAILOVER_TIMEOUT: DurationRange = DurationRange::new(SECOND, DAY);
const FENCING_TIMEOUT: DurationRange = DurationRange::new(SECOND, HOUR);
/// etcd's smallest lease is 2 s; TTLs are whole seconds.
const LEASE_TTL: DurationRange = DurationRange::new(Duration::from_secs(2), HOUR);
const IMMUNITY_PERIOD: DurationRange = DurationRange::new(SECOND, DAY.saturating_mul(30)).or_off();

/// What happens to a cluster that comes back `diverged` after a failover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnReturn {
    /// It stays fenced and unreplicated until an operator calls
    /// `POST /tcf/resync`, which reloads it from the active cluster.
    #[default]
    Resync,
    /// Its tail (the writes past the loss point) is shipped to the active
    /// cluster by the pair leaving it, then it becomes passive; conflicting
    /// keys resolve by apply order (the tail wins over older active writes).
    ShipTail,
}

/// The HTTP control APIs of one replicator pair.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Gateway control API (`http://host:port`).
    pub gateway: String,
    /// Destination control API.
    pub destination: String,
}

/// The replicators this worker drives.
#[derive(Debug, Clone)]
pub struct Replication {
    /// Which pairs run in steady state.
    pub mode: Mode,
    /// What to do with this cluster when it comes back `diverged`.
    pub on_return: OnReturn,
    /// Bearer token for their control APIs.
    pub token: Secret,
    /// The pairs leaving this cluster (this cluster -> peer), each serving
    /// a subset of its replicasets; never empty.
    pub outgoing: Vec<Pair>,
    /// The pairs coming into this cluster (peer -> this cluster); never
    /// empty.
    pub incoming: Vec<Pair>,
}

impl Replication {
    /// The pairs into `to` and the pairs leaving it, seen from a worker of
    /// cluster `me`.
    pub fn directions(&self, me: &str, to: &str) -> (&[Pair], &[Pair]) {
        if to == me {
            (&self.incoming, &self.outgoing)
        } else {
            (&self.outgoing, &self.incoming)
        }
    }
}

/// Coordinator settings (election and automatic failover).
#[derive(Debug, Clone)]
pub struct Coordinator {
    /// Campaign for the coordinator role.
    pub enabled: bool,
    /// Period of health checks of the active cluster.
    pub health_check_delay: Duration,
    /// Failed checks before a failover.
    pub max_suspect_counts: u32,
    /// How long the active cluster must be unhealthy before a failover.
    pub failover_timeout: Duration,
    /// Cut off from etcd and the peer this long, a worker stops answering 200.
    pub fencing_timeout: Duration,
    /// TTL of the leader's etcd lease: a dead leader is replaced after it.
    pub lease_ttl: Duration,
    /// No automatic failover this long after the previous one.
    pub immunity_period: Duration,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Federation name (the etcd key space is `prefix/federation/`).
    pub federation: String,
    /// This cluster.
    pub cluster: String,
    /// The other cluster.
    pub peer: String,
    /// Status written to etcd when no state exists.
    pub initial_status: Status,
    /// Every instance of this cluster (`host:port`).
    pub instances: Vec<String>,
    /// User allowed to disable/enable the dml users (role `super`).
    pub admin_user: String,
    /// Its password.
    pub admin_password: Secret,
    /// Application users fenced on the passive cluster.
    pub dml_users: Vec<String>,
    /// The peer cluster's workers (`http://host:port`).
    pub peer_workers: Vec<String>,
    /// Bearer token (role `info`) for the peer workers' API, if they use auth.
    pub peer_token: Option<Secret>,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// `http_server.tls`: serve the API over HTTPS.
    pub http_tls: Option<tcf_common::https::HttpsServer>,
    /// `http_client.ca_file`: the CA trusted by `https://` requests (peer
    /// workers, replicators).
    pub https_roots: Option<tcf_common::https::HttpsRoots>,
    /// Bearer tokens of the API.
    pub tokens: Tokens,
    /// etcd endpoints.
    pub etcd_endpoints: Vec<String>,
    /// etcd key prefix.
    pub prefix: String,
    /// Coordinator settings.
    pub coordinator: Coordinator,
    /// Replicators, when this worker drives them.
    pub replication: Option<Replication>,
    /// Deadline of a planned switchover.
    pub switchover_timeout: Duration,
    /// Period of state polling and reconciliation.
    pub poll_interval: Duration,
    /// Connect timeout to this cluster's instances (etcd uses 3 s).
    pub connect_timeout: Duration,
}

impl Config {
    /// Reads and validates the `worker:` section of `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ConfigFile::read(path)?;
        let raw: Raw = file.section("worker")?;
        Self::validate(raw).map_err(|e| e.in_file(&file))
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("worker.{k}");
        for (k, v) in [
            ("federation", &raw.federation),
            ("cluster", &raw.cluster),
            ("peer", &raw.peer),
            ("admin_user", &raw.admin_user),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::invalid(key(k), "must not be empty"));
            }
        }
        if raw.cluster == raw.peer {
            return Err(ConfigError::invalid(
                key("peer"),
                "must differ from 'cluster'",
            ));
        }
        if raw.initial_status == Status::Diverged {
            return Err(ConfigError::invalid(
                key("initial_status"),
                "must be active or passive",
            ));
        }
        if raw.instances.is_empty() {
            return Err(ConfigError::invalid(
                key("instances"),
                "list every instance of this cluster",
            ));
        }
        for (i, inst) in raw.instances.iter().enumerate() {
            parse_host_port(&key(&format!("instances[{i}]")), inst)?;
        }
        let admin_password = resolve_secret(
            &key("admin_password"),
            raw.admin_password,
            raw.admin_password_file.as_deref(),
            PASSWORD_ENV,
        )?;
        for (i, p) in raw.peer_workers.iter().enumerate() {
            parse_endpoint(&key(&format!("peer_workers[{i}]")), p)?;
        }
        let peer_token = match (&raw.peer_token, &raw.peer_token_file) {
            (None, None) => None,
            _ => Some(resolve_secret(
                &key("peer_token"),
                raw.peer_token,
                raw.peer_token_file.as_deref(),
                "",
            )?),
        };
        let http_listen = parse_listen(&key("http_server.listen"), &raw.http_server.listen)?;
        let http_tls = (raw.http_server.tls.as_ref())
            .map(|t| tcf_common::https::server(&key("http_server.tls"), t))
            .transpose()?;
        let https_roots = (raw.http_client.as_ref())
            .map(|c| tcf_common::https::HttpsRoots::load(&key("http_client.ca_file"), &c.ca_file))
            .transpose()?;
        let tokens = Tokens::load(&key("auth"), raw.auth.as_ref())?;
        if raw.storage.endpoints.is_empty() {
            return Err(ConfigError::invalid(
                key("storage.endpoints"),
                "list at least one etcd endpoint",
            ));
        }
        for (i, e) in raw.storage.endpoints.iter().enumerate() {
            parse_endpoint(&key(&format!("storage.endpoints[{i}]")), e)?;
        }
        if !raw.storage.prefix.starts_with('/') {
            return Err(ConfigError::invalid(
                key("storage.prefix"),
                "must start with '/'",
            ));
        }
        let c = raw.coordinator;
        let coord = |k: &str| key(&format!("coordinator.{k}"));
        let coordinator = Coordinator {
            enabled: c.enabled,
            health_check_delay: HEALTH_CHECK_DELAY
                .check(&coord("health_check_delay"), c.health_check_delay)?,
            max_suspect_counts: c.max_suspect_counts,
            failover_timeout: FAILOVER_TIMEOUT
                .check(&coord("failover_timeout"), c.failover_timeout)?,
            fencing_timeout: FENCING_TIMEOUT.check(&coord("fencing_timeout"), c.fencing_timeout)?,
            lease_ttl: LEASE_TTL.check(&coord("lease_ttl"), c.lease_ttl)?,
            immunity_period: IMMUNITY_PERIOD.check(&coord("immunity_period"), c.immunity_period)?,
        };
        let switchover_timeout =
            SWITCHOVER_TIMEOUT.check(&key("switchover_timeout"), raw.switchover_timeout)?;
        let poll_interval = POLL_INTERVAL.check(&key("poll_interval"), raw.poll_interval)?;
        let connect_timeout =
            CONNECT_TIMEOUT.check(&key("connect_timeout"), raw.connect_timeout)?;
        if c.fencing_timeout.get() >= c.failover_timeout.get() {
            return Err(ConfigError::invalid(
                key("coordinator.fencing_timeout"),
                format!(
                    "must be shorter than failover_timeout ({} >= {}): the isolated side must stop answering 200 before the other is promoted",
                    c.fencing_timeout, c.failover_timeout
                ),
            ));
        }
        if c.max_suspect_counts == 0 {
            return Err(ConfigError::invalid(
                key("coordinator.max_suspect_counts"),
                "must be positive",
            ));
        }
        let replication = match raw.replication {
            None => None,
            Some(r) => {
                let token = resolve_secret(
                    &key("replication.token"),
                    r.token,
                    r.token_file.as_deref(),
                    "",
                )?;
                let outgoing = pairs(&key, "outgoing", r.outgoing)?;
                let incoming = pairs(&key, "incoming", r.incoming)?;
                distinct(&key, &outgoing, &incoming)?;
                Some(Replication {
                    mode: r.mode,
                    on_return: r.on_return,
                    token,
                    outgoing,
                    incoming,
                })
            }
        };
        if https_roots.is_none() {
            https_needs_ca(&raw.peer_workers, replication.as_ref())?;
        }
        Ok(Self {
            federation: raw.federation,
            cluster: raw.cluster,
            peer: raw.peer,
            initial_status: raw.initial_status,
            instances: raw.instances,
            admin_user: raw.admin_user,
            admin_password,
            dml_users: raw.dml_users,
            peer_workers: raw.peer_workers,
            peer_token,
            http_listen,
            http_tls,
            https_roots,
            tokens,
            etcd_endpoints: raw.storage.endpoints,
            prefix: raw.storage.prefix,
            coordinator,
            replication,
            switchover_timeout,
            poll_interval,
            connect_timeout,
        })
    }

    /// How to connect to this cluster's instances as the admin user.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .credentials(self.admin_user.clone(), self.admin_password.expose())
            .connect_timeout(self.connect_timeout)
            .request_timeout(self.connect_timeout * 3)
    }

    /// The etcd key of `name` in this federation's key space.
    pub fn key(&self, name: &str) -> String {
        format!(
            "{}/{}/{name}",
            self.prefix.trim_end_matches('/'),
            self.federation
        )
    }
}

/// The config key of pair `i` of `direction` (`replication.outgoing[1]`), or
/// of the direction itself when it is written as one pair.
fn pair_key(direction: &str, i: Option<usize>) -> String {
    match i {
        Some(i) => format!("replication.{direction}[{i}]"),
        None => format!("replication.{direction}"),
    }
}

/// The checked pairs of `direction` (one pair or a non-empty list).
fn pairs(
    key: &dyn Fn(&str) -> String,
    direction: &str,
    raw: RawPairs,
) -> Result<Vec<Pair>, ConfigError> {
    let list: Vec<(Option<usize>, RawPair)> = match raw {
        RawPairs::One(p) => vec![(None, p)],
        RawPairs::Many(v) if v.is_empty() => {
            return Err(ConfigError::invalid(
                key(&format!("replication.{direction}")),
                "must name at least one {gateway, destination} pair",
            ));
        }
        RawPairs::Many(v) => v
            .into_iter()
            .enumerate()
            .map(|(i, p)| (Some(i), p))
            .collect(),
    };
    list.into_iter()
        .map(|(i, p)| {
            let k = pair_key(direction, i);
            parse_endpoint(&key(&format!("{k}.gateway")), &p.gateway)?;
            parse_endpoint(&key(&format!("{k}.destination")), &p.destination)?;
            Ok(Pair {
                gateway: p.gateway,
                destination: p.destination,
            })
        })
        .collect()
}

/// Refuses two pairs of one direction with the same gateway or the same
/// destination URL: each process serves one subset of replicasets.
fn distinct(
    key: &dyn Fn(&str) -> String,
    outgoing: &[Pair],
    incoming: &[Pair],
) -> Result<(), ConfigError> {
    for (direction, list) in [("outgoing", outgoing), ("incoming", incoming)] {
        let one = list.len() == 1;
        let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (i, p) in list.iter().enumerate() {
            for (role, url) in [("gateway", &p.gateway), ("destination", &p.destination)] {
                let norm = url.trim_end_matches('/');
                if let Some(first) = seen.insert((role, norm), i) {
                    let here = pair_key(direction, (!one).then_some(i));
                    return Err(ConfigError::invalid(
                        key(&format!("{here}.{role}")),
                        format!(
                            "{url} is already the {role} of {}: every pair needs its own {role}",
                            pair_key(direction, Some(first))
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// An `https://` URL the worker calls while no `http_client.ca_file` is set.
fn https_needs_ca(peers: &[String], r: Option<&Replication>) -> Result<(), ConfigError> {
    let peers = peers
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("peer_workers[{i}]"), u));
    let pairs = r.into_iter().flat_map(|r| {
        [("outgoing", &r.outgoing), ("incoming", &r.incoming)]
            .into_iter()
            .flat_map(|(name, list)| {
                let one = list.len() == 1;
                list.iter().enumerate().flat_map(move |(i, p)| {
                    let k = pair_key(name, (!one).then_some(i));
                    [
                        (format!("{k}.gateway"), &p.gateway),
                        (format!("{k}.destination"), &p.destination),
                    ]
                })
            })
    });
    match peers.chain(pairs).find(|(_, u)| u.starts_with("https://")) {
        Some((k, _)) => Err(ConfigError::invalid(
            format!("worker.{k}"),
            "an https:// URL needs worker.http_client.ca_file (the CA its certificate chains to)",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"worker:
  federation: f
  cluster: A
  peer: B
  initial_status: active
  instances: ["127.0.0.1:3301"]
  admin_user: tcf-admin
  admin_password: p
  http_server: {listen: "127.0.0.1:0"}
  storage: {endpoints: ["http://127.0.0.1:2379"]}
  coordinator: {enabled: true}
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = ConfigFile::from_text(Path::new("/w.yaml"), text);
        let raw: Raw = file.section("worker")?;
        Config::validate(raw).map_err(|e| e.in_file(&file))
    }

    fn with(line: &str) -> String {
        GOOD.replace(
            "  coordinator: {enabled: true}\n",
            &format!("  coordinator: {{enabled: true}}\n{line}\n"),
        )
    }

    fn with_coordinator(kv: &str) -> String {
        GOOD.replace(
            "coordinator: {enabled: true}",
            &format!("coordinator: {{enabled: true, {kv}}}"),
        )
    }

    #[test]
    fn defaults_are_in_range() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(c.coordinator.immunity_period, Duration::from_secs(300));
    }

    #[test]
    fn zero_and_huge_durations_are_refused_naming_the_key() {
        let top = ["switchover_timeout", "poll_interval", "connect_timeout"];
        let coordinator = [
            "health_check_delay",
            "failover_timeout",
            "fencing_timeout",
            "lease_ttl",
        ];
        let cases = top
            .iter()
            .map(|k| (with(&format!("  {k}: VALUE")), format!("worker.{k}")))
            .chain(coordinator.iter().map(|k| {
                (
                    with_coordinator(&format!("{k}: VALUE")),
                    format!("worker.coordinator.{k}"),
                )
            }));
        for (text, key) in cases {
            for value in ["0s", "18446744073709551615s"] {
                let e = load(&text.replace("VALUE", value)).unwrap_err();
                assert_eq!(e.key(), Some(key.as_str()), "{value}: {e}");
                assert!(e.to_string().contains("out of range"), "{e}");
            }
        }
    }

    #[test]
    fn immunity_period_zero_means_off() {
        let c = load(&with_coordinator("immunity_period: 0s")).unwrap();
        assert_eq!(c.coordinator.immunity_period, Duration::ZERO);
        let e = load(&with_coordinator("immunity_period: 10000d")).unwrap_err();
        assert_eq!(e.key(), Some("worker.coordinator.immunity_period"));
    }

    #[test]
    fn fencing_must_end_before_failover() {
        let e = load(&with_coordinator(
            "fencing_timeout: 20s, failover_timeout: 20s",
        ))
        .unwrap_err();
        assert_eq!(e.key(), Some("worker.coordinator.fencing_timeout"));
    }

    fn with_pairs(outgoing: &str, incoming: &str) -> String {
        with(&format!(
            "  replication:\n    token: t\n    outgoing: {outgoing}\n    incoming: {incoming}"
        ))
    }

    const ONE: &str = r#"{gateway: "http://127.0.0.1:1", destination: "http://127.0.0.1:2"}"#;
    const TWO: &str = r#"[{gateway: "http://127.0.0.1:1", destination: "http://127.0.0.1:2"}, {gateway: "http://127.0.0.1:3", destination: "http://127.0.0.1:4"}]"#;

    #[test]
    fn one_pair_or_a_list_of_pairs() {
        let c = load(&with_pairs(ONE, TWO)).unwrap();
        let r = c.replication.unwrap();
        assert_eq!(r.outgoing.len(), 1);
        assert_eq!(r.incoming.len(), 2);
        assert_eq!(r.incoming[1].gateway, "http://127.0.0.1:3");
        let (into_b, leaving_b) = r.directions("A", "B");
        assert_eq!(into_b.len(), 1);
        assert_eq!(leaving_b.len(), 2);
    }

    #[test]
    fn bad_pairs_are_refused_naming_the_pair() {
        let bad_url = TWO.replace("http://127.0.0.1:4", "nowhere:x");
        let e = load(&with_pairs(ONE, &bad_url)).unwrap_err();
        assert_eq!(
            e.key(),
            Some("worker.replication.incoming[1].destination"),
            "{e}"
        );
        let e = load(&with_pairs("[]", TWO)).unwrap_err();
        assert_eq!(e.key(), Some("worker.replication.outgoing"), "{e}");
        let same_gateway = TWO.replace("127.0.0.1:3", "127.0.0.1:1");
        let e = load(&with_pairs(&same_gateway, ONE)).unwrap_err();
        assert_eq!(
            e.key(),
            Some("worker.replication.outgoing[1].gateway"),
            "{e}"
        );
        assert!(e.to_string().contains("outgoing[0]"), "{e}");
        let same_destination = TWO.replace("127.0.0.1:4", "127.0.0.1:2/");
        let e = load(&with_pairs(ONE, &same_destination)).unwrap_err();
        assert_eq!(
            e.key(),
            Some("worker.replication.incoming[1].destination"),
            "{e}"
        );
        let e = load(&with_pairs(ONE, r#"[{gateway: "http://127.0.0.1:1"}]"#)).unwrap_err();
        assert!(e.to_string().contains("destination"), "{e}");
    }

    /// Config parsing never panics, whatever the text: a short fuzz run.
    #[test]
    fn mutated_configs_never_panic() {
        for text in tcf_common::config::mutations(GOOD, 500, 7) {
            let _ = load(&text);
        }
    }
}
