//! TLS for MQTT clients: the gateway's uplink and the central team's tools (`tail`, `fleet`,
//! `push`, `command`) build their rustls client configuration the same way. A leaf: it imports
//! nothing of storegw.

use std::sync::Arc;

/// Builds a rustls client config (ring provider) from a CA file (or the system roots) and an
/// optional client certificate and key for mutual TLS.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let (ca_path, key) = match ca_file {
        Some(p) => (p.to_path_buf(), "mqtt.ca_file"),
        None => (
            std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            "system CA bundle",
        ),
    };
    let certs = CertificateDer::pem_file_iter(&ca_path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", ca_path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{key}: bad PEM in {}: {e}", ca_path.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "{key}: unusable CA certificate in {}: {e}",
                ca_path.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{key}: no certificate found in {}",
            ca_path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, keyf)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("mqtt.client_cert_file: cannot read {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!("mqtt.client_cert_file: bad PEM in {}: {e}", cert.display())
                })?;
            let key = PrivateKeyDer::from_pem_file(keyf).map_err(|e| {
                format!(
                    "mqtt.client_key_file: cannot read a private key from {}: {e}",
                    keyf.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("mqtt.client_key_file: key does not fit the certificate: {e}"))
        }
    }
}
