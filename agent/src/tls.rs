//! The uplink's trust: with `--ca-cert` (TOML `ca_cert`, `LOGFLEET_CA_CERT`) the agent trusts
//! exactly the CA certificates in that PEM file (see [`logfleet_protocol::trust`]); without
//! it, the public web PKI roots compiled into the agent (no dependency on the OS store).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use logfleet_protocol::trust::{self, TrustError};
use rustls::ClientConfig;

/// Why the CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the CA certificate file {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("cannot use the CA certificate file {path}: {error}")]
    Untrusted { path: PathBuf, error: TrustError },
}

/// A client configuration trusting only the CA certificates in the file `ca_cert`.
pub fn client_config(ca_cert: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let pem = std::fs::read(ca_cert).map_err(|e| TlsError::Read {
        path: ca_cert.to_owned(),
        detail: e.to_string(),
    })?;
    trust::trusting(&pem).map_err(|error| TlsError::Untrusted {
        path: ca_cert.to_owned(),
        error,
    })
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
        assert!(
            matches!(
                &err,
                TlsError::Untrusted {
                    error: TrustError::Empty,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let err = client_config(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
