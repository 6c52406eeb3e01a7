//! A worker driving several replicator pairs per direction: clusters A and B
//! of two replicasets each, `rs1` served by one gateway/destination pair and
//! `rs2` by another in each direction; the workers list both pairs. A
//! switchover A -> B under writes on both replicasets, then B -> A under
//! writes: every acknowledged write is on both clusters once, and the pairs
//! run or stop as the state requires. Real clusters, etcd, replicators and
//! workers.

use std::{collections::BTreeSet, time::Duration};

use tcf_api::worker::{Info, PairInfo, Reported};
use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    Etcd, PortLease, Replicaset,
    federation::{RunningDestination, cluster_options, dump, wait_equal},
    gateway::{GatewayOptions, RunningGateway},
    wait_until,
    worker::{APP_PASSWORD, APP_USER, RunningWorker, TOGGLE_TOKEN, WorkerSpec},
};

const SOON: Duration = Duration::from_secs(90);

/// One direction's two pairs: the gateways read `rs1` and `rs2` of the
/// source, the destinations write them on the target.
struct Direction {
    gateways: [RunningGateway; 2],
    destinations: [RunningDestination; 2],
}

impl Direction {
    async fn start(
        source: &str,
        from: [&Replicaset; 2],
        target: &str,
        to: [&Replicaset; 2],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut gateways = Vec::new();
        let mut destinations = Vec::new();
        for (i, rs) in ["rs1", "rs2"].into_iter().enumerate() {
            let (Some(src), Some(dst)) = (from.get(i), to.get(i)) else {
                anyhow::bail!("two replicasets per cluster");
            };
            let opts = GatewayOptions {
                cluster: source.into(),
                ..GatewayOptions::default()
            };
            let gw = RunningGateway::start(&[(rs, src.uris())], opts).await?;
            let d = RunningDestination::start(&gw, target, &[(rs, dst.uris())], extra).await?;
            d.wait_state(rs, "streaming").await?;
            gateways.push(gw);
            destinations.push(d);
        }
        let gateways: [RunningGateway; 2] = gateways
            .try_into()
            .map_err(|_| anyhow::anyhow!("two gateways"))?;
        let destinations: [RunningDestination; 2] = destinations
            .try_into()
            .map_err(|_| anyhow::anyhow!("two destinations"))?;
        Ok(Self {
            gateways,
            destinations,
        })
    }

    /// The YAML list of this direction's pairs.
    fn yaml(&self) -> String {
        let pairs: Vec<String> = self
            .gateways
            .iter()
            .zip(&self.destinations)
            .map(|(g, d)| {
                format!(
                    "{{gateway: \"http://{}\", destination: \"http://{}\"}}",
                    g.http_addr, d.http_addr
                )
            })
            .collect();
        format!("[{}]", pairs.join(", "))
    }
}

fn spec(
    cluster: &str,
    status: &str,
    sets: [&Replicaset; 2],
    etcd: &Etcd,
    outgoing: &Direction,
    incoming: &Direction,
) -> WorkerSpec {
    let mut s = WorkerSpec::lone(
        sets.iter().flat_map(|r| r.uris()).collect(),
        etcd.endpoint(),
    );
    s.cluster = cluster.into();
    s.peer = if cluster == "A" { "B" } else { "A" }.into();
    s.initial_status = status.into();
    s.extra.push(format!(
        "  replication:\n    mode: one_way\n    token: {}\n    outgoing: {}\n    incoming: {}",
        tcf_tests::gateway::ADMIN_TOKEN,
        outgoing.yaml(),
        incoming.yaml()
    ));
    s
}

/// Whether every replicaset of `p` streams (`true`) or its gateway and
/// destination are both stopped (`false`).
fn pair_is(p: &PairInfo, running: bool) -> bool {
    let (Reported::Status(g), Reported::Status(d)) = (&p.gateway, &p.destination) else {
        return false;
    };
    if running {
        g.running && d.running && d.all_streaming()
    } else {
        !g.running && !d.running
    }
}

async fn info(w: &RunningWorker) -> Option<Info> {
    serde_json::from_value(w.info().await.ok()?).ok()
}

