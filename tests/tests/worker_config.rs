//! Fencing on Tarantool 3.x started from a declarative YAML config
//! (`tarantool --config`), whose `credentials:` section is applied again on
//! every `config:reload()` and restart.
//!
//! What the test shows: disabling a user takes away only the `session,usage`
//! that `box.schema.user.create` gave; the config re-grants only what it
//! lists itself. So a dml user the config declares without `usage` stays
//! fenced across reloads and restarts (with no worker running to re-fence
//! it); a config listing `usage` undoes the fence, and the worker then
//! reports the fence as not holding, naming the config.

use std::time::Duration;

use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    Etcd, Grant, Side, SpaceSpec, Tarantool, TarantoolOptions, UserSpec,
    binary::{supports_declarative_config, tarantool_binary_for},
    wait_until,
    worker::{ADMIN_PASSWORD, ADMIN_USER, APP_PASSWORD, APP_USER, RunningWorker, WorkerSpec},
};

const SOON: Duration = Duration::from_secs(60);

/// `app` with `read,write` on universe, declared by the config; the
/// worker's admin is created by the bootstrap (box.schema).
fn credentials(permissions: &str) -> String {
    format!(
        "  users:\n    {APP_USER}:\n      password: {APP_PASSWORD}\n      privileges:\n        - permissions: [{permissions}]\n          universe: true\n"
    )
}

fn spec(t: &Tarantool, etcd: &Etcd) -> WorkerSpec {
    WorkerSpec {
        cluster: "B".into(),
        peer: "A".into(),
        initial_status: "passive".into(),
        ..WorkerSpec::lone(vec![t.uri()], etcd.endpoint())
    }
}

