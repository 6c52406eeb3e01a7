//! Crashes mid-stream, end to end (real Tarantool, real `tcf-gateway` and
//! `tcf-destination`, mutual TLS): whatever dies and whenever, B ends equal
//! to A, with nothing applied twice and nothing skipped.
//!
//! Every test writes with a [`Writer`]: each source transaction (memtx, or
//! every 4th vinyl) inserts a new row (a second apply would fail as a
//! duplicate) and adds 1 to a counter, so the sum of the counters on B
//! ([`Tally`]) must equal the number of transactions committed on A exactly.
//!
//! The failpoint tests set `TCF_FAILPOINTS` in the test process's own
//! environment, which the destination inherits: `TcfProcess` has no way to
//! pass an environment to one child. That is `unsafe` in edition 2024 (a
//! `getenv` racing on another thread is undefined behaviour). It is sound
//! here: nextest runs every test in its own process, `#[tokio::test]` runs
//! the test on one thread (a current-thread runtime), and the only other
//! thread, the harness's spawner, reads the environment only inside
//! `Command::spawn`, under the same lock as `set_var`/`remove_var`. No
//! blocking-pool thread exists: every address is an IP literal (no
//! resolver) and no `tokio::fs` is used.
#![allow(unsafe_code)]

use std::time::Duration;

use tcf_tests::{
    federation::{
        Federation, RunningDestination, Tally, Writer, insert_counters, tally, wait_growth,
    },
    wait_until,
};

/// One source transaction every `PACE`: a steady stream, bounded in size.
const PACE: Duration = Duration::from_millis(3);

/// Exit status of a `tcf-destination` failpoint (`tcf_destination::EXIT_FAILPOINT`).
const EXIT_FAILPOINT: i32 = 86;

/// The variable `tcf-destination` reads its failpoints from.
const FAILPOINTS_ENV: &str = "TCF_FAILPOINTS";

/// Checks exactly-once on B after `written` writer transactions on A.
async fn assert_exactly_once(f: &Federation, written: u64) {
    f.wait_equal().await.expect("B equals A, row by row");
    let once = Tally {
        increments: written,
        rows: written,
    };
    assert_eq!(
        tally(f.a.master()).await.expect("tally of A"),
        once,
        "the writer's transactions on A"
    );
    assert_eq!(
        tally(f.b.master()).await.expect("tally of B"),
        once,
        "each transaction applied exactly once on B"
    );
}

#[tokio::test]
async fn kills_of_the_destination_and_the_gateway_lose_and_double_nothing() {
    let f = Federation::start(0, &[]).await.expect("federation");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    insert_counters(f.a.master()).await.expect("counters");
    let writer = Writer::start(f.a.master(), 1, 2000, PACE)
        .await
        .expect("writer");
    for round in 0..6 {
        // Mid-stream: B is being written to when the process dies.
        wait_growth(f.b.master(), "test", 100)
            .await
            .unwrap_or_else(|e| panic!("B progresses before kill {round}: {e:#}"));
        if round % 2 == 0 {
            tracing::info!(round, written = writer.done(), "SIGKILL the destination");
            f.destination
                .kill9_and_respawn()
                .await
                .expect("destination restarted");
        } else {
            tracing::info!(round, written = writer.done(), "SIGKILL the gateway");
            f.gateway
                .kill9_and_respawn()
                .await
                .expect("gateway restarted");
        }
    }
    wait_growth(f.b.master(), "test", 100)
        .await
        .expect("B progresses after the last restart");
    let written = writer.stop().await.expect("writer");
    assert!(written >= 2000, "{written}");
    assert_exactly_once(&f, written).await;
    let (state, _) = f.destination.rs_state("rs1").await.expect("status");
    assert_eq!(state, "streaming");
}

/// Arms `point` to exit at its 3rd hit, streams, restarts the destination
/// after the failpoint exit and checks exactly-once.
async fn crash_at(point: &str) {
    // SAFETY: see the module comment (own process, one test thread).
    unsafe { std::env::set_var(FAILPOINTS_ENV, format!("{point}=exit@3")) };
    let f = Federation::start(0, &[]).await.expect("federation");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    insert_counters(f.a.master()).await.expect("counters");
    let writer = Writer::start(f.a.master(), 1, 600, PACE)
        .await
        .expect("writer");
    let code = f
        .destination
        .process
        .wait_exit(Duration::from_secs(120))
        .await
        .expect("the destination exits at the failpoint");
    assert_eq!(
        code,
        Some(EXIT_FAILPOINT),
        "{}",
        f.destination.process.log_tail(30)
    );
    assert!(
        f.destination
            .process
            .log()
            .contains(&format!("failpoint {point} hit")),
        "{}",
        f.destination.process.log_tail(30)
    );
    let at_crash = writer.done();
    // SAFETY: see the module comment. The restarted destination runs clean.
    unsafe { std::env::remove_var(FAILPOINTS_ENV) };
    f.destination
        .respawn()
        .await
        .expect("destination restarted");
    let written = writer.stop().await.expect("writer");
    assert!(written > at_crash, "the writer went on after the crash");
    assert_exactly_once(&f, written).await;
    let (state, _) = f.destination.rs_state("rs1").await.expect("status");
    assert_eq!(state, "streaming");
}

/// A destination that dies before a batch is sent, after it committed but
/// before the ack, or after the ack: the restart applies the rest once.
mod a_crash_between_commit_and_ack_applies_once {
    #[tokio::test]
    async fn before_apply() {
        super::crash_at("before_apply").await;
    }

    #[tokio::test]
    async fn after_commit() {
        super::crash_at("after_commit").await;
    }

    #[tokio::test]
    async fn after_ack() {
        super::crash_at("after_ack").await;
    }
}

#[tokio::test]
async fn two_destinations_on_one_target_one_stops() {
    let f = Federation::start(0, &[]).await.expect("federation");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    insert_counters(f.a.master()).await.expect("counters");
    let writer = Writer::start(f.a.master(), 1, 1000, PACE)
        .await
        .expect("writer");
    wait_growth(f.b.master(), "test", 100)
        .await
        .expect("B progresses");
    let second = RunningDestination::start(&f.gateway, "B", &[("rs1", f.b.uris())], &[])
        .await
        .expect("second destination");
    let both = [&f.destination, &second];
    let (failed, error) = wait_until(
        "one of the two destinations to stop",
        Duration::from_secs(120),
        || async {
            let mut states = Vec::new();
            for (i, d) in both.iter().enumerate() {
                match d.rs_state("rs1").await {
                    Ok((s, e)) if s == "failed" => return Ok(Some((i, e))),
                    Ok(s) => states.push(format!("{s:?}")),
                    Err(e) => return Err(e),
                }
            }
            tracing::debug!(?states, "both still running");
            Ok(None)
        },
    )
    .await
    .expect("one destination stops");
    let error = error.unwrap_or_default();
    assert!(error.contains("another destination"), "{error}");
    let survivor = both
        .get(1 - failed)
        .copied()
        .expect("the other destination");
    // The survivor goes on streaming.
    wait_growth(f.b.master(), "test", 100)
        .await
        .expect("B progresses after one destination stopped");
    let written = writer.stop().await.expect("writer");
    assert_exactly_once(&f, written).await;
    let (state, _) = survivor.rs_state("rs1").await.expect("status");
    assert_eq!(state, "streaming");
    let (state, _) = both
        .get(failed)
        .copied()
        .expect("the failed destination")
        .rs_state("rs1")
        .await
        .expect("status");
    assert_eq!(state, "failed", "a stopped destination stays stopped");
}
