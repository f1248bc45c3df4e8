//! Whom the CLI trusts for `https://` and `wss://`: with `--ca-cert` (`LOGFLEET_CA_CERT`)
//! exactly the CA certificates in that PEM file (see [`logfleet_protocol::trust`]); without it
//! the public web PKI roots compiled in (no OS store needed).

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;

use crate::error::Error;

/// A client configuration trusting only the CA certificates in the file `ca_cert`.
pub fn trusting(ca_cert: &Path) -> Result<Arc<ClientConfig>, Error> {
    let bad = |detail: String| Error::CaCert {
        path: ca_cert.display().to_string(),
        detail,
    };
    let pem = std::fs::read(ca_cert).map_err(|e| bad(e.to_string()))?;
    logfleet_protocol::trust::trusting(&pem).map_err(|e| bad(e.to_string()))
}
