//! A minimal HTTP/1.1 client for the control APIs between tcf processes
//! (worker -> replicators, worker -> peer workers): one request per
//! connection, bounded by a timeout. `http://` is plain; `https://` is TLS,
//! trusting only the CA given to [`request_with`] or installed once for the
//! process with [`set_https_roots`] (no system roots).

use std::{
    sync::{PoisonError, RwLock},
    time::Duration,
};

use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::https::HttpsRoots;

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
    /// Not `http(s)://host:port[/]`.
    #[error("bad URL {0}")]
    Url(String),
    /// Connect, TLS handshake, write or read failed.
    #[error("{addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No complete answer in time (the limit bounds connect, TLS handshake,
    /// request and response together).
    #[error("{addr}: {step} not complete within {after:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// What was under way: `TCP connect`, `TLS handshake` or `request`.
        step: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The answer is not HTTP.
    #[error("{addr}: malformed response")]
    Malformed {
        /// `host:port`.
        addr: String,
    },
    /// An `https://` URL, but no CA to trust was configured.
    #[error("{addr}: https needs a trusted CA (configure http_client.ca_file)")]
    NoTrustedCa {
        /// `host:port`.
        addr: String,
    },
}

/// The steps of a request, for [`HttpClientError::Timeout`].
const STEPS: [&str; 3] = ["TCP connect", "TLS handshake", "request"];

static HTTPS_ROOTS: RwLock<Option<HttpsRoots>> = RwLock::new(None);

/// Sets the CA that [`request`] trusts for `https://` URLs, for the whole
/// process (replacing any earlier one). Without it, `https://` requests fail
/// with [`HttpClientError::NoTrustedCa`].
pub fn set_https_roots(roots: HttpsRoots) {
    *HTTPS_ROOTS.write().unwrap_or_else(PoisonError::into_inner) = Some(roots);
}

/// `host:port` of an `http://host:port` or `https://host:port` base URL (a
/// bare `host:port` is accepted, as plain HTTP).
pub fn authority(base: &str) -> Result<&str, HttpClientError> {
    Ok(target(base)?.1)
}

/// (TLS?, `host:port`).
fn target(base: &str) -> Result<(bool, &str), HttpClientError> {
    let (tls, rest) = match base.strip_prefix("https://") {
        Some(rest) => (true, rest),
        None => (false, base.strip_prefix("http://").unwrap_or(base)),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
        return Err(HttpClientError::Url(base.to_owned()));
    }
    Ok((tls, rest))
}

/// Sends `method path` to `base` (`http(s)://host:port`), with an optional
/// bearer token and JSON body. `https://` trusts the CA set with
/// [`set_https_roots`].
pub async fn request(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, HttpClientError> {
    let roots = HTTPS_ROOTS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    request_with(roots.as_ref(), method, base, path, token, body, timeout).await
}

/// [`request`] with an explicit CA for `https://` (`None`: https fails).
/// The server certificate must chain to it and name the URL's host (DNS
/// name or IP address).
pub async fn request_with(
    roots: Option<&HttpsRoots>,
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, HttpClientError> {
    let (tls, addr) = target(base)?;
    let addr = addr.to_owned();
    let io = |source| HttpClientError::Io {
        addr: addr.clone(),
        source,
    };
    let connector = match (tls, roots) {
        (false, _) => None,
        (true, Some(r)) => Some(TlsConnector::from(r.client_config())),
        (true, None) => return Err(HttpClientError::NoTrustedCa { addr }),
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    // What the timeout interrupted (an index into STEPS).
    let step = std::sync::atomic::AtomicUsize::new(0);
    let set = |i: usize| step.store(i, std::sync::atomic::Ordering::Relaxed);
    let work = async {
        let tcp = TcpStream::connect(&addr).await.map_err(io)?;
        let raw = match connector {
            None => {
                set(2);
                exchange(tcp, &req).await
            }
            Some(c) => {
                set(1);
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
                let stream = c.connect(name, tcp).await.map_err(io)?;
                set(2);
                exchange(stream, &req).await
            }
        }
        .map_err(io)?;
        parse(&String::from_utf8_lossy(&raw))
            .ok_or_else(|| HttpClientError::Malformed { addr: addr.clone() })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpClientError::Timeout {
            addr: addr.clone(),
            step: STEPS
                .get(step.load(std::sync::atomic::Ordering::Relaxed))
                .copied()
                .unwrap_or("request"),
            after: timeout,
        })?
}

/// Writes `req`, reads until the server closes. A TLS peer that closes
/// without `close_notify` after answering is accepted.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &str,
) -> std::io::Result<Vec<u8>> {
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e),
    }
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
        assert_eq!(target("https://[::1]:8443").unwrap(), (true, "[::1]:8443"));
        assert_eq!(target("10.0.0.1:80").unwrap(), (false, "10.0.0.1:80"));
    }
}
