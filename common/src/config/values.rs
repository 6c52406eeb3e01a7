//! Value conventions shared by every config: durations, listen addresses,
//! endpoints and secrets.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use axum::http::Uri;
use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

use super::ConfigError;

// ------------------------------------------------------------------ durations

/// A duration written as an integer and a unit: `1500ms`, `20s`, `2m`, `1h`
/// (also `us`, and `d` for days). A bare number is refused: the unit is
/// mandatory so that `20` never silently means 20 ms or 20 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<ConfigDuration> for Duration {
    fn from(d: ConfigDuration) -> Duration {
        d.0
    }
}

impl From<Duration> for ConfigDuration {
    fn from(d: Duration) -> Self {
        ConfigDuration(d)
    }
}

impl fmt::Display for ConfigDuration {
    /// The shortest exact form: `1h`, `2m`, `20s`, `1500ms`, `10us`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        if micros == 0 {
            return f.write_str("0s");
        }
        let forms: [(u128, &str); 4] = [
            (3_600_000_000, "h"),
            (60_000_000, "m"),
            (1_000_000, "s"),
            (1_000, "ms"),
        ];
        for (unit, suffix) in forms {
            if micros.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", micros / unit);
            }
        }
        write!(f, "{micros}us")
    }
}

/// Parses `1500ms`, `20s`, `2m`, `1h`, `10us`, `1d` (surrounding spaces
/// allowed). The error says what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let expected = || format!("invalid duration '{text}': expected e.g. 20s, 1500ms, 2m, 1h");
    let n: u64 = num.parse().map_err(|_| expected())?;
    let d = match unit.trim() {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(expected)?,
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(expected)?,
        "d" => n
            .checked_mul(86400)
            .map(Duration::from_secs)
            .ok_or_else(expected)?,
        _ => return Err(expected()),
    };
    Ok(d)
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 20s, 1500ms, 2m or 1h")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The values a duration key accepts: from `min` to `max` inclusive, and
/// zero when the key documents it as "off". Every duration key of every
/// binary has one, so that neither a zero (a busy loop, a timeout that can
/// never succeed) nor a huge value (an overflowing multiplication) is ever
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Smallest accepted value (other than an allowed zero).
    pub min: Duration,
    /// Largest accepted value.
    pub max: Duration,
    /// Whether `0` is accepted, meaning "off".
    pub zero_is_off: bool,
}

impl DurationRange {
    /// From `min` to `max`, inclusive.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            zero_is_off: false,
        }
    }

    /// The same range, also accepting `0` as "off".
    pub const fn or_off(self) -> Self {
        Self {
            zero_is_off: true,
            ..self
        }
    }

    /// `d` if it is in range; otherwise an error naming `key`, the value and
    /// the range.
    pub fn check(&self, key: &str, d: ConfigDuration) -> Result<Duration, ConfigError> {
        let v = d.get();
        if (v.is_zero() && self.zero_is_off) || (self.min <= v && v <= self.max) {
            return Ok(v);
        }
        let off = if self.zero_is_off {
            " (or 0s: off)"
        } else {
            ""
        };
        Err(ConfigError::invalid(
            key,
            format!(
                "{d} is out of range: must be from {} to {}{off}",
                ConfigDuration(self.min),
                ConfigDuration(self.max)
            ),
        ))
    }
}

