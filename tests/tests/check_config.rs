//! `--check-config` on every binary: the example configs validate, the
//! resolved config is printed without any secret (passwords, tokens, private
//! keys), a bad config exits 2 naming the key; nothing is started.

use std::{path::Path, process::Command, time::Duration};

use tcf_tests::{
    tcf::binary_path,
    tools::{ToolOutput, run, workspace_root},
};

async fn check(dir: &Path, binary: &str, config: &str) -> ToolOutput {
    let mut c = Command::new(binary_path(binary).expect("built"));
    c.args(["--config", config, "--check-config"])
        .current_dir(dir)
        .env_remove("TCF_ADMIN_PASSWORD");
    run(c, Duration::from_secs(30)).await.expect("runs")
}

#[tokio::test]
async fn every_binary_checks_its_config_and_prints_it_without_secrets() {
    tcf_common::tls::install_crypto_provider();
    let root = workspace_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs/dev");
    let dev = tcf_common::devcerts::generate(&certs, &["gateway", "destination"]).expect("certs");
    let examples = dir.path().join("examples");
    std::fs::create_dir_all(examples.join("secrets")).expect("dirs");
    let mut secrets = Vec::new();
    for e in std::fs::read_dir(root.join("examples/secrets")).expect("secrets") {
        let p = e.expect("entry").path();
        let value = std::fs::read_to_string(&p).expect("secret");
        secrets.push(value.trim().to_owned());
        std::fs::copy(
            &p,
            examples.join("secrets").join(p.file_name().expect("name")),
        )
        .expect("copy");
    }
    for f in [
        "a-to-b.yaml",
        "b-to-a.yaml",
        "worker-a.yaml",
        "worker-b.yaml",
    ] {
        std::fs::copy(root.join("examples").join(f), examples.join(f)).expect("copy");
    }
    let mut keys = Vec::new();
    for c in dev.components.iter().chain([&dev.ca]) {
        let pem = std::fs::read_to_string(&c.key).expect("key");
        keys.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned),
        );
    }
    for (binary, config) in [
        ("tcf-gateway", "examples/a-to-b.yaml"),
        ("tcf-destination", "examples/a-to-b.yaml"),
        ("tcf-gateway", "examples/b-to-a.yaml"),
        ("tcf-destination", "examples/b-to-a.yaml"),
        ("tcf-worker", "examples/worker-a.yaml"),
        ("tcf-worker", "examples/worker-b.yaml"),
    ] {
        let out = check(dir.path(), binary, config).await;
        assert_eq!(out.code, Some(0), "{binary} {config}: {out}");
        assert!(
            out.stdout
                .starts_with(&format!("{binary}: config {config} is valid")),
            "{out}"
        );
        assert!(out.stdout.contains("***"), "secrets are masked: {out}");
        for s in secrets.iter().chain(&keys) {
            assert!(
                !out.stdout.contains(s.as_str()),
                "{binary} printed a secret: {out}"
            );
        }
        assert!(!out.stdout.contains("PRIVATE KEY"), "{out}");
    }

    // A typo is an error naming the key; nothing runs.
    let bad = std::fs::read_to_string(examples.join("worker-a.yaml"))
        .expect("read")
        .replace("poll_interval:", "poll_intervall:");
    std::fs::write(examples.join("bad.yaml"), bad).expect("write");
    let out = check(dir.path(), "tcf-worker", "examples/bad.yaml").await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("poll_intervall"), "{out}");
    // A certificate that does not exist is caught by the check too.
    std::fs::remove_file(&dev.ca.cert).expect("rm ca");
    let out = check(dir.path(), "tcf-gateway", "examples/a-to-b.yaml").await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("client_ca_file"), "{out}");
    // Usage.
    let mut c = Command::new(binary_path("tcf-worker").expect("built"));
    c.arg("--check-config");
    let out = run(c, Duration::from_secs(30)).await.expect("runs");
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--check-config"), "{out}");
}