/// Waits until `w` lists two pairs per direction, the outgoing ones
/// `outgoing` (running or stopped), the incoming ones `incoming`.
async fn wait_pairs(w: &RunningWorker, outgoing: bool, incoming: bool) -> Info {
    let what = format!("two outgoing pairs running={outgoing}, two incoming running={incoming}");
    let found = wait_until(&what, SOON, || async {
        let i = info(w).await?;
        let r = i.replicators.as_ref()?;
        let ok = r.outgoing.len() == 2
            && r.incoming.len() == 2
            && r.outgoing.iter().all(|p| pair_is(p, outgoing))
            && r.incoming.iter().all(|p| pair_is(p, incoming));
        ok.then_some(i)
    })
    .await;
    match found {
        Ok(i) => i,
        Err(e) => panic!("{e}: last status {:?}", w.info().await),
    }
}

/// Inserts ids from `first` on `t` as the application until a write fails
/// (the fence); the acknowledged ids.
async fn writer(t: &tcf_tests::Tarantool, first: u64) -> tokio::task::JoinHandle<Vec<u64>> {
    let uri = t.uri();
    let sid = t
        .eval1("return box.space.test.id", &[])
        .await
        .expect("space id")
        .as_u64()
        .expect("space id") as u32;
    let opts = ConnectOptions::new().credentials(APP_USER, APP_PASSWORD);
    let c = Connection::connect(&uri, &opts)
        .await
        .expect("app connects");
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in first..first + 200_000 {
            match c
                .insert(sid, &[rmpv::Value::from(i), "w".into(), 1.into()][..])
                .await
            {
                Ok(_) => acked.push(i),
                Err(_) => break,
            }
        }
        acked
    })
}

async fn ids(t: &tcf_tests::Tarantool) -> Vec<u64> {
    dump(t, "test")
        .await
        .expect("dump")
        .iter()
        .filter_map(|t| {
            t.as_array()
                .and_then(|a| a.first())
                .and_then(rmpv::Value::as_u64)
        })
        .collect()
}

