//! The alert rules (`examples/prometheus/tcf-alerts.yml`) and the Grafana
//! dashboard (`examples/grafana/tcf-federation.json`): `promtool` checks the
//! rules and runs their unit tests; a real Prometheus scraping a live
//! federation has every metric the rules and the dashboard use, and the lag
//! alert fires when a destination is stopped.

use std::{collections::BTreeSet, process::Command, time::Duration};

use serde_json::Value;
use tcf_tests::{
    PortLease, http,
    tools::{Background, run, workspace_root},
    wait_until,
    worker::{Paired, PairedOptions, TOGGLE_TOKEN},
};

const SOON: Duration = Duration::from_secs(60);

/// Every `tcf_*` metric name in `expr`.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("tcf_") {
        let tail = rest.get(i..).unwrap_or_default();
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        into.insert(tail.get(..end).unwrap_or_default().to_owned());
        rest = tail.get(end..).unwrap_or_default();
    }
}

/// The expressions of the rules (`expr:` lines) and of the dashboard's
/// panels and annotations.
fn expressions() -> Vec<String> {
    let root = workspace_root().join("examples");
    let rules = std::fs::read_to_string(root.join("prometheus/tcf-alerts.yml")).expect("rules");
    let mut exprs: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/tcf-federation.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    exprs
}

#[tokio::test]
async fn promtool_checks_the_rules_and_runs_their_tests() {
    let dir = workspace_root().join("examples/prometheus");
    for args in [
        &["check", "rules", "tcf-alerts.yml"][..],
        &["test", "rules", "tcf-alerts.test.yml"][..],
        &["check", "config", "prometheus.yml"][..],
    ] {
        let mut c = Command::new("promtool");
        c.args(args).current_dir(&dir);
        let out = run(c, Duration::from_secs(60))
            .await
            .expect("promtool runs (Debian's prometheus package; scripts/test.sh installs it)");
        assert_eq!(out.code, Some(0), "promtool {args:?}: {out}");
    }
    // The dashboard: every panel queries something, through the datasource variable.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("examples/grafana/tcf-federation.json"))
            .expect("dashboard"),
    )
    .expect("JSON");
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{p}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
    }
    for title in [
        "Active cluster",
        "Lag (time) per replicaset",
        "Lag (rows) per replicaset",
        "Throughput",
        "Apply latency",
        "Reconnects and retries",
        "Alarms",
        "Switches (range)",
    ] {
        assert!(
            panels.iter().any(|p| p["title"] == title),
            "no panel {title}"
        );
    }
}

/// 100 rows into `test` on `t`, ids from `from`.
async fn write(t: &tcf_tests::Tarantool, from: u64) -> anyhow::Result<rmpv::Value> {
    let lua = format!("for i = {from}, {from} + 99 do box.space.test:insert{{i, 'x', i}} end");
    t.eval(&lua, &[]).await
}

async fn prom(addr: &str, path: &str) -> anyhow::Result<Value> {
    let r = http::get(addr, path).await?;
    anyhow::ensure!(r.status == 200, "{path}: {} {}", r.status, r.body);
    let v = http::json(&r)?;
    Ok(v.get("data").cloned().unwrap_or_default())
}

