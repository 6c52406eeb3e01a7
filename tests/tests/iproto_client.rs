//! The pipelined iproto client against a real Tarantool (2.6, 2.11, 3.x).

use std::time::Duration;

use rmpv::Value;
use tcf_iproto::{
    ConnectOptions, Connection, Error, Feature, Select, consts::errcode, request::Iterator,
};
use tcf_tests::{Grant, Privileges, Signal, SpaceSpec, Tarantool, TarantoolOptions, UserSpec};

const APP: &str = "app";
const APP_PASSWORD: &str = "app-secret";

async fn instance() -> Tarantool {
    tcf_tests::init_tracing();
    TarantoolOptions::new("client")
        .space(SpaceSpec::new("test").secondary_index("sk", true, &[(2, "string")]))
        .user(UserSpec::new(APP, APP_PASSWORD).grant(Grant::Universe(Privileges::ALL)))
        .start_single()
        .await
        .expect("tarantool starts")
}

async fn app(t: &Tarantool) -> Connection {
    let opts = ConnectOptions::new().credentials(APP, APP_PASSWORD);
    Connection::connect(&t.uri(), &opts)
        .await
        .expect("app connects")
}

async fn space_id(t: &Tarantool, name: &str) -> u32 {
    let v = t
        .eval1("return box.space[...].id", &[name.into()])
        .await
        .expect("space id");
    v.as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .expect("numeric space id")
}

fn tuple(i: u64, s: &str, n: i64) -> Vec<Value> {
    vec![i.into(), s.into(), n.into()]
}