/// Every id of `acked` is on `t` exactly once (the dump lists each key once;
/// a duplicate would be a second row) and `t` holds nothing else from the
/// range `range`.
async fn exactly_once(t: &tcf_tests::Tarantool, acked: &[u64], range: std::ops::Range<u64>) {
    let all = ids(t).await;
    let set: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(set.len(), all.len(), "a key twice on {}", t.uri());
    let missing: Vec<&u64> = acked.iter().filter(|i| !set.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on {}: {:?}",
        t.uri(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    let in_range = set.iter().filter(|i| range.contains(i)).count();
    assert!(
        in_range >= acked.len() && in_range <= acked.len() + 1,
        "{} rows of {range:?} on {} for {} acknowledged (at most one unacknowledged in flight)",
        in_range,
        t.uri(),
        acked.len()
    );
}

/// Starts writers on both replicasets of the active cluster, waits until
/// both reach the passive one, toggles through `via`; the acknowledged ids.
async fn switch_under_writes(
    active: [&Replicaset; 2],
    passive: [&Replicaset; 2],
    via: &RunningWorker,
    first: [u64; 2],
) -> [Vec<u64>; 2] {
    let w1 = writer(active[0].master(), first[0]).await;
    let w2 = writer(active[1].master(), first[1]).await;
    for (rs, f) in passive.iter().zip(first) {
        wait_until("writes reach the passive cluster", SOON, || async {
            let n = ids(rs.master()).await.iter().filter(|i| **i >= f).count();
            (n > 100).then_some(())
        })
        .await
        .expect("writes flowing on both replicasets");
    }
    let (code, body) = via.toggle(Some(TOGGLE_TOKEN)).await.expect("toggle");
    assert_eq!(code, 200, "{body}");
    println!("switchover under writes: {:?} ms", body.get("duration_ms"));
    let a1 = w1.await.expect("writer rs1");
    let a2 = w2.await.expect("writer rs2");
    assert!(!a1.is_empty() && !a2.is_empty(), "both writers wrote");
    [a1, a2]
}

#[tokio::test]
async fn serial_two_pairs_per_direction_switch_over_and_back_under_writes() {
    let start = |c: &'static str, rs: &'static str| cluster_options(c, rs).start_replicaset();
    let (a1, a2) = (start("a", "rs1").await, start("a", "rs2").await);
    let (b1, b2) = (start("b", "rs1").await, start("b", "rs2").await);
    let (a1, a2, b1, b2) = (
        a1.expect("a rs1"),
        a2.expect("a rs2"),
        b1.expect("b rs1"),
        b2.expect("b rs2"),
    );
    let etcd = Etcd::start().await.expect("etcd");
    let a_to_b = Direction::start("A", [&a1, &a2], "B", [&b1, &b2], &[])
        .await
        .expect("A -> B pairs");
    let b_to_a = Direction::start(
        "B",
        [&b1, &b2],
        "A",
        [&a1, &a2],
        &["  initial_position: current"],
    )
    .await
    .expect("B -> A pairs");
    let (pa, pb) = (
        PortLease::allocate().expect("port"),
        PortLease::allocate().expect("port"),
    );
    let mut spec_a = spec("A", "active", [&a1, &a2], &etcd, &a_to_b, &b_to_a);
    let mut spec_b = spec("B", "passive", [&b1, &b2], &etcd, &b_to_a, &a_to_b);
    // Each worker asks the other for its cluster's health (prechecks).
    spec_a.peer_workers = vec![format!("http://127.0.0.1:{}", pb.port())];
    spec_b.peer_workers = vec![format!("http://127.0.0.1:{}", pa.port())];
    let wa = RunningWorker::start_on(&spec_a, pa)
        .await
        .expect("worker A");
    let wb = RunningWorker::start_on(&spec_b, pb)
        .await
        .expect("worker B");
    wa.wait_is_active(200, SOON).await.expect("A active");
    wb.wait_is_active(418, SOON).await.expect("B passive");
    // one_way, A active: both A -> B pairs stream, both B -> A pairs stop.
    wait_pairs(&wa, true, false).await;
    wait_pairs(&wb, false, true).await;

    let [acked1, acked2] = switch_under_writes([&a1, &a2], [&b1, &b2], &wa, [1, 1]).await;
    wa.wait_is_active(418, SOON).await.expect("A passive");
    wb.wait_is_active(200, SOON).await.expect("B active");
    // B active: both B -> A pairs stream, both A -> B pairs stopped.
    wait_pairs(&wb, true, false).await;
    let i = wait_pairs(&wa, false, true).await;
    let b_status = i.clusters.as_ref().and_then(|c| c.get("B")).copied();
    assert_eq!(b_status, Some(tcf_api::worker::Status::Active), "{i:?}");
    exactly_once(b1.master(), &acked1, 1..1_000_000).await;
    exactly_once(b2.master(), &acked2, 1..1_000_000).await;

    let first = 1_000_000;
    let [back1, back2] = switch_under_writes([&b1, &b2], [&a1, &a2], &wb, [first, first]).await;
    wa.wait_is_active(200, SOON).await.expect("A active again");
    wb.wait_is_active(418, SOON).await.expect("B passive again");
    wait_pairs(&wa, true, false).await;
    wait_pairs(&wb, false, true).await;
    for (a, b) in [(&a1, &b1), (&a2, &b2)] {
        wait_equal(a.master(), b.master(), &["test"])
            .await
            .expect("both clusters equal");
    }
    for (t, acked, back) in [
        (a1.master(), &acked1, &back1),
        (b1.master(), &acked1, &back1),
        (a2.master(), &acked2, &back2),
        (b2.master(), &acked2, &back2),
    ] {
        exactly_once(t, acked, 1..first).await;
        exactly_once(t, back, first..2 * first).await;
    }

    // A walk through the worker runs on both A -> B destinations and is
    // followed as one: the report merges both replicasets, nothing differs.
    let body = serde_json::to_string(&tcf_tests::verify::request(
        tcf_api::verify::WalkMode::Verify,
    ))
    .expect("request");
    let walk = wait_until("a walk on both pairs", SOON, || async {
        let r = tcf_tests::http::request(
            "POST",
            &wa.http_addr,
            "/tcf/api/v1/verify",
            Some(TOGGLE_TOKEN),
            Some(&body),
        )
        .await
        .ok()?;
        let started: tcf_api::verify::WalkStarted = serde_json::from_str(&r.body).ok()?;
        let everywhere = r.status == 200
            && started.replicasets.len() == 2
            && started.replicasets.values().all(Option::is_none);
        everywhere.then_some(started.walk)
    })
    .await
    .expect("walk started");
    assert_eq!(walk.split('+').count(), 2, "{walk}");
    let report = wait_until("the walk done on both pairs", SOON, || async {
        let r = tcf_tests::http::request(
            "GET",
            &wa.http_addr,
            "/tcf/api/v1/verify",
            Some(TOGGLE_TOKEN),
            None,
        )
        .await
        .ok()?;
        let report: tcf_api::verify::Report = serde_json::from_str(&r.body).ok()?;
        report.done(&walk).then_some(report)
    })
    .await
    .expect("walk done");
    assert_eq!(report.replicasets.len(), 2, "{report:?}");
    assert_eq!(tcf_tests::verify::mismatches(&report), 0, "{report:?}");
}
