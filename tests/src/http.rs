//! A minimal HTTP/1.1 client for tests: one request per connection, on
//! loopback, bounded by a timeout. Enough for etcd's `/health` and the tcf
//! control APIs; no TLS.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// An HTTP response: status code and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body as text (chunked transfer encoding is decoded).
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// Sends `method path` to `addr` (`host:port`) with an optional bearer token
/// and JSON body; waits at most 10 s.
pub async fn request(
    method: &str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        parse(&String::from_utf8_lossy(&buf))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .with_context(|| format!("{method} {path} on {addr} timed out"))?
        .with_context(|| format!("{method} {path} on {addr}"))
}

/// `GET` without a token.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<HttpResponse> {
    request("GET", addr, path, None, None).await
}

fn parse(raw: &str) -> anyhow::Result<HttpResponse> {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        bail!("no header end: {raw}")
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else {
            bail!("bad chunk")
        };
        let n = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..n).context("short chunk")?;
        out.push_str(chunk);
        body = rest.get(n + 2..).unwrap_or("");
    }
}
