//! `tcfctl verify` against a live federation: a clean federation verifies
//! with exit 0; B changed behind tcf's back is reported key by key with
//! exit 1; a repair needs the admin role (exit 6 with a toggle token), then
//! fixes B, after which a verify and `--report` exit 0 and A == B.

use std::{path::Path, time::Duration};

use tcf_api::verify::Report;
use tcf_tests::{
    federation::wait_equal,
    gateway::ADMIN_TOKEN,
    tools::{ToolOutput, run, tcfctl},
    verify::corrupt,
    worker::{Paired, TOGGLE_TOKEN},
};

const TOOL: Duration = Duration::from_secs(180);

async fn ctl(workers: &str, token: &Path, args: &[&str]) -> ToolOutput {
    let t = token.display().to_string();
    let mut all = vec!["--worker", workers, "--token-file", t.as_str()];
    all.extend(args);
    let cmd = tcfctl(&all).expect("tcfctl is built");
    let out = run(cmd, TOOL).await.expect("tcfctl runs");
    println!("$ tcfctl {}\n{out}", all.join(" "));
    out
}

#[tokio::test]
async fn serial_tcfctl_verify_reports_differences_and_repair_fixes_them() {
    let p = Paired::start()
        .await
        .expect("clusters, etcd, replicators and workers");
    let a = p.a.master();
    a.eval(
        "for i = 1, 300 do box.space.test:insert{i, 'seed', i} box.space.vtest:insert{i, i} end",
        &[],
    )
    .await
    .expect("seed");
    wait_equal(a, p.b.master(), &["test", "vtest"])
        .await
        .expect("B has the seed");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("token file");
        path
    };
    let (toggle, admin) = (token("toggle", TOGGLE_TOKEN), token("admin", ADMIN_TOKEN));
    // A worker of each cluster: the verify is forwarded to the destination
    // writing the passive cluster whichever answers.
    let workers = format!("http://{},http://{}", p.wb.http_addr, p.wa.http_addr);

    // The walk waits until the destination streams: retried on a refusal.
    let clean = tcf_tests::wait_until(
        "a verify walk to start",
        Duration::from_secs(60),
        || async {
            let o = ctl(&workers, &toggle, &["verify"]).await;
            (o.code != Some(3)).then_some(o)
        },
    )
    .await
    .expect("verify runs");
    assert_eq!(clean.code, Some(0), "a clean federation: {clean}");
    assert!(
        clean.stdout.contains("test") && clean.stdout.contains("vtest"),
        "{clean}"
    );

    corrupt(
        p.b.master(),
        "box.space.test:update(5, {{'=', 2, 'corrupted'}}) box.space.vtest:delete(8) \
         box.space.test:insert{100000, 'extra', 0}",
        &[],
    )
    .await
    .expect("corrupt B");
    let out = ctl(&workers, &toggle, &["verify"]).await;
    assert_eq!(out.code, Some(1), "differences: {out}");
    for line in [
        "test different [5]",
        "vtest missing [8]",
        "test extra [100000]",
    ] {
        assert!(out.stdout.contains(line), "{line:?} in {out}");
    }
    let out = ctl(&workers, &toggle, &["--json", "verify", "--report"]).await;
    assert_eq!(out.code, Some(1), "{out}");
    let report: Report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let walk = report.replicasets["rs1"].as_ref().expect("rs1 walked");
    assert_eq!(walk.mismatches(), 3, "{report:#?}");

    let out = ctl(&workers, &toggle, &["verify", "--repair"]).await;
    assert_eq!(out.code, Some(6), "a repair needs admin: {out}");
    let out = ctl(&workers, &admin, &["verify", "--repair"]).await;
    assert_eq!(out.code, Some(0), "repair: {out}");
    assert!(out.stdout.contains("(repaired)"), "{out}");
    let out = ctl(&workers, &toggle, &["verify"]).await;
    assert_eq!(out.code, Some(0), "after the repair: {out}");
    let out = ctl(&workers, &toggle, &["verify", "--report"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    wait_equal(a, p.b.master(), &["test", "vtest"])
        .await
        .expect("A == B after the repair");
}
