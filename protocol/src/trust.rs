//! Whom a LogFleet client (the agent's uplink, the CLI) trusts for `https://` and `wss://`
//! when given `--ca-cert`: exactly the CA certificates of that PEM file, for a host served with
//! a private CA. Without it, clients use the public web PKI roots compiled in. Hostnames are
//! verified either way; there is no switch to turn verification off.
//!
//! Callers read the file (this crate does no I/O) and name it in their errors.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Why a PEM file's certificates cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("it is not PEM: {0}")]
    Pem(String),
    #[error("it holds no CERTIFICATE block")]
    Empty,
    #[error("it holds an unusable certificate: {0}")]
    Unusable(String),
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A client configuration (ring provider) trusting only the CA certificates in `pem`.
pub fn trusting(pem: &[u8]) -> Result<Arc<ClientConfig>, TrustError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TrustError::Pem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TrustError::Unusable(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TrustError::Empty);
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
    fn text_without_certificates_is_refused() {
        assert!(matches!(
            trusting(b"not a certificate\n"),
            Err(TrustError::Empty)
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(trusting(broken).is_err());
    }
}
