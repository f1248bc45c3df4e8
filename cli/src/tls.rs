//! Whom the CLI trusts for `https://` and `wss://`: with `--ca-cert` (`LOGFLEET_CA_CERT`)
//! exactly the CA certificates in that PEM file, for a host with a private CA; without it the
//! public web PKI roots compiled in (no OS store needed). Hostnames are verified either way;
//! there is no switch to turn verification off.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use crate::error::Error;

/// A client configuration (ring provider) trusting only the CA certificates in `ca_cert`.
pub fn trusting(ca_cert: &Path) -> Result<Arc<ClientConfig>, Error> {
    let bad = |detail: String| Error::CaCert {
        path: ca_cert.display().to_string(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block in it".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
