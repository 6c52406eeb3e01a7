//! Master switches mid-stream, end to end (real Tarantool, real `tcf-gateway`
//! and `tcf-destination`, mutual TLS): the target's master dies and a
//! replica is promoted; the source's master dies while the gateway reads it
//! and a replica is promoted. B ends equal to A's writable instance, with
//! nothing applied twice and nothing skipped.
//!
//! Each source transaction of a [`Writer`] (memtx, or every 4th vinyl)
//! inserts a new row (a second apply would fail as a duplicate) and adds 1
//! to a counter, so the sum of the counters ([`Tally`]) must equal the
//! transactions committed.

use std::time::Duration;

use tcf_tests::{
    Signal,
    federation::{
        Federation, REPLICATED_SPACES, Tally, Writer, insert_counters, tally, wait_equal,
        wait_growth, write_burst,
    },
    gateway::GatewayOptions,
    wait_until,
};

/// One source transaction every `PACE`: a steady stream, bounded in size.
const PACE: Duration = Duration::from_millis(3);

/// Transactions written in one burst while the destination is paused.
const BURST: u64 = 3000;

/// The [`Tally`] of `written` transactions applied exactly once.
fn once(written: u64) -> Tally {
    Tally {
        increments: written,
        rows: written,
    }
}

#[tokio::test]
async fn a_target_master_switch_mid_stream() {
    let f = Federation::start(1, &[]).await.expect("federation");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    insert_counters(f.a.master()).await.expect("counters");
    let writer = Writer::start(f.a.master(), 1, 2000, PACE)
        .await
        .expect("writer");
    wait_growth(f.b.master(), "test", 300)
        .await
        .expect("B progresses");
    let new_master = f.b.instance(1);
    // Mid-stream: B's master is being written to when it dies. What it
    // committed but had not sent to the replica is lost on B; the
    // destination re-reads the position from the new master and applies
    // again from there.
    tracing::info!(written = writer.done(), "SIGKILL B's master");
    f.b.master().kill(Signal::SIGKILL).expect("kill B's master");
    let ro = new_master.make_master().await.expect("promote");
    assert_eq!(ro, rmpv::Value::Boolean(false), "the replica is writable");
    wait_until(
        "the destination to write to B's new master",
        Duration::from_secs(120),
        || async {
            let s = f.destination.status().await.ok()?;
            let r = &s["replicasets"]["rs1"];
            (r["state"] == "streaming" && r["target_instance"] == new_master.uri().as_str())
                .then_some(())
        },
    )
    .await
    .expect("the destination found the new master");
    wait_growth(new_master, "test", 100)
        .await
        .expect("the new master progresses");
    let written = writer.stop().await.expect("writer");
    wait_equal(f.a.master(), new_master, &REPLICATED_SPACES)
        .await
        .expect("B's new master equals A, row by row");
    assert_eq!(
        tally(f.a.master()).await.expect("tally of A"),
        once(written)
    );
    assert_eq!(
        tally(new_master).await.expect("tally of B"),
        once(written),
        "each transaction applied exactly once on B"
    );
}

#[tokio::test]
async fn a_source_master_switch_while_the_gateway_reads_the_old_master() {
    // A small gateway queue: while the destination is paused, the gateway
    // stops reading the source after a few transactions (backpressure).
    let gateway = GatewayOptions {
        extra: vec!["  queue_max_items: 16".into()],
        ..GatewayOptions::default()
    };
    let f = Federation::start_with(1, gateway, &[])
        .await
        .expect("federation");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    insert_counters(f.a.master()).await.expect("counters");
    let (old_master, replica) = (f.a.master(), f.a.instance(1));
    // The gateway prefers a read-only replica: stop A's replica so that it
    // chooses the master, then start the replica again (it catches up with
    // the master; the gateway has no reason to leave the master).
    replica.stop().await.expect("stop A's replica");
    f.gateway
        .wait_instance("rs1", &old_master.uri())
        .await
        .expect("the gateway reads A's master");
    replica.restart().await.expect("restart A's replica");

    let first = Writer::start(old_master, 1, 1000, PACE)
        .await
        .expect("writer");
    wait_growth(f.b.master(), "test", 300)
        .await
        .expect("B progresses");
    // Pause the destination mid-stream, then write a burst: the gateway
    // cannot ship it, so it stays behind the old master when that dies.
    f.destination
        .process
        .kill(Signal::SIGSTOP)
        .expect("pause the destination");
    let mut written = first.stop().await.expect("writer");
    write_burst(old_master, written + 1, BURST)
        .await
        .expect("burst");
    written += BURST;
    // Everything the old master committed reaches the replica before the
    // kill. Otherwise the gateway (reading the master) could have shipped
    // rows the new master never had: the position would be ahead of every
    // instance and the stream would end `diverged` after `diverged_timeout`.
    f.a.wait_replicas_caught_up()
        .await
        .expect("A's replica caught up");
    let status = f.gateway.status().await.expect("gateway status");
    let rs = &status["replicasets"]["rs1"];
    assert_eq!(
        rs["instance"],
        old_master.uri().as_str(),
        "the gateway still reads the old master: {status}"
    );
    let master_vclock = old_master.vclock().await.expect("vclock");
    tracing::info!(written, %master_vclock, gateway = %rs, "SIGKILL A's master");
    old_master.kill(Signal::SIGKILL).expect("kill A's master");
    let ro = replica.make_master().await.expect("promote");
    assert_eq!(ro, rmpv::Value::Boolean(false), "the replica is writable");
    f.destination
        .process
        .kill(Signal::SIGCONT)
        .expect("resume the destination");

    let second = Writer::start(replica, written + 1, 1000, PACE)
        .await
        .expect("writer on the new master");
    f.gateway
        .wait_instance("rs1", &replica.uri())
        .await
        .expect("the gateway reads the new master");
    wait_growth(f.b.master(), "test", 300)
        .await
        .expect("B progresses after the switch");
    written += second.stop().await.expect("writer");
    wait_equal(replica, f.b.master(), &REPLICATED_SPACES)
        .await
        .expect("B equals A's new master, row by row");
    assert_eq!(tally(replica).await.expect("tally of A"), once(written));
    assert_eq!(
        tally(f.b.master()).await.expect("tally of B"),
        once(written),
        "each transaction applied exactly once on B"
    );
    let (state, error) = f.destination.rs_state("rs1").await.expect("status");
    assert_eq!(state, "streaming", "{error:?}");
}
