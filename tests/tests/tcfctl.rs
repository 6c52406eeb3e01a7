//! `tcfctl` against a live federation (real clusters, etcd, replicators,
//! workers): status, the guarded switchover (the HTTP API and the CLI give
//! the same prechecks; a dry run changes nothing; an unmarked-write alarm
//! refuses it with exit status 3), history, failover and resync, and the
//! exit statuses of a wrong token, a low role and no worker.

use std::{path::Path, time::Duration};

use tcf_api::operator::{CheckName, Overview, SwitchoverAnswer, SwitchoverResult};
use tcf_tests::{
    gateway::{ADMIN_TOKEN, INFO_TOKEN},
    http,
    tools::{ToolOutput, run, tcfctl},
    wait_until,
    worker::{Paired, PairedOptions, TOGGLE_TOKEN},
};

const SOON: Duration = Duration::from_secs(60);
const TOOL: Duration = Duration::from_secs(120);

async fn ctl(workers: &str, token: Option<&Path>, args: &[&str]) -> ToolOutput {
    let mut all = vec!["--worker", workers];
    let t;
    if let Some(p) = token {
        t = p.display().to_string();
        all.extend(["--token-file", t.as_str()]);
    }
    all.extend(args);
    let cmd = tcfctl(&all).expect("tcfctl is built");
    let out = run(cmd, TOOL).await.expect("tcfctl runs");
    println!("$ tcfctl {}\n{out}", all.join(" "));
    out
}

