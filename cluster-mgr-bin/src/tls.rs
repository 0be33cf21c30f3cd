//! TLS of the HTTP API: the certificate, key and optional client CA named in the cnf, read,
//! checked and turned into a rustls server configuration once, before the daemon listens.
//!
//! Invariant: a [`ApiTls`] exists only if the key file is a regular file nobody but its owner
//! can read, every file parsed, and the key belongs to the certificate; any failure is a
//! [`TlsError`] naming the key of the cnf and the file, which `main` turns into exit 2. The
//! crypto provider is ring (no system packages needed to build, unlike aws-lc-rs).

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Config, TlsFiles};

/// Largest PEM file read (a long chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {}: {reason}", path.display())]
pub struct TlsError {
    /// The cnf key naming the file.
    pub key: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

/// The API's TLS, ready for the listener.
pub struct ApiTls {
    /// The rustls configuration (ALPN is added by actix-web).
    pub config: ServerConfig,
    /// The DNS names the certificate is for (subject alternative names); the `Host` check
    /// accepts them with the API's port when `http_allowed_hosts` is not set.
    pub dns_names: Vec<String>,
    /// Whether clients must present a certificate (`http_tls_client_ca`).
    pub client_auth: bool,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTls")
            .field("dns_names", &self.dns_names)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// The TLS of `config`, if it names TLS files.
pub fn load_for(config: &Config) -> Result<Option<ApiTls>, TlsError> {
    config.http_tls.as_ref().map(load).transpose()
}

/// Reads and checks the files; see the module doc.
pub fn load(files: &TlsFiles) -> Result<ApiTls, TlsError> {
    let cert_pem = read_pem("http_tls_cert", &files.cert, false)?;
    let key_pem = read_pem("http_tls_key", &files.key, true)?;
    let err = |key: &'static str, path: &Path, reason: String| TlsError {
        key,
        path: path.to_path_buf(),
        reason,
    };

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err("http_tls_cert", &files.cert, format!("not PEM: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(err(
            "http_tls_cert",
            &files.cert,
            "no `BEGIN CERTIFICATE` block in it".into(),
        ));
    };
    let end_entity = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
        err(
            "http_tls_cert",
            &files.cert,
            format!("its first certificate does not parse: {e}"),
        )
    })?;
    let dns_names: Vec<String> = end_entity
        .valid_dns_names()
        // A wildcard cannot be matched exactly; list such hosts in http_allowed_hosts.
        .filter(|n| !n.starts_with('*'))
        .map(str::to_ascii_lowercase)
        .collect();

    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        err(
            "http_tls_key",
            &files.key,
            format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;

    // ring rather than aws-lc-rs: it builds without cmake or clang. rustls 0.23.48 marks it
    // deprecated because it lacks post-quantum key exchange; classical ECDHE stays in use.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("http_tls_cert", &files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let pem = read_pem("http_tls_client_ca", ca_path, false)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| err("http_tls_client_ca", ca_path, format!("not PEM: {e}")))?;
                roots.add(cert).map_err(|e| {
                    err(
                        "http_tls_client_ca",
                        ca_path,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(err(
                    "http_tls_client_ca",
                    ca_path,
                    "no `BEGIN CERTIFICATE` block in it".into(),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err("http_tls_client_ca", ca_path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => err(
            "http_tls_key",
            &files.key,
            format!(
                "this private key does not belong to the certificate in {}",
                files.cert.display()
            ),
        ),
        e => err("http_tls_key", &files.key, e.to_string()),
    })?;
    Ok(ApiTls {
        config,
        dns_names,
        client_auth: files.client_ca.is_some(),
    })
}

/// The bytes of a PEM file: a regular file of at most [`MAX_PEM_BYTES`], opened without
/// blocking (a FIFO named by mistake must not hang the start); with `secret`, refused when
/// group or others may read it, as ssh refuses such a key.
fn read_pem(key: &'static str, path: &Path, secret: bool) -> Result<Vec<u8>, TlsError> {
    let err = |reason: String| TlsError {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| err(format!("cannot open: {e}")))?;
    let md = file
        .metadata()
        .map_err(|e| err(format!("cannot stat: {e}")))?;
    if !md.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mode = md.permissions().mode() & 0o777;
    if secret && mode & 0o077 != 0 {
        return Err(err(format!(
            "the private key has mode {mode:04o}: group or others can read it; \
             `chmod 600 {}` (and keep it owned by the daemon's user)",
            path.display()
        )));
    }
    if md.len() > MAX_PEM_BYTES {
        return Err(err(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(cert),
            key: dir.join(key),
            client_ca: None,
        }
    }

    #[test]
    fn a_key_others_can_read_is_refused_before_it_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), "not checked yet").unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load(&files(dir.path(), "c.pem", "k.pem")).unwrap_err();
            assert_eq!(e.key, "http_tls_key");
            let text = e.to_string();
            assert!(
                text.contains(&format!("{mode:04o}")) && text.contains("chmod 600"),
                "{text}"
            );
        }
    }

    #[test]
    fn missing_fifo_and_garbage_files_get_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&files(dir.path(), "none.pem", "k.pem")).unwrap_err();
        assert_eq!(e.key, "http_tls_cert");
        assert!(e.to_string().contains("cannot open"), "{e}");

        // A FIFO: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = load(&files(dir.path(), "fifo", "k.pem")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        // Not PEM at all, and a key file with no key in it.
        std::fs::write(dir.path().join("c.pem"), "hello").unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "hello").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&files(dir.path(), "c.pem", "k.pem")).unwrap_err();
        assert_eq!(e.key, "http_tls_cert");
        assert!(e.to_string().contains("no `BEGIN CERTIFICATE`"), "{e}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_PEM_BYTES + 1).unwrap();
        let e = load(&files(dir.path(), "big.pem", "k.pem")).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