/// Checks `metrics_labels` at `key`: every name is a valid Prometheus label
/// name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`, which Prometheus
/// reserves) and none is one of the labels the binary adds itself
/// (`reserved`). Values may be any text.
pub fn check_metric_labels<V>(
    key: &str,
    labels: &std::collections::BTreeMap<String, V>,
    reserved: &[&str],
) -> Result<(), ConfigError> {
    for name in labels.keys() {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        if !valid {
            return Err(ConfigError::invalid(
                format!("{key}.{name}"),
                format!(
                    "invalid label name '{name}': expected letters, digits and '_', not starting with a digit or '__'"
                ),
            ));
        }
        if reserved.contains(&name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.{name}"),
                format!("'{name}' is set by the binary itself"),
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ addresses

/// Parses a listen address `host:port` for `key`: an IP (`0.0.0.0:8080`,
/// `[::1]:8080`), `localhost:PORT` (127.0.0.1) or `*:PORT` / `:PORT` (all
/// IPv4 interfaces). Port 0 (any free port) is allowed. Host names are
/// refused: a listen address must not depend on DNS.
pub fn parse_listen(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    let s = text.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: &str| {
        ConfigError::invalid(
            key,
            format!("invalid listen address '{text}': {why} (expected IP:PORT, e.g. 0.0.0.0:8080)"),
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => return Err(bad("the host must be an IP address")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses a connect address `host:port` for `key` (a Tarantool instance, a
/// peer): the host may be an IP (`10.0.0.5`, `[::1]`) or a DNS name
/// (resolved later, at connect time); the port must be 1..=65535. Returns
/// the text normalized to `host:port` (IPv6 in brackets), which tokio's
/// `TcpStream::connect` accepts.
pub fn parse_host_port(key: &str, text: &str) -> Result<String, ConfigError> {
    let s = text.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(ConfigError::invalid(
                key,
                format!("invalid address '{text}': port 0"),
            ));
        }
        return Ok(addr.to_string());
    }
    let bad = |why: &str| {
        ConfigError::invalid(
            key,
            format!("invalid address '{text}': {why} (expected HOST:PORT, e.g. tnt-1.dc1:3301)"),
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid_host {
        return Err(bad("the host is neither an IP address nor a DNS name"));
    }
    Ok(format!("{host}:{port}"))
}

/// One entry of a replicator's instance list (`stream_instances`,
/// `target_instances`): `{replicaset: LABEL, uri: HOST:PORT}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstanceEntry {
    /// The replicaset's label (any non-empty text, the same on both sides).
    pub replicaset: String,
    /// Where the instance listens.
    pub uri: String,
}

/// Validates the instance list at `key` and groups it by replicaset label,
/// in list order within each: at least one entry, non-empty labels, every
/// URI a valid connect address ([`parse_host_port`]), kept **normalised**,
/// and no instance listed twice (compared normalised, so `localhost:3301`
/// and `localhost:3301 ` are the same).
pub fn parse_instances(
    key: &str,
    list: &[InstanceEntry],
) -> Result<std::collections::BTreeMap<String, Vec<String>>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::invalid(key, "must list at least one instance"));
    }
    let mut by_replicaset = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut seen = std::collections::HashSet::new();
    for (i, inst) in list.iter().enumerate() {
        let k = format!("{key}[{i}]");
        if inst.replicaset.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{k}.replicaset"),
                "must not be empty",
            ));
        }
        let uri = parse_host_port(&format!("{k}.uri"), &inst.uri)?;
        if !seen.insert(uri.clone()) {
            return Err(ConfigError::invalid(
                format!("{k}.uri"),
                format!("{uri} is listed twice"),
            ));
        }
        by_replicaset
            .entry(inst.replicaset.clone())
            .or_default()
            .push(uri);
    }
    Ok(by_replicaset)
}

/// Validates an HTTP(S) endpoint for `key`: `http://host:port` or
/// `https://host:port`, with an explicit port and no path, query or
/// credentials. Returns the parsed URI (accepted by tonic's `Endpoint`).
pub fn parse_endpoint(key: &str, text: &str) -> Result<Uri, ConfigError> {
    let bad = |why: &str| {
        ConfigError::invalid(
            key,
            format!(
                "invalid endpoint '{text}': {why} (expected http://HOST:PORT or https://HOST:PORT)"
            ),
        )
    };
    let uri: Uri = text.trim().parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(bad(&format!("unsupported scheme '{other}'"))),
        None => return Err(bad("no scheme")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials are not allowed in the URI"));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.port_u16().is_none() {
        return Err(bad("no port"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a path or query is not allowed"));
    }
    Ok(uri)
}

// ------------------------------------------------------------------ secrets

/// A secret string (password, token). `Debug` and `Display` print `***`;
/// the value is only reachable through [`Secret::expose`]. Deserializes from
/// a plain YAML string.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Resolves the secret `key` (dotted path, used in messages; the file form is
/// conventionally `KEY_file`) from its three sources, in this precedence:
///
/// 1. the environment variable `env_var`, when set (`""` = no variable);
///    set but empty is an error;
/// 2. `inline` (the value written in the config);
/// 3. `file`: its contents with surrounding whitespace trimmed.
///
/// Errors: both `inline` and `file` given (always, even when the variable
/// is set, so the file stays valid on its own); none of the three; an
/// unreadable or empty file; an empty value.
pub fn resolve_secret(
    key: &str,
    inline: Option<Secret>,
    file: Option<&Path>,
    env_var: &str,
) -> Result<Secret, ConfigError> {
    resolve_secret_from(key, inline, file, env_var, |name| std::env::var_os(name))
}

/// [`resolve_secret`] with an injectable environment (tests).
pub(crate) fn resolve_secret_from(
    key: &str,
    inline: Option<Secret>,
    file: Option<&Path>,
    env_var: &str,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Secret, ConfigError> {
    if inline.is_some() && file.is_some() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "give either '{}' or '{}_file', not both",
                leaf(key),
                leaf(key)
            ),
        ));
    }
    if !env_var.is_empty()
        && let Some(value) = env(env_var)
    {
        let value = value.into_string().map_err(|_| {
            ConfigError::invalid(key, format!("environment variable {env_var} is not UTF-8"))
        })?;
        if value.is_empty() {
            return Err(ConfigError::invalid(
                key,
                format!("environment variable {env_var} is set but empty"),
            ));
        }
        return Ok(Secret(value));
    }
    if let Some(secret) = inline {
        if secret.0.is_empty() {
            return Err(ConfigError::invalid(key, "empty secret"));
        }
        return Ok(secret);
    }
    if let Some(path) = file {
        let file_key = format!("{key}_file");
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(&file_key, format!("cannot read {}: {e}", path.display()))
        })?;
        let value = text.trim();
        if value.is_empty() {
            return Err(ConfigError::invalid(
                file_key,
                format!("{} is empty", path.display()),
            ));
        }
        return Ok(Secret(value.to_owned()));
    }
    let env_hint = if env_var.is_empty() {
        String::new()
    } else {
        format!(", or set the environment variable {env_var}")
    };
    Err(ConfigError::invalid(
        key,
        format!(
            "missing: give '{}' or '{}_file'{env_hint}",
            leaf(key),
            leaf(key)
        ),
    ))
}

fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}
