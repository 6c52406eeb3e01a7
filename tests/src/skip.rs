//! Skipping a test that cannot run on the Tarantool under test — counted,
//! never silent.
//!
//! A test that finds the binary lacks what it needs (found by asking the
//! server or the binary for the feature, never by its version number) calls
//! [`skip`] with the reason and returns. [`skip`] prints the reason to the
//! test's output and writes one record into the skip directory;
//! `scripts/test.sh` empties that directory before the run and, after the
//! `summary:` line, prints `skipped: N` and every record. To nextest a
//! skipped test is a passed one: only these records tell them apart.
//!
//! The directory is `TCF_SKIP_DIR` when set (`scripts/test.sh` sets it),
//! else `tcf-skips` in the cargo target directory of the running test
//! binary.
//!
//! ```no_run
//! # async fn t(rs: &tcf_tests::Replicaset) -> anyhow::Result<()> {
//! if rs.master().eval1("return box.info.election == nil", &[]).await?
//!     == rmpv::Value::Boolean(true)
//! {
//!     return Ok(tcf_tests::skip("the target has no Raft (box.info.election)"));
//! }
//! # Ok(()) }
//! ```

use std::path::PathBuf;

/// The environment variable naming the skip directory.
pub const SKIP_DIR_ENV: &str = "TCF_SKIP_DIR";

/// Where skip records go: [`SKIP_DIR_ENV`], else `<target dir>/tcf-skips`
/// (the target directory is the nearest ancestor of the running binary
/// holding cargo's `CACHEDIR.TAG`), else `tcf-skips` in the temporary
/// directory.
pub fn skip_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(SKIP_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(|d| d.join("tcf-skips"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("tcf-skips"))
}

/// `(test binary, test name)` of the calling test: the binary's file name
/// without cargo's hash, and the name of the thread libtest runs the test
/// on (the test's path).
fn test_identity() -> (String, String) {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => s,
        })
        .unwrap_or_else(|| "unknown".into());
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown")
        .to_owned();
    (binary, test)
}

/// Records that the calling test skips, and why; the test must return
/// right after. Prints `SKIP <binary> <test>: <reason>` to stderr and writes
/// it to `<skip dir>/<binary>__<test>.skip` (a later skip of the same test
/// replaces it). A record that cannot be written makes the test fail:
/// a skip must never go unseen.
pub fn skip(reason: impl std::fmt::Display) {
    record(&skip_dir(), &reason.to_string());
}

fn record(dir: &std::path::Path, reason: &str) {
    let (binary, test) = test_identity();
    let line = format!("{binary} {test}: {reason}");
    eprintln!("SKIP {line}");
    let file: String = format!("{binary}__{test}.skip")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Err(e) = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join(&file), format!("{line}\n")))
    {
        panic!("cannot record the skip in {} ({e}): {line}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_leaves_a_record_naming_the_test_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "no such feature");
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            text.contains("a_skip_leaves_a_record_naming_the_test_and_the_reason: no such feature"),
            "{text}"
        );
        assert!(text.starts_with("tcf_tests "), "{text}");
    }
}