/// Writes one row as `app` on a new connection, or says why it cannot.
async fn app_writes(t: &Tarantool, sid: u32, id: u64) -> Result<(), String> {
    let c = Connection::connect(
        &t.uri(),
        &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
    )
    .await
    .map_err(|e| e.to_string())?;
    c.replace(sid, &[rmpv::Value::from(id)][..])
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn serial_a_fence_holds_across_config_reloads_and_restarts_unless_the_config_grants_usage() {
    tcf_tests::init_tracing();
    let binary = tarantool_binary_for(Side::Target);
    if !supports_declarative_config(&binary).expect("tarantool --help") {
        return tcf_tests::skip(format!(
            "{} has no declarative config (tarantool --config)",
            tcf_tests::binary::version(&binary).unwrap_or_default()
        ));
    }
    let t = TarantoolOptions::new("cfg")
        .binary(binary)
        .space(SpaceSpec::new("test"))
        .user(UserSpec::new(ADMIN_USER, ADMIN_PASSWORD).grant(Grant::super_role()))
        .declarative(credentials("read, write"))
        .start_single()
        .await
        .expect("a declarative instance");
    let sid = t
        .eval1("return box.space.test.id", &[])
        .await
        .expect("id")
        .as_u64()
        .expect("space id") as u32;
    app_writes(&t, sid, 1)
        .await
        .expect("app writes before the fence");
    let open = Connection::connect(
        &t.uri(),
        &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
    )
    .await
    .expect("a session opened before the fence");

    // The worker of passive B fences it.
    let etcd = Etcd::start().await.expect("etcd");
    let w = RunningWorker::start(&spec(&t, &etcd))
        .await
        .expect("worker");
    wait_until("the worker to fence B", SOON, || async {
        let i = w.info().await.ok()?;
        (i["fence"]["fenced"] == true && i["fence_error"].is_null()).then_some(())
    })
    .await
    .expect("fenced");
    let e = app_writes(&t, sid, 2)
        .await
        .expect_err("fenced: no new session");
    assert!(e.contains("denied"), "{e}");
    let e = open
        .replace(sid, &[rmpv::Value::from(3)][..])
        .await
        .expect_err("fenced: nor in the open one");
    assert!(e.to_string().contains("denied"), "{e}");

    // Without a worker to re-fence it, the config's reload and a restart
    // leave the user disabled.
    w.process.stop().await.expect("stop the worker");
    let info = t
        .reload_config(&credentials("read, write"))
        .await
        .expect("reload");
    assert_eq!(info["status"].as_str(), Some("ready"), "{info}");
    app_writes(&t, sid, 4)
        .await
        .expect_err("still fenced after config:reload()");
    t.restart().await.expect("restart");
    app_writes(&t, sid, 5)
        .await
        .expect_err("still fenced after a restart");

    // A config that lists `usage` (and `session`) grants them under its own
    // origin: the user works again, and disabling cannot take them away.
    let info = t
        .reload_config(&credentials("read, write, session, usage"))
        .await
        .expect("reload");
    assert_eq!(info["status"].as_str(), Some("ready"), "{info}");
    app_writes(&t, sid, 6)
        .await
        .expect("the config re-granted what the fence took");
    let w = RunningWorker::start(&spec(&t, &etcd))
        .await
        .expect("worker");
    let error = wait_until("the worker to report the fence", SOON, || async {
        let i = w.info().await.ok()?;
        i["fence_error"].as_str().map(str::to_owned)
    })
    .await
    .expect("a fence error");
    assert!(
        error.contains("the fence does not hold")
            && error.contains(&format!("user '{APP_USER}' keeps usage"))
            && error.contains("declarative config")
            && error.contains(&format!("credentials.users.{APP_USER}")),
        "{error}"
    );
    app_writes(&t, sid, 7)
        .await
        .expect("the fence does not hold, and the worker says so");

    // Taken out of the config again, the privileges go with it; the next
    // fence holds.
    let info = t
        .reload_config(&credentials("read, write"))
        .await
        .expect("reload");
    assert_eq!(info["status"].as_str(), Some("ready"), "{info}");
    wait_until("the fence to hold again", SOON, || async {
        let i = w.info().await.ok()?;
        (i["fence"]["fenced"] == true && i["fence_error"].is_null()).then_some(())
    })
    .await
    .expect("fenced");
    app_writes(&t, sid, 8).await.expect_err("fenced again");
}

/// On every version: a dml user that has `usage` through a role keeps it
/// when disabled (`session` and `usage` cannot be granted to a role, but
/// the built-in `super` has them); the worker reports the fence as not
/// holding, naming the role, instead of calling the cluster fenced.
#[tokio::test]
async fn a_fence_that_a_role_undoes_is_reported() {
    tcf_tests::init_tracing();
    let t = TarantoolOptions::new("role")
        .side(Side::Target)
        .space(SpaceSpec::new("test"))
        .user(UserSpec::new(ADMIN_USER, ADMIN_PASSWORD).grant(Grant::super_role()))
        .user(UserSpec::new(APP_USER, APP_PASSWORD).grant(Grant::super_role()))
        .start_single()
        .await
        .expect("instance");
    let sid = t
        .eval1("return box.space.test.id", &[])
        .await
        .expect("id")
        .as_u64()
        .expect("space id") as u32;
    let etcd = Etcd::start().await.expect("etcd");
    let w = RunningWorker::start(&spec(&t, &etcd))
        .await
        .expect("worker");
    let error = wait_until("the worker to report the fence", SOON, || async {
        let i = w.info().await.ok()?;
        i["fence_error"].as_str().map(str::to_owned)
    })
    .await
    .expect("a fence error");
    assert!(
        error.contains("the fence does not hold")
            && error.contains(&format!(
                "user '{APP_USER}' keeps usage on universe (role super)"
            )),
        "{error}"
    );
    let info = w.info().await.expect("info");
    assert_ne!(info["fence"]["fenced"], true, "{info}");
    app_writes(&t, sid, 1)
        .await
        .expect("the role still lets the user work: the worker does not claim otherwise");
}
