//! Loading one section of a YAML config file, with errors that name the file,
//! the key path and the line.
//!
//! Every tcf binary reads one YAML file (`--config FILE`); its settings sit
//! under one top-level key (`gateway:`, `destination:`, `worker:`), so one
//! file may hold several sections and each binary ignores the others. The
//! section is deserialized with serde; callers put
//! `#[serde(deny_unknown_fields)]` on every struct so that typos are errors.
//!
//! Every problem becomes a [`ConfigError`] whose `Display` is one line, for
//! example
//!
//! ```text
//! config /x/gw.yaml line 7: gateway.grpc_server: unknown field 'lisen', expected one of listen, tls
//! ```
//!
//! and the binaries exit with [`EXIT_CONFIG`]. The conventions (durations,
//! secrets, addresses) are described in `docs/config.md`.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::{
    Deserializer,
    de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
};

mod keyline;
mod values;

pub use keyline::find_key_line;
pub use values::{
    ConfigDuration, DurationRange, InstanceEntry, Secret, check_metric_labels, parse_duration,
    parse_endpoint, parse_host_port, parse_instances, parse_listen, resolve_secret,
};

/// The process exit status for any configuration error (bad file, bad key,
/// bad value, unreadable certificate).
pub const EXIT_CONFIG: i32 = 2;

/// A configuration problem. Its `Display` is a single line that names the
/// file (when known), the line (when known) and the dotted key path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config {}: cannot read the file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file has no top-level key for this binary.
    #[error("config {}: missing top-level section '{section}'", path.display())]
    MissingSection {
        /// The file.
        path: PathBuf,
        /// The expected top-level key.
        section: String,
    },
    /// Bad YAML, an unknown or missing key, a value of the wrong type, or a
    /// semantic error raised by the caller ([`ConfigError::invalid`]).
    #[error("{}", Located { file: file.as_deref(), line: *line, key, message })]
    Invalid {
        /// The file, when known (see [`ConfigError::in_file`]).
        file: Option<PathBuf>,
        /// 1-based line in the file, when known.
        line: Option<u64>,
        /// Dotted key path (`gateway.grpc_server.listen`,
        /// `gateway.stream_instances[1].uri`); empty for a file-level error.
        key: String,
        /// What is wrong.
        message: String,
    },
}

struct Located<'a> {
    file: Option<&'a Path>,
    line: Option<u64>,
    key: &'a str,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("config")?;
        if let Some(file) = self.file {
            write!(f, " {}", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(self.message)
    }
}

impl ConfigError {
    /// A semantic error about `key` (a dotted path such as
    /// `gateway.grpc_server.listen`), raised after deserialization. It has no
    /// file or line until [`ConfigError::in_file`] adds them.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: None,
            line: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Adds the file name and, when missing, the line of the error's key
    /// (looked up with [`find_key_line`], best effort) to an
    /// [`ConfigError::Invalid`]. Other variants are returned unchanged.
    #[must_use]
    pub fn in_file(self, file: &ConfigFile) -> Self {
        match self {
            ConfigError::Invalid {
                file: None,
                line,
                key,
                message,
            } => ConfigError::Invalid {
                line: line.or_else(|| find_key_line(&file.text, &key)),
                file: Some(file.path.clone()),
                key,
                message,
            },
            other => other,
        }
    }

    /// The dotted key path the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } if !key.is_empty() => Some(key),
            ConfigError::MissingSection { section, .. } => Some(section),
            _ => None,
        }
    }

    /// The 1-based line the error points at, if known.
    pub fn line(&self) -> Option<u64> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            _ => None,
        }
    }
}

