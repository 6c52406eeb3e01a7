//! Online verification for tests (`docs/verify.md`): starting a walk on a
//! destination or a worker, reading its report (typed, `tcf_api::verify`),
//! waiting until a walk is done, and corrupting a target on purpose.

use std::time::Duration;

use anyhow::{Context, bail};
use rmpv::Value;
use tcf_api::verify::{Report, WalkMode, WalkRequest, WalkStarted};

use crate::{
    Outcome, Tarantool,
    federation::RunningDestination,
    gateway::{ADMIN_TOKEN, INFO_TOKEN},
    http, wait_until,
};

/// How long a walk of a test federation may take.
pub const WALK_DEADLINE: Duration = Duration::from_secs(180);

/// A walk request of `mode` over every replicated space, paced for tests.
pub fn request(mode: WalkMode) -> WalkRequest {
    WalkRequest {
        mode,
        spaces: Vec::new(),
        chunk_rows: Some(50),
        rows_per_second: Some(200_000),
    }
}

impl RunningDestination {
    /// `POST /api/v1/verify` with the admin token; the walk's id.
    pub async fn start_walk(&self, req: &WalkRequest) -> anyhow::Result<String> {
        let body = serde_json::to_string(req)?;
        let r = http::request(
            "POST",
            &self.http_addr,
            "/api/v1/verify",
            Some(ADMIN_TOKEN),
            Some(&body),
        )
        .await?;
        if r.status != 200 {
            bail!("POST /api/v1/verify answered {}: {}", r.status, r.body);
        }
        let started: WalkStarted = serde_json::from_str(&r.body)?;
        if let Some((rs, Some(why))) = started.replicasets.iter().find(|(_, e)| e.is_some()) {
            bail!("the walk did not start on {rs}: {why}");
        }
        Ok(started.walk)
    }

    /// [`RunningDestination::start_walk`], retried until every replicaset
    /// streams and takes it.
    pub async fn start_walk_when_ready(&self, req: &WalkRequest) -> anyhow::Result<String> {
        wait_until("a walk to start", crate::DEFAULT_DEADLINE, || async {
            match self.start_walk(req).await {
                Ok(w) => Outcome::Ready(w),
                Err(e) => Outcome::Pending(format!("{e:#}")),
            }
        })
        .await
    }

    /// `GET /api/v1/verify`.
    pub async fn report(&self) -> anyhow::Result<Report> {
        let r = http::request(
            "GET",
            &self.http_addr,
            "/api/v1/verify",
            Some(INFO_TOKEN),
            None,
        )
        .await?;
        if r.status != 200 {
            bail!("GET /api/v1/verify answered {}: {}", r.status, r.body);
        }
        serde_json::from_str(&r.body).with_context(|| format!("report: {}", r.body))
    }

    /// Waits until walk `walk` is done on every replicaset; its report.
    pub async fn wait_walk(&self, walk: &str) -> anyhow::Result<Report> {
        let what = format!("walk {walk} to be done");
        wait_until(&what, WALK_DEADLINE, || async {
            match self.report().await {
                Ok(r) if r.done(walk) => Outcome::Ready(r),
                Ok(r) => Outcome::Pending(format!(
                    "{:?}",
                    r.replicasets
                        .values()
                        .map(|w| w.as_ref().map(|w| (
                            w.walk.clone(),
                            w.state,
                            w.seq,
                            w.current_space.clone()
                        )))
                        .collect::<Vec<_>>()
                )),
                Err(e) => Outcome::Pending(format!("{e:#}")),
            }
        })
        .await
    }
}

/// The keys (`[id]` as JSON) a report lists for `space` on `rs`, sorted,
/// with their kinds.
pub fn keys(report: &Report, rs: &str, space: &str) -> Vec<(serde_json::Value, String)> {
    let mut out: Vec<(serde_json::Value, String)> = report
        .replicasets
        .get(rs)
        .and_then(Option::as_ref)
        .and_then(|w| w.by_space.get(space))
        .map(|s| {
            s.keys
                .iter()
                .map(|k| {
                    let kind = serde_json::to_value(k.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    (k.key.clone(), kind)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|(k, kind)| format!("{k}{kind}"));
    out
}

/// Mismatches of every space of every replicaset.
pub fn mismatches(report: &Report) -> u64 {
    report
        .replicasets
        .values()
        .flatten()
        .map(tcf_api::verify::WalkReport::mismatches)
        .sum()
}

/// Writes on `t` as its administrator, bypassing tcf (what an operator's
/// mistake or a broken disk would leave): `lua` runs with `args`.
pub async fn corrupt(t: &Tarantool, lua: &str, args: &[Value]) -> anyhow::Result<()> {
    t.eval(lua, args).await.context("corrupting the target")?;
    Ok(())
}

/// `request(mode)` as a `POST` body.
pub fn body(mode: WalkMode) -> String {
    serde_json::to_string(&request(mode)).unwrap_or_default()
}
