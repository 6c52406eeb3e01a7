//! The commands that change something: `switchover` (dry run, lag gate,
//! timeout, a progress line while it waits), `failover` and `resync`. Each
//! returns its exit status after printing the answer; a refusal or failure
//! prints its reason.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use tcf_api::{
    operator::{
        FailoverAnswer, Overview, Prechecks, ResyncAnswer, SwitchoverAnswer, SwitchoverRequest,
        SwitchoverResult,
    },
    worker::{Info, Status},
};

use crate::{
    client::{Client, CtlError, exit},
    render::Table,
};

/// How often the progress line reads the worker's info.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Waited beyond a switch's own deadline for the worker's answer (it waits
/// up to ten polls past the deadline itself).
const ANSWER_MARGIN: Duration = Duration::from_secs(30);

/// Prints `value` as JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CtlError::Failed(format!("encoding the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

/// `switchover`: runs the prechecks (and stops there with `dry_run`), then
/// switches, showing the phase while the worker works.
pub(crate) async fn switchover(
    c: &Client,
    req: SwitchoverRequest,
    json: bool,
) -> Result<i32, CtlError> {
    let url = c.pick().await?;
    let body = serde_json::to_string(&req)
        .map_err(|e| CtlError::Failed(format!("encoding the request: {e}")))?;
    let wait = Duration::from_millis(req.timeout_ms.unwrap_or(30_000)) + ANSWER_MARGIN;
    let post = c.post(&url, "/tcf/switchover", Some(&body), wait);
    let answer = if req.dry_run {
        post.await?
    } else {
        let progress = progress(c, &url);
        tokio::select! {
            a = post => a?,
            () = progress => return Err(CtlError::Failed("the progress display ended".into())),
        }
    };
    clear_progress();
    if let Some(e) = answer.common_error() {
        return Err(e);
    }
    if matches!(answer.response.status, 400 | 413) {
        return Err(CtlError::Usage(format!(
            "{url} refused the request: {}",
            answer.error_text()
        )));
    }
    let a: SwitchoverAnswer = answer.parse()?;
    if json {
        print_json(&a)?;
    } else {
        print!("{}", render_switchover(&a));
    }
    let why = || a.error.clone().unwrap_or_default();
    Ok(match a.result {
        SwitchoverResult::Done | SwitchoverResult::Ready => exit::OK,
        SwitchoverResult::Refused => {
            eprintln!("tcfctl: switchover refused: {}", why());
            exit::REFUSED
        }
        SwitchoverResult::RolledBack => {
            eprintln!("tcfctl: switchover rolled back: {}", why());
            exit::FAILED
        }
        SwitchoverResult::NoOutcome => {
            eprintln!("tcfctl: no outcome: {}", why());
            exit::TIMEOUT
        }
    })
}

/// Shows the switch's phase (and what it waits for) every
/// [`PROGRESS_EVERY`], on stderr: one rewritten line on a terminal, a line
/// per change otherwise. Runs until dropped.
async fn progress(c: &Client, url: &str) {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let Ok(a) = c.get_from(url, "/tcf/api/v1/info").await else {
            continue;
        };
        let Ok(info) = a.parse::<Info>() else {
            continue;
        };
        let Some(s) = info.switch.filter(|s| !s.phase.is_final()) else {
            continue;
        };
        let mut line = format!("{} {} -> {}: phase {:?}", s.kind, s.from, s.to, s.phase);
        if let Some(e) = &info.switch_error {
            line.push_str(&format!(" (waiting: {e})"));
        }
        if tty {
            eprint!("\r\x1b[K[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            let _ = std::io::stderr().flush();
        } else if line != last {
            eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
        }
        last = line;
    }
}

fn clear_progress() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

fn render_prechecks(p: &Prechecks) -> String {
    let mut t = Table::new(&["CHECK", "RESULT", "DETAIL"]);
    for c in &p.checks {
        t.row(vec![
            c.name.to_string(),
            if c.ok { "ok" } else { "FAILED" }.into(),
            c.detail.clone(),
        ]);
    }
    t.render()
}

/// A switchover answer for people.
pub(crate) fn render_switchover(a: &SwitchoverAnswer) -> String {
    let mut out = format!(
        "switchover {} -> {}{}\n",
        a.from.as_deref().unwrap_or("?"),
        a.to.as_deref().unwrap_or("?"),
        if a.dry_run { " (dry run)" } else { "" }
    );
    if let Some(p) = &a.prechecks {
        out.push_str(&render_prechecks(p));
    }
    let term = a.term.map_or("?".into(), |t| t.to_string());
    match a.result {
        SwitchoverResult::Ready => {
            out.push_str("it would:\n");
            for (i, s) in a.plan.iter().enumerate() {
                out.push_str(&format!("  {}. {s}\n", i + 1));
            }
            out.push_str("result: ready (every precheck passed; nothing was changed)\n");
        }
        SwitchoverResult::Done => {
            out.push_str(&format!(
                "result: done, term {term}, {} ms\n",
                a.duration_ms.unwrap_or_default()
            ));
            for (rs, v) in &a.fence_vclocks {
                out.push_str(&format!("  fenced at {rs} {v}\n"));
            }
        }
        r => out.push_str(&format!(
            "result: {}: {}\n",
            r.as_str(),
            a.error.as_deref().unwrap_or("")
        )),
    }
    out
}