#[tokio::test]
async fn auth_succeeds_and_wrong_credentials_are_refused() {
    let t = instance().await;
    let c = app(&t).await;
    c.ping().await.expect("ping after auth");
    let version = t
        .eval1("return box.info.version", &[])
        .await
        .expect("box.info.version");
    let version = version.as_str().expect("a version string");
    assert!(
        version.starts_with(&c.greeting().version),
        "{version} vs {}",
        c.greeting().version
    );
    assert_eq!(c.server().version().to_string(), c.greeting().version);

    let bad = ConnectOptions::new().credentials(APP, "wrong");
    let err = Connection::connect(&t.uri(), &bad)
        .await
        .expect_err("wrong password refused");
    assert_eq!(
        err.server_code(),
        Some(errcode::ER_PASSWORD_MISMATCH),
        "{err:?}"
    );

    let nobody = ConnectOptions::new().credentials("nobody", "x");
    let err = Connection::connect(&t.uri(), &nobody)
        .await
        .expect_err("unknown user refused");
    // 2.11+ do not tell an unknown user from a wrong password.
    assert!(
        matches!(
            err.server_code(),
            Some(errcode::ER_NO_SUCH_USER | errcode::ER_PASSWORD_MISMATCH)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn ten_thousand_pipelined_requests_on_one_connection() {
    let t = instance().await;
    let c = app(&t).await;
    let sid = space_id(&t, "test").await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10_000u64 {
        let c = c.clone();
        set.spawn(async move {
            let r = c
                .replace(sid, &tuple(i, &format!("payload-{i}"), i as i64 * 2)[..])
                .await;
            (i, r)
        });
    }
    let mut done = 0;
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.expect("task");
        let data = r.expect("replace ok").data_value().expect("data");
        assert_eq!(
            data,
            Value::Array(vec![Value::Array(tuple(
                i,
                &format!("payload-{i}"),
                i as i64 * 2
            ))])
        );
        done += 1;
    }
    assert_eq!(done, 10_000);
    let count = t
        .eval1("return box.space.test:count()", &[])
        .await
        .expect("count");
    assert_eq!(count.as_u64(), Some(10_000));
}

#[tokio::test]
async fn every_dml_kind_and_select_options() {
    let t = instance().await;
    let c = app(&t).await;
    let sid = space_id(&t, "test").await;

    c.insert(sid, &tuple(1, "one", 10)[..])
        .await
        .expect("insert");
    let dup = c
        .insert(sid, &tuple(1, "uno", 10)[..])
        .await
        .expect_err("duplicate insert");
    assert_eq!(dup.server_code(), Some(errcode::ER_TUPLE_FOUND));
    c.replace(sid, &tuple(2, "two", 20)[..])
        .await
        .expect("replace");
    // 1-based (Lua style) and 0-based (raw iproto) field numbers both work.
    let ops1 = [Value::Array(vec!["+".into(), 3.into(), 5.into()])];
    c.update(sid, 0, &[Value::from(1)][..], &ops1[..], Some(1))
        .await
        .expect("update base 1");
    let ops0 = [Value::Array(vec!["=".into(), 1.into(), "ONE".into()])];
    c.update(sid, 0, &[Value::from(1)][..], &ops0[..], None)
        .await
        .expect("update base 0");
    // UPSERT: first inserts, then applies the ops.
    let ups = [Value::Array(vec!["+".into(), 3.into(), 1.into()])];
    c.upsert(sid, &tuple(3, "three", 30)[..], &ups[..], Some(1))
        .await
        .expect("upsert insert");
    c.upsert(sid, &tuple(3, "three", 30)[..], &ups[..], Some(1))
        .await
        .expect("upsert update");
    c.delete(sid, 0, &[Value::from(2)][..])
        .await
        .expect("delete by pk");
    c.insert(sid, &tuple(4, "four", 40)[..])
        .await
        .expect("insert 4");
    c.delete(sid, 1, &[Value::from("four")][..])
        .await
        .expect("delete by secondary");

    let all = c.select(
        sid,
        &[][..] as &[Value],
        Select {
            iterator: Iterator::All,
            ..Select::default()
        },
    );
    let all = all.await.expect("select all").data_value().expect("data");
    assert_eq!(
        all,
        Value::Array(vec![
            Value::Array(tuple(1, "ONE", 15)),
            Value::Array(tuple(3, "three", 31))
        ])
    );
    let page = Select {
        iterator: Iterator::Ge,
        limit: 1,
        offset: 1,
        ..Select::default()
    };
    let page = c
        .select(sid, &[Value::from(0)][..], page)
        .await
        .expect("select page");
    assert_eq!(
        page.data_value().expect("data"),
        Value::Array(vec![Value::Array(tuple(3, "three", 31))])
    );
    let by_sk = Select {
        index_id: 1,
        ..Select::default()
    };
    let by_sk = c
        .select(sid, &[Value::from("three")][..], by_sk)
        .await
        .expect("select sk");
    assert_eq!(
        by_sk.data_value().expect("data"),
        Value::Array(vec![Value::Array(tuple(3, "three", 31))])
    );
}

#[tokio::test]
async fn raw_bodies_are_sent_verbatim() {
    let t = instance().await;
    let c = app(&t).await;
    let sid = space_id(&t, "test").await;
    // A REPLACE body {SPACE_ID: sid, TUPLE: [7, 'seven', bin"\x00\x01", 1.5]} built
    // by hand: the binary field must stay MP_BIN, which a Lua round trip would
    // not keep.
    let mut body = Vec::new();
    tcf_iproto::msgpack::write::map_len(&mut body, 2);
    tcf_iproto::msgpack::write::uint(&mut body, 0x10);
    tcf_iproto::msgpack::write::uint(&mut body, u64::from(sid));
    tcf_iproto::msgpack::write::uint(&mut body, 0x21);
    let tuple_at = body.len();
    tcf_iproto::msgpack::write::array_len(&mut body, 4);
    tcf_iproto::msgpack::write::uint(&mut body, 7);
    tcf_iproto::msgpack::write::str(&mut body, "seven");
    tcf_iproto::msgpack::write::bin(&mut body, &[0, 1]);
    tcf_iproto::msgpack::write::f64(&mut body, 1.5);
    let raw_tuple = body[tuple_at..].to_vec();
    c.request_raw(tcf_iproto::consts::request::REPLACE, &body)
        .await
        .expect("raw replace");
    let got = c
        .select(sid, &[Value::from(7)][..], Select::default())
        .await
        .expect("select");
    let raw = got.data().expect("data");
    // The server may encode the outer array header in any width.
    let mut r = tcf_iproto::msgpack::Reader::new(raw);
    assert_eq!(r.read_array_len(), Ok(1));
    assert_eq!(r.rest(), &raw_tuple[..]);
}

#[tokio::test]
async fn call_and_eval_return_values_and_errors() {
    let t = instance().await;
    let c = app(&t).await;
    let v = c
        .eval(
            "local a, b = ... return a + b, 'x'",
            &[1.into(), 2.into()][..],
        )
        .await
        .expect("eval");
    assert_eq!(v, Value::Array(vec![3.into(), "x".into()]));
    let v = c
        .call("tonumber", &[Value::from("42")][..])
        .await
        .expect("call");
    assert_eq!(v, Value::Array(vec![42.into()]));
    let err = c
        .eval("error('boom')", &[][..] as &[Value])
        .await
        .expect_err("lua error");
    let Error::Server(e) = &err else {
        panic!("expected a server error, got {err:?}")
    };
    assert_eq!(e.code, errcode::ER_PROC_LUA);
    assert!(e.message.contains("boom"), "{e:?}");
    assert!(!e.stack.is_empty(), "2.6 sends the error stack: {e:?}");
    let err = c
        .call("no_such_function", &[][..] as &[Value])
        .await
        .expect_err("unknown function");
    assert!(err.server_code().is_some(), "{err:?}");
}

#[tokio::test]
async fn unknown_space_is_a_typed_error() {
    let t = instance().await;
    let c = app(&t).await;
    let err = c
        .replace(9999, &tuple(1, "x", 1)[..])
        .await
        .expect_err("no such space");
    let Error::Server(e) = &err else {
        panic!("expected a server error, got {err:?}")
    };
    assert_eq!(e.code, errcode::ER_NO_SUCH_SPACE);
    assert!(e.message.contains("9999"), "{e:?}");
    c.ping().await.expect("connection still usable");
}

#[tokio::test]
async fn a_slow_request_times_out_alone() {
    let t = instance().await;
    let c = app(&t).await;
    let slow = c.request_with(
        tcf_iproto::consts::request::EVAL,
        Some(Duration::from_millis(200)),
        |o| tcf_iproto::request::eval(o, "require('fiber').sleep(3)", &[][..] as &[Value]),
    );
    let err = slow.await.expect_err("timed out");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    c.ping().await.expect("other requests still work");
}

#[tokio::test]
async fn a_dying_server_fails_requests_in_flight() {
    let t = instance().await;
    let c = app(&t).await;
    let pending = {
        let c = c.clone();
        tokio::spawn(async move {
            c.eval(
                "rawset(_G, 'sleeping', true) require('fiber').sleep(30)",
                &[][..] as &[Value],
            )
            .await
        })
    };
    tcf_tests::wait_until(
        "the slow eval to be running",
        tcf_tests::DEFAULT_DEADLINE,
        || async {
            let v = t
                .eval1("return rawget(_G, 'sleeping') == true", &[])
                .await
                .ok()?;
            (v.as_bool()?).then_some(())
        },
    )
    .await
    .expect("eval in flight");
    t.kill(Signal::SIGKILL).expect("kill");
    let res = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("no hang")
        .expect("task");
    let err = res.expect_err("request fails");
    assert!(err.is_connection_error(), "{err:?}");
    assert!(c.is_closed());
    assert!(
        c.ping()
            .await
            .expect_err("later requests fail at once")
            .is_connection_error()
    );
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_a_connect_error() {
    let lease = tcf_tests::PortLease::allocate().expect("port");
    let err = Connection::connect(
        &format!("127.0.0.1:{}", lease.port()),
        &ConnectOptions::new(),
    )
    .await
    .expect_err("nothing listens");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn the_server_info_comes_from_the_greeting_and_iproto_id() {
    let t = instance().await;
    let c = app(&t).await;
    let info = c.server();
    assert_eq!(info.instance_uuid(), c.greeting().instance_uuid);
    match info.protocol() {
        // 2.10+ answer IPROTO_ID: every one of them has streams and watchers.
        Some(p) => {
            assert!(info.answers_id(), "{info:?}");
            assert!(p.version >= 1, "{p:?}");
            assert!(
                info.has(Feature::Streams) && info.has(Feature::Watchers),
                "{p:?}"
            );
        }
        None => {
            assert!(!info.answers_id(), "{info:?}");
            assert!(!info.has(Feature::Streams));
        }
    }
    // Turned off, nothing is asked and nothing is known.
    let plain = Connection::connect(
        &t.uri(),
        &ConnectOptions::new()
            .credentials(APP, APP_PASSWORD)
            .identify(false),
    )
    .await
    .expect("connect without IPROTO_ID");
    assert!(plain.server().protocol().is_none());
    plain.ping().await.expect("ping");
}
