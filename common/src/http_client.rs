//! A minimal HTTP/1.1 client for the control APIs between tcf processes
//! (worker -> replicators, worker -> peer workers): one request per
//! connection, plain HTTP, bounded by a timeout.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// An HTTP response: status code and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body as text (chunked transfer encoding decoded).
    pub body: String,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// Not `http://host:port[/]`.
    #[error("bad URL {0}")]
    Url(String),
    /// Connect, write or read failed.
    #[error("{addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No complete answer in time.
    #[error("{addr}: no answer within {after:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The limit.
        after: Duration,
    },
    /// The answer is not HTTP.
    #[error("{addr}: malformed response")]
    Malformed {
        /// `host:port`.
        addr: String,
    },
}

/// `host:port` of an `http://host:port` base URL (a bare `host:port` is accepted).
pub fn authority(base: &str) -> Result<&str, HttpClientError> {
    let rest = base
        .strip_prefix("http://")
        .unwrap_or(base)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(HttpClientError::Url(base.to_owned()));
    }
    Ok(rest)
}

/// Sends `method path` to `base` (`http://host:port`), with an optional
/// bearer token and JSON body.
pub async fn request(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, HttpClientError> {
    let addr = authority(base)?.to_owned();
    let io = |source| HttpClientError::Io {
        addr: addr.clone(),
        source,
    };
    let work = async {
        let mut s = TcpStream::connect(&addr).await.map_err(io)?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(io)?;
        parse(&String::from_utf8_lossy(&buf))
            .ok_or_else(|| HttpClientError::Malformed { addr: addr.clone() })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpClientError::Timeout {
            addr: addr.clone(),
            after: timeout,
        })?
}

fn parse(raw: &str) -> Option<HttpResponse> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some(HttpResponse { status, body })
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n + 2..).unwrap_or("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let r = parse("HTTP/1.1 418 I'm a teapot\r\ncontent-length: 7\r\n\r\npassive").unwrap();
        assert_eq!((r.status, r.body.as_str()), (418, "passive"));
        let r = parse(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, "abcde");
        assert_eq!(
            authority("http://127.0.0.1:8081/").unwrap(),
            "127.0.0.1:8081"
        );
        assert!(authority("http://host/path").is_err());
    }
}
