//! `verify` and `repair`: start a walk of the passive cluster against the
//! active one through a worker (`POST /tcf/api/v1/verify`,
//! `docs/verify.md`), follow it with a progress line and print its report
//! (`GET /tcf/api/v1/verify`). Exit 0 when the clusters are equal (or the
//! repair fixed every difference), 1 when a verify found differences.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use tcf_api::verify::{
    MismatchKind, Report, WalkMode, WalkReport, WalkRequest, WalkStarted, WalkState,
};

use crate::{
    client::{Client, CtlError, exit},
    ops::print_json,
    render::Table,
};

/// How often the report is read while a walk runs.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Mismatching keys printed per space in the table (all are in `--json`).
const KEYS_SHOWN: usize = 20;

/// Starts a walk; with `wait`, follows it until every replicaset is done
/// (or `wait` passes: exit 5, the walk goes on) and prints the report.
pub(crate) async fn start(
    c: &Client,
    req: &WalkRequest,
    wait: Option<Duration>,
    json: bool,
) -> Result<i32, CtlError> {
    let url = c.pick().await?;
    let body = serde_json::to_string(req)
        .map_err(|e| CtlError::Failed(format!("encoding the request: {e}")))?;
    let a = c
        .post(&url, "/tcf/api/v1/verify", Some(&body), c.timeout())
        .await?;
    if let Some(e) = a.common_error() {
        return Err(e);
    }
    if matches!(a.response.status, 400 | 413) {
        return Err(CtlError::Usage(format!(
            "{url} refused the request: {}",
            a.error_text()
        )));
    }
    if a.response.status == 409 && a.parse::<WalkStarted>().is_err() {
        return Err(CtlError::Refused(format!("{url}: {}", a.error_text())));
    }
    if a.response.status == 502 {
        return Err(CtlError::Failed(format!("{url}: {}", a.error_text())));
    }
    let started: WalkStarted = a.parse()?;
    let refused: Vec<String> = started
        .replicasets
        .iter()
        .filter_map(|(rs, why)| Some(format!("{rs}: {}", why.as_ref()?)))
        .collect();
    if !json {
        println!(
            "{} walk {} started on {} of {} replicaset(s)",
            req.mode.as_str(),
            started.walk,
            started.replicasets.len() - refused.len(),
            started.replicasets.len()
        );
    }
    for r in &refused {
        eprintln!("tcfctl: not started on {r}");
    }
    if refused.len() == started.replicasets.len() {
        return Err(CtlError::Refused(format!(
            "the walk started nowhere: {}",
            refused.join("; ")
        )));
    }
    let Some(wait) = wait else {
        if json {
            print_json(&started)?;
        }
        return Ok(exit::OK);
    };
    let report = follow(c, &url, &started.walk, wait).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", render(&report));
    }
    let Some(report) = report else {
        eprintln!(
            "tcfctl: the walk did not end within {wait:?}; it goes on (tcfctl verify --report)"
        );
        return Ok(exit::TIMEOUT);
    };
    Ok(outcome(&report, Some(&started.walk)))
}

/// Prints the last walk's report of every replicaset.
pub(crate) async fn report(c: &Client, json: bool) -> Result<i32, CtlError> {
    let report = read(c, None).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", render(&Some(report.clone())));
    }
    Ok(outcome(&report, None))
}

/// 1 when a finished verify walk (`walk`, or the last one) found
/// differences it did not repair, else 0.
fn outcome(report: &Report, walk: Option<&str>) -> i32 {
    let unrepaired = report
        .replicasets
        .values()
        .flatten()
        .filter(|w| walk.is_none_or(|id| w.walk == id))
        .any(|w| w.state == WalkState::Done && w.mode == WalkMode::Verify && w.mismatches() > 0);
    if unrepaired { exit::FAILED } else { exit::OK }
}

async fn read(c: &Client, url: Option<&str>) -> Result<Report, CtlError> {
    let a = match url {
        Some(u) => c.get_from(u, "/tcf/api/v1/verify").await?,
        None => c.get("/tcf/api/v1/verify").await?,
    };
    a.accepted()?.parse()
}

/// Reads the report until `walk` is done everywhere; `None` when `wait`
/// passed first. Shows chunks and rows compared on stderr meanwhile.
async fn follow(
    c: &Client,
    url: &str,
    walk: &str,
    wait: Duration,
) -> Result<Option<Report>, CtlError> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let report = read(c, Some(url)).await?;
        if report.done(walk) {
            if tty {
                eprint!("\r\x1b[K");
            }
            return Ok(Some(report));
        }
        if started.elapsed() >= wait {
            return Ok(None);
        }
        let (chunks, compared) = report
            .replicasets
            .values()
            .flatten()
            .filter(|w| w.walk == walk)
            .flat_map(|w| w.by_space.values())
            .fold((0, 0), |(c, r), s| (c + s.chunks, r + s.compared));
        let line = format!(
            "[{:>5.1}s] walk {walk}: {chunks} chunks, {compared} rows compared",
            started.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }
}

