//! The worker with a real load balancer, and a switch whose driver dies.

use std::time::Duration;

use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    haproxy::Haproxy,
    wait_until,
    worker::{APP_PASSWORD, APP_USER, Paired, RunningWorker, TOGGLE_TOKEN},
};

const SOON: Duration = Duration::from_secs(60);

#[tokio::test]
async fn serial_haproxy_sends_new_connections_to_the_new_active_cluster() {
    let p = Paired::start()
        .await
        .expect("clusters, etcd, replicators and workers");
    let (a, b, wa, wb) = (&p.a, &p.b, &p.wa, &p.wb);
    let lb = Haproxy::start(&[
        (a.master().uri(), wa.http_addr.clone()),
        (b.master().uri(), wb.http_addr.clone()),
    ])
    .expect("haproxy");
    let uuid_of = |t: &tcf_tests::Tarantool| {
        let t = t.uri();
        async move {
            Connection::connect(&t, &ConnectOptions::new())
                .await
                .map(|c| c.greeting().instance_uuid)
        }
    };
    let (ua, ub) = (
        uuid_of(a.master()).await.expect("A"),
        uuid_of(b.master()).await.expect("B"),
    );
    let via_lb = || async {
        // The greeting names the instance the balancer picked.
        Connection::connect(&lb.frontend, &ConnectOptions::new())
            .await
            .ok()
            .map(|c| c.greeting().instance_uuid)
    };
    wait_until("the balancer to reach A", SOON, || async {
        via_lb().await == Some(ua)
    })
    .await
    .expect("A behind the balancer");
    let (code, body) = wa.toggle(Some(TOGGLE_TOKEN)).await.expect("toggle");
    assert_eq!(code, 200, "{body}");
    // The balancer converges after its health checks: A fails its next
    // check (fall 1), B must pass three (rise 3), so A leaves first.
    wait_until("new connections to land on B", SOON, || async {
        for _ in 0..5 {
            if via_lb().await != Some(ub) {
                return false;
            }
        }
        true
    })
    .await
    .expect("B behind the balancer");
    for _ in 0..5 {
        assert_eq!(
            via_lb().await,
            Some(ub),
            "every new connection goes to the active cluster"
        );
    }
    // And the application can write there through the balancer.
    let app = wait_until("the app to log in through the balancer", SOON, || async {
        Connection::connect(
            &lb.frontend,
            &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
        )
        .await
        .ok()
    })
    .await
    .expect("app connects");
    let sid = b
        .master()
        .eval1("return box.space.test.id", &[])
        .await
        .expect("id")
        .as_u64()
        .expect("id") as u32;
    app.insert(
        sid,
        &[rmpv::Value::from(1), "via haproxy".into(), 1.into()][..],
    )
    .await
    .expect("write on B");
}

#[tokio::test]
async fn serial_a_switch_whose_driver_dies_is_finished_by_another_worker() {
    let p = Paired::start()
        .await
        .expect("clusters, etcd, replicators and workers");
    // A second worker of A; the first (`p.wa`) drives the switch and dies.
    let (a1, wb) = (&p.wa, &p.wb);
    let a2 = RunningWorker::start(&p.spec("A", "active"))
        .await
        .expect("worker A2");
    // A1 drives: it takes the request and (like every A worker) the fence phase.
    let driver = {
        let addr = a1.http_addr.clone();
        tokio::spawn(async move {
            tcf_tests::http::request_within(
                "POST",
                &addr,
                "/tcf/toggle",
                Some(TOGGLE_TOKEN),
                Duration::from_secs(90),
            )
            .await
        })
    };
    wait_until("a switch record past its fence", SOON, || async {
        let info = a2.info().await.ok()?;
        let phase = info["switch"]["phase"].as_str()?.to_owned();
        (phase != "fence").then_some(())
    })
    .await
    .expect("fenced");
    a1.process.kill9().expect("kill the driver");
    let _ = driver.await;
    let info = wait_until("the switch to finish without its driver", SOON, || async {
        let info = a2.info().await.ok()?;
        info["switch"]["phase"]
            .as_str()
            .is_some_and(|p| p == "done" || p == "rolled_back")
            .then_some(info)
    })
    .await
    .expect("finished or rolled back");
    match info["switch"]["phase"].as_str() {
        Some("done") => {
            assert_eq!(info["term"], 1, "{info}");
            wait_until("B active", SOON, || async {
                wb.is_active().await.ok() == Some(200)
            })
            .await
            .expect("B active");
        }
        _ => {
            assert_eq!(info["term"], 0, "{info}");
            wait_until("A active again", SOON, || async {
                a2.is_active().await.ok() == Some(200)
            })
            .await
            .expect("A active");
        }
    }
}
