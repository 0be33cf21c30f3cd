//! Pure decisions over probe results: is a shard's primary dead (the manager's failed probes
//! confirmed by its replicas), is the shard inside its anti-flapping window, may a
//! returning old primary rejoin, and what a replica whose replication stopped needs.
//!
//! Invariant: the primary is declared dead only after `k` consecutive failed probes **and**
//! when no reachable replica still holds a live IO connection to a source; a manager-side
//! partition alone therefore never yields [`Verdict::PrimaryDead`].

use std::time::{Duration, Instant};

use super::choose::{ReplicaView, ShardView};
use super::gtid::GtidPos;
use super::probe::NodeProbe;

/// A node as metadata describes it, with the operator's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub id: i64,
    pub host: String,
    pub port: u16,
    pub master_priority: i64,
    pub no_switch: bool,
}

/// What the monitor knows about a shard at one instant.
#[derive(Debug, Clone)]
pub struct ShardFacts<'a> {
    pub primary: &'a NodeRef,
    /// Consecutive failed probes of the primary.
    pub primary_failures: u32,
    /// The primary's last successful probe (for the semi-sync proof).
    pub primary_last_ok: Option<&'a NodeProbe>,
    /// Every active replica with its latest probe.
    pub replicas: Vec<(&'a NodeRef, &'a NodeProbe)>,
}

/// The assessment of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Some probes failed, fewer than `k`.
    Suspect {
        failures: u32,
    },
    /// `k` probes failed but a replica still sees a source: the manager is the one cut off.
    NotConfirmed {
        reason: String,
    },
    /// Dead and confirmed; the view feeds [`super::choose`].
    PrimaryDead {
        view: ShardView,
    },
}

/// Assesses the primary of one shard (see the module invariant).
pub fn assess(f: &ShardFacts<'_>, k: u32) -> Verdict {
    if f.primary_failures == 0 {
        return Verdict::Healthy;
    }
    if f.primary_failures < k.max(1) {
        return Verdict::Suspect {
            failures: f.primary_failures,
        };
    }
    for (r, p) in &f.replicas {
        if p.reachable && p.channels.iter().any(|c| c.io_connected()) {
            return Verdict::NotConfirmed {
                reason: format!(
                    "replica {} ({}:{}) still receives from its source",
                    r.id, r.host, r.port
                ),
            };
        }
    }
    let replicas = f
        .replicas
        .iter()
        .map(|(r, p)| ReplicaView {
            node_id: r.id,
            reachable: p.reachable,
            received: received(p, f.primary),
            master_priority: r.master_priority,
            no_switch: r.no_switch,
            sql_error: p.reachable.then(|| p.sql_error()).flatten(),
        })
        .collect();
    Verdict::PrimaryDead {
        view: ShardView {
            replicas,
            semi_sync_proof_valid: f.primary_last_ok.is_some_and(NodeProbe::semi_sync_proof),
        },
    }
}

/// A replica's received position from the primary: its channel to the primary, else its
/// only channel; `None` when unknown.
fn received(p: &NodeProbe, primary: &NodeRef) -> Option<GtidPos> {
    if !p.reachable {
        return None;
    }
    p.received_from(&primary.host, primary.port)
        .or_else(|| match p.channels.as_slice() {
            [only] => GtidPos::parse(only.gtid_io_pos.as_deref().unwrap_or("")).ok(),
            _ => None,
        })
}

/// True while the shard is inside its anti-flapping window after its last failover.
pub fn in_flap_window(last_failover: Option<Instant>, now: Instant, window: Duration) -> bool {
    last_failover.is_some_and(|t| now.saturating_duration_since(t) < window)
}

/// What to do with an old primary that answers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejoin {
    /// Nothing of its own beyond the new primary: replicate from it.
    AsReplica,
    /// It holds transactions the new primary lacks; keep it out until rebuilt.
    Rebuild { errant: String },
}

/// Decides the fate of a returning old primary from its own position (`@@gtid_current_pos`)
/// and the new primary's.
pub fn rejoin(old: &GtidPos, new_primary: &GtidPos) -> Rejoin {
    if new_primary.contains(old) {
        Rejoin::AsReplica
    } else {
        let errant: Vec<String> = old
            .gtids()
            .filter(|g| g.seq > new_primary.seq(g.domain))
            .map(|g| {
                format!(
                    "{}-{}-{}..{}",
                    g.domain,
                    g.server_id,
                    new_primary.seq(g.domain) + 1,
                    g.seq
                )
            })
            .collect();
        Rejoin::Rebuild {
            errant: errant.join(","),
        }
    }
}

