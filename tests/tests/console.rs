//! The web console in Debian's headless Chromium (driven by
//! `tests/console/drive.mjs` with playwright-core; no browser download)
//! against a live federation: the page shows the state, a wrong token is
//! refused, a switchover clicked on the page flips the roles. Each step's
//! screenshot is kept in `target/console-screenshots/`.

use std::{process::Command, time::Duration};

use tcf_tests::{
    gateway::INFO_TOKEN,
    tools::{run, target_dir, workspace_root},
    worker::{Paired, PairedOptions, TOGGLE_TOKEN},
};

const SOON: Duration = Duration::from_secs(60);

#[tokio::test]
async fn serial_the_console_shows_the_state_refuses_a_wrong_token_and_switches_over() {
    let dir = workspace_root().join("tests/console");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/console` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).is_file(),
        "{chromium} missing: install Debian's chromium (scripts/test.sh does)"
    );
    let s = Paired::start_with(PairedOptions {
        coordinator: true,
        ..PairedOptions::default()
    })
    .await
    .expect("clusters, etcd, replicators and workers");
    s.wa.wait_is_active(200, SOON).await.expect("A active");
    s.wb.wait_is_active(418, SOON).await.expect("B passive");

    let shots = target_dir()
        .expect("target dir")
        .join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let profile = tempfile::tempdir().expect("profile dir");
    let mut node = Command::new("node");
    node.arg("drive.mjs")
        .current_dir(&dir)
        .env(
            "CONSOLE_URL",
            format!("http://{}/tcf/console", s.wa.http_addr),
        )
        .env("INFO_TOKEN", INFO_TOKEN)
        .env("TOGGLE_TOKEN", TOGGLE_TOKEN)
        .env("SHOTS_DIR", &shots)
        .env("PROFILE_DIR", profile.path())
        .env("CHROMIUM", &chromium);
    let out = run(node, Duration::from_secs(300))
        .await
        .expect("node runs");
    println!("{}", out.stdout);
    assert_eq!(out.code, Some(0), "the console test failed:\n{out}");
    let taken: Vec<_> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("screenshot: "))
        .collect();
    assert_eq!(taken.len(), 5, "{out}");
    for t in &taken {
        let len = std::fs::metadata(t).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{t}: {len} bytes");
    }

    // The click switched the federation, not just the page.
    s.wb.wait_is_active(200, SOON).await.expect("B active");
    s.wa.wait_is_active(418, SOON).await.expect("A passive");
    let info = s.wa.info().await.expect("info");
    assert_eq!(info["term"], 1, "{info}");
    assert_eq!(info["history"][0]["kind"], "switchover", "{info}");
    assert!(
        info["history"][0]["by"]
            .as_str()
            .is_some_and(|b| b.contains("role toggle")),
        "{info}"
    );
}
