//! tcf-worker's HTTP API over TLS (`http_server.tls`), and the config errors
//! of bad certificate files.

use std::time::Duration;

use tcf_common::{
    devcerts,
    http_client::{HttpResponse, request_with},
    https::{HttpTls, HttpsRoots},
};
use tcf_iproto::{ConnectOptions, Connection};
use tcf_tests::{
    Etcd,
    haproxy::Haproxy,
    wait_until,
    worker::{RunningWorker, WorkerSpec},
};

const SOON: Duration = Duration::from_secs(60);

fn spec(instances: Vec<String>, etcd: String, extra: Vec<String>) -> WorkerSpec {
    WorkerSpec {
        extra,
        ..WorkerSpec::lone(instances, etcd)
    }
}

async fn get(roots: Option<&HttpsRoots>, base: &str, path: &str) -> anyhow::Result<HttpResponse> {
    Ok(request_with(roots, "GET", base, path, None, None, Duration::from_secs(5)).await?)
}

#[tokio::test]
async fn serial_the_worker_serves_is_active_over_https_only() {
    let rs = tcf_tests::federation::cluster_options("a", "rs1")
        .start_replicaset()
        .await
        .expect("cluster A");
    let etcd = Etcd::start().await.expect("etcd");
    let dir = tempfile::tempdir().expect("dir");
    let certs = devcerts::generate(dir.path(), &["worker"]).expect("certs");
    let tls = HttpTls {
        cert_file: certs.components[0].cert.clone(),
        key_file: certs.components[0].key.clone(),
    };
    // The client CA is accepted (it is what the worker trusts for https peers).
    let extra = vec![format!(
        "  http_client: {{ca_file: \"{}\"}}",
        certs.ca.cert.display()
    )];
    let w =
        RunningWorker::spawn_tls(&spec(rs.uris(), etcd.endpoint(), extra), &tls).expect("worker");
    let roots = HttpsRoots::load("test", &certs.ca.cert).expect("CA");
    let https = format!("https://{}", w.http_addr);
    wait_until("is_active over https to answer 200", SOON, || async {
        if let Some(s) = w.process.exit_status() {
            return tcf_tests::Outcome::Failed(format!("exited {s}: {}", w.process.log_tail(30)));
        }
        match get(Some(&roots), &https, "/tcf/is_active").await {
            Ok(r) if r.status == 200 && r.body == "active" => tcf_tests::Outcome::Ready(()),
            Ok(r) => tcf_tests::Outcome::Pending(format!("{} {}", r.status, r.body)),
            Err(e) => tcf_tests::Outcome::Pending(e.to_string()),
        }
    })
    .await
    .expect("https probe");
    let r = get(Some(&roots), &https, "/metrics")
        .await
        .expect("metrics over https");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("tcf_worker_status"), "{}", r.body);
    // By name too: the certificate holds DNS localhost.
    let port = w.http_addr.rsplit_once(':').expect("port").1;
    let by_name = format!("https://localhost:{port}");
    let r = get(Some(&roots), &by_name, "/tcf/is_active")
        .await
        .expect("localhost");
    assert_eq!(r.status, 200);
    // Plain HTTP gets no answer; nor does a client that does not trust the CA.
    let plain = format!("http://{}", w.http_addr);
    let e = get(None, &plain, "/tcf/is_active").await;
    assert!(e.is_err(), "plain HTTP answered: {e:?}");
    devcerts::generate_foreign_ca_client(dir.path(), "other").expect("foreign CA");
    let foreign = HttpsRoots::load("test", &dir.path().join("foreign-ca.pem")).expect("CA");
    let e = get(Some(&foreign), &https, "/tcf/is_active").await;
    assert!(e.is_err(), "a foreign CA was accepted: {e:?}");
    // And the server still serves after those failed handshakes.
    let r = get(Some(&roots), &https, "/tcf/is_active")
        .await
        .expect("still serving");
    assert_eq!(r.status, 200);
    assert!(w.process.is_running());

    // HAProxy health-checks the worker over TLS (check-ssl, verifying the CA)
    // and so sends connections to the active cluster.
    let check = format!(
        "check-ssl verify required ca-file {}",
        certs.ca.cert.display()
    );
    let lb =
        Haproxy::start_with(&[(rs.master().uri(), w.http_addr.clone())], &check).expect("haproxy");
    let master = Connection::connect(&rs.master().uri(), &ConnectOptions::new())
        .await
        .expect("master")
        .greeting()
        .instance_uuid;
    wait_until("a connection through the balancer", SOON, || async {
        Connection::connect(&lb.frontend, &ConnectOptions::new())
            .await
            .ok()
            .map(|c| c.greeting().instance_uuid)
            == Some(master)
    })
    .await
    .expect("HAProxy's TLS health check passes");
}

#[tokio::test]
async fn a_missing_tls_key_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = devcerts::generate(dir.path(), &["worker"]).expect("certs");
    let missing = dir.path().join("no-such-key.pem");
    let tls = HttpTls {
        cert_file: certs.components[0].cert.clone(),
        key_file: missing.clone(),
    };
    let w = RunningWorker::spawn_tls(
        &spec(
            vec!["127.0.0.1:1".into()],
            "http://127.0.0.1:2".into(),
            Vec::new(),
        ),
        &tls,
    )
    .expect("spawn");
    let code = w
        .process
        .wait_exit(SOON)
        .await
        .expect("the worker exits by itself");
    let log = w.process.log();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("worker.http_server.tls.key_file"), "{log}");
    assert!(log.contains(&missing.display().to_string()), "{log}");
}

#[tokio::test]
async fn an_https_peer_without_a_ca_is_a_config_error() {
    let mut s = spec(
        vec!["127.0.0.1:1".into()],
        "http://127.0.0.1:2".into(),
        Vec::new(),
    );
    s.peer_workers = vec!["https://127.0.0.1:3".into()];
    let w = RunningWorker::spawn(&s).expect("spawn");
    let code = w.process.wait_exit(SOON).await.expect("exits");
    let log = w.process.log();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("worker.peer_workers[0]"), "{log}");
    assert!(log.contains("http_client.ca_file"), "{log}");
}
