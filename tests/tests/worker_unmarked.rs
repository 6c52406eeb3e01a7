//! The unmarked-write alarm: writes on the passive cluster that tcf's
//! destination did not make raise it; replicated writes do not.

use std::time::Duration;

use rmpv::Value;
use tcf_api::operator::{CheckName, SwitchoverAnswer, SwitchoverRequest};
use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    federation::wait_equal,
    http, wait_until,
    worker::{APP_PASSWORD, APP_USER, Paired, RunningWorker, TOGGLE_TOKEN},
};

const SOON: Duration = Duration::from_secs(90);

/// The value of the first sample of `name` in the worker's `/metrics`.
async fn metric(w: &RunningWorker, name: &str) -> Option<f64> {
    let r = http::get(&w.http_addr, "/metrics").await.ok()?;
    r.body
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn triggers_on_test(t: &tcf_tests::Tarantool) -> u64 {
    t.eval1("return #box.space.test:on_replace()", &[])
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(u64::MAX)
}

#[tokio::test]
async fn serial_an_unmarked_write_on_the_passive_cluster_raises_the_alarm() {
    let s = Paired::start()
        .await
        .expect("clusters, etcd, replicators and workers");
    let (a, b, wb) = (s.a.master(), s.b.master(), &s.wb);
    // B's worker fences B, then installs its triggers on B's master.
    wait_until("the trigger on B's test space", SOON, || async {
        triggers_on_test(b).await == 1
    })
    .await
    .expect("trigger installed");

    // Application writes on A, replicated to B through the destination.
    let app = Connection::connect(
        &a.uri(),
        &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
    )
    .await
    .expect("app on A");
    let sid = a
        .eval1("return box.space.test.id", &[])
        .await
        .expect("id")
        .as_u64()
        .expect("id") as u32;
    for i in 1..=20u64 {
        app.insert(sid, &[Value::from(i), "x".into(), 1.into()][..])
            .await
            .expect("write on A");
    }
    wait_equal(a, b, &["test"])
        .await
        .expect("A -> B replicates");
    let counted = b
        .eval1("return _tcf_unmarked_v1.count", &[])
        .await
        .expect("counter");
    assert_eq!(counted.as_u64(), Some(0), "replicated rows counted");
    assert_eq!(triggers_on_test(b).await, 1, "installed once");
    let info = wait_until("B's worker to read its master", SOON, || async {
        let info = wb.info().await.ok()?;
        let u = &info["unmarked_commits"];
        let read = u["instances"].as_object().is_some_and(|m| !m.is_empty());
        (read && u["error"].is_null()).then_some(info)
    })
    .await
    .expect("a reading");
    let u = &info["unmarked_commits"];
    assert_eq!(u["alarm"], false, "{info}");
    assert_eq!(u["count"], 0, "{info}");
    assert_eq!(metric(wb, "tcf_worker_unmarked_alarm").await, Some(0.0));

    // A write on B's master by an administrator, not through tcf.
    b.eval("box.space.test:replace{1000001, 'intruder', 1}", &[])
        .await
        .expect("write on B");
    let info = wait_until("the alarm in info", SOON, || async {
        let info = wb.info().await.ok()?;
        (info["unmarked_commits"]["alarm"] == true).then_some(info)
    })
    .await
    .expect("alarm raised");
    let u = &info["unmarked_commits"];
    assert_eq!(u["count"], 1, "{info}");
    assert!(u["since_ms"].as_u64().is_some(), "{info}");
    let instances = u["instances"].as_object().expect("instances");
    assert!(
        instances
            .values()
            .any(|r| r["count"] == 1 && r["uri"] == b.uri()),
        "{info}"
    );
    wait_until("the alarm in the metrics", SOON, || async {
        metric(wb, "tcf_worker_unmarked_alarm").await == Some(1.0)
            && metric(wb, "tcf_worker_unmarked_commits_total").await == Some(1.0)
    })
    .await
    .expect("metrics");
    assert!(
        wb.process
            .log()
            .contains("unmarked writes on a cluster that is not active"),
        "{}",
        wb.process.log_tail(30)
    );
    // A's worker (active cluster) never watches.
    let info_a = s.wa.info().await.expect("A's info");
    assert_eq!(info_a["unmarked_commits"]["alarm"], false, "{info_a}");

    // A switchover to B is refused while the alarm is raised (A lacks that
    // write), naming the check; the operator who dealt with it switches
    // with accept_unmarked_writes.
    let (code, body) = wb.toggle(Some(TOGGLE_TOKEN)).await.expect("toggle");
    assert_eq!(code, 409, "{body}");
    let refused: SwitchoverAnswer = serde_json::from_value(body.clone()).expect("typed answer");
    let failed: Vec<CheckName> = refused
        .prechecks
        .iter()
        .flat_map(|p| &p.checks)
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect();
    assert_eq!(failed, [CheckName::UnmarkedWrites], "{body}");
    let accept = serde_json::to_string(&SwitchoverRequest {
        accept_unmarked_writes: true,
        ..SwitchoverRequest::default()
    })
    .expect("request");
    let r = tcf_common::http_client::request(
        "POST",
        &wb.http_addr,
        "/tcf/switchover",
        Some(TOGGLE_TOKEN),
        Some(&accept),
        SOON,
    )
    .await
    .expect("switchover");
    assert_eq!(r.status, 200, "{}", r.body);
    // The alarm stays until B becomes active; then it is lowered and the
    // triggers are removed.
    wait_until("the alarm lowered on B", SOON, || async {
        let info = wb.info().await.ok()?;
        let u = &info["unmarked_commits"];
        (u["alarm"] == false && u["count"] == 0).then_some(())
    })
    .await
    .expect("alarm lowered");
    wait_until("B's triggers removed", SOON, || async {
        triggers_on_test(b).await == 0
    })
    .await
    .expect("triggers removed");
    wait_until("the alarm gauge lowered", SOON, || async {
        metric(wb, "tcf_worker_unmarked_alarm").await == Some(0.0)
    })
    .await
    .expect("gauge");
    // A is passive now: its worker watches A.
    wait_until("the trigger on A's test space", SOON, || async {
        triggers_on_test(a).await == 1
    })
    .await
    .expect("A watched");
    let info_a = s.wa.info().await.expect("A's info");
    assert_eq!(info_a["unmarked_commits"]["alarm"], false, "{info_a}");
}
