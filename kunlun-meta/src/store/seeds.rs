//! `meta_group_seeds` discovery: find the writable primary of the metadata shard.
//!
//! Invariant: seeds are tried in the configured order and the first one that answers with
//! `@@read_only = 0` is chosen; the report keeps, for every other seed, why it was not.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::tls::{TlsMode, TlsSettings};

/// The store's TLS for MySQL connections, resolved from `meta_tls`/`meta_tls_ca` once (the CA
/// file is read at open, so a missing or bad file fails the open with its name).
#[derive(Clone)]
pub(crate) struct MetaTls {
    mode: TlsMode,
    ssl: Option<mysql_async::SslOpts>,
    ca: Option<std::path::PathBuf>,
}

impl MetaTls {
    pub(crate) fn new(settings: &TlsSettings) -> Result<MetaTls> {
        let ssl = match settings.mode() {
            TlsMode::Off => None,
            // Encrypt, trust any certificate: these modes only stop a passive listener.
            TlsMode::Prefer | TlsMode::Require => Some(
                mysql_async::SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            TlsMode::Verify => {
                let pem = settings
                    .read_ca("meta_tls_ca")?
                    .ok_or_else(|| Error::Invalid("meta_tls = verify needs meta_tls_ca".into()))?;
                Some(
                    mysql_async::SslOpts::default()
                        .with_root_certs(vec![pem.into()])
                        .with_disable_built_in_roots(true),
                )
            }
        };
        Ok(MetaTls {
            mode: settings.mode(),
            ssl,
            ca: settings.ca().map(|p| p.to_path_buf()),
        })
    }

    /// The same settings after `prefer` found out what the server offers: TLS stays on
    /// (unverified) when `encrypted`, else plaintext, so pooled connections try once.
    pub(crate) fn resolved(&self, encrypted: bool) -> MetaTls {
        match (self.mode, encrypted) {
            (TlsMode::Prefer, true) => MetaTls {
                mode: TlsMode::Require,
                ..self.clone()
            },
            (TlsMode::Prefer, false) => MetaTls {
                mode: TlsMode::Off,
                ssl: None,
                ca: None,
            },
            _ => self.clone(),
        }
    }

    pub(crate) fn mode(&self) -> TlsMode {
        self.mode
    }

    /// `opts` with TLS on unless the mode is `off`.
    pub(crate) fn apply(&self, opts: mysql_async::OptsBuilder) -> mysql_async::OptsBuilder {
        opts.ssl_opts(self.ssl.clone())
    }

    /// Why a connection failed, with the TLS part named when TLS was the cause.
    fn explain(&self, e: &mysql_async::Error) -> String {
        use mysql_async::{DriverError, Error as E, IoError};
        match e {
            E::Driver(DriverError::NoClientSslFlagFromServer) => format!(
                "the server offers no TLS but meta_tls = {} (turn TLS on at the server, or set \
                 meta_tls = prefer or off)",
                self.mode
            ),
            E::Io(IoError::Tls(t)) => match &self.ca {
                Some(ca) if self.mode == TlsMode::Verify => format!(
                    "TLS handshake failed (meta_tls = verify, CA {}): {t}",
                    ca.display()
                ),
                _ => format!("TLS handshake failed (meta_tls = {}): {t}", self.mode),
            },
            // rustls reports a refused certificate as an I/O error of the stream.
            E::Io(IoError::Io(io)) if self.ssl.is_some() && is_tls_failure(io) => match &self.ca {
                Some(ca) if self.mode == TlsMode::Verify => format!(
                    "TLS handshake failed (meta_tls = verify, CA {}): {io}",
                    ca.display()
                ),
                _ => format!("TLS handshake failed (meta_tls = {}): {io}", self.mode),
            },
            other => other.to_string(),
        }
    }

    /// Connects with `opts`; `prefer` falls back to plaintext only when the server does not
    /// offer TLS (never after a failed handshake). Returns whether the connection is encrypted.
    pub(crate) async fn connect(
        &self,
        opts: mysql_async::OptsBuilder,
    ) -> std::result::Result<(mysql_async::Conn, bool), String> {
        let plain = opts.clone();
        match mysql_async::Conn::new(self.apply(opts)).await {
            Ok(c) => Ok((c, self.ssl.is_some())),
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.mode == TlsMode::Prefer => {
                let c = mysql_async::Conn::new(plain.ssl_opts(None))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((c, false))
            }
            Err(e) => Err(self.explain(&e)),
        }
    }
}

/// Why a seed was or was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedOutcome {
    /// Writable (`read_only = 0`): this is the primary.
    Chosen,
    /// Answered but is read-only (a replica).
    ReadOnly,
    /// Could not be reached or queried; the driver's reason.
    Unreachable(String),
    /// Not tried because an earlier seed was chosen.
    NotTried,
}

/// One seed and what happened when it was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedAttempt {
    pub seed: String,
    pub outcome: SeedOutcome,
}

/// Result of seed discovery: which seed became the primary and why the others did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// The chosen seed, `host:port`.
    pub chosen: String,
    /// Every configured seed in order, the chosen one included.
    pub attempts: Vec<SeedAttempt>,
}

impl SeedReport {
    /// The seeds that were not chosen, each with its reason.
    pub fn rejected(&self) -> impl Iterator<Item = &SeedAttempt> {
        self.attempts
            .iter()
            .filter(|a| a.outcome != SeedOutcome::Chosen)
    }
}

