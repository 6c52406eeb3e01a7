//! The destination applies rows through FFI `box_*` calls. A Lua
//! `on_replace` trigger on a target space (the application's own, or the
//! worker's unmarked-write trigger) then runs inside those calls; had the
//! apply loop been JIT-compiled, Tarantool would abort with "Lua VM
//! re-entrancy is detected while executing the trace".

use tcf_tests::federation::{Federation, write_burst};

#[tokio::test]
async fn serial_target_space_triggers_survive_a_bulk_apply() {
    let f = Federation::start(0, &[]).await.expect("federation");
    // Triggers on the memtx spaces that call back into Lua and into box
    // (a memtx read; in a vinyl transaction it would fail for other reasons).
    f.b.master()
        .eval(
            "rawset(_G, 'seen', 0) \
             for _, name in ipairs({'test', 'counters'}) do \
               box.space[name]:on_replace(function() \
                 seen = seen + 1 \
                 local _ = box.info.ro \
                 local _ = box.space.counters:get{1} \
               end) \
             end",
            &[],
        )
        .await
        .expect("triggers on B");
    for round in 0..4 {
        write_burst(f.a.master(), 1 + round * 5_000, 5_000)
            .await
            .expect("burst on A");
    }
    f.wait_equal().await.expect("B equals A");
    let seen =
        f.b.master()
            .eval1("return seen", &[])
            .await
            .expect("B's master is alive");
    assert!(
        seen.as_u64().unwrap_or(0) >= 15_000,
        "the triggers ran for every applied row: {seen}"
    );
}