async fn firing(addr: &str, alert: &str) -> Vec<Value> {
    let Ok(d) = prom(addr, "/api/v1/alerts").await else {
        return Vec::new();
    };
    let is = |x: &Value, key: &str, want: &str| x.get(key).and_then(Value::as_str) == Some(want);
    d.get("alerts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|x| {
                    is(x, "state", "firing")
                        && x.get("labels").is_some_and(|l| is(l, "alertname", alert))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn serial_prometheus_has_every_metric_of_the_rules_and_dashboard_and_the_lag_alert_fires() {
    let s = Paired::start_with(PairedOptions {
        coordinator: true,
        ..PairedOptions::default()
    })
    .await
    .expect("clusters, etcd, replicators and workers");
    s.wa.wait_is_active(200, SOON).await.expect("A active");

    let dir = tempfile::tempdir().expect("tempdir");
    let port = PortLease::allocate().expect("port");
    let addr = format!("127.0.0.1:{}", port.port());
    let rules = workspace_root().join("examples/prometheus/tcf-alerts.yml");
    let targets = |list: &[&str]| {
        list.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [\"{}\"]\n\
         scrape_configs:\n\
         \x20 - {{job_name: tcf-worker, static_configs: [{{targets: [{}]}}]}}\n\
         \x20 - {{job_name: tcf-gateway, static_configs: [{{targets: [{}]}}]}}\n\
         \x20 - {{job_name: tcf-destination, static_configs: [{{targets: [{}]}}]}}\n",
        rules.display(),
        targets(&[&s.wa.http_addr, &s.wb.http_addr]),
        targets(&[&s.gw_a.http_addr, &s.gw_b.http_addr]),
        targets(&[&s.d_a.http_addr, &s.d_b.http_addr]),
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let mut c = Command::new("prometheus");
    c.arg(format!(
        "--config.file={}",
        dir.path().join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.path().join("data").display()
    ))
    .arg(format!("--web.listen-address={addr}"));
    let mut p = Background::start(c, dir.path().join("prometheus.log")).expect("prometheus");
    let up = wait_until("Prometheus scrapes all six processes", SOON, || async {
        let d = prom(&addr, "/api/v1/targets").await.ok()?;
        let t = d["activeTargets"].as_array()?;
        (t.len() == 6 && t.iter().all(|x| x["health"] == "up")).then_some(())
    })
    .await;
    if let Err(e) = up {
        panic!("{e}\n{}", p.log_tail(30));
    }

    // Traffic both ways, a switchover and an unmarked write: what creates
    // the counters that exist only once something happened.
    write(s.a.master(), 1).await.expect("writes on A");
    let (code, body) = s.wa.toggle(Some(TOGGLE_TOKEN)).await.expect("switchover");
    assert_eq!(code, 200, "{body}");
    s.wb.wait_is_active(200, SOON).await.expect("B active");
    write(s.b.master(), 1000).await.expect("writes on B");
    wait_until("A's worker watches A", SOON, || async {
        s.a.master()
            .eval1("return #box.space.test:on_replace()", &[])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            == Some(1)
    })
    .await
    .expect("unmarked-write trigger on A");
    write(s.a.master(), 5000)
        .await
        .expect("an unmarked write on A");

    let mut wanted = BTreeSet::new();
    for e in expressions() {
        metric_names(&e, &mut wanted);
    }
    assert!(wanted.len() > 10, "{wanted:?}");
    let present = wait_until(
        "every metric of the rules and the dashboard",
        SOON,
        || async {
            let d = prom(&addr, "/api/v1/label/__name__/values").await.ok()?;
            let have: BTreeSet<String> = d
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            wanted.is_subset(&have).then_some(())
        },
    )
    .await;
    if let Err(e) = present {
        let d = prom(&addr, "/api/v1/label/__name__/values")
            .await
            .unwrap_or_default();
        let have: BTreeSet<String> = d
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<_> = wanted.difference(&have).collect();
        panic!("{e}: missing {missing:?}");
    }
    println!("metrics used by the rules and the dashboard, all present: {wanted:?}");
    let alarm = wait_until("TcfUnmarkedWrites fires for A", SOON, || async {
        let a = firing(&addr, "TcfUnmarkedWrites").await;
        a.iter()
            .any(|x| x["labels"]["cluster"] == "A")
            .then_some(())
    })
    .await;
    alarm.expect("the unmarked-write alert");
    assert!(firing(&addr, "TcfReplicationLagHigh").await.is_empty());

    // The workers' lag of B -> A per replicaset is known before its
    // destination stops (the sampler names the replicasets it has seen).
    wait_until("the pair lag of B -> A in Prometheus", SOON, || async {
        let d = prom(
            &addr,
            "/api/v1/query?query=tcf_worker_pair_lag_seconds%7Bfrom%3D%22B%22%2Cto%3D%22A%22%7D",
        )
        .await
        .ok()?;
        (!d["result"].as_array()?.is_empty()).then_some(())
    })
    .await
    .expect("B -> A lag series");
    // The destination of B -> A (the pair that runs now) stops: the lag alert
    // fires for that pair once the lag passed 30 s for 30 s.
    s.d_a
        .process
        .stop()
        .await
        .expect("stop the B -> A destination");
    let fired = wait_until(
        "TcfReplicationLagHigh for B -> A",
        Duration::from_secs(180),
        || async {
            let a = firing(&addr, "TcfReplicationLagHigh").await;
            a.into_iter()
                .find(|x| x["labels"]["from"] == "B" && x["labels"]["to"] == "A")
        },
    )
    .await
    .expect("the lag alert fires");
    println!("fired: {fired}");
    assert!(p.is_running(), "{}", p.log_tail(20));
}