/// A config file read into memory: the path (for messages) and the text (for
/// line lookups). Use it to load a section and then to attach file and line
/// to semantic errors with [`ConfigError::in_file`] / [`ConfigFile::invalid`].
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    /// Reads `path` (UTF-8). Fails with [`ConfigError::Read`].
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_text(path, text))
    }

    /// A config file whose text is already in memory (`path` is only used in
    /// messages).
    pub fn from_text(path: &Path, text: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            text: text.into(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Deserializes the value of the top-level key `section`; every other
    /// top-level key is ignored (not validated beyond being YAML).
    ///
    /// Errors: [`ConfigError::MissingSection`] when the key is absent;
    /// [`ConfigError::Invalid`] with file, line and key path for bad YAML,
    /// unknown keys (with `deny_unknown_fields`), missing keys and bad values.
    pub fn section<T: DeserializeOwned>(&self, section: &str) -> Result<T, ConfigError> {
        let mut path = None;
        let result = serde_saphyr::with_deserializer_from_str(&self.text, |de| {
            de.deserialize_map(SectionVisitor::<T> {
                section,
                error_path: &mut path,
                _marker: std::marker::PhantomData,
            })
        });
        match result {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(ConfigError::MissingSection {
                path: self.path.clone(),
                section: section.to_owned(),
            }),
            Err(err) => Err(self.yaml_error(section, path, &err)),
        }
    }

    /// [`ConfigError::invalid`] already placed in this file.
    pub fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(key, message).in_file(self)
    }

    fn yaml_error(
        &self,
        section: &str,
        path: Option<String>,
        err: &serde_saphyr::Error,
    ) -> ConfigError {
        use serde_saphyr::Error as E;
        let location = err.location().filter(|l| l.line() > 0);
        // A secret's value is never echoed, even when it has the wrong type.
        let secret = path.as_deref().is_some_and(holds_secret);
        let found = location
            .and_then(|l| scalar_at(&self.text, l.line(), l.column()))
            .map_or_else(
                || "nothing".to_owned(),
                |v| {
                    if secret {
                        "'***'".to_owned()
                    } else {
                        format!("'{v}'")
                    }
                },
            );
        let mut segments: Vec<&str> = match path.as_deref() {
            // `serde_path_to_error` says "." for the section's root, "?" for
            // a segment it could not name.
            None => Vec::new(),
            Some(p) => p
                .split('.')
                .filter(|s| !s.is_empty() && *s != "?")
                .collect(),
        };
        let message = match err.without_snippet() {
            E::SerdeUnknownField {
                field, expected, ..
            } => {
                // The path ends with the unknown field itself: report it
                // against its parent, as "parent: unknown field 'x'".
                if segments.last() == Some(&field.as_str()) {
                    segments.pop();
                }
                if expected.is_empty() {
                    format!("unknown field '{field}', no fields expected")
                } else {
                    format!(
                        "unknown field '{field}', expected one of {}",
                        expected.join(", ")
                    )
                }
            }
            E::SerdeMissingField { field, .. } => format!("missing required field '{field}'"),
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => format!(
                "unknown value '{variant}', expected one of {}",
                expected.join(", ")
            ),
            E::SerdeInvalidType { expected, .. } | E::SerdeInvalidValue { expected, .. }
                if secret =>
            {
                format!("invalid value (not shown: a secret), expected {expected}")
            }
            E::SerdeInvalidType {
                unexpected,
                expected,
                ..
            }
            | E::SerdeInvalidValue {
                unexpected,
                expected,
                ..
            } => format!("invalid value: {unexpected}, expected {expected}"),
            E::InvalidScalar { ty, .. } => format!("invalid value {found}, expected {ty}"),
            E::Unexpected { expected, .. } => {
                let expected = match *expected {
                    "mapping start" => "a mapping (key: value lines)",
                    "sequence start" => "a list",
                    other => other,
                };
                format!("expected {expected}, found {found}")
            }
            E::DuplicateMappingKey { key: Some(k), .. } => format!("duplicate key '{k}'"),
            E::DuplicateMappingKey { key: None, .. } => "duplicate key".to_owned(),
            E::Message { .. } if secret => "invalid value (not shown: a secret)".to_owned(),
            E::Message { msg, .. } => strip_location(msg).to_owned(),
            _ if secret => "invalid value (not shown: a secret)".to_owned(),
            other => {
                let text = other.to_string();
                // Keep the message on one line: drop the library's location
                // suffix and snippet (the line is reported separately).
                let first = text.lines().next().unwrap_or("");
                let first = strip_location(first);
                if segments.is_empty() {
                    format!("invalid YAML: {first}")
                } else {
                    first.to_owned()
                }
            }
        };
        let key = if path.is_some() {
            let rest = segments.join(".").replace(".[", "[");
            if rest.is_empty() {
                section.to_owned()
            } else if rest.starts_with('[') {
                format!("{section}{rest}")
            } else {
                format!("{section}.{rest}")
            }
        } else {
            String::new()
        };
        // A missing field is reported by the library at the end of its
        // mapping; the mapping's own key line is more useful.
        let by_key = || find_key_line(&self.text, &key);
        let line = if matches!(err.without_snippet(), E::SerdeMissingField { .. }) {
            by_key().or(location.map(|l| l.line()))
        } else {
            location.map(|l| l.line()).or_else(by_key)
        };
        ConfigError::Invalid {
            file: Some(self.path.clone()),
            line,
            key,
            message,
        }
    }
}

/// Reads `path` and deserializes its top-level key `section` (see
/// [`ConfigFile::section`]); other top-level keys are ignored, so one file may
/// hold both `gateway:` and `destination:`.
pub fn load_section<T: DeserializeOwned>(path: &Path, section: &str) -> Result<T, ConfigError> {
    ConfigFile::read(path)?.section(section)
}

