//! The gateway against what changed in Tarantool 2.11 and 3.x: its stable
//! subscriber UUID and the WAL GC consumer a 3.3+ source keeps for it (one
//! per gateway and replicaset, released by `POST /api/v1/release`), and
//! acks that never move the source's Raft term.

use std::time::Duration;

use tcf_iproto::{ConnectOptions, Connection, Vclock};
use tcf_proto::v1::{self, open::Start};
use tcf_tests::{
    Grant, Outcome, Replicaset, SpaceSpec, Tarantool, TarantoolOptions, UserSpec,
    gateway::{
        ADMIN_TOKEN, GatewayOptions, Message, REPL_PASSWORD, REPL_USER, RunningGateway, Stream,
    },
    http, wait_until,
};

const SOON: Duration = Duration::from_secs(30);

/// On 3.3+: lets the replication user call `box.ctl.replica_gc` (the release
/// route). Operators run the same two statements (see `docs/gateway.md`).
const RELEASE_GRANT: &str = "if box.ctl.replica_gc ~= nil then \
     box.schema.func.create('box.ctl.replica_gc', {if_not_exists = true}) \
     box.schema.user.grant('tcf-replicator', 'execute', 'function', 'box.ctl.replica_gc', \
     {if_not_exists = true}) end";

fn source(name: &str) -> TarantoolOptions {
    tcf_tests::init_tracing();
    TarantoolOptions::new(name)
        .space(SpaceSpec::new("test"))
        // `read` on `universe`, and on 3.3+ `write` on `_gc_consumers`.
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::replication()))
        .bootstrap_lua(RELEASE_GRANT)
        .replication_timeout(Duration::from_millis(250))
}

