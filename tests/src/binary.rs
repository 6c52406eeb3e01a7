//! Which `tarantool` binary an instance runs, and what that binary can do.
//!
//! | variable | what it chooses | default |
//! | --- | --- | --- |
//! | `TCF_TARANTOOL` | every instance | `tarantool` on `PATH` |
//! | `TCF_TARANTOOL_SOURCE` | instances of the **source** side: cluster A of a federation (and its second cluster A2) | `TCF_TARANTOOL` |
//! | `TCF_TARANTOOL_TARGET` | instances of the **target** side: cluster B (and B2) | `TCF_TARANTOOL` |
//!
//! So `TCF_TARANTOOL_SOURCE=/opt/tarantool/2.11.5/bin/tarantool
//! TCF_TARANTOOL_TARGET=/opt/tarantool/3.3.0/bin/tarantool` runs every
//! federation test as a migration from 2.11 to 3.3, while tests that start a
//! lone instance (the iproto and gateway tests) use `TCF_TARANTOOL`. A value
//! is a path or a name looked up on `PATH`; an empty value counts as unset.
//!
//! Capabilities are found by asking the binary (its `--help`, its
//! `--version` line for reports), never by comparing version numbers.

use std::{
    collections::HashMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

use anyhow::Context;

/// The environment variable naming the `tarantool` binary the tests,
/// benchmarks and the demo run (a path, or a name looked up on `PATH`).
pub const TARANTOOL_ENV: &str = "TCF_TARANTOOL";

/// The binary of the source side (cluster A); defaults to [`TARANTOOL_ENV`].
pub const SOURCE_ENV: &str = "TCF_TARANTOOL_SOURCE";

/// The binary of the target side (cluster B); defaults to [`TARANTOOL_ENV`].
pub const TARGET_ENV: &str = "TCF_TARANTOOL_TARGET";

/// A side of a federation test: which environment variable picks its binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The cluster tcf reads first (A): [`SOURCE_ENV`].
    Source,
    /// The cluster tcf writes first (B): [`TARGET_ENV`].
    Target,
}

impl Side {
    /// The side of a test cluster by its name: `b…`/`B…` (B, B2) is the
    /// target, anything else (A, A2) the source.
    pub fn of_cluster(cluster: &str) -> Side {
        if cluster.starts_with(['b', 'B']) {
            Side::Target
        } else {
            Side::Source
        }
    }

    /// The environment variable choosing this side's binary.
    pub fn env(self) -> &'static str {
        match self {
            Side::Source => SOURCE_ENV,
            Side::Target => TARGET_ENV,
        }
    }
}

fn non_empty(v: Option<OsString>) -> Option<PathBuf> {
    v.filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The `tarantool` binary from [`TARANTOOL_ENV`], `tarantool` (on `PATH`)
/// when it is unset or empty.
pub fn tarantool_binary() -> PathBuf {
    non_empty(std::env::var_os(TARANTOOL_ENV)).unwrap_or_else(|| PathBuf::from("tarantool"))
}

/// The binary of `side`: its own variable, else [`tarantool_binary`].
pub fn tarantool_binary_for(side: Side) -> PathBuf {
    non_empty(std::env::var_os(side.env())).unwrap_or_else(tarantool_binary)
}

fn cache() -> &'static Mutex<HashMap<PathBuf, (String, String)>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, (String, String)>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// `(first line of --version, whole --help)` of `binary`, asked once per
/// process.
fn describe(binary: &Path) -> anyhow::Result<(String, String)> {
    if let Some(d) = cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(binary)
    {
        return Ok(d.clone());
    }
    let run = |arg: &str| -> anyhow::Result<String> {
        let out = Command::new(binary)
            .arg(arg)
            .output()
            .with_context(|| format!("running {} {arg}", binary.display()))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(text)
    };
    let version = run("--version")?
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let help = run("--help")?;
    let d = (version, help);
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(binary.to_owned(), d.clone());
    Ok(d)
}

/// The first line of `binary --version` (e.g. `Tarantool 3.3.0-0-g5fc82b85d6`),
/// for reports; never parsed to decide anything.
pub fn version(binary: &Path) -> anyhow::Result<String> {
    describe(binary).map(|d| d.0)
}

/// Whether `binary` starts from a declarative YAML config
/// (`tarantool --config FILE --name INSTANCE`, Tarantool 3.0 and newer):
/// its `--help` documents `--config`.
pub fn supports_declarative_config(binary: &Path) -> anyhow::Result<bool> {
    describe(binary).map(|d| d.1.contains("--config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_b_are_the_target_side() {
        assert_eq!(Side::of_cluster("b"), Side::Target);
        assert_eq!(Side::of_cluster("B2"), Side::Target);
        assert_eq!(Side::of_cluster("a"), Side::Source);
        assert_eq!(Side::of_cluster("a2"), Side::Source);
        assert_eq!(Side::Target.env(), TARGET_ENV);
    }
}
