//! A source that goes silent never freezes the lag the destination reports.
//!
//! The source's relay sends a heartbeat only after its `replication_timeout`
//! without rows, and the destination learns the source's position, the lag
//! and skip-only advances from heartbeats. Here the source's
//! `replication_timeout` is 300 s, so after a burst ending with a row the
//! gateway skips, the source says nothing for 300 s: the gateway must keep
//! the destination informed with heartbeats of its own (every second of
//! silence on the stream), carrying the processed watermark once every
//! transaction before it is shipped. Without them the destination stays one
//! row behind with a stale `source_vclock` until the relay's heartbeat.
//!
//! The demo's variant (Tarantool 2.6, `replication_timeout` 1 s): the
//! destination, behind after a burst, read the heartbeats queued behind the
//! last batch while that batch was still pending, kept their lag (computed
//! when the gateway sent them, seconds earlier) and their skip-only advance
//! was dropped; nothing corrected it until the next source heartbeat.

use std::time::Duration;

use tcf_api::replicator::DestinationStatus;
use tcf_iproto::{ConnectOptions, Vclock};
use tcf_tests::{
    federation::{RunningDestination, cluster_options},
    gateway::{GatewayOptions, RunningGateway},
    wait_until,
};

/// Far longer than the test waits: the source sends no heartbeat meanwhile.
const SILENT: Duration = Duration::from_secs(300);

#[tokio::test]
async fn serial_a_silent_source_does_not_freeze_the_lag() {
    let a = cluster_options("a", "rs1")
        .replication_timeout(SILENT)
        .start_replicaset()
        .await
        .expect("A");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    let gateway = RunningGateway::start(
        &[("rs1", a.uris())],
        GatewayOptions {
            extra: vec![format!(
                "  source_replication_timeout: {}s",
                SILENT.as_secs()
            )],
            ..GatewayOptions::default()
        },
    )
    .await
    .expect("gateway");
    let destination = RunningDestination::start(
        &gateway,
        "B",
        &[("rs1", b.uris())],
        &["  initial_position: snapshot"],
    )
    .await
    .expect("destination");
    destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    // tcf's own spaces are never shipped: a row there is skip-only.
    a.master()
        .eval(
            "box.schema.space.create('_tcf_idle_test'):create_index('pk')",
            &[],
        )
        .await
        .expect("skipped space");
    for round in 0..2u64 {
        let first = 1 + round * 10_000;
        a.master()
            .eval(
                "local first = ... \
                 for i = first, first + 999 do box.space.test:replace{i, 'burst', i} end \
                 box.space._tcf_idle_test:replace{1, first}",
                &[first.into()],
            )
            .await
            .expect("burst");
        let want = tcf_iproto::vote(&a.master().uri(), &ConnectOptions::new())
            .await
            .expect("vote")
            .vclock
            .without_local();
        let caught_up = wait_until(
            "the destination to report the silent source's position and no lag",
            Duration::from_secs(60),
            || {
                let (want, destination) = (&want, &destination);
                async move { caught_up(destination, want).await }
            },
        )
        .await;
        if let Err(e) = caught_up {
            panic!("round {round}: {e}; source {want}");
        }
    }
}

/// Ready when the destination reports `want` applied and as the source's
/// position, with no lag; else the state seen.
async fn caught_up(destination: &RunningDestination, want: &Vclock) -> Result<bool, String> {
    let s: DestinationStatus =
        serde_json::from_value(destination.status().await.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let r = s.replicasets.get("rs1").ok_or("rs1 absent")?;
    let seen = format!(
        "applied {} source {} lag {}s/{}",
        r.applied_vclock, r.source_vclock, r.lag_seconds, r.lag_lsn
    );
    if r.applied_vclock == *want
        && r.source_vclock == *want
        && r.lag_seconds == 0.0
        && r.lag_lsn == 0
    {
        Ok(true)
    } else {
        Err(seen)
    }
}
