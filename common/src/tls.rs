//! Mutual-TLS setup for the gRPC stream: config structs, loading and
//! checking the PEM files, and client identities.
//!
//! Files are checked when the config is loaded, so that a bad certificate is
//! a config error (exit status 2) naming the key and the file, not a TLS
//! handshake failure later. Crypto is `ring` only (see
//! [`install_crypto_provider`]).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
    sign::CertifiedKey,
};
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

use crate::config::ConfigError;

/// Server side of mutual TLS (the gateway's `grpc_server.tls`). All three
/// files are PEM. Client certificates are mandatory: only clients whose
/// certificate chains to `client_ca_file` can connect.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The server's certificate (leaf first, then intermediates).
    pub cert_file: PathBuf,
    /// The server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA(s) that client certificates must chain to.
    pub client_ca_file: PathBuf,
}

/// Client side of mutual TLS (the destination's connection to a gateway).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The CA(s) the server certificate must chain to.
    pub ca_file: PathBuf,
    /// The client's certificate (leaf first).
    pub cert_file: PathBuf,
    /// The client certificate's private key.
    pub key_file: PathBuf,
    /// The name to verify the server certificate against; default: the host
    /// of the URI being connected to.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A checked [`ServerTls`]: the tonic config, the equivalent rustls config
/// and the raw PEMs.
#[derive(Clone)]
pub struct LoadedServerTls {
    /// Identity + `client_ca_root`: client certificates are mandatory.
    pub config: ServerTlsConfig,
    /// The same as a rustls server config (client certificates mandatory,
    /// chaining to the client CA; ALPN `h2`), for serving through
    /// [`crate::listen::tls_incoming`] with a bounded handshake.
    pub rustls: Arc<ServerConfig>,
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM (not printed by `Debug`).
    pub key_pem: Vec<u8>,
    /// The client CA(s), PEM.
    pub client_ca_pem: Vec<u8>,
    /// Identities of the server certificate ([`peer_identities`]), for logs.
    pub identities: Vec<String>,
}

impl fmt::Debug for LoadedServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedServerTls")
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

/// A checked [`ClientTls`]: the tonic config plus the raw PEMs.
#[derive(Clone)]
pub struct LoadedClientTls {
    /// CA certificate, identity and (when configured) domain name.
    pub config: ClientTlsConfig,
    /// The CA(s), PEM.
    pub ca_pem: Vec<u8>,
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM (not printed by `Debug`).
    pub key_pem: Vec<u8>,
    /// Identities of the client certificate ([`peer_identities`]), for logs.
    pub identities: Vec<String>,
}

impl fmt::Debug for LoadedClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedClientTls")
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

/// Installs rustls's `ring` provider as the process default. Call it first
/// in every `main` (and in tests that build TLS configs); calling it again
/// is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is installed already: fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads and checks the server side of mutual TLS configured at `key` (a
/// dotted path such as `gateway.grpc_server.tls`, used in errors).
///
/// Fails, naming `KEY.cert_file` / `KEY.key_file` / `KEY.client_ca_file` and
/// the file, when a file is unreadable, not PEM, holds no certificate (or no
/// private key), a certificate is not valid X.509 or is outside its validity
/// period, the key is unusable or does not match the certificate, or the CA
/// is not usable as a trust anchor.
pub fn server_tls(key: &str, cfg: &ServerTls) -> Result<LoadedServerTls, ConfigError> {
    let (cert_pem, key_pem, identities) =
        load_identity(key, &cfg.cert_file, &cfg.key_file, "server")?;
    let ca_key = format!("{key}.client_ca_file");
    let client_ca_pem = load_ca(&ca_key, &cfg.client_ca_file)?;
    let config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&cert_pem, &key_pem))
        .client_ca_root(Certificate::from_pem(&client_ca_pem));
    let rustls = rustls_server(key, cfg, &cert_pem, &key_pem, &client_ca_pem)?;
    Ok(LoadedServerTls {
        config,
        rustls,
        cert_pem,
        key_pem,
        client_ca_pem,
        identities,
    })
}