/// The report as tables: one row per replicaset and space, then the
/// mismatching keys (at most [`KEYS_SHOWN`] per space).
fn render(report: &Option<Report>) -> String {
    let Some(report) = report else {
        return String::new();
    };
    let mut t = Table::new(&[
        "REPLICASET",
        "WALK",
        "MODE",
        "STATE",
        "SPACE",
        "CHUNKS",
        "COMPARED",
        "MISSING",
        "EXTRA",
        "DIFFERENT",
        "REPAIRED",
        "UNVERIFIED",
    ]);
    let mut keys = String::new();
    for (rs, w) in &report.replicasets {
        let Some(w) = w else {
            t.row(vec![rs.clone(), "-".into(), "no walk yet".into()]);
            continue;
        };
        for (space, s) in &w.by_space {
            let mut row = walk_cells(rs, w);
            row.push(space.clone());
            if let Some(why) = &s.skipped {
                row.push(format!("skipped: {why}"));
            } else {
                row.extend(
                    [
                        s.chunks,
                        s.compared,
                        s.missing,
                        s.extra,
                        s.different,
                        s.repaired,
                        s.unverified,
                    ]
                    .map(|n| n.to_string()),
                );
            }
            t.row(row);
            for k in s.keys.iter().take(KEYS_SHOWN) {
                let fixed = if k.repaired { " (repaired)" } else { "" };
                let kind = match k.kind {
                    MismatchKind::Missing => "missing",
                    MismatchKind::Extra => "extra",
                    MismatchKind::Different => "different",
                };
                keys.push_str(&format!("  {rs} {space} {kind} {}{fixed}\n", k.key));
            }
            let more = s
                .mismatches()
                .saturating_sub(KEYS_SHOWN.min(s.keys.len()) as u64);
            if more > 0 {
                keys.push_str(&format!(
                    "  {rs} {space}: {more} more (--json lists up to 1000)\n"
                ));
            }
        }
        if w.by_space.is_empty() {
            t.row(walk_cells(rs, w));
        }
    }
    let mut out = format!(
        "destination {} (cluster {})\n",
        report.destination, report.cluster
    );
    out.push_str(&t.render());
    if !keys.is_empty() {
        out.push_str("mismatching keys:\n");
        out.push_str(&keys);
    }
    out
}

fn walk_cells(rs: &str, w: &WalkReport) -> Vec<String> {
    let state = match w.state {
        WalkState::Running => "running",
        WalkState::Done => "done",
    };
    vec![
        rs.to_owned(),
        w.walk.chars().take(8).collect(),
        w.mode.as_str().to_owned(),
        state.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tcf_api::verify::{MismatchKey, SpaceReport, WalkReason};

    use super::*;

    fn report(mode: WalkMode, state: WalkState, missing: u64) -> Report {
        let space = SpaceReport {
            chunks: 3,
            compared: 2500,
            missing,
            keys: (0..missing)
                .map(|k| MismatchKey {
                    key: serde_json::json!([k]),
                    kind: MismatchKind::Missing,
                    repaired: mode == WalkMode::Repair,
                })
                .collect(),
            ..SpaceReport::default()
        };
        let walk = WalkReport {
            walk: "0123456789".into(),
            mode,
            reason: WalkReason::Requested,
            state,
            source_cluster: "A".into(),
            spaces: vec!["test".into()],
            current_space: None,
            seq: 3,
            started_ms: 0,
            finished_ms: None,
            by_space: BTreeMap::from([("test".to_owned(), space)]),
        };
        Report {
            destination: "d".into(),
            cluster: "B".into(),
            replicasets: BTreeMap::from([("rs1".to_owned(), Some(walk))]),
        }
    }

    #[test]
    fn only_unrepaired_differences_of_a_finished_walk_fail() {
        let verify = |state, n| outcome(&report(WalkMode::Verify, state, n), None);
        assert_eq!(verify(WalkState::Done, 0), exit::OK);
        assert_eq!(verify(WalkState::Done, 2), exit::FAILED);
        assert_eq!(verify(WalkState::Running, 2), exit::OK);
        assert_eq!(
            outcome(&report(WalkMode::Repair, WalkState::Done, 2), None),
            exit::OK
        );
        // Another walk's differences do not count for this one.
        let r = report(WalkMode::Verify, WalkState::Done, 2);
        assert_eq!(outcome(&r, Some("other")), exit::OK);
        assert_eq!(outcome(&r, Some("0123456789")), exit::FAILED);
    }

    #[test]
    fn the_table_lists_counts_and_keys() {
        let text = render(&Some(report(WalkMode::Verify, WalkState::Done, 2)));
        assert!(text.contains("rs1") && text.contains("01234567"), "{text}");
        assert!(text.contains("2500"), "{text}");
        assert!(text.contains("rs1 test missing [1]"), "{text}");
    }
}
