//! tcf-worker end to end: state in etcd, the load-balancer probe, fencing and
//! planned switchover, with real clusters, etcd, replicators and workers.

use std::time::Duration;

use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    federation::{dump, wait_equal},
    gateway::INFO_TOKEN,
    wait_until,
    worker::{APP_PASSWORD, APP_USER, Paired, RunningWorker, TOGGLE_TOKEN},
};

const SOON: Duration = Duration::from_secs(60);

async fn setup() -> Paired {
    Paired::start()
        .await
        .expect("clusters, etcd, replicators and workers")
}

async fn app(t: &tcf_tests::Tarantool) -> Connection {
    Connection::connect(
        &t.uri(),
        &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
    )
    .await
    .expect("app connects")
}

#[tokio::test]
async fn serial_toggle_flips_the_probe_and_the_fence() {
    let s = setup().await;
    s.wa.wait_is_active(200, SOON).await.expect("probe");
    s.wb.wait_is_active(418, SOON).await.expect("probe");
    // Fenced: the dml user cannot write on the passive cluster.
    let sid =
        s.a.master()
            .eval1("return box.space.test.id", &[])
            .await
            .expect("id")
            .as_u64()
            .expect("id") as u32;
    let on_a = app(s.a.master()).await;
    on_a.insert(sid, &[rmpv::Value::from(1), "x".into(), 1.into()][..])
        .await
        .expect("write on the active cluster");
    wait_until("B fenced", SOON, || async {
        Connection::connect(
            &s.b.master().uri(),
            &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
        )
        .await
        .is_err()
    })
    .await
    .expect("the app cannot log in on the passive cluster");

    // Tokens: none, wrong, and a role that cannot toggle.
    assert_eq!(s.wa.toggle(None).await.expect("http").0, 401);
    assert_eq!(s.wa.toggle(Some("wrong")).await.expect("http").0, 401);
    assert_eq!(s.wa.toggle(Some(INFO_TOKEN)).await.expect("http").0, 403);

    let (code, body) = s.wb.toggle(Some(TOGGLE_TOKEN)).await.expect("toggle");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"], "done", "{body}");
    println!("switchover (idle): {} ms", body["duration_ms"]);
    assert_eq!(body["term"], 1, "{body}");
    s.wa.wait_is_active(418, SOON).await.expect("probe");
    s.wb.wait_is_active(200, SOON).await.expect("probe");
    // The connection opened before the switch can no longer write on A.
    let err = on_a
        .insert(sid, &[rmpv::Value::from(2), "y".into(), 2.into()][..])
        .await
        .expect_err("fenced");
    assert!(
        err.to_string().contains("denied") || err.server_code().is_some(),
        "{err:?}"
    );
    wait_until("B unfenced", SOON, || async {
        Connection::connect(
            &s.b.master().uri(),
            &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
        )
        .await
        .is_ok()
    })
    .await
    .expect("the app can log in on the new active cluster");
    let on_b = app(s.b.master()).await;
    on_b.insert(sid, &[rmpv::Value::from(3), "z".into(), 3.into()][..])
        .await
        .expect("write on B");
    wait_equal(s.a.master(), s.b.master(), &["test"])
        .await
        .expect("B -> A carries the new writes");
    let info = s.wa.info().await.expect("info");
    assert_eq!(info["term"], 1, "{info}");
    assert_eq!(info["clusters"]["B"], "active", "{info}");
    assert!(
        !info["history"].as_array().expect("history").is_empty(),
        "{info}"
    );
}