/// The rustls server config of [`LoadedServerTls::rustls`]: what tonic builds
/// from a [`ServerTlsConfig`] with a client CA (TLS 1.2 and 1.3, client
/// certificates required, ALPN `h2`), ring provider.
fn rustls_server(
    key: &str,
    cfg: &ServerTls,
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = format!("{key}.client_ca_file");
    let key_key = format!("{key}.key_file");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem).flatten() {
        roots.add(cert).map_err(|e| {
            ConfigError::invalid(&ca_key, format!("{}: {e}", cfg.client_ca_file.display()))
        })?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| {
                ConfigError::invalid(&ca_key, format!("{}: {e}", cfg.client_ca_file.display()))
            })?;
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::invalid(
                format!("{key}.cert_file"),
                format!("{}: {e}", cfg.cert_file.display()),
            )
        })?;
    let private_key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| ConfigError::invalid(&key_key, format!("{}: {e}", cfg.key_file.display())))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(chain, private_key)
        })
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
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Loads and checks the client side of mutual TLS configured at `key`, with
/// the same checks as [`server_tls`]. The returned config trusts only
/// `ca_file` (no system roots) and presents the client certificate.
pub fn client_tls(key: &str, cfg: &ClientTls) -> Result<LoadedClientTls, ConfigError> {
    let (cert_pem, key_pem, identities) =
        load_identity(key, &cfg.cert_file, &cfg.key_file, "client")?;
    let ca_pem = load_ca(&format!("{key}.ca_file"), &cfg.ca_file)?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .identity(Identity::from_pem(&cert_pem, &key_pem));
    if let Some(name) = &cfg.server_name {
        if name.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.server_name"),
                "must not be empty",
            ));
        }
        config = config.domain_name(name.clone());
    }
    Ok(LoadedClientTls {
        config,
        ca_pem,
        cert_pem,
        key_pem,
        identities,
    })
}

/// The identities of a certificate (DER): the subject common name(s), then
/// every DNS and URI subject alternative name, without duplicates, in that
/// order. Empty when the certificate cannot be parsed.
///
/// The gateway compares these with its `allowed_clients` list for the first
/// certificate of `request.peer_certs()` (see [`allowed_identity`]).
pub fn peer_identities(cert_der: &[u8]) -> Vec<String> {
    match x509_parser::parse_x509_certificate(cert_der) {
        Ok((_, cert)) => identities_of(&cert),
        Err(_) => Vec::new(),
    }
}

/// The first identity of the certificate `cert_der` ([`peer_identities`])
/// that appears in `allowed`, or `None` when the client is not allowed.
pub fn allowed_identity(cert_der: &[u8], allowed: &[String]) -> Option<String> {
    peer_identities(cert_der)
        .into_iter()
        .find(|id| allowed.iter().any(|a| a == id))
}

fn identities_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    };
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            push(s);
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) => push(s),
                _ => {}
            }
        }
    }
    out
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// Parses every certificate of a PEM file and checks each is valid X.509
/// within its validity period.
fn parse_certs(
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bad = |what: String| ConfigError::invalid(key, format!("{}: {what}", path.display()));
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "no certificate (expected a PEM 'BEGIN CERTIFICATE' block)".into(),
        ));
    }
    for (i, der) in certs.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| bad(format!("certificate #{} is not valid X.509: {e}", i + 1)))?;
        let validity = cert.validity();
        if !validity.is_valid() {
            return Err(bad(format!(
                "certificate #{} ({}) is valid only from {} to {}",
                i + 1,
                cert.subject(),
                validity.not_before,
                validity.not_after
            )));
        }
    }
    Ok(certs)
}

/// (cert PEM, key PEM, leaf identities).
type LoadedIdentity = (Vec<u8>, Vec<u8>, Vec<String>);

/// Reads and cross-checks a certificate chain and its private key.
pub(crate) fn load_identity(
    key: &str,
    cert_file: &Path,
    key_file: &Path,
    role: &str,
) -> Result<LoadedIdentity, ConfigError> {
    let cert_key = format!("{key}.cert_file");
    let key_key = format!("{key}.key_file");
    let cert_pem = read(&cert_key, cert_file)?;
    let chain = parse_certs(&cert_key, cert_file, &cert_pem)?;
    let key_pem = read(&key_key, key_file)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key (expected a PEM 'BEGIN PRIVATE KEY' block)".to_owned()
            }
            other => format!("not a valid PEM private key ({other})"),
        };
        ConfigError::invalid(&key_key, format!("{}: {why}", key_file.display()))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| {
            ConfigError::invalid(
                &key_key,
                format!("{}: unusable private key: {e}", key_file.display()),
            )
        })?;
    let identities = chain
        .first()
        .map(|leaf| peer_identities(leaf))
        .unwrap_or_default();
    let certified = CertifiedKey::new(chain, Arc::clone(&signing_key));
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(ConfigError::invalid(
                &key_key,
                format!(
                    "{}: private key does not match the {role} certificate {}",
                    key_file.display(),
                    cert_file.display()
                ),
            ));
        }
        Err(e) => {
            return Err(ConfigError::invalid(
                &cert_key,
                format!("{}: unusable certificate: {e}", cert_file.display()),
            ));
        }
    }
    Ok((cert_pem, key_pem, identities))
}

