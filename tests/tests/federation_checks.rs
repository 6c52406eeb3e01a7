//! The destination's checks and start modes, end to end: two-way pairs,
//! initial loads, `current`, missing spaces and schema mismatches, sync spaces.

use std::time::Duration;

use tcf_tests::{
    SpaceSpec,
    federation::{Federation, RunningDestination, cluster_options, dump, wait_equal},
    gateway::{GatewayOptions, RunningGateway},
    http, wait_until,
};

const ALL: [&str; 4] = ["test", "counters", "vtest", "stest"];

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn two_way_pairs_do_not_echo() {
    let f = Federation::start(0, &[]).await.expect("A -> B");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    // The reverse pair B -> A over the same (equal, empty) clusters.
    let gw_b = RunningGateway::start(
        &[("rs1", f.b.uris())],
        GatewayOptions {
            cluster: "B".into(),
            ..GatewayOptions::default()
        },
    )
    .await
    .expect("gateway B");
    let dest_a = RunningDestination::start(
        &gw_b,
        "A",
        &[("rs1", f.a.uris())],
        &["  initial_position: current"],
    )
    .await
    .expect("destination A");
    dest_a
        .wait_state("rs1", "streaming")
        .await
        .expect("reverse streaming");
    f.a.master()
        .eval("for i = 1, 300 do box.space.test:insert{i, 'from A', i} end box.space.counters:insert{1, 5}", &[])
        .await
        .expect("writes on A");
    f.wait_equal().await.expect("A reached B");
    // Everything B's destination wrote carries the mark: B -> A ships none of it.
    let b_vclock = tcf_iproto::vote(&f.b.master().uri(), &tcf_iproto::ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local();
    wait_until(
        "B -> A to process B's whole WAL",
        Duration::from_secs(60),
        || async {
            let s = gw_b.status().await.ok()?;
            let processed: tcf_iproto::Vclock =
                serde_json::from_value(s["replicasets"]["rs1"]["processed_vclock"].clone()).ok()?;
            b_vclock.le(&processed).then_some(())
        },
    )
    .await
    .expect("B's gateway caught up");
    let m = http::get(&gw_b.http_addr, "/metrics")
        .await
        .expect("metrics")
        .body;
    assert_eq!(
        metric(&m, "tcf_gateway_transactions_shipped_total"),
        0.0,
        "nothing echoes back:\n{m}"
    );
    assert!(
        metric(&m, "tcf_gateway_transactions_marked_total") >= 2.0,
        "{m}"
    );
    assert_eq!(dump(f.a.master(), "test").await.expect("dump").len(), 300);
    // A write on B does travel to A.
    f.b.master()
        .eval("box.space.counters:insert{2, 7}", &[])
        .await
        .expect("write on B");
    wait_equal(f.a.master(), f.b.master(), &["counters"])
        .await
        .expect("B -> A carries B's own writes");
}

#[tokio::test]
async fn initial_load_of_a_populated_source_with_writes_continuing() {
    let a = cluster_options("a", "rs1")
        .start_replicaset()
        .await
        .expect("A");
    a.master()
        .eval("for i = 1, 20000 do box.space.test:insert{i, 'old', i} end for i = 1, 500 do box.space.vtest:insert{i} end", &[])
        .await
        .expect("populate A");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    let gw = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let writer = {
        let uri = a.master().uri();
        tokio::spawn(async move {
            let c = tcf_iproto::Connection::connect(
                &uri,
                &tcf_iproto::ConnectOptions::new()
                    .credentials(tcf_tests::ADMIN_USER, tcf_tests::ADMIN_PASSWORD),
            )
            .await?;
            for i in 1..=2000u64 {
                c.eval("local i = ... box.space.test:replace{i, 'new', -i} box.space.counters:upsert({1, 1}, {{'+', 2, 1}})", &[rmpv::Value::from(i)][..])
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    let d = RunningDestination::start(&gw, "B", &[("rs1", b.uris())], &[])
        .await
        .expect("destination");
    writer.await.expect("task").expect("writes during the load");
    wait_equal(a.master(), b.master(), &ALL)
        .await
        .expect("B equals A");
    let counters = dump(b.master(), "counters").await.expect("counters");
    assert_eq!(
        counters,
        vec![rmpv::Value::Array(vec![1.into(), 2000.into()])],
        "each increment exactly once"
    );
    let s = d
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming after the load");
    assert!(s["rows_applied"].as_u64().unwrap_or(0) >= 20500, "{s}");
}

#[tokio::test]
async fn a_non_empty_target_is_refused_unless_truncation_is_allowed() {
    let a = cluster_options("a", "rs1")
        .start_replicaset()
        .await
        .expect("A");
    a.master()
        .eval("box.space.test:insert{1, 'a', 1}", &[])
        .await
        .expect("A data");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    b.master()
        .eval("box.space.test:insert{99, 'stale', 1}", &[])
        .await
        .expect("B data");
    let gw = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let d = RunningDestination::start(&gw, "B", &[("rs1", b.uris())], &[])
        .await
        .expect("destination");
    let s = d.wait_state("rs1", "failed").await.expect("refused");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("space test holds 1 tuples"),
        "{s}"
    );
    assert_eq!(
        dump(b.master(), "test").await.expect("dump").len(),
        1,
        "nothing touched"
    );
    d.process.stop().await.expect("stop");
    let d = RunningDestination::start(
        &gw,
        "B",
        &[("rs1", b.uris())],
        &["  truncate_on_load: true"],
    )
    .await
    .expect("destination");
    d.wait_state("rs1", "streaming").await.expect("loaded");
    wait_equal(a.master(), b.master(), &ALL)
        .await
        .expect("B equals A");
}

#[tokio::test]
async fn current_position_skips_what_the_source_already_had() {
    let a = cluster_options("a", "rs1")
        .start_replicaset()
        .await
        .expect("A");
    a.master()
        .eval(
            "for i = 1, 10 do box.space.test:insert{i, 'old', i} end",
            &[],
        )
        .await
        .expect("old rows");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    let gw = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let d = RunningDestination::start(
        &gw,
        "B",
        &[("rs1", b.uris())],
        &["  initial_position: current"],
    )
    .await
    .expect("destination");
    d.wait_state("rs1", "streaming").await.expect("streaming");
    // The resolved position is persisted at once, before anything is applied.
    let stored = b
        .master()
        .eval1("return box.space._tcf_progress_memtx:count()", &[])
        .await
        .expect("count");
    assert_eq!(stored.as_u64(), Some(1));
    a.master()
        .eval("box.space.test:insert{11, 'new', 11}", &[])
        .await
        .expect("new row");
    wait_until("the new row on B", Duration::from_secs(60), || async {
        dump(b.master(), "test")
            .await
            .ok()
            .filter(|rows| rows.len() == 1)
    })
    .await
    .expect("only the new row");
}

#[tokio::test]
async fn a_space_missing_on_the_target_stops_the_replicaset_with_nothing_applied() {
    let a = cluster_options("a", "rs1")
        .space(SpaceSpec::new("only_on_a"))
        .start_replicaset()
        .await
        .expect("A");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    let gw = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let d = RunningDestination::start(&gw, "B", &[("rs1", b.uris())], &[])
        .await
        .expect("destination");
    let s = d.wait_state("rs1", "failed").await.expect("stopped");
    let err = s["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("only_on_a") && err.contains("missing"), "{s}");
    let metrics = http::get(&d.http_addr, "/metrics")
        .await
        .expect("metrics")
        .body;
    assert!(metrics.contains("tcf_destination_state"), "{metrics}");
    // A space created on A after the handshake (DDL is not replicated): the
    // batch that writes it fails whole, nothing of it lands on B.
    let a2 = cluster_options("a2", "rs1")
        .start_replicaset()
        .await
        .expect("A2");
    let b2 = cluster_options("b2", "rs1")
        .start_replicaset()
        .await
        .expect("B2");
    let gw2 = RunningGateway::start(&[("rs1", a2.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let d2 = RunningDestination::start(&gw2, "B", &[("rs1", b2.uris())], &[])
        .await
        .expect("destination");
    d2.wait_state("rs1", "streaming").await.expect("streaming");
    a2.master()
        .eval(
            "box.schema.space.create('late'):create_index('pk') \
               box.begin() box.space.test:insert{1, 'x', 1} box.space.late:insert{1} box.commit()",
            &[],
        )
        .await
        .expect("writes");
    let s = d2.wait_state("rs1", "failed").await.expect("stopped");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("late"),
        "{s}"
    );
    assert!(
        dump(b2.master(), "test").await.expect("dump").is_empty(),
        "nothing of the transaction was applied"
    );
}

#[tokio::test]
async fn a_primary_key_mismatch_is_refused_at_handshake() {
    let a = cluster_options("a", "rs1")
        .space(SpaceSpec::new("keyed").primary_key(&[(1, "unsigned")]))
        .start_replicaset()
        .await
        .expect("A");
    let b = cluster_options("b", "rs1")
        .space(SpaceSpec::new("keyed").primary_key(&[(1, "string")]))
        .start_replicaset()
        .await
        .expect("B");
    let gw = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let d = RunningDestination::start(&gw, "B", &[("rs1", b.uris())], &[])
        .await
        .expect("destination");
    let s = d.wait_state("rs1", "failed").await.expect("refused");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("primary key"),
        "{s}"
    );
}

#[tokio::test]
async fn sync_spaces_end_to_end_with_a_source_rollback() {
    let a = cluster_options("a", "rs1")
        .synchro_quorum(2)
        .synchro_timeout(Duration::from_secs(1))
        .replicas(1)
        .start_replicaset()
        .await
        .expect("A");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    let gw = RunningGateway::start(
        &[("rs1", vec![a.master().uri()])],
        GatewayOptions::default(),
    )
    .await
    .expect("gateway");
    let d = RunningDestination::start(&gw, "B", &[("rs1", b.uris())], &[])
        .await
        .expect("destination");
    d.wait_state("rs1", "streaming").await.expect("streaming");
    a.master()
        .eval("box.space.stest:insert{1, 'confirmed'}", &[])
        .await
        .expect("confirmed by the replica");
    a.replicas()[0].stop().await.expect("stop the only replica");
    assert!(
        a.master()
            .eval("box.space.stest:insert{2, 'rolled back'}", &[])
            .await
            .is_err(),
        "no quorum"
    );
    a.master()
        .eval("box.space.test:insert{3, 'after', 3}", &[])
        .await
        .expect("async write");
    wait_equal(a.master(), b.master(), &ALL)
        .await
        .expect("B equals A");
    assert_eq!(
        dump(b.master(), "stest").await.expect("dump").len(),
        1,
        "the rolled back row never reached B"
    );
}

#[tokio::test]
async fn the_destination_fails_over_between_gateways() {
    let a = cluster_options("a", "rs1")
        .start_replicaset()
        .await
        .expect("A");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    let gw1 = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway 1");
    let opts = GatewayOptions {
        certs: gw1.certs.clone(),
        ..GatewayOptions::default()
    };
    let gw2 = RunningGateway::start(&[("rs1", a.uris())], opts)
        .await
        .expect("gateway 2");
    let d = RunningDestination::start_pool(&[&gw1, &gw2], "B", &[("rs1", b.uris())], &[])
        .await
        .expect("destination");
    d.wait_state("rs1", "streaming").await.expect("streaming");
    a.master()
        .eval(
            "for i = 1, 100 do box.space.counters:upsert({1, 1}, {{'+', 2, 1}}) end",
            &[],
        )
        .await
        .expect("writes");
    wait_equal(a.master(), b.master(), &ALL)
        .await
        .expect("through gateway 1");
    let first = d.status().await.expect("status")["replicasets"]["rs1"]["gateway"].clone();
    assert_eq!(first, gw1.grpc_addr.as_str());
    gw1.process.kill9().expect("kill gateway 1");
    a.master()
        .eval(
            "for i = 1, 100 do box.space.counters:upsert({1, 1}, {{'+', 2, 1}}) end",
            &[],
        )
        .await
        .expect("writes");
    wait_equal(a.master(), b.master(), &ALL)
        .await
        .expect("through gateway 2");
    assert_eq!(
        dump(b.master(), "counters").await.expect("dump"),
        vec![rmpv::Value::Array(vec![1.into(), 200.into()])]
    );
    let now = d.status().await.expect("status")["replicasets"]["rs1"]["gateway"].clone();
    assert_eq!(now, gw2.grpc_addr.as_str());
}

#[tokio::test]
async fn the_destination_control_api_needs_a_token() {
    let f = Federation::start(0, &[]).await.expect("federation");
    let a = &f.destination.http_addr;
    assert_eq!(
        http::request("GET", a, "/api/v1/status", None, None)
            .await
            .expect("http")
            .status,
        401
    );
    assert_eq!(
        http::request(
            "POST",
            a,
            "/api/v1/stop",
            Some(tcf_tests::gateway::INFO_TOKEN),
            None
        )
        .await
        .expect("http")
        .status,
        403
    );
    let r = http::request(
        "POST",
        a,
        "/api/v1/stop",
        Some(tcf_tests::gateway::ADMIN_TOKEN),
        Some(r#"{"term": 3}"#),
    )
    .await
    .expect("http");
    assert_eq!(r.status, 200, "{}", r.body);
    f.destination
        .wait_state("rs1", "stopped")
        .await
        .expect("stopped");
    let stale = http::request(
        "POST",
        a,
        "/api/v1/start",
        Some(tcf_tests::gateway::ADMIN_TOKEN),
        Some(r#"{"term": 2}"#),
    )
    .await
    .expect("http");
    assert_eq!(stale.status, 409);
    let r = http::request(
        "POST",
        a,
        "/api/v1/start",
        Some(tcf_tests::gateway::ADMIN_TOKEN),
        Some(r#"{"term": 3}"#),
    )
    .await
    .expect("http");
    assert_eq!(r.status, 200, "{}", r.body);
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming again");
    f.a.master()
        .eval("box.space.test:insert{1, 'after restart', 1}", &[])
        .await
        .expect("write");
    f.wait_equal().await.expect("equal");
}
