//! TLS settings of the manager's database connections (metadata store, compute nodes): a mode
//! and an optional CA file. Plain types only; each driver turns them into its own TLS set-up.
//!
//! Invariant: `verify` always has a CA (a settings value without one is refused by
//! [`TlsSettings::new`]), so "verified" never silently means "trusted the public roots".

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// Largest CA file read (a bundle of a few certificates is a few KiB).
pub const MAX_CA_BYTES: u64 = 1 << 20;

/// How a database connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// Plaintext, even when the server offers TLS.
    Off,
    /// TLS when the server offers it, plaintext otherwise; the certificate is not checked, so
    /// this stops a passive listener only. The default: it costs nothing against servers
    /// without TLS and encrypts against those that have it.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked (passive listeners only).
    Require,
    /// TLS or no connection; the server's certificate must chain to the configured CA and
    /// name the host connected to (DNS name or IP address).
    Verify,
}

impl TlsMode {
    /// The config spelling: `off`, `prefer`, `require`, `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::Verify => "verify",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<TlsMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(TlsMode::Off),
            "prefer" => Ok(TlsMode::Prefer),
            "require" => Ok(TlsMode::Require),
            "verify" => Ok(TlsMode::Verify),
            _ => Err(Error::Invalid(format!(
                "TLS mode '{}' is not one of off, prefer, require, verify",
                s.escape_default()
            ))),
        }
    }
}

/// A mode plus the CA (PEM file) that `verify` checks against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    mode: TlsMode,
    ca: Option<PathBuf>,
}

impl TlsSettings {
    /// `mode` with `ca`; `verify` without a CA is refused. A CA with another mode is kept (and
    /// unused until the mode is `verify`).
    pub fn new(mode: TlsMode, ca: Option<PathBuf>) -> Result<TlsSettings> {
        if mode == TlsMode::Verify && ca.is_none() {
            return Err(Error::Invalid(
                "TLS mode verify needs a CA file (PEM) to verify against".into(),
            ));
        }
        Ok(TlsSettings { mode, ca })
    }

    /// Plaintext.
    pub fn off() -> TlsSettings {
        TlsSettings {
            mode: TlsMode::Off,
            ca: None,
        }
    }

    /// `verify` against `ca`.
    pub fn verify(ca: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            mode: TlsMode::Verify,
            ca: Some(ca.into()),
        }
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Reads the CA file (bounded by [`MAX_CA_BYTES`]); `what` names the setting in errors.
    pub fn read_ca(&self, what: &str) -> Result<Option<Vec<u8>>> {
        let Some(path) = &self.ca else {
            return Ok(None);
        };
        let bad =
            |why: String| Error::Invalid(format!("{what}: CA file {}: {why}", path.display()));
        let len = std::fs::metadata(path)
            .map_err(|e| bad(e.to_string()))?
            .len();
        if len > MAX_CA_BYTES {
            return Err(bad(format!("larger than {MAX_CA_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
            return Err(bad("holds no PEM certificate".into()));
        }
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in [
            TlsMode::Off,
            TlsMode::Prefer,
            TlsMode::Require,
            TlsMode::Verify,
        ] {
            assert_eq!(m.as_str().parse::<TlsMode>().unwrap(), m);
        }
        assert_eq!(" VERIFY ".parse::<TlsMode>().unwrap(), TlsMode::Verify);
        let e = "yes".parse::<TlsMode>().unwrap_err().to_string();
        assert!(e.contains("off, prefer, require, verify"), "{e}");
        assert_eq!(TlsSettings::default().mode(), TlsMode::Prefer);
    }

    #[test]
    fn verify_needs_a_ca_and_the_ca_must_be_pem() {
        assert!(TlsSettings::new(TlsMode::Verify, None).is_err());
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = TlsSettings::verify(&junk)
            .read_ca("meta_tls_ca")
            .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let missing = TlsSettings::verify(dir.path().join("none.pem"));
        assert!(missing.read_ca("meta_tls_ca").is_err());
        assert_eq!(TlsSettings::off().read_ca("x").unwrap(), None);
    }
}