#[tokio::test]
async fn serial_a_switchover_under_writes_loses_no_acknowledged_write() {
    let s = setup().await;
    s.wa.wait_is_active(200, SOON).await.expect("probe");
    let sid =
        s.a.master()
            .eval1("return box.space.test.id", &[])
            .await
            .expect("id")
            .as_u64()
            .expect("id") as u32;
    let uri_a = s.a.master().uri();
    let writer = tokio::spawn(async move {
        let c = Connection::connect(
            &uri_a,
            &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
        )
        .await
        .expect("app");
        let mut acked = Vec::new();
        for i in 1..=100_000u64 {
            match c
                .insert(sid, &[rmpv::Value::from(i), "w".into(), 1.into()][..])
                .await
            {
                Ok(_) => acked.push(i),
                Err(_) => break,
            }
        }
        acked
    });
    wait_until("some writes", SOON, || async {
        dump(s.b.master(), "test")
            .await
            .ok()
            .filter(|r| r.len() > 200)
    })
    .await
    .expect("writes flowing");
    let (code, body) = s.wa.toggle(Some(TOGGLE_TOKEN)).await.expect("toggle");
    assert_eq!(code, 200, "{body}");
    println!("switchover under writes: {} ms", body["duration_ms"]);
    let acked = writer.await.expect("writer");
    assert!(!acked.is_empty());
    let on_b = dump(s.b.master(), "test").await.expect("dump B");
    let ids: std::collections::BTreeSet<u64> = on_b
        .iter()
        .filter_map(|t| {
            t.as_array()
                .and_then(|a| a.first())
                .and_then(rmpv::Value::as_u64)
        })
        .collect();
    let missing: Vec<&u64> = acked.iter().filter(|i| !ids.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on the new active: {:?}",
        &missing[..missing.len().min(10)]
    );
    wait_equal(s.a.master(), s.b.master(), &["test"])
        .await
        .expect("equal after the switch");
}

#[tokio::test]
async fn serial_racing_toggles_grow_the_term_by_one_per_switch() {
    let s = setup().await;
    s.wa.wait_is_active(200, SOON).await.expect("probe");
    let (r1, r2) = tokio::join!(
        s.wa.toggle(Some(TOGGLE_TOKEN)),
        s.wb.toggle(Some(TOGGLE_TOKEN))
    );
    let (c1, b1) = r1.expect("toggle 1");
    let (c2, b2) = r2.expect("toggle 2");
    let accepted = [c1, c2].iter().filter(|c| **c == 200).count();
    assert_eq!(
        accepted, 1,
        "exactly one switch accepted: {c1} {b1} / {c2} {b2}"
    );
    assert!([c1, c2].contains(&409), "the other is refused: {c1} {c2}");
    let info = s.wa.info().await.expect("info");
    assert_eq!(info["term"], 1, "{info}");
    let (c3, b3) = s.wa.toggle(Some(TOGGLE_TOKEN)).await.expect("toggle 3");
    assert_eq!(c3, 200, "{b3}");
    assert_eq!(b3["term"], 2, "{b3}");
    s.wa.wait_is_active(200, SOON).await.expect("probe");
}

#[tokio::test]
async fn serial_initial_status_contradiction_refuses_at_bootstrap_and_is_ignored_after_a_switch() {
    let s = setup().await;
    s.wa.wait_is_active(200, SOON).await.expect("probe");
    // A second worker of B that believes B is active: refused at term 0.
    let mut wrong = s.spec("B", "active");
    wrong.replication = None;
    let w = RunningWorker::spawn(&wrong).expect("spawn");
    assert_eq!(
        w.process.wait_exit(SOON).await.expect("exits"),
        Some(3),
        "{}",
        w.process.log()
    );
    assert!(
        w.process.log().contains("contradicts"),
        "{}",
        w.process.log()
    );
    let (code, body) = s.wa.toggle(Some(TOGGLE_TOKEN)).await.expect("toggle");
    assert_eq!(code, 200, "{body}");
    // After a switch, a config that contradicts the state is ignored (A is
    // passive now; this worker of A still says active).
    let mut stale = s.spec("A", "active");
    stale.replication = None;
    let w = RunningWorker::start(&stale)
        .await
        .expect("starts after a switch");
    w.wait_is_active(418, SOON).await.expect("probe");
    assert!(
        w.process.log().contains("initial_status ignored"),
        "{}",
        w.process.log()
    );
}
