//! `meta_group_seeds` discovery: find the writable primary of the metadata shard.
//!
//! Invariant: seeds are tried in the configured order and the first one that answers with
//! `@@read_only = 0` is chosen; the report keeps, for every other seed, why it was not.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

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
async fn probe(seed: &str, user: &str, password: &str, timeout: Duration) -> SeedOutcome {
    let (host, port) = match split_seed(seed) {
        Ok(hp) => hp,
        Err(e) => return SeedOutcome::Unreachable(e.to_string()),
    };
    let work = async {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(seed_opts(&host, port, user, password)).await?;
        let ro: Option<i64> = conn.query_first("SELECT @@read_only").await?;
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(ro.unwrap_or(0))
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => SeedOutcome::Unreachable(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => SeedOutcome::Unreachable(e.to_string()),
        Ok(Ok(0)) => SeedOutcome::Chosen,
        Ok(Ok(_)) => SeedOutcome::ReadOnly,
    }
}

/// Tries the seeds in order and returns the report naming the first writable one.
pub(crate) async fn discover(
    seeds: &[String],
    user: &str,
    password: &str,
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
            probe(seed, user, password, timeout).await
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
