//! The uplink's trust: with `--ca-cert` (TOML `ca_cert`, `LOGFLEET_CA_CERT`) the agent trusts
//! exactly the CA certificates in that PEM file, for hosts served with a private CA; without
//! it, the public web PKI roots compiled into the agent (no dependency on the OS store).
//! Hostnames are verified either way; there is no switch to turn verification off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Why the CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the CA certificate file {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("the CA certificate file {0} holds no CERTIFICATE block")]
    Empty(PathBuf),
    #[error("the CA certificate file {path} holds an unusable certificate: {detail}")]
    Unusable { path: PathBuf, detail: String },
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A client configuration (ring provider) trusting only the CA certificates in `ca_cert`.
pub fn client_config(ca_cert: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let read = |e: rustls::pki_types::pem::Error| TlsError::Read {
        path: ca_cert.to_owned(),
        detail: e.to_string(),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert).map_err(read)? {
        roots
            .add(cert.map_err(read)?)
            .map_err(|e| TlsError::Unusable {
                path: ca_cert.to_owned(),
                detail: e.to_string(),
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty(ca_cert.to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(&path).unwrap_err();
        assert!(matches!(err, TlsError::Empty(_)), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let err = client_config(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
