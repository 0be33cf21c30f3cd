//! rustls client set-ups for the manager's PostgreSQL connections (the catalog push to compute
//! nodes), built from a [`TlsSettings`] mode and CA.
//!
//! Invariants: the ring provider is named explicitly (no process-wide default is needed or
//! installed); `verify` trusts only the configured CA (never the public roots) and checks the
//! host name or IP address connected to; `prefer`/`require` encrypt but accept any
//! certificate, which stops a passive listener only (the README says so).

use std::sync::Arc;

use kunlun_meta::tls::{TlsMode, TlsSettings};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

// ring, not aws-lc-rs: it builds without cmake. rustls 0.23.48 deprecates it only for lacking
// post-quantum key exchange, which the database servers we talk to do not offer either.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client set-up for `settings`, `None` for `off`; `what` names the setting in errors
/// (e.g. `catalog_tls_ca`).
pub(crate) fn client_config(settings: &TlsSettings, what: &str) -> Result<Option<ClientConfig>> {
    let builder = || {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS set-up: {e}")))
    };
    match settings.mode() {
        TlsMode::Off => Ok(None),
        TlsMode::Prefer | TlsMode::Require => Ok(Some(
            builder()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth(),
        )),
        TlsMode::Verify => {
            let pem = settings
                .read_ca(what)?
                .ok_or_else(|| Error::Invalid(format!("TLS mode verify needs {what}")))?;
            let roots = roots_from_pem(&pem).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
            Ok(Some(
                builder()?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        }
    }
}

/// Every certificate of a PEM bundle, as trust anchors.
pub(crate) fn roots_from_pem(pem: &[u8]) -> std::result::Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("bad PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(roots)
}

/// Accepts any server certificate but still checks the handshake signatures (so the session
/// is encrypted to whoever holds the presented key): `prefer` and `require`.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_builds_nothing_and_verify_refuses_a_bundle_without_certificates() {
        assert!(client_config(&TlsSettings::off(), "x").unwrap().is_none());
        assert!(client_config(&TlsSettings::default(), "x")
            .unwrap()
            .is_some());
        assert!(roots_from_pem(b"").is_err());
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(roots_from_pem(bad).is_err());
    }
}
