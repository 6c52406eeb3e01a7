//! HTTP over TLS: serving an axum router over HTTPS (server certificate
//! only, no client certificates), and the CA that `https://` requests of
//! [`crate::http_client`] trust.
//!
//! Files are checked when the config is loaded, as in [`crate::tls`]: a bad
//! certificate or key is a config error (exit status 2) naming the key and
//! the file. Crypto is rustls with the `ring` provider only.

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::Router;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{config::ConfigError, http::HttpError, listen::HttpLimits};

/// `http_server.tls` of a config: the server's certificate and key, PEM.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    /// The server's certificate (leaf first, then intermediates).
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A checked [`HttpTls`], ready to serve with [`serve_listener`].
#[derive(Clone)]
pub struct HttpsServer {
    config: Arc<ServerConfig>,
    /// Identities of the server certificate ([`crate::tls::peer_identities`]).
    pub identities: Vec<String>,
}

impl fmt::Debug for HttpsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsServer")
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads and checks the HTTPS server identity configured at `key` (a dotted
/// path such as `worker.http_server.tls`).
///
/// Fails, naming `KEY.cert_file` or `KEY.key_file` and the file, when a file
/// is missing or unreadable, not PEM, holds no certificate (or no private
/// key), a certificate is not valid X.509 or is outside its validity period,
/// or the key is unusable or does not match the certificate. The server
/// speaks TLS 1.2 and 1.3 with ALPN `http/1.1` and asks for no client
/// certificate.
pub fn server(key: &str, cfg: &HttpTls) -> Result<HttpsServer, ConfigError> {
    let (cert_pem, key_pem, identities) =
        crate::tls::load_identity(key, &cfg.cert_file, &cfg.key_file, "server")?;
    let cert_key = format!("{key}.cert_file");
    let key_key = format!("{key}.key_file");
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::invalid(&cert_key, format!("{}: {e}", cfg.cert_file.display()))
        })?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ConfigError::invalid(&key_key, format!("{}: {e}", cfg.key_file.display())))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private_key))
        .map_err(|e| {
            ConfigError::invalid(
                &key_key,
                format!(
                    "{} with {}: unusable: {e}",
                    cfg.key_file.display(),
                    cfg.cert_file.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(HttpsServer {
        config: Arc::new(config),
        identities,
    })
}

/// The CA(s) that servers of `https://` URLs must chain to (no system
/// roots). Checked when loaded, like [`server`].
#[derive(Clone)]
pub struct HttpsRoots {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for HttpsRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsRoots").finish_non_exhaustive()
    }
}

impl HttpsRoots {
    /// Loads the PEM CA bundle `ca_file` configured at `key` (named in
    /// errors): the file must be readable, hold at least one valid, current
    /// X.509 certificate, and each must be usable as a trust anchor.
    pub fn load(key: &str, ca_file: &Path) -> Result<Self, ConfigError> {
        let pem = crate::tls::load_ca(key, ca_file)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            roots
                .add(cert)
                .map_err(|e| ConfigError::invalid(key, format!("{}: {e}", ca_file.display())))?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::invalid(key, e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The rustls client config (these roots, no client certificate).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }
}

/// Serves `router` on `listener` until `shutdown` completes, like
/// [`crate::http::serve_listener`]: over TLS when `tls` is given, plain HTTP
/// otherwise. Handlers may use `ConnectInfo<SocketAddr>` in both cases.
///
/// With TLS, handshakes run concurrently, each bounded by 10 s and holding
/// a place under the connection cap; a client that fails its handshake (for
/// example one speaking plain HTTP) is dropped and logged at `debug`, and
/// the server keeps serving. Limits and shutdown: [`HttpLimits::DEFAULT`],
/// see [`crate::listen`].
pub async fn serve_listener(
    listener: TcpListener,
    tls: Option<&HttpsServer>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    serve_listener_with(listener, tls, router, HttpLimits::DEFAULT, shutdown).await
}

/// [`serve_listener`] with explicit limits (tests use small ones).
pub async fn serve_listener_with(
    listener: TcpListener,
    tls: Option<&HttpsServer>,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    if let Some(tls) = tls {
        tracing::info!(identities = ?tls.identities, "serving HTTPS");
    }
    let acceptor = tls.map(|t| TlsAcceptor::from(Arc::clone(&t.config)));
    crate::listen::serve_http(listener, acceptor, router, limits, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{devcerts, http_client};
    use axum::routing::get;
    use std::{net::SocketAddr, time::Duration};

    #[tokio::test]
    async fn serves_https_to_clients_trusting_the_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let certs = devcerts::generate(dir.path(), &["worker"]).unwrap();
        let tls = server(
            "w.tls",
            &HttpTls {
                cert_file: certs.components[0].cert.clone(),
                key_file: certs.components[0].key.clone(),
            },
        )
        .unwrap();
        let roots = HttpsRoots::load("w.ca_file", &certs.ca.cert).unwrap();
        let listener = crate::http::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let router = Router::new().route("/x", get(|| async { "ok" }));
        let server = tokio::spawn({
            let stop = stop.clone();
            async move { serve_listener(listener, Some(&tls), router, stop.cancelled_owned()).await }
        });
        let limit = Duration::from_secs(5);
        let https = format!("https://{addr}");
        let r = http_client::request_with(Some(&roots), "GET", &https, "/x", None, None, limit)
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let localhost = format!("https://localhost:{}", addr.port());
        let r = http_client::request_with(Some(&roots), "GET", &localhost, "/x", None, None, limit)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        // Plain HTTP, and https without a trusted CA, fail; the server survives them.
        let plain = format!("http://{addr}");
        assert!(
            http_client::request_with(None, "GET", &plain, "/x", None, None, limit)
                .await
                .is_err()
        );
        let e = http_client::request_with(None, "GET", &https, "/x", None, None, limit)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("ca_file"), "{e}");
        devcerts::generate_foreign_ca_client(dir.path(), "other").unwrap();
        let other = HttpsRoots::load("k", &dir.path().join("foreign-ca.pem")).unwrap();
        assert!(
            http_client::request_with(Some(&other), "GET", &https, "/x", None, None, limit)
                .await
                .is_err()
        );
        let r = http_client::request_with(Some(&roots), "GET", &https, "/x", None, None, limit)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn bad_files_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let certs = devcerts::generate(dir.path(), &["worker", "other"]).unwrap();
        let missing = dir.path().join("nope.pem");
        let e = server(
            "worker.http_server.tls",
            &HttpTls {
                cert_file: certs.components[0].cert.clone(),
                key_file: missing.clone(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("worker.http_server.tls.key_file"), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let e = server(
            "t",
            &HttpTls {
                cert_file: certs.components[0].cert.clone(),
                key_file: certs.components[1].key.clone(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t.key_file") && e.contains("does not match"),
            "{e}"
        );
        let e = HttpsRoots::load("w.http_client.ca_file", &missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.http_client.ca_file"), "{e}");
    }
}
