//! HTTP for tests: tcf's own minimal client (`tcf_common::http_client`)
//! with a 10 s limit and `anyhow` errors.

use std::time::Duration;

use anyhow::Context;
pub use tcf_common::http_client::HttpResponse;

/// Sends `method path` to `addr` (`host:port`) with an optional bearer token
/// and JSON body.
pub async fn request(
    method: &str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    tcf_common::http_client::request(method, addr, path, token, body, Duration::from_secs(10))
        .await
        .with_context(|| format!("{method} {path} on {addr}"))
}

/// [`request`] with an explicit time limit (a switchover waits for its outcome).
pub async fn request_within(
    method: &str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    limit: Duration,
) -> anyhow::Result<HttpResponse> {
    tcf_common::http_client::request(method, addr, path, token, None, limit)
        .await
        .with_context(|| format!("{method} {path} on {addr}"))
}

/// `GET` without a token.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<HttpResponse> {
    request("GET", addr, path, None, None).await
}

/// The body parsed as JSON.
pub fn json(r: &HttpResponse) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(&r.body).with_context(|| format!("not JSON: {}", r.body))
}
