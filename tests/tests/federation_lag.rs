//! After a burst of writes stops, the destination's reported lag returns to
//! zero: `lag_seconds == 0`, `lag_lsn == 0` and `applied_vclock` equal to
//! the source's vclock, for every replicaset.
//!
//! Modelled on the demo where rs1 stayed at `lag 2.096s/1` after a burst
//! (Tarantool 2.6, replication_timeout 1 s, master + replica, one-row
//! transactions written concurrently, a trailing skip-only row). This test
//! did not reproduce that state: it guards the end-of-burst contract. The
//! cause was a destination behind the stream reading the heartbeats queued
//! behind its last batch while that batch was pending (stale lag kept, the
//! skip-only advance dropped) with no gateway heartbeat after it until the
//! source's next one; `federation_idle_lag.rs` covers it.

use std::time::Duration;

use tcf_api::replicator::DestinationStatus;
use tcf_iproto::{ConnectOptions, Vclock};
use tcf_tests::{
    Replicaset,
    federation::{RunningDestination, cluster_options},
    gateway::{GatewayOptions, RunningGateway},
    wait_until,
};

/// `n` one-row transactions on `rs`'s master, written by concurrent fibers
/// (as a pipelining client does: many transactions per WAL write).
async fn burst(rs: &Replicaset, first: u64, n: u64) {
    rs.master()
        .eval(
            "local fiber = require('fiber') \
             local first, n = ... \
             local left = n \
             local done = fiber.channel(1) \
             for w = 0, 49 do \
               fiber.create(function() \
                 for i = first + w, first + n - 1, 50 do \
                   box.space.test:replace{i, 'burst', i} \
                   left = left - 1 \
                 end \
                 if left == 0 then done:put(true) end \
               end) \
             end \
             done:get() \
             box.space._tcf_lag_test:replace{1, first}",
            &[first.into(), n.into()],
        )
        .await
        .expect("burst");
}

async fn source_vclock(rs: &Replicaset) -> Vclock {
    tcf_iproto::vote(&rs.master().uri(), &ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local()
}

#[tokio::test]
async fn serial_lag_returns_to_zero_after_a_burst() {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for rs in ["rs1", "rs2"] {
        a.push(
            cluster_options("a", rs)
                .replication_timeout(Duration::from_secs(1))
                .replicas(1)
                .start_replicaset()
                .await
                .expect("A"),
        );
        b.push(
            cluster_options("b", rs)
                .replicas(1)
                .start_replicaset()
                .await
                .expect("B"),
        );
    }
    let labels = ["rs1", "rs2"];
    let sources: Vec<(&str, Vec<String>)> =
        labels.iter().zip(&a).map(|(l, r)| (*l, r.uris())).collect();
    let targets: Vec<(&str, Vec<String>)> =
        labels.iter().zip(&b).map(|(l, r)| (*l, r.uris())).collect();
    let gateway = RunningGateway::start(
        &sources,
        GatewayOptions {
            extra: vec!["  source_replication_timeout: 1s".into()],
            ..GatewayOptions::default()
        },
    )
    .await
    .expect("gateway");
    let destination =
        RunningDestination::start(&gateway, "B", &targets, &["  initial_position: snapshot"])
            .await
            .expect("destination");
    for l in labels {
        destination
            .wait_state(l, "streaming")
            .await
            .expect("streaming");
    }
    // A space the gateway skips: each burst ends with a skip-only row.
    for rs in &a {
        rs.master()
            .eval(
                "box.schema.space.create('_tcf_lag_test'):create_index('pk')",
                &[],
            )
            .await
            .expect("skipped space");
    }
    for round in 0..3u64 {
        let first = 1 + round * 10_000;
        tokio::join!(burst(&a[0], first, 4_000), burst(&a[1], first, 4_000));
        let want = [source_vclock(&a[0]).await, source_vclock(&a[1]).await];
        let caught_up = wait_until(
            "the destination to report no lag after the burst",
            Duration::from_secs(60),
            || {
                let want = &want;
                let destination = &destination;
                async move {
                    let s: DestinationStatus = serde_json::from_value(
                        destination.status().await.map_err(|e| e.to_string())?,
                    )
                    .map_err(|e| e.to_string())?;
                    let seen: Vec<String> = labels
                        .iter()
                        .map(|l| match s.replicasets.get(*l) {
                            Some(r) => format!(
                                "{l}: applied {} lag {}s/{} source {}",
                                r.applied_vclock, r.lag_seconds, r.lag_lsn, r.source_vclock
                            ),
                            None => format!("{l}: absent"),
                        })
                        .collect();
                    let ok = labels.iter().zip(want).all(|(l, w)| {
                        s.replicasets.get(*l).is_some_and(|r| {
                            r.applied_vclock == *w && r.lag_seconds == 0.0 && r.lag_lsn == 0
                        })
                    });
                    if ok { Ok(true) } else { Err(seen.join("; ")) }
                }
            },
        )
        .await;
        if let Err(e) = caught_up {
            panic!("round {round}: {e}; source rs1 {} rs2 {}", want[0], want[1]);
        }
    }
}