/// Whether the key path (as `serde_path_to_error` prints it) holds a secret:
/// a password, token or secret value (not its `_file` or `_env` companion).
fn holds_secret(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let leaf = lower.rsplit('.').next().unwrap_or(&lower);
    let named = ["password", "token", "secret"]
        .iter()
        .any(|w| lower.contains(w));
    named && !leaf.ends_with("_file") && !leaf.ends_with("_env")
}

/// `msg` without a trailing " at line N, column M".
fn strip_location(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(at) if msg.get(at..).is_some_and(|t| t.contains(", column ")) => {
            msg.get(..at).unwrap_or(msg)
        }
        _ => msg,
    }
}

/// The scalar text at a 1-based line and column, up to the end of the line
/// or a comment; `None` when empty.
fn scalar_at(text: &str, line: u64, column: u64) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(line.checked_sub(1)?).ok()?)?;
    let skip = usize::try_from(column.checked_sub(1)?).ok()?;
    let rest: String = line.chars().skip(skip).collect();
    let rest = rest.split(" #").next().unwrap_or("").trim();
    // A null value is located right at its key's colon.
    (!rest.is_empty() && rest != ":").then(|| rest.to_owned())
}

struct SectionVisitor<'a, T> {
    section: &'a str,
    error_path: &'a mut Option<String>,
    _marker: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for SectionVisitor<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a mapping with a top-level key '{}'", self.section)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        // An empty document.
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.section && found.is_none() {
                found = Some(map.next_value_seed(TrackedSeed::<T> {
                    error_path: &mut *self.error_path,
                    _marker: std::marker::PhantomData,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct TrackedSeed<'a, T> {
    error_path: &'a mut Option<String>,
    _marker: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for TrackedSeed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        let mut track = serde_path_to_error::Track::new();
        let result = T::deserialize(serde_path_to_error::Deserializer::new(
            deserializer,
            &mut track,
        ));
        if result.is_err() {
            *self.error_path = Some(track.path().to_string());
        }
        result
    }
}

/// One mutation of a config text, for fuzzing the config parsers: at byte
/// offset `at` (clamped), `op` 0 inserts `text`, 1 deletes `len` bytes, 2
/// replaces `len` bytes by `text`, 3 duplicates the line. Edits land on char
/// boundaries; the result is always valid UTF-8.
pub fn mutate(base: &str, at: usize, op: u8, len: usize, text: &str) -> String {
    let floor = |mut i: usize| {
        i = i.min(base.len());
        while !base.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(at);
    let end = floor(start.saturating_add(len));
    let (head, tail) = (
        base.get(..start).unwrap_or(""),
        base.get(start..).unwrap_or(""),
    );
    match op % 4 {
        0 => format!("{head}{text}{tail}"),
        1 => format!("{head}{}", base.get(end..).unwrap_or("")),
        2 => format!("{head}{text}{}", base.get(end..).unwrap_or("")),
        _ => {
            let line_start = head.rfind('\n').map_or(0, |i| i + 1);
            let line_end = tail.find('\n').map_or(base.len(), |i| start + i + 1);
            let line = base.get(line_start..line_end).unwrap_or("");
            format!(
                "{}{line}{}",
                base.get(..line_end).unwrap_or(""),
                base.get(line_end..).unwrap_or("")
            )
        }
    }
}

/// `n` mutations of `base` ([`mutate`]), drawn from a generator seeded
/// with `seed`: the same list every run. A short fuzz run of a config
/// parser is `for text in mutations(GOOD, 300, 1) { let _ = load(&text); }`
/// (it must return, never panic).
pub fn mutations(base: &str, n: usize, seed: u64) -> impl Iterator<Item = String> + '_ {
    let mut state = seed.max(1);
    let mut next = move || {
        // xorshift64: small, deterministic, good enough to spread edits.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const ALPHABET: &[u8] = b" \n\t:-[]{},#'\"&*!|>%@`0123456789aszAZ_.~";
    (0..n).map(move |_| {
        let at = usize::try_from(next() % (base.len() as u64 + 1)).unwrap_or(0);
        let op = (next() % 4) as u8;
        let len = usize::try_from(next() % 40).unwrap_or(0);
        let text: String = (0..next() % 24)
            .filter_map(|_| {
                let i = usize::try_from(next() % ALPHABET.len() as u64).unwrap_or(0);
                ALPHABET.get(i).map(|b| char::from(*b))
            })
            .collect();
        mutate(base, at, op, len, &text)
    })
}

#[cfg(test)]
mod tests;
