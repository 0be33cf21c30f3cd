//! `meta_group_seeds` discovery: find the writable primary of the metadata shard.
//!
//! Invariant: every seed is asked at once (each within the connect deadline); a single writable
//! (`@@read_only = 0`) node is the primary, and when several are writable the choice follows
//! [`choose`]'s rule, never a race; the report keeps, for every other seed, why it was not
//! chosen. The same discovery runs again whenever the store follows a new primary
//! (`follow.rs`).

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
    /// Answered writable, but another writable node was chosen (the text says why).
    Passed(String),
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
            SeedOutcome::Passed(why) => write!(f, "skipped: {why}"),
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

/// What one seed said when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SeedProbe {
    /// It answered: `read_only`, and for a writable node its `@@gtid_current_pos` and whether
    /// it replicates from another node (`None`: not known, e.g. the login may not ask).
    Answered {
        read_only: bool,
        gtid: Option<String>,
        replicating: Option<bool>,
    },
    /// It could not be reached or asked; the driver's reason.
    Unreachable(String),
}

/// Asks one seed for `@@read_only` and, when it is writable, its GTID position and whether it
/// replicates (both optional: a MySQL server has no `@@gtid_current_pos`, and a least-privilege
/// login may not run `SHOW ALL SLAVES STATUS`).
pub(crate) async fn probe(
    seed: &str,
    user: &str,
    password: &str,
    tls: &MetaTls,
    timeout: Duration,
) -> SeedProbe {
    let (host, port) = match split_seed(seed) {
        Ok(hp) => hp,
        Err(e) => return SeedProbe::Unreachable(e.to_string()),
    };
    let work = async {
        use mysql_async::prelude::Queryable;
        let (mut conn, _) = tls.connect(seed_opts(&host, port, user, password)).await?;
        let ro: Option<i64> = conn
            .query_first("SELECT @@read_only")
            .await
            .map_err(|e| e.to_string())?;
        let read_only = ro.unwrap_or(0) != 0;
        let (mut gtid, mut replicating) = (None, None);
        if !read_only {
            gtid = conn
                .query_first::<Option<String>, _>("SELECT @@gtid_current_pos")
                .await
                .ok()
                .flatten()
                .flatten();
            replicating = conn
                .query::<mysql_async::Row, _>("SHOW ALL SLAVES STATUS")
                .await
                .ok()
                .map(|rows| !rows.is_empty());
        }
        let _ = conn.disconnect().await;
        Ok::<_, String>(SeedProbe::Answered {
            read_only,
            gtid,
            replicating,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => SeedProbe::Unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => SeedProbe::Unreachable(e),
        Ok(Ok(p)) => p,
    }
}

/// Per GTID domain, the highest sequence number of a MariaDB position (`d-s-n,...`); `None`
/// when the text is not one.
fn gtid_seqs(pos: &str) -> Option<std::collections::BTreeMap<u32, u64>> {
    let mut m = std::collections::BTreeMap::new();
    for g in pos.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let mut it = g.splitn(3, '-');
        let (d, _s, n) = (it.next()?, it.next()?, it.next()?);
        let (d, n): (u32, u64) = (d.parse().ok()?, n.parse().ok()?);
        let e = m.entry(d).or_insert(0);
        *e = (*e).max(n);
    }
    Some(m)
}

/// Whether position `a` holds at least as much as `b` in every domain of `b`.
fn gtid_contains(a: &str, b: &str) -> Option<bool> {
    let (a, b) = (gtid_seqs(a)?, gtid_seqs(b)?);
    Some(b.iter().all(|(d, n)| a.get(d).is_some_and(|m| m >= n)))
}

/// Chooses the primary from every seed's answer (in seed order).
///
/// One writable node is the primary. When several are writable (a returning old primary not
/// fenced yet, a replica left writable), one that does not replicate is preferred, then the one
/// whose GTID position contains every other writable node's (it has moved on); when no such
/// node exists the first in seed order is taken and the others are named in the report, so a
/// split brain is visible. No writable node: `Err` with every seed's reason.
pub(crate) fn choose(probes: Vec<(String, SeedProbe)>) -> std::result::Result<SeedReport, String> {
    let writable: Vec<usize> = probes
        .iter()
        .enumerate()
        .filter(|(_, (_, p))| {
            matches!(
                p,
                SeedProbe::Answered {
                    read_only: false,
                    ..
                }
            )
        })
        .map(|(i, _)| i)
        .collect();
    let replicates = |i: usize| {
        matches!(
            probes[i].1,
            SeedProbe::Answered {
                replicating: Some(true),
                ..
            }
        )
    };
    let gtid = |i: usize| match &probes[i].1 {
        SeedProbe::Answered { gtid, .. } => gtid.clone(),
        SeedProbe::Unreachable(_) => None,
    };
    let mut pool: Vec<usize> = writable
        .iter()
        .copied()
        .filter(|i| !replicates(*i))
        .collect();
    if pool.is_empty() {
        pool = writable.clone();
    }
    let mut why_not: Option<String> = None;
    let chosen = match pool.as_slice() {
        [] => None,
        [one] => Some(*one),
        many => {
            let ahead = many.iter().copied().find(|&i| {
                let Some(a) = gtid(i) else { return false };
                many.iter().all(|&j| {
                    j == i || gtid(j).is_some_and(|b| gtid_contains(&a, &b) == Some(true))
                })
            });
            match ahead {
                Some(i) => {
                    why_not = Some(format!(
                        "writable too, but behind {} (GTID position)",
                        probes[i].0
                    ));
                    Some(i)
                }
                None => {
                    why_not = Some(format!(
                        "writable too: no writable seed's GTID position contains the others', \
                         {} is first in seed order (a split brain? fence the stale node)",
                        probes[many[0]].0
                    ));
                    Some(many[0])
                }
            }
        }
    };
    let attempts: Vec<SeedAttempt> = probes
        .iter()
        .enumerate()
        .map(|(i, (seed, p))| SeedAttempt {
            seed: seed.clone(),
            outcome: match p {
                _ if Some(i) == chosen => SeedOutcome::Chosen,
                SeedProbe::Unreachable(e) => SeedOutcome::Unreachable(e.clone()),
                SeedProbe::Answered {
                    read_only: true, ..
                } => SeedOutcome::ReadOnly,
                SeedProbe::Answered { .. } if replicates(i) && !pool.contains(&i) => {
                    SeedOutcome::Passed("writable but replicating from another node".into())
                }
                SeedProbe::Answered { .. } => {
                    SeedOutcome::Passed(why_not.clone().unwrap_or_default())
                }
            },
        })
        .collect();
    match chosen {
        Some(i) => {
            if writable.len() > 1 {
                tracing::warn!(chosen = %probes[i].0, writable = writable.len(), "several metadata nodes are writable");
            }
            Ok(SeedReport {
                chosen: probes[i].0.clone(),
                attempts,
            })
        }
        None => Err(attempts
            .iter()
            .map(|a| format!("{} {}", a.seed, a.outcome))
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// Asks every seed at once (each within `timeout`) and chooses the primary ([`choose`]).
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
    discover_reach(seeds, user, password, tls, timeout).await.0
}

/// [`discover`], and whether any candidate answered at all (a failed discovery where some
/// node answered read-only may end with a failover; one where none answered will not soon).
pub(crate) async fn discover_reach(
    seeds: &[String],
    user: &str,
    password: &str,
    tls: &MetaTls,
    timeout: Duration,
) -> (Result<SeedReport>, bool) {
    if seeds.is_empty() {
        return (
            Err(Error::Invalid("meta_group_seeds: no seed given".into())),
            false,
        );
    }
    let probes = futures::future::join_all(
        seeds
            .iter()
            .map(|s| async move { (s.clone(), probe(s, user, password, tls, timeout).await) }),
    )
    .await;
    let answered = probes
        .iter()
        .any(|(_, p)| matches!(p, SeedProbe::Answered { .. }));
    (choose_reported(probes), answered)
}

fn choose_reported(probes: Vec<(String, SeedProbe)>) -> Result<SeedReport> {
    let report = choose(probes).map_err(|why| {
        Error::Unavailable(format!(
            "no writable metadata primary among the seeds: {why}"
        ))
    })?;
    for a in report.rejected() {
        tracing::info!(seed = %a.seed, outcome = %a.outcome, "metadata seed not chosen");
    }
    Ok(report)
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

    fn answered(read_only: bool, gtid: Option<&str>, replicating: Option<bool>) -> SeedProbe {
        SeedProbe::Answered {
            read_only,
            gtid: gtid.map(str::to_string),
            replicating,
        }
    }

    fn seeds(p: Vec<SeedProbe>) -> Vec<(String, SeedProbe)> {
        p.into_iter()
            .enumerate()
            .map(|(i, p)| (format!("10.0.0.{}:3306", i + 1), p))
            .collect()
    }

    #[test]
    fn the_one_writable_node_is_the_primary_wherever_it_is() {
        let r = choose(seeds(vec![
            SeedProbe::Unreachable("refused".into()),
            answered(true, None, None),
            answered(false, Some("0-2-7"), Some(false)),
        ]))
        .unwrap();
        assert_eq!(r.chosen, "10.0.0.3:3306");
        assert_eq!(r.attempts[1].outcome, SeedOutcome::ReadOnly);
        let e = choose(seeds(vec![
            SeedProbe::Unreachable("refused".into()),
            answered(true, None, None),
        ]))
        .unwrap_err();
        assert!(
            e.contains("10.0.0.1:3306 skipped: unreachable: refused"),
            "{e}"
        );
        assert!(e.contains("10.0.0.2:3306 skipped: read-only"), "{e}");
    }

    #[test]
    fn of_several_writable_nodes_the_one_that_moved_on_wins() {
        // A returned old primary (writable after its restart) and the promoted node.
        let r = choose(seeds(vec![
            answered(false, Some("0-1-100"), Some(false)),
            answered(false, Some("0-2-140"), Some(false)),
        ]))
        .unwrap();
        assert_eq!(r.chosen, "10.0.0.2:3306");
        assert!(
            matches!(&r.attempts[0].outcome, SeedOutcome::Passed(w) if w.contains("behind 10.0.0.2")),
            "{r}"
        );
        // One that replicates is passed over for one that does not.
        let r = choose(seeds(vec![
            answered(false, Some("0-1-200"), Some(true)),
            answered(false, Some("0-1-100"), Some(false)),
        ]))
        .unwrap();
        assert_eq!(r.chosen, "10.0.0.2:3306");
        // Diverged histories: the first in seed order, and the report says so.
        let r = choose(seeds(vec![
            answered(false, Some("0-1-100,1-1-5"), None),
            answered(false, Some("0-2-90,1-2-9"), None),
        ]))
        .unwrap();
        assert_eq!(r.chosen, "10.0.0.1:3306");
        assert!(r.to_string().contains("split brain"), "{r}");
    }

    #[test]
    fn gtid_positions_compare_per_domain() {
        assert_eq!(gtid_contains("0-2-10,1-1-3", "0-1-9"), Some(true));
        assert_eq!(gtid_contains("0-2-10", "0-1-9,1-1-1"), Some(false));
        assert_eq!(gtid_contains("", ""), Some(true));
        assert_eq!(gtid_contains("x", "0-1-1"), None);
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