impl fmt::Display for SeedOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedOutcome::Chosen => f.write_str("chosen: writable primary (read_only=0)"),
            SeedOutcome::ReadOnly => f.write_str("skipped: read-only (read_only=1)"),
            SeedOutcome::Unreachable(e) => write!(f, "skipped: unreachable: {e}"),
            SeedOutcome::NotTried => f.write_str("not tried: an earlier seed was chosen"),
        }
    }
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metadata primary {}", self.chosen)?;
        for a in self.rejected() {
            write!(f, "; {} {}", a.seed, a.outcome)?;
        }
        Ok(())
    }
}

/// Splits `host:port` (IPv6 as `[::1]:3306`).
pub(crate) fn split_seed(seed: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::Invalid(format!(
            "meta_group_seeds: '{}' is not host:port",
            seed.escape_default()
        ))
    };
    let (host, port) = seed.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Whether an I/O error of a connection being secured came from the TLS layer.
fn is_tls_failure(io: &std::io::Error) -> bool {
    let msg = io.to_string().to_ascii_lowercase();
    msg.contains("certificate") || msg.contains("tls") || msg.contains("handshake")
}

/// Connection parameters without a database, for probing a seed.
pub(crate) fn seed_opts(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass(if password.is_empty() {
            None
        } else {
            Some(password)
        })
        .prefer_socket(false)
        // UPDATE reports matched rows, not changed rows, as SQLite does: compare-and-swap and
        // "0 rows = not found" checks then mean the same on both backends.
        .client_found_rows(true)
}

/// Asks one seed for `@@read_only`.
async fn probe(
    seed: &str,
    user: &str,
    password: &str,
    tls: &MetaTls,
    timeout: Duration,
) -> SeedOutcome {
    let (host, port) = match split_seed(seed) {
        Ok(hp) => hp,
        Err(e) => return SeedOutcome::Unreachable(e.to_string()),
    };
    let work = async {
        use mysql_async::prelude::Queryable;
        let (mut conn, _) = tls.connect(seed_opts(&host, port, user, password)).await?;
        let ro: Option<i64> = conn
            .query_first("SELECT @@read_only")
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.disconnect().await;
        Ok::<_, String>(ro.unwrap_or(0))
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => SeedOutcome::Unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => SeedOutcome::Unreachable(e),
        Ok(Ok(0)) => SeedOutcome::Chosen,
        Ok(Ok(_)) => SeedOutcome::ReadOnly,
    }
}

/// Tries the seeds in order and returns the report naming the first writable one.
pub(crate) async fn discover(
    seeds: &[String],
    user: &str,
    password: &str,
    tls: &MetaTls,
    timeout: Duration,
) -> Result<SeedReport> {
    if seeds.is_empty() {
        return Err(Error::Invalid("meta_group_seeds: no seed given".into()));
    }
    let mut attempts = Vec::with_capacity(seeds.len());
    let mut chosen = None;
    for seed in seeds {
        let outcome = if chosen.is_some() {
            SeedOutcome::NotTried
        } else {
            probe(seed, user, password, tls, timeout).await
        };
        if outcome == SeedOutcome::Chosen {
            chosen = Some(seed.clone());
        } else {
            tracing::info!(seed = %seed, outcome = %outcome, "metadata seed not chosen");
        }
        attempts.push(SeedAttempt {
            seed: seed.clone(),
            outcome,
        });
    }
    match chosen {
        Some(chosen) => Ok(SeedReport { chosen, attempts }),
        None => {
            let why: Vec<String> = attempts
                .iter()
                .map(|a| format!("{} {}", a.seed, a.outcome))
                .collect();
            Err(Error::Unavailable(format!(
                "no writable metadata primary among the seeds: {}",
                why.join("; ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_the_choice_and_every_reason() {
        let r = SeedReport {
            chosen: "10.0.0.2:3306".into(),
            attempts: vec![
                SeedAttempt {
                    seed: "10.0.0.1:3306".into(),
                    outcome: SeedOutcome::Unreachable("refused".into()),
                },
                SeedAttempt {
                    seed: "10.0.0.3:3306".into(),
                    outcome: SeedOutcome::ReadOnly,
                },
                SeedAttempt {
                    seed: "10.0.0.2:3306".into(),
                    outcome: SeedOutcome::Chosen,
                },
                SeedAttempt {
                    seed: "10.0.0.4:3306".into(),
                    outcome: SeedOutcome::NotTried,
                },
            ],
        };
        let s = r.to_string();
        assert!(s.starts_with("metadata primary 10.0.0.2:3306"), "{s}");
        assert!(
            s.contains("10.0.0.1:3306 skipped: unreachable: refused"),
            "{s}"
        );
        assert!(s.contains("10.0.0.3:3306 skipped: read-only"), "{s}");
        assert!(s.contains("10.0.0.4:3306 not tried"), "{s}");
        assert_eq!(r.rejected().count(), 3);
    }

    #[test]
    fn seeds_parse_host_and_port() {
        assert_eq!(
            split_seed("127.0.0.1:3306").unwrap(),
            ("127.0.0.1".into(), 3306)
        );
        assert_eq!(split_seed("[::1]:3307").unwrap(), ("::1".into(), 3307));
        assert!(split_seed("nohost").is_err());
        assert!(split_seed(":3306").is_err());
        assert!(split_seed("h:0").is_err());
        assert!(split_seed("h:x").is_err());
    }
}