fn json<T: serde::de::DeserializeOwned>(out: &ToolOutput) -> T {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn serial_tcfctl_reads_switches_over_and_refuses_with_the_workers_reasons() {
    let s = Paired::start_with(PairedOptions {
        coordinator: true,
        ..PairedOptions::default()
    })
    .await
    .expect("clusters, etcd, replicators and workers");
    s.wa.wait_is_active(200, SOON).await.expect("A active");
    s.wb.wait_is_active(418, SOON).await.expect("B passive");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).expect("token file");
        p
    };
    let (info, toggle, admin, wrong) = (
        token("info", INFO_TOKEN),
        token("toggle", TOGGLE_TOKEN),
        token("admin", ADMIN_TOKEN),
        token("wrong", "not-a-token"),
    );
    // A dead URL first: the next one answers.
    let workers = format!(
        "http://127.0.0.1:1,http://{},http://{}",
        s.wa.http_addr, s.wb.http_addr
    );

    // status: tables for people, the typed overview with --json.
    wait_until("both workers' status", SOON, || async {
        let o = ctl(&workers, Some(&info), &["status", "--json"]).await;
        let ov: Overview = serde_json::from_str(&o.stdout).ok()?;
        (ov.lb.len() == 2 && ov.peer.is_some() && ov.worker.replicators.is_some()).then_some(())
    })
    .await
    .expect("overview with the peer and both LB answers");
    let out = ctl(&workers, Some(&info), &["status"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let line = |start: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start}: {out}"))
            .to_owned()
    };
    let a = line("A ");
    assert!(
        a.contains("active") && a.contains("200 active") && a.contains("open @0"),
        "{a}"
    );
    let b = line("B ");
    assert!(
        b.contains("passive") && b.contains("418 passive") && b.contains("fenced @0"),
        "{b}"
    );
    assert!(line("A -> B").contains("streaming"), "{out}");
    assert!(out.stdout.contains("alarms: none"), "{out}");

    // Refusals that change nothing, each with its exit status.
    let o = ctl(&workers, Some(&wrong), &["status"]).await;
    assert_eq!(o.code, Some(6), "wrong token: {o}");
    assert!(o.stderr.contains("401"), "{o}");
    let o = ctl(&workers, Some(&info), &["switchover", "--dry-run"]).await;
    assert_eq!(o.code, Some(6), "info cannot switch: {o}");
    assert!(o.stderr.contains("403"), "{o}");
    let o = ctl("http://127.0.0.1:1", Some(&info), &["status"]).await;
    assert_eq!(o.code, Some(4), "no worker: {o}");
    let o = ctl(&workers, Some(&admin), &["failover"]).await;
    assert_eq!(
        o.code,
        Some(2),
        "failover without --yes off a terminal: {o}"
    );

    // The dry run: every precheck passes; the CLI shows what the HTTP API says.
    let o = ctl(
        &workers,
        Some(&toggle),
        &["switchover", "--dry-run", "--json"],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o}");
    let cli: SwitchoverAnswer = json(&o);
    assert_eq!(cli.result, SwitchoverResult::Ready, "{o}");
    assert!(cli.dry_run);
    let r = http::request(
        "POST",
        &s.wa.http_addr,
        "/tcf/switchover",
        Some(TOGGLE_TOKEN),
        Some(r#"{"dry_run": true}"#),
    )
    .await
    .expect("dry run over HTTP");
    assert_eq!(r.status, 200, "{}", r.body);
    let api: SwitchoverAnswer = serde_json::from_str(&r.body).expect("typed answer");
    let names = |a: &SwitchoverAnswer| {
        a.prechecks
            .as_ref()
            .map(|p| p.checks.iter().map(|c| (c.name, c.ok)).collect::<Vec<_>>())
    };
    assert_eq!(names(&cli), names(&api));
    assert_eq!(
        names(&api).map(|n| n.len()),
        Some(5),
        "state, promotable, lag, unmarked_writes, reverse_pair: {}",
        r.body
    );
    let info_a = s.wa.info().await.expect("info");
    assert_eq!(info_a["term"], 0, "a dry run changes nothing: {info_a}");
    assert!(info_a["switch"].is_null(), "{info_a}");
    let o = ctl(&workers, Some(&toggle), &["switchover", "--dry-run"]).await;
    assert!(o.stdout.contains("result: ready"), "{o}");

    // A bad request body is refused by the worker (400) before anything.
    let r = http::request(
        "POST",
        &s.wa.http_addr,
        "/tcf/switchover",
        Some(TOGGLE_TOKEN),
        Some(r#"{"dry-run": true}"#),
    )
    .await
    .expect("http");
    assert_eq!(r.status, 400, "{}", r.body);

    // The switchover.
    let o = ctl(
        &workers,
        Some(&toggle),
        &["switchover", "--max-lag", "5s", "--timeout", "20s"],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o}");
    assert!(o.stdout.contains("result: done, term 1"), "{o}");
    s.wb.wait_is_active(200, SOON).await.expect("B active");
    s.wa.wait_is_active(418, SOON).await.expect("A passive");

    // Something writes on the passive cluster A: the alarm refuses a switch
    // back, in the dry run and for real, over HTTP and in the CLI alike.
    wait_until("A's worker watches A's test space", SOON, || async {
        s.a.master()
            .eval1("return #box.space.test:on_replace()", &[])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            == Some(1)
    })
    .await
    .expect("the unmarked-write trigger on A");
    s.a.master()
        .eval("box.space.test:insert{424242, 'not through tcf', 1}", &[])
        .await
        .expect("an unmarked write on A");
    wait_until("A's unmarked-write alarm", SOON, || async {
        let i = s.wa.info().await.ok()?;
        (i["unmarked_commits"]["alarm"] == true).then_some(())
    })
    .await
    .expect("alarm raised");
    let o = ctl(&workers, Some(&toggle), &["switchover", "--dry-run"]).await;
    assert_eq!(o.code, Some(3), "refused: {o}");
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("unmarked_writes") && l.contains("FAILED")),
        "{o}"
    );
    assert!(
        o.stderr.contains("switchover refused: unmarked_writes:"),
        "{o}"
    );
    println!(
        "dry-run refusal (stdout):\n{}(stderr): {}",
        o.stdout, o.stderr
    );
    let r = http::request(
        "POST",
        &s.wb.http_addr,
        "/tcf/switchover",
        Some(TOGGLE_TOKEN),
        Some(r#"{"dry_run": true}"#),
    )
    .await
    .expect("dry run over HTTP");
    assert_eq!(r.status, 409, "{}", r.body);
    let api: SwitchoverAnswer = serde_json::from_str(&r.body).expect("typed");
    assert_eq!(api.result, SwitchoverResult::Refused);
    let failed: Vec<CheckName> = api
        .prechecks
        .iter()
        .flat_map(|p| p.checks.iter().filter(|c| !c.ok).map(|c| c.name))
        .collect();
    assert_eq!(failed, [CheckName::UnmarkedWrites], "{}", r.body);
    let o = ctl(&workers, Some(&toggle), &["switchover"]).await;
    assert_eq!(o.code, Some(3), "a real switch is refused too: {o}");
    let i = s.wa.info().await.expect("info");
    assert_eq!(i["term"], 1, "nothing switched: {i}");
    let o = ctl(&workers, Some(&info), &["status"]).await;
    assert!(o.stdout.contains("unmarked-write alarm"), "{o}");

    // History.
    let o = ctl(&workers, Some(&info), &["history"]).await;
    assert_eq!(o.code, Some(0), "{o}");
    assert!(
        o.stdout
            .lines()
            .any(|l| l.contains("switchover") && l.contains("done") && l.contains("role toggle")),
        "{o}"
    );

    // Failover (B, the active, to A) and the resync of B, which comes back
    // diverged; resync finds B's worker among those given.
    let o = ctl(&workers, Some(&toggle), &["failover", "--yes"]).await;
    assert_eq!(o.code, Some(6), "failover needs admin: {o}");
    let o = ctl(&workers, Some(&admin), &["failover", "--yes"]).await;
    assert_eq!(o.code, Some(0), "{o}");
    assert!(o.stdout.contains("failover done: B -> A, term 2"), "{o}");
    s.wa.wait_is_active(200, SOON).await.expect("A active");
    let o = ctl(&workers, Some(&admin), &["resync", "--yes"]).await;
    assert_eq!(o.code, Some(0), "{o}");
    assert!(
        o.stdout
            .contains("resync: cluster B is passive again at term 2"),
        "{o}"
    );
    wait_until("B passive again", SOON, || async {
        s.wb.is_active().await.ok() == Some(418)
    })
    .await
    .expect("B passive");
    let o = ctl(&workers, Some(&admin), &["resync", "--yes"]).await;
    assert_eq!(o.code, Some(3), "nothing diverged any more: {o}");
}
