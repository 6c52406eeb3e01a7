//! A target replicaset managed by Raft (`election_mode = 'candidate'` on
//! every instance, all with `read_only = false`): the destination writes
//! only to the elected leader, and follows the next one when it dies,
//! applying every source transaction exactly once.

use std::time::Duration;

use tcf_tests::{
    Signal,
    federation::{
        REPLICATED_SPACES, RunningDestination, Tally, Writer, cluster_options, insert_counters,
        tally, wait_equal, wait_growth,
    },
    gateway::{GatewayOptions, RunningGateway},
    wait_until,
};

const PACE: Duration = Duration::from_millis(5);

#[tokio::test]
async fn serial_the_destination_follows_the_target_raft_leader() {
    let a = cluster_options("a", "rs1")
        .start_replicaset()
        .await
        .expect("A");
    let b = cluster_options("b", "rs1")
        .replicas(2)
        .start_replicaset()
        .await
        .expect("B");
    if !b.has_election().await.expect("probe B") {
        return tcf_tests::skip(format!(
            "the target's Tarantool ({}) has no Raft: box.info.election is absent",
            tcf_tests::binary::version(b.master().binary()).unwrap_or_default()
        ));
    }
    let first = b.enable_election().await.expect("B elects a leader");
    let leader = b.instance(first);
    let gateway = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let destination = RunningDestination::start(&gateway, "B", &[("rs1", b.uris())], &[])
        .await
        .expect("destination");
    let on = |uri: String| {
        let destination = &destination;
        async move {
            wait_until(
                &format!("the destination to stream to {uri}"),
                Duration::from_secs(120),
                || async {
                    let s = destination.status().await.ok()?;
                    let r = &s["replicasets"]["rs1"];
                    (r["state"] == "streaming" && r["target_instance"] == uri.as_str())
                        .then_some(())
                },
            )
            .await
        }
    };
    on(leader.uri()).await.expect("it writes to the leader");
    insert_counters(a.master()).await.expect("counters");
    let writer = Writer::start(a.master(), 1, 2000, PACE)
        .await
        .expect("writer");
    wait_growth(leader, "test", 300)
        .await
        .expect("the leader progresses");

    tracing::info!(
        written = writer.done(),
        leader = first,
        "SIGKILL B's Raft leader"
    );
    leader.kill(Signal::SIGKILL).expect("kill the leader");
    let next = b
        .wait_leader(Some(first))
        .await
        .expect("B elects another leader");
    let new_leader = b.instance(next);
    on(new_leader.uri())
        .await
        .expect("the destination follows the new leader");
    wait_growth(new_leader, "test", 100)
        .await
        .expect("the new leader progresses");
    let written = writer.stop().await.expect("writer");
    wait_equal(a.master(), new_leader, &REPLICATED_SPACES)
        .await
        .expect("B's new leader equals A, row by row");
    let once = Tally {
        increments: written,
        rows: written,
    };
    assert_eq!(tally(a.master()).await.expect("tally of A"), once);
    assert_eq!(
        tally(new_leader).await.expect("tally of B"),
        once,
        "each transaction applied exactly once on B"
    );
    for (i, t) in b.instances().enumerate() {
        if i != first && i != next {
            let ro = t.eval1("return box.info.ro", &[]).await.expect("ro");
            assert_eq!(ro, rmpv::Value::Boolean(true), "instance {i} is a follower");
        }
    }
}
