//! Development and test certificates (feature `devcerts`, rcgen with ring).
//!
//! [`generate`] writes a CA and one certificate per component into a
//! directory; the `tcf-certs` binary is its command line. The certificates
//! are for development and tests only: the CA key sits next to them.
//!
//! Files, all PEM:
//!
//! | file | content |
//! | --- | --- |
//! | `ca.pem`, `ca-key.pem` | the CA (CN `tcf dev CA`) and its key |
//! | `NAME.pem`, `NAME-key.pem` | CN=`NAME`; SAN DNS `NAME`, DNS `localhost`, IP `127.0.0.1`; EKU serverAuth + clientAuth (etcd's gateway needs both) |
//!
//! Private keys are ECDSA P-256, written with mode 0600 on Unix.

use std::{
    fs,
    io::Write,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// Why certificates could not be generated or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevCertsError {
    /// rcgen refused the parameters (e.g. a name that is not a valid DNS name).
    #[error("cannot generate the certificate for '{name}': {source}")]
    Generate {
        /// Component (or `ca`).
        name: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A file or the directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A component name that cannot be a file name and DNS name.
    #[error("invalid component name '{0}': use letters, digits, '-' and '_'")]
    InvalidName(String),
}

/// One written certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The component name (the certificate's CN).
    pub name: String,
    /// `DIR/NAME.pem`.
    pub cert: PathBuf,
    /// `DIR/NAME-key.pem`.
    pub key: PathBuf,
}

/// Everything [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    /// `DIR/ca.pem` and `DIR/ca-key.pem`.
    pub ca: CertFiles,
    /// One entry per component, in the order given.
    pub components: Vec<CertFiles>,
}

/// The component names `tcf-certs` uses when none are given.
pub const DEFAULT_COMPONENTS: &[&str] = &["gateway", "destination", "worker", "etcd", "haproxy"];

/// Creates `dir` if needed and writes a new CA plus a certificate and key for
/// each of `components` (see the module docs for names and contents).
/// Existing files are overwritten.
pub fn generate(dir: &Path, components: &[&str]) -> Result<DevCerts, DevCertsError> {
    for name in components {
        check_name(name)?;
    }
    create_dir(dir)?;
    let (issuer, ca) = new_ca(dir, "ca", "tcf dev CA")?;
    let components = components
        .iter()
        .map(|name| issue(dir, &issuer, name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DevCerts { ca, components })
}

/// Writes a client/server certificate `NAME.pem` / `NAME-key.pem` (same shape
/// as [`generate`]'s) signed by a fresh, different CA, written as
/// `foreign-ca.pem` (its key is discarded). For negative tests: a peer
/// presenting it must be refused by anything trusting `ca.pem`.
pub fn generate_foreign_ca_client(dir: &Path, name: &str) -> Result<CertFiles, DevCertsError> {
    check_name(name)?;
    create_dir(dir)?;
    let key = KeyPair::generate().map_err(gen_err("foreign-ca"))?;
    let params = ca_params("tcf foreign CA");
    let issuer = CertifiedIssuer::self_signed(params, key).map_err(gen_err("foreign-ca"))?;
    write(&dir.join("foreign-ca.pem"), issuer.pem().as_bytes(), false)?;
    issue(dir, &issuer, name)
}

fn check_name(name: &str) -> Result<(), DevCertsError> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DevCertsError::InvalidName(name.to_owned()))
    }
}

fn gen_err(name: &str) -> impl Fn(rcgen::Error) -> DevCertsError + '_ {
    move |source| DevCertsError::Generate {
        name: name.to_owned(),
        source,
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "tcf development");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn new_ca(
    dir: &Path,
    file_stem: &str,
    cn: &str,
) -> Result<(CertifiedIssuer<'static, KeyPair>, CertFiles), DevCertsError> {
    let key = KeyPair::generate().map_err(gen_err(file_stem))?;
    let key_pem = key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(ca_params(cn), key).map_err(gen_err(file_stem))?;
    let files = CertFiles {
        name: file_stem.to_owned(),
        cert: dir.join(format!("{file_stem}.pem")),
        key: dir.join(format!("{file_stem}-key.pem")),
    };
    write(&files.cert, issuer.pem().as_bytes(), false)?;
    write(&files.key, key_pem.as_bytes(), true)?;
    Ok((issuer, files))
}

fn issue(
    dir: &Path,
    issuer: &CertifiedIssuer<'_, KeyPair>,
    name: &str,
) -> Result<CertFiles, DevCertsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "tcf development");
    params.distinguished_name = dn;
    let dns = |s: &str| {
        s.to_owned()
            .try_into()
            .map(SanType::DnsName)
            .map_err(gen_err(name))
    };
    let mut sans = vec![dns(name)?];
    if name != "localhost" {
        sans.push(dns("localhost")?);
    }
    sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(gen_err(name))?;
    let cert = params.signed_by(&key, issuer).map_err(gen_err(name))?;
    let files = CertFiles {
        name: name.to_owned(),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    write(&files.cert, cert.pem().as_bytes(), false)?;
    write(&files.key, key.serialize_pem().as_bytes(), true)?;
    Ok(files)
}

fn create_dir(dir: &Path) -> Result<(), DevCertsError> {
    fs::create_dir_all(dir).map_err(|source| DevCertsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn write(path: &Path, data: &[u8], private: bool) -> Result<(), DevCertsError> {
    let err = |source| DevCertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(data).map_err(err)?;
    // `mode` applies only to new files: tighten an existing key file too.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_ca_and_components_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let certs = generate(&out, &["gateway", "etcd"]).unwrap();
        assert_eq!(certs.ca.cert, out.join("ca.pem"));
        assert_eq!(certs.ca.key, out.join("ca-key.pem"));
        assert_eq!(certs.components[1].cert, out.join("etcd.pem"));
        assert_eq!(certs.components[1].key, out.join("etcd-key.pem"));
        for f in [&certs.ca.cert, &certs.components[0].cert] {
            assert!(
                std::fs::read_to_string(f)
                    .unwrap()
                    .starts_with("-----BEGIN CERTIFICATE")
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [&certs.ca.key, &certs.components[0].key] {
                let mode = std::fs::metadata(f).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", f.display());
            }
        }
    }

    #[test]
    fn refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a b", "-x"] {
            assert!(matches!(
                generate(dir.path(), &[bad]),
                Err(DevCertsError::InvalidName(_))
            ));
        }
    }
}