/// Asks for confirmation on a terminal (the operator types `word`);
/// without a terminal `--yes` is required.
fn confirm(command: &str, what: &str, word: &str, yes: bool) -> Result<(), CtlError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::Usage(format!(
            "{command} needs confirmation: not on a terminal, pass --yes"
        )));
    }
    eprint!("{what}\nType {word} to confirm: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CtlError::Usage(format!("reading the confirmation: {e}")))?;
    if line.trim() == word {
        Ok(())
    } else {
        Err(CtlError::Usage("not confirmed: nothing done".into()))
    }
}

/// `failover`: fails the active cluster over to its peer now.
pub(crate) async fn failover(
    c: &Client,
    yes: bool,
    wait: Duration,
    json: bool,
) -> Result<i32, CtlError> {
    let ov = c.get("/tcf/api/v1/overview").await?;
    if let Some(e) = ov.common_error() {
        return Err(e);
    }
    let ov: Overview = ov.parse()?;
    let active = ov
        .worker
        .clusters
        .as_ref()
        .and_then(|c| c.iter().find(|(_, s)| **s == Status::Active))
        .map(|(name, _)| name.clone())
        .ok_or_else(|| CtlError::Refused("no cluster is active: nothing to fail over".into()))?;
    confirm(
        "failover",
        &format!(
            "Fail cluster {active} over to its peer NOW, without waiting for it? What it committed that \
             the peer has not applied stays on it only; it comes back diverged."
        ),
        &active,
        yes,
    )?;
    let url = c.pick().await?;
    let f: FailoverAnswer = c
        .post(&url, "/tcf/failover", None, wait)
        .await?
        .accepted()?
        .parse()?;
    if json {
        print_json(&f)?;
    } else {
        let o = &f.failover;
        println!(
            "failover done: {} -> {}, term {}, {} ms; {} is diverged (tcfctl resync reloads it)",
            o.from, o.to, o.term, o.duration_ms, o.from
        );
        for (rs, v) in &o.loss_point {
            println!("  loss point {rs} {v}");
        }
    }
    Ok(exit::OK)
}

/// `resync`: on a worker of the diverged cluster (found among the URLs
/// given), reports its tail and reloads it from the active cluster.
pub(crate) async fn resync(
    c: &Client,
    yes: bool,
    wait: Duration,
    json: bool,
) -> Result<i32, CtlError> {
    let mut seen = Vec::new();
    let mut target = None;
    for url in c.urls() {
        let Ok(a) = c.get_from(url, "/tcf/api/v1/info").await else {
            seen.push(format!("{url}: no answer"));
            continue;
        };
        if let Some(e) = a.common_error() {
            seen.push(e.to_string());
            continue;
        }
        let info: Info = a.parse()?;
        let status = info
            .clusters
            .as_ref()
            .and_then(|s| s.get(&info.cluster))
            .copied();
        if status == Some(Status::Diverged) {
            target = Some((url.clone(), info.cluster));
            break;
        }
        seen.push(format!(
            "{url}: cluster {} is {}",
            info.cluster,
            status.map_or("unknown".into(), |s| s.to_string())
        ));
    }
    let Some((url, cluster)) = target else {
        return Err(CtlError::Refused(format!(
            "no worker given belongs to a diverged cluster ({})",
            seen.join("; ")
        )));
    };
    confirm(
        "resync",
        &format!(
            "Resync cluster {cluster}: whatever it holds past the loss point is DISCARDED and it is \
             reloaded from the active cluster."
        ),
        &cluster,
        yes,
    )?;
    let r: ResyncAnswer = c
        .post(&url, "/tcf/resync", None, wait)
        .await?
        .accepted()?
        .parse()?;
    if json {
        print_json(&r)?;
    } else {
        println!(
            "resync: cluster {} is passive again at term {} and reloads from the active cluster",
            r.report.cluster, r.term
        );
        let mut t = Table::new(&["REPLICASET", "LOSS POINT", "HELD", "TAIL ROWS"]);
        for (rs, tail) in &r.report.tail {
            t.row(vec![
                rs.clone(),
                tail.from.to_string(),
                tail.to.to_string(),
                tail.rows.to_string(),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use tcf_api::operator::{Check, CheckName};

    use super::*;

    #[test]
    fn a_refused_dry_run_shows_every_check_and_the_reason() {
        let mut a = SwitchoverAnswer::new(SwitchoverResult::Refused);
        a.dry_run = true;
        a.from = Some("A".into());
        a.to = Some("B".into());
        a.error = Some("lag: rs1 lags 12.000 s".into());
        a.prechecks = Some(Prechecks {
            checks: vec![
                Check {
                    name: CheckName::State,
                    ok: true,
                    detail: "A active".into(),
                },
                Check {
                    name: CheckName::Lag,
                    ok: false,
                    detail: "rs1 lags 12.000 s".into(),
                },
            ],
            ..Prechecks::default()
        });
        let text = render_switchover(&a);
        assert!(text.starts_with("switchover A -> B (dry run)\n"), "{text}");
        assert!(text.contains("lag    FAILED  rs1 lags 12.000 s"), "{text}");
        assert!(
            text.contains("result: refused: lag: rs1 lags 12.000 s"),
            "{text}"
        );
    }
}