async fn vclock(t: &Tarantool) -> Vclock {
    tcf_iproto::vote(&t.uri(), &ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local()
}

async fn gateway(rs: &Replicaset) -> RunningGateway {
    RunningGateway::start(&[("rs1", rs.uris())], GatewayOptions::default())
        .await
        .expect("gateway starts")
}

async fn open_at(gw: &RunningGateway, from: &Vclock) -> Stream {
    let mut client = gw.client().await.expect("client");
    let mut s = client
        .open("rs1", Start::After(from.into()))
        .await
        .expect("stream opens");
    assert!(matches!(
        s.expect(SOON).await.expect("started"),
        Message::Started(_)
    ));
    s
}

/// Writes one row and waits for it (acking it), so the source has seen the
/// gateway's subscription and acks.
async fn one_row_through(m: &Tarantool, s: &mut Stream, id: u64) -> v1::Transaction {
    m.eval("box.space.test:insert{...}", &[id.into()])
        .await
        .expect("insert");
    let tx = s.next_tx(SOON).await.expect("transaction");
    s.ack(&Vclock::from(tx.vclock.clone().expect("vclock")))
        .await
        .expect("ack");
    tx
}

/// The `_gc_consumers` UUIDs of `t` (`None` before 3.3: no such space).
async fn consumers(t: &Tarantool) -> Option<Vec<String>> {
    let v = t
        .eval(
            "if box.space._gc_consumers == nil then return nil end \
             local out = {} for _, c in box.space._gc_consumers:pairs() do \
             table.insert(out, c[1]) end return out",
            &[],
        )
        .await
        .expect("consumers");
    v.as_array()
        .and_then(|a| a.first())
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
}

async fn subscriber_uuid(gw: &RunningGateway) -> String {
    let status = gw.status().await.expect("status");
    status
        .pointer("/replicasets/rs1/subscriber_uuid")
        .and_then(|v| v.as_str())
        .expect("subscriber_uuid in the status")
        .to_owned()
}

async fn release(gw: &RunningGateway) -> (u16, serde_json::Value) {
    let r = http::request(
        "POST",
        &gw.http_addr,
        "/api/v1/release",
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .expect("release");
    (r.status, http::json(&r).expect("json"))
}

#[tokio::test]
async fn one_wal_consumer_per_gateway_across_restarts_and_release_frees_it() {
    let rs = source("consumer").start_replicaset().await.expect("source");
    let m = rs.master();
    let pins = Connection::connect(&m.uri(), &ConnectOptions::new())
        .await
        .expect("connect")
        .server()
        .pins_wal_for_anon();
    let from = vclock(m).await;

    let gw = gateway(&rs).await;
    let uuid = subscriber_uuid(&gw).await;
    assert_eq!(
        uuid::Uuid::parse_str(&uuid)
            .expect("a UUID")
            .get_version_num(),
        5,
        "name-based: derived from alias, cluster and replicaset"
    );
    let mut s = open_at(&gw, &from).await;
    one_row_through(m, &mut s, 1).await;
    assert!(
        m.log_tail(2000)
            .contains(&format!("subscribed replica {uuid}")),
        "the source saw the stable UUID"
    );
    let status = gw.status().await.expect("status");
    let version = m
        .eval1("return box.info.version", &[])
        .await
        .expect("version");
    assert!(
        version.as_str().expect("a string").starts_with(
            status["replicasets"]["rs1"]["source_version"]
                .as_str()
                .expect("source_version")
        ),
        "{status}"
    );
    if pins {
        assert_eq!(consumers(m).await, Some(vec![uuid.clone()]));
    } else {
        assert_eq!(consumers(m).await, None, "no _gc_consumers before 3.3");
    }

    // A restarted gateway (same alias) resumes under the same UUID: still
    // one consumer, not one per connection.
    drop(s);
    gw.process.stop().await.expect("stop the gateway");
    let gw = gateway(&rs).await;
    assert_eq!(subscriber_uuid(&gw).await, uuid);
    let mut s = open_at(&gw, &vclock(m).await).await;
    one_row_through(m, &mut s, 2).await;
    if pins {
        assert_eq!(consumers(m).await, Some(vec![uuid.clone()]));
    }

    // Release: refused while running, then done while stopped.
    let (code, body) = release(&gw).await;
    assert_eq!(code, 409, "{body}");
    let r = http::request(
        "POST",
        &gw.http_addr,
        "/api/v1/stop",
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .expect("stop");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(s);
    // The source may hold the old relay for a moment after the disconnect:
    // the release says so and succeeds once it is gone.
    let body = wait_until("the release to succeed", SOON, || async {
        match release(&gw).await {
            (200, body) => Outcome::Ready(body),
            (code, body) => Outcome::Pending(format!("{code}: {body}")),
        }
    })
    .await
    .expect("released");
    let outcome = &body["instances"][0]["outcome"];
    if pins {
        assert_eq!(outcome, "released", "{body}");
        assert_eq!(consumers(m).await, Some(vec![]));
        let (code, again) = release(&gw).await;
        assert_eq!(code, 200, "{again}");
        assert_eq!(again["instances"][0]["outcome"], "not_registered");
    } else {
        assert_eq!(outcome, "not_applicable", "{body}");
    }
    let r = http::request(
        "POST",
        &gw.http_addr,
        "/api/v1/release",
        Some(tcf_tests::gateway::INFO_TOKEN),
        None,
    )
    .await
    .expect("release as info");
    assert_eq!(r.status, 403, "the admin role is needed: {}", r.body);
}

#[tokio::test]
async fn the_gateway_never_moves_the_source_raft_term() {
    // A single-instance source that elects itself: since 2.11 a master acts
    // on the Raft term of every ack, anonymous ones included.
    let rs = source("term")
        .synchro_quorum(1)
        .start_replicaset()
        .await
        .expect("source");
    let m = rs.master();
    let info = Connection::connect(&m.uri(), &ConnectOptions::new())
        .await
        .expect("connect")
        .server()
        .clone();
    if !info.has_elections() {
        eprintln!(
            "SKIP: Tarantool {} has no Raft elections (2.6.1+)",
            info.version()
        );
        return;
    }
    m.eval("box.cfg{election_mode = 'candidate'}", &[])
        .await
        .expect("election_mode");
    let term = wait_until("the source to lead", SOON, || async {
        let v = m
            .eval(
                "return box.info.election.state, box.info.election.term",
                &[],
            )
            .await
            .expect("election");
        match (v[0].as_str(), v[1].as_u64()) {
            (Some("leader"), Some(term)) => Outcome::Ready(term),
            other => Outcome::Pending(format!("{other:?}")),
        }
    })
    .await
    .expect("a leader");
    let gw = gateway(&rs).await;
    let mut s = open_at(&gw, &vclock(m).await).await;
    let tx = one_row_through(m, &mut s, 1).await;
    let acked = Vclock::from(tx.vclock.expect("vclock"));
    // The source has processed the gateway's acks up to the row.
    wait_until("the source to see the ack", SOON, || async {
        let v = m
            .eval(
                "for _, r in pairs(box.info.replication_anon()) do \
                 if r.downstream ~= nil and r.downstream.vclock ~= nil then \
                 return r.downstream.vclock end end return nil",
                &[],
            )
            .await
            .expect("replication_anon");
        let seen: Vclock = v[0]
            .as_map()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((u32::try_from(k.as_u64()?).ok()?, v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        if acked.le(&seen) {
            Outcome::Ready(())
        } else {
            Outcome::Pending(format!("downstream vclock {seen}, acked {acked}"))
        }
    })
    .await
    .expect("ack seen");
    let v = m
        .eval(
            "return box.info.election.state, box.info.election.term",
            &[],
        )
        .await
        .expect("election");
    assert_eq!(v[0].as_str(), Some("leader"), "still the leader: {v:?}");
    assert_eq!(v[1].as_u64(), Some(term), "the term did not move: {v:?}");
}
