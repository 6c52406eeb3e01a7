//! SIGTERM while Tarantool hangs (issue 10): the gateway with its source
//! master frozen (SIGSTOP) mid-stream, the destination with its target
//! master frozen mid-apply, each exit within a few seconds. (Hung etcd and
//! held client connections: `worker_robust.rs`, `listeners.rs`.)

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use tcf_tests::{
    DEFAULT_DEADLINE, Signal,
    federation::{Federation, write_burst},
    wait_until,
};

/// "A few seconds", generous for a loaded machine.
const EXIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn serial_replicators_exit_promptly_while_their_tarantool_hangs() {
    let f = Federation::start(0, &[]).await.expect("federation");
    write_burst(f.a.master(), 1, 100).await.expect("writes");
    f.wait_equal().await.expect("B caught up");
    // B's master frozen (connections stay open, nothing answers), then A
    // writes: the destination's apply call hangs on B.
    f.b.master().kill(Signal::SIGSTOP).unwrap();
    write_burst(f.a.master(), 1000, 50).await.expect("writes");
    wait_until(
        "the gateway to ship what B cannot apply",
        DEFAULT_DEADLINE,
        || async {
            let s = f.gateway.status().await.ok()?;
            let shipped = s["replicasets"]["rs1"]["shipped_vclock"]["1"].as_u64()?;
            let acked = s["replicasets"]["rs1"]["acked_vclock"]["1"].as_u64()?;
            (shipped > acked).then_some(())
        },
    )
    .await
    .expect("an apply in flight");
    // A's master frozen too: the gateway's source hangs.
    f.a.master().kill(Signal::SIGSTOP).unwrap();
    for (name, p) in [
        ("gateway", &f.gateway.process),
        ("destination", &f.destination.process),
    ] {
        let sent = Instant::now();
        p.kill(Signal::SIGTERM).unwrap();
        let code = p
            .wait_exit(EXIT)
            .await
            .unwrap_or_else(|e| panic!("the {name} exits while Tarantool hangs: {e}"));
        println!(
            "{name}: exit {code:?} {} ms after SIGTERM with its Tarantool frozen",
            sent.elapsed().as_millis()
        );
        assert_eq!(code, Some(0), "{}", p.log_tail(20));
    }
    f.a.master().kill(Signal::SIGCONT).unwrap();
    f.b.master().kill(Signal::SIGCONT).unwrap();
}
