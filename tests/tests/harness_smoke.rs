//! Smoke tests of the harness itself: real Tarantool and etcd start, work, and
//! leave no process or directory behind.

use std::path::PathBuf;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use rmpv::Value;
use tcf_tests::{
    DEFAULT_DEADLINE, Etcd, Grant, Privileges, Signal, SpaceSpec, TarantoolOptions, UserSpec,
    first, init_tracing, wait_until,
};

fn pid_alive(pid: u32) -> bool {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    kill(pid, None).is_ok()
}

#[tokio::test]
async fn replicaset_replicates_and_cleans_up() {
    init_tracing();
    let rs = TarantoolOptions::new("smoke")
        .replicas(1)
        .space(
            SpaceSpec::new("test")
                .field("id", "unsigned")
                .field("name", "string")
                .secondary_index("by_name", true, &[(2, "string")]),
        )
        .user(UserSpec::new("app", "app-password").grant(Grant::Space {
            space: "test".into(),
            privileges: Privileges::READ_WRITE,
        }))
        .start_replicaset()
        .await
        .expect("replicaset starts");

    let master = rs.master();
    let replica = &rs.replicas()[0];
    assert_ne!(master.port(), replica.port());
    assert_eq!(
        first(replica.eval("return box.info.ro", &[]).await.expect("ro")),
        Value::Boolean(true)
    );

    master
        .eval(
            "box.space.test:insert({...})",
            &[Value::from(1), Value::from("one")],
        )
        .await
        .expect("insert on the master");
    replica
        .wait_lua(
            "row 1 replicated",
            "return box.space.test:get{1} ~= nil",
            DEFAULT_DEADLINE,
        )
        .await
        .expect("row reaches the replica");
    let name = replica
        .eval1("return box.space.test:get{1}[2]", &[])
        .await
        .expect("get");
    assert_eq!(name.as_str(), Some("one"));
    rs.wait_replicas_caught_up()
        .await
        .expect("replicas caught up");

    // A bootstrap user can log in on the replica too (created by replication).
    let app = replica
        .connect("app", "app-password")
        .await
        .expect("app user connects");
    app.ping().await.expect("ping");
    drop(app);

    let pids: Vec<u32> = rs.instances().map(|t| t.pid()).collect();
    let dirs: Vec<PathBuf> = rs.instances().map(|t| t.dir().to_path_buf()).collect();
    assert!(pids.iter().all(|p| pid_alive(*p)), "servers run: {pids:?}");
    drop(rs);
    for p in &pids {
        assert!(!pid_alive(*p), "pid {p} still alive after drop");
    }
    for d in &dirs {
        assert!(!d.exists(), "{} still exists after drop", d.display());
    }
}

#[tokio::test]
async fn tarantool_survives_sigkill_and_restart() {
    init_tracing();
    let t = TarantoolOptions::new("restart")
        .space(SpaceSpec::new("test"))
        .start_single()
        .await
        .expect("tarantool starts");
    let (port, first_pid) = (t.port(), t.pid());
    t.eval("box.space.test:insert{7}", &[])
        .await
        .expect("insert");

    t.kill(Signal::SIGKILL).expect("SIGKILL");
    wait_until("the killed process to exit", DEFAULT_DEADLINE, || async {
        !t.is_running()
    })
    .await
    .expect("process exits");
    t.restart().await.expect("restart");

    assert_eq!(t.port(), port, "restart keeps the port");
    assert_ne!(t.pid(), first_pid, "restart runs a new process");
    let row = t
        .eval1("return box.space.test:get{7} ~= nil", &[])
        .await
        .expect("get");
    assert_eq!(row, Value::Boolean(true), "data survive the restart");

    let pid = t.pid();
    t.stop().await.expect("stop");
    assert!(!pid_alive(pid), "stopped process is gone");
}

#[tokio::test]
async fn etcd_starts_healthy_and_cleans_up() {
    init_tracing();
    let etcd = Etcd::start().await.expect("etcd starts");
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    assert!(
        etcd.health().await.expect("GET /health"),
        "etcd reports healthy"
    );

    etcd.restart().await.expect("etcd restarts");
    assert!(etcd.health().await.expect("GET /health after restart"));

    let pid = etcd.pid();
    let dir = etcd.dir().to_path_buf();
    assert!(pid_alive(pid));
    drop(etcd);
    assert!(!pid_alive(pid), "etcd pid {pid} still alive after drop");
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}