/// Reads a CA bundle and checks every certificate is a usable trust anchor.
pub(crate) fn load_ca(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read(key, path)?;
    let certs = parse_certs(key, path, &pem)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            ConfigError::invalid(
                key,
                format!(
                    "{}: certificate #{} is not usable as a CA: {e}",
                    path.display(),
                    i + 1
                ),
            )
        })?;
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devcerts;

    fn server_cfg(certs: &devcerts::DevCerts, cert: usize, key: usize) -> ServerTls {
        ServerTls {
            cert_file: certs.components[cert].cert.clone(),
            key_file: certs.components[key].key.clone(),
            client_ca_file: certs.ca.cert.clone(),
        }
    }

    #[test]
    fn loads_generated_server_and_client_certs() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let certs = devcerts::generate(dir.path(), &["gateway", "destination"]).unwrap();
        let server = server_tls("gateway.grpc_server.tls", &server_cfg(&certs, 0, 0)).unwrap();
        assert_eq!(server.identities, ["gateway", "localhost"]);
        assert!(!format!("{server:?}").contains("PRIVATE"));
        let client = client_tls(
            "destination.gateways[0].tls",
            &ClientTls {
                ca_file: certs.ca.cert.clone(),
                cert_file: certs.components[1].cert.clone(),
                key_file: certs.components[1].key.clone(),
                server_name: Some("gateway".into()),
            },
        )
        .unwrap();
        assert_eq!(client.identities, ["destination", "localhost"]);
    }

    #[test]
    fn mismatched_key_is_refused_naming_key_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let certs = devcerts::generate(dir.path(), &["a", "b"]).unwrap();
        let cfg = server_cfg(&certs, 0, 1);
        let e = server_tls("gateway.grpc_server.tls", &cfg).unwrap_err();
        assert_eq!(e.key(), Some("gateway.grpc_server.tls.key_file"));
        assert_eq!(
            e.to_string(),
            format!(
                "config: gateway.grpc_server.tls.key_file: {}: private key does not match \
                 the server certificate {}",
                cfg.key_file.display(),
                cfg.cert_file.display()
            )
        );
    }

    #[test]
    fn unreadable_and_malformed_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let certs = devcerts::generate(dir.path(), &["a"]).unwrap();
        let key = "gateway.grpc_server.tls";

        let mut cfg = server_cfg(&certs, 0, 0);
        cfg.cert_file = dir.path().join("missing.pem");
        let e = server_tls(key, &cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("config: gateway.grpc_server.tls.cert_file: cannot read "),
            "{e}"
        );
        assert!(e.contains("missing.pem"), "{e}");

        // A key file given as the certificate: no certificate in it.
        let mut cfg = server_cfg(&certs, 0, 0);
        cfg.cert_file = certs.components[0].key.clone();
        let e = server_tls(key, &cfg).unwrap_err().to_string();
        assert!(
            e.contains(".cert_file: ") && e.contains("no certificate"),
            "{e}"
        );

        // A certificate given as the key: no private key in it.
        let mut cfg = server_cfg(&certs, 0, 0);
        cfg.key_file = certs.components[0].cert.clone();
        let e = server_tls(key, &cfg).unwrap_err().to_string();
        assert!(
            e.contains(".key_file: ") && e.contains("no private key"),
            "{e}"
        );

        // Garbage inside a PEM block.
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let mut cfg = server_cfg(&certs, 0, 0);
        cfg.client_ca_file = bad.clone();
        let e = server_tls(key, &cfg).unwrap_err();
        assert_eq!(e.key(), Some("gateway.grpc_server.tls.client_ca_file"));
        assert!(e.to_string().contains("not valid X.509"), "{e}");

        // Not PEM at all.
        std::fs::write(&bad, "hello\n").unwrap();
        let e = server_tls(key, &cfg).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let e = server_tls(key, &cfg).unwrap_err().to_string();
        assert!(e.contains("not valid PEM"), "{e}");
    }

    #[test]
    fn peer_identities_of_generated_cert() {
        let dir = tempfile::tempdir().unwrap();
        let certs = devcerts::generate(dir.path(), &["destination"]).unwrap();
        let pem = std::fs::read(&certs.components[0].cert).unwrap();
        let der = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(peer_identities(&der), ["destination", "localhost"]);
        let allowed = vec!["worker".to_owned(), "destination".to_owned()];
        assert_eq!(
            allowed_identity(&der, &allowed).as_deref(),
            Some("destination")
        );
        assert_eq!(allowed_identity(&der, &["gateway".to_owned()]), None);
        assert!(peer_identities(b"not der").is_empty());
    }

    #[test]
    fn foreign_client_cert_loads_but_has_another_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let certs = devcerts::generate(dir.path(), &["gateway"]).unwrap();
        let foreign = devcerts::generate_foreign_ca_client(dir.path(), "intruder").unwrap();
        assert!(dir.path().join("foreign-ca.pem").exists());
        let ours = std::fs::read_to_string(&certs.ca.cert).unwrap();
        let theirs = std::fs::read_to_string(dir.path().join("foreign-ca.pem")).unwrap();
        assert_ne!(ours, theirs);
        // It is a well-formed identity on its own.
        client_tls(
            "k",
            &ClientTls {
                ca_file: certs.ca.cert,
                cert_file: foreign.cert,
                key_file: foreign.key,
                server_name: None,
            },
        )
        .unwrap();
    }
}