/// What replica upkeep does with an answering active replica while its shard's primary is
/// healthy (see [`replica_upkeep`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upkeep {
    /// A replication thread runs (or retries), or a named channel is configured: not ours.
    Nothing,
    /// Both threads of the default channel stopped without an error and it points at the
    /// primary (a `skip-slave-start` server that restarted): `START SLAVE`.
    Start,
    /// Threads stopped without an error, but no source is set or it is another node (`from`):
    /// repoint at the primary, if the replica holds no errant transactions.
    Repoint { from: Option<String> },
    /// A thread stopped with an error: reported and left for an operator.
    Broken { reason: String },
}

/// Decides replica upkeep from one probe of a replica and the primary's address.
pub fn replica_upkeep(primary_host: &str, primary_port: u16, p: &NodeProbe) -> Upkeep {
    if !p.reachable {
        return Upkeep::Nothing;
    }
    let mut broken = Vec::new();
    for c in &p.channels {
        let name = if c.connection_name.is_empty() {
            String::new()
        } else {
            format!("channel '{}' ", c.connection_name)
        };
        if c.io_running == "No" && c.last_io_errno != 0 {
            broken.push(format!(
                "{name}IO thread stopped, Last_IO_Errno {}",
                c.last_io_errno
            ));
        }
        if !c.sql_running && c.last_sql_errno != 0 {
            broken.push(format!(
                "{name}SQL thread stopped, Last_SQL_Errno {}",
                c.last_sql_errno
            ));
        }
    }
    if !broken.is_empty() {
        return Upkeep::Broken {
            reason: broken.join("; "),
        };
    }
    let running = |c: &super::probe::Channel| c.io_running != "No" || c.sql_running;
    if p.channels.iter().any(running) || p.channels.iter().any(|c| !c.connection_name.is_empty()) {
        return Upkeep::Nothing;
    }
    match p.channels.first() {
        Some(c) if c.master_host == primary_host && c.master_port == primary_port => Upkeep::Start,
        Some(c) if !c.master_host.is_empty() => Upkeep::Repoint {
            from: Some(format!("{}:{}", c.master_host, c.master_port)),
        },
        _ => Upkeep::Repoint { from: None },
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe::Channel;
    use super::*;

    fn node(id: i64, port: u16) -> NodeRef {
        NodeRef {
            id,
            host: "127.0.0.1".into(),
            port,
            master_priority: 0,
            no_switch: false,
        }
    }

    fn replica_probe(io: &str, pos: &str) -> NodeProbe {
        NodeProbe {
            reachable: true,
            channels: vec![Channel {
                master_host: "127.0.0.1".into(),
                master_port: 1,
                io_running: io.into(),
                sql_running: true,
                gtid_io_pos: Some(pos.into()),
                ..Channel::default()
            }],
            ..NodeProbe::default()
        }
    }

    fn semi_sync_primary() -> NodeProbe {
        NodeProbe {
            reachable: true,
            semi_sync_master_active: true,
            semi_sync_wait_after_sync: true,
            ..NodeProbe::default()
        }
    }

    #[test]
    fn dead_only_after_k_failures_and_replica_confirmation() {
        let (p, r2, r3) = (node(1, 1), node(2, 2), node(3, 3));
        let last = semi_sync_primary();
        let (a, b) = (
            replica_probe("Connecting", "0-1-9"),
            replica_probe("Connecting", "0-1-10"),
        );
        let mut f = ShardFacts {
            primary: &p,
            primary_failures: 0,
            primary_last_ok: Some(&last),
            replicas: vec![(&r2, &a), (&r3, &b)],
        };
        assert_eq!(assess(&f, 3), Verdict::Healthy);
        f.primary_failures = 2;
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 2 });
        f.primary_failures = 3;
        match assess(&f, 3) {
            Verdict::PrimaryDead { view } => {
                assert!(view.semi_sync_proof_valid);
                assert_eq!(view.replicas[1].received, GtidPos::parse("0-1-10").ok());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_replica_still_connected_means_the_manager_is_cut_off() {
        let (p, r2, r3) = (node(1, 1), node(2, 2), node(3, 3));
        let (a, b) = (
            replica_probe("Connecting", "0-1-9"),
            replica_probe("Yes", "0-1-10"),
        );
        let f = ShardFacts {
            primary: &p,
            primary_failures: 10,
            primary_last_ok: None,
            replicas: vec![(&r2, &a), (&r3, &b)],
        };
        assert!(
            matches!(assess(&f, 3), Verdict::NotConfirmed { reason } if reason.contains("replica 3"))
        );
    }

    #[test]
    fn unreachable_replicas_confirm_but_void_the_proof_and_async_primary_too() {
        let (p, r2) = (node(1, 1), node(2, 2));
        let gone = NodeProbe::default();
        let f = ShardFacts {
            primary: &p,
            primary_failures: 3,
            primary_last_ok: None,
            replicas: vec![(&r2, &gone)],
        };
        match assess(&f, 3) {
            Verdict::PrimaryDead { view } => {
                assert!(!view.semi_sync_proof_valid);
                assert!(!view.replicas[0].reachable && view.replicas[0].received.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flap_window() {
        let t = Instant::now();
        let w = Duration::from_secs(60);
        assert!(!in_flap_window(None, t, w));
        assert!(in_flap_window(Some(t), t + Duration::from_secs(59), w));
        assert!(!in_flap_window(Some(t), t + Duration::from_secs(60), w));
    }

    #[test]
    fn old_primary_with_errant_transactions_is_kept_out() {
        let new = GtidPos::parse("0-2-120").unwrap();
        assert_eq!(
            rejoin(&GtidPos::parse("0-1-100").unwrap(), &new),
            Rejoin::AsReplica
        );
        match rejoin(&GtidPos::parse("0-1-121").unwrap(), &new) {
            Rejoin::Rebuild { errant } => assert_eq!(errant, "0-1-121..121"),
            other => panic!("{other:?}"),
        }
    }

    fn stopped(host: &str, port: u16, io_errno: i64, sql_errno: i64) -> NodeProbe {
        NodeProbe {
            reachable: true,
            channels: vec![Channel {
                master_host: host.into(),
                master_port: port,
                io_running: "No".into(),
                sql_running: false,
                last_io_errno: io_errno,
                last_sql_errno: sql_errno,
                ..Channel::default()
            }],
            ..NodeProbe::default()
        }
    }

    #[test]
    fn a_replica_stopped_cleanly_at_the_primary_is_started() {
        let p = stopped("127.0.0.1", 5, 0, 0);
        assert_eq!(replica_upkeep("127.0.0.1", 5, &p), Upkeep::Start);
    }

    #[test]
    fn a_replica_stopped_cleanly_elsewhere_or_unset_is_repointed() {
        let p = stopped("127.0.0.1", 6, 0, 0);
        assert_eq!(
            replica_upkeep("127.0.0.1", 5, &p),
            Upkeep::Repoint {
                from: Some("127.0.0.1:6".into())
            }
        );
        let p = stopped("", 0, 0, 0);
        assert_eq!(
            replica_upkeep("127.0.0.1", 5, &p),
            Upkeep::Repoint { from: None }
        );
        let none = NodeProbe {
            reachable: true,
            ..NodeProbe::default()
        };
        assert_eq!(
            replica_upkeep("127.0.0.1", 5, &none),
            Upkeep::Repoint { from: None }
        );
    }

    #[test]
    fn a_stopped_thread_with_an_error_is_only_reported() {
        let p = stopped("127.0.0.1", 5, 0, 1062);
        assert!(matches!(
            replica_upkeep("127.0.0.1", 5, &p),
            Upkeep::Broken { reason } if reason.contains("Last_SQL_Errno 1062")
        ));
        let p = stopped("127.0.0.1", 5, 1236, 0);
        assert!(matches!(
            replica_upkeep("127.0.0.1", 5, &p),
            Upkeep::Broken { reason } if reason.contains("Last_IO_Errno 1236")
        ));
        // The IO thread failed but the SQL thread still applies its relay log.
        let mut p = stopped("127.0.0.1", 5, 1236, 0);
        p.channels[0].sql_running = true;
        assert!(matches!(
            replica_upkeep("127.0.0.1", 5, &p),
            Upkeep::Broken { .. }
        ));
    }

    #[test]
    fn running_retrying_unreachable_or_named_channels_are_left_alone() {
        let mut p = stopped("127.0.0.1", 5, 2003, 0);
        p.channels[0].io_running = "Connecting".into();
        assert_eq!(replica_upkeep("127.0.0.1", 5, &p), Upkeep::Nothing);
        let mut p = stopped("127.0.0.1", 5, 0, 0);
        p.channels[0].sql_running = true;
        assert_eq!(replica_upkeep("127.0.0.1", 5, &p), Upkeep::Nothing);
        let mut p = stopped("127.0.0.1", 5, 0, 0);
        p.channels[0].connection_name = "other".into();
        assert_eq!(replica_upkeep("127.0.0.1", 5, &p), Upkeep::Nothing);
        assert_eq!(
            replica_upkeep("127.0.0.1", 5, &NodeProbe::default()),
            Upkeep::Nothing
        );
    }
}
