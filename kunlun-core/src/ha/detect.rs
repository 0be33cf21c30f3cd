//! Pure decisions over probe results: is a shard's primary dead (the manager's failed probes
//! confirmed by its replicas), is the shard inside its anti-flapping window, may a
//! returning old primary rejoin, and what a replica whose replication stopped needs.
//!
//! Invariant: the primary is declared dead only when the manager cannot reach it **and** its
//! replicas confirm it, on one of three grounds ([`Basis`]):
//! - **crashed**: the manager's watch session to it ended and a connect was then *refused*
//!   (the host answers, nothing listens: the process is gone), and no reachable replica still
//!   holds a live connection to a source: decided on the first failed probe;
//! - **silent** (only where the caller can then stop the primary: `silence_counts`): two
//!   probes in a row failed and every reachable replica either tries to reconnect to it or
//!   heard nothing from it, not even a heartbeat, for [`silence_needed`] (two heartbeat
//!   periods), measured from the answer of the first probe that saw its receiver's position
//!   to the sending of the latest (at least one replica must say so): a hung server, or one
//!   cut off from everyone;
//! - **probes**: `k` probes in a row failed and no reachable replica holds a live connection
//!   to a source (its receiver gave up after `slave_net_timeout`).
//!
//! A manager-side partition alone never yields [`Verdict::PrimaryDead`]: the replicas keep
//! hearing the primary (events or heartbeats), so none of the three holds; and a connect
//! that times out is not a refusal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::choose::{ReplicaView, ShardView};
use super::gtid::GtidPos;
use super::probe::{Channel, NodeProbe};

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
    /// The manager's watch session to the primary ended since its last successful probe, and
    /// the latest probe's connect was refused.
    pub primary_crashed: bool,
    /// The silent ground may be used: the failover can stop a silent primary (SSH access);
    /// without that, a primary that is only silent stays suspect.
    pub silence_counts: bool,
    /// Every active replica with its latest probe.
    pub replicas: Vec<(&'a NodeRef, &'a NodeProbe)>,
    /// By replica id: how long its receiver's progress (position, heartbeats) has stayed the
    /// same across the monitor's probes, the earliest probe that saw it included.
    pub unchanged_for: HashMap<i64, Duration>,
}

/// Why a primary was declared dead (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    Crashed,
    Silent,
    Probes,
}

impl std::fmt::Display for Basis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Basis::Crashed => {
                "its session to the manager ended and a connect was refused; the replicas \
                 lost their connection too"
            }
            Basis::Silent => {
                "two probes failed and the replicas heard nothing from it, not even a \
                 heartbeat"
            }
            Basis::Probes => "failed probes, confirmed by the replicas",
        })
    }
}

/// The assessment of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Some probes failed, not yet confirmed.
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
        basis: Basis,
    },
}

/// How long a receiver must have heard nothing from its source to count as a witness of its
/// silence: two heartbeat periods (the source sends one after each period without events; the
/// second period is the margin for a heartbeat sent late by a loaded source), at least
/// 300 ms. `None` when the period is unknown (no witness).
pub fn silence_needed(c: &Channel) -> Option<Duration> {
    (c.heartbeat_period_ms > 0)
        .then(|| Duration::from_millis(c.heartbeat_period_ms * 2).max(Duration::from_millis(300)))
}

/// The replica's channel from the primary (its only channel when none names it).
fn channel_from<'p>(p: &'p NodeProbe, primary: &NodeRef) -> Option<&'p Channel> {
    p.channel_from(&primary.host, primary.port)
        .or(match p.channels.as_slice() {
            [only] => Some(only),
            _ => None,
        })
}

/// True when no reachable replica holds a live connection to a source, and one answered.
fn replicas_lost_it(f: &ShardFacts<'_>) -> bool {
    let reachable: Vec<_> = f.replicas.iter().filter(|(_, p)| p.reachable).collect();
    !reachable.is_empty()
        && !reachable
            .iter()
            .any(|(_, p)| p.channels.iter().any(Channel::io_connected))
}

/// True when every reachable replica either tries to reconnect to the primary or heard
/// nothing from it for [`silence_needed`], and at least one of them is such a witness.
fn replicas_hear_nothing(f: &ShardFacts<'_>) -> bool {
    let mut witnesses = 0;
    for (r, p) in f.replicas.iter().filter(|(_, p)| p.reachable) {
        let connected: Vec<&Channel> = p.channels.iter().filter(|c| c.io_connected()).collect();
        if connected.is_empty() {
            // Reconnecting to it (`Connecting`) witnesses; a receiver stopped by hand or by an
            // error says nothing about the primary.
            match channel_from(p, f.primary) {
                Some(c) if c.io_running == "Connecting" => witnesses += 1,
                _ => return false,
            }
            continue;
        }
        let Some(c) = channel_from(p, f.primary).filter(|c| c.io_connected()) else {
            // Connected to some other source: it says nothing about this one.
            return false;
        };
        if connected.len() > 1 {
            return false;
        }
        let heard = f.unchanged_for.get(&r.id).copied().unwrap_or_default();
        match silence_needed(c) {
            Some(need) if heard >= need => witnesses += 1,
            _ => return false,
        }
    }
    witnesses > 0
}

/// Assesses the primary of one shard (see the module invariant).
pub fn assess(f: &ShardFacts<'_>, k: u32) -> Verdict {
    if f.primary_failures == 0 {
        return Verdict::Healthy;
    }
    let basis = if f.primary_crashed && replicas_lost_it(f) {
        Basis::Crashed
    } else if f.silence_counts && f.primary_failures >= 2 && replicas_hear_nothing(f) {
        Basis::Silent
    } else if f.primary_failures < k.max(1) {
        return Verdict::Suspect {
            failures: f.primary_failures,
        };
    } else {
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
        Basis::Probes
    };
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
        basis,
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
    fn dead_only_after_failed_probes_and_replica_confirmation() {
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
            primary_crashed: false,
            silence_counts: true,
            replicas: vec![(&r2, &a), (&r3, &b)],
            unchanged_for: HashMap::new(),
        };
        assert_eq!(assess(&f, 3), Verdict::Healthy);
        f.primary_failures = 1;
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 1 });
        // Both replicas lost their connection: two failed probes are enough.
        f.primary_failures = 2;
        match assess(&f, 3) {
            Verdict::PrimaryDead { view, basis } => {
                assert_eq!(basis, Basis::Silent);
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
            primary_crashed: false,
            silence_counts: true,
            replicas: vec![(&r2, &a), (&r3, &b)],
            unchanged_for: HashMap::new(),
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
            primary_crashed: false,
            silence_counts: true,
            replicas: vec![(&r2, &gone)],
            unchanged_for: HashMap::new(),
        };
        match assess(&f, 3) {
            Verdict::PrimaryDead { view, basis } => {
                assert_eq!(basis, Basis::Probes);
                assert!(!view.semi_sync_proof_valid);
                assert!(!view.replicas[0].reachable && view.replicas[0].received.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    fn with_heartbeats(mut p: NodeProbe, period_ms: u64) -> NodeProbe {
        for c in &mut p.channels {
            c.heartbeat_period_ms = period_ms;
        }
        p
    }

    #[test]
    fn a_crash_is_dead_at_the_first_refusal_once_the_replicas_lost_it_too() {
        let (p, r2, r3) = (node(1, 1), node(2, 2), node(3, 3));
        let (lost, still) = (
            replica_probe("Connecting", "0-1-9"),
            replica_probe("Yes", "0-1-10"),
        );
        let mut f = ShardFacts {
            primary: &p,
            primary_failures: 1,
            primary_last_ok: None,
            primary_crashed: true,
            silence_counts: false,
            replicas: vec![(&r2, &lost), (&r3, &still)],
            unchanged_for: HashMap::new(),
        };
        // One replica still connected (it has not read the end of its stream yet): wait.
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 1 });
        f.replicas = vec![(&r2, &lost), (&r3, &lost)];
        assert!(matches!(
            assess(&f, 3),
            Verdict::PrimaryDead {
                basis: Basis::Crashed,
                ..
            }
        ));
        // No replica answers: nobody confirms a crash; the k probes decide.
        let gone = NodeProbe::default();
        f.replicas = vec![(&r2, &gone)];
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 1 });
        // Not refused (a timeout, a cut): no crash.
        f.replicas = vec![(&r2, &lost), (&r3, &lost)];
        f.primary_crashed = false;
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 1 });
    }

    #[test]
    fn a_silent_primary_is_dead_when_every_connected_replica_heard_nothing_for_long_enough() {
        let (p, r2, r3) = (node(1, 1), node(2, 2), node(3, 3));
        let (a, b) = (
            with_heartbeats(replica_probe("Yes", "0-1-9"), 500),
            with_heartbeats(replica_probe("Yes", "0-1-10"), 500),
        );
        let ms = Duration::from_millis;
        let mut f = ShardFacts {
            primary: &p,
            primary_failures: 2,
            primary_last_ok: None,
            primary_crashed: false,
            silence_counts: true,
            replicas: vec![(&r2, &a), (&r3, &b)],
            unchanged_for: HashMap::from([(2, ms(1100)), (3, ms(900))]),
        };
        // Replica 3 heard something 900 ms ago: within two heartbeat periods.
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 2 });
        f.unchanged_for.insert(3, ms(1000));
        assert!(matches!(
            assess(&f, 3),
            Verdict::PrimaryDead {
                basis: Basis::Silent,
                ..
            }
        ));
        // One failed probe is not enough.
        f.primary_failures = 1;
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 1 });
        // A manager cut off from the primary while the replicas hear it: never dead.
        f.primary_failures = 10;
        f.unchanged_for = HashMap::from([(2, ms(100)), (3, ms(0))]);
        assert!(matches!(assess(&f, 3), Verdict::NotConfirmed { .. }));
        // A replica that lost the connection witnesses too; an unknown period does not.
        let lost = with_heartbeats(replica_probe("Connecting", "0-1-9"), 500);
        let unknown = replica_probe("Yes", "0-1-10");
        f.primary_failures = 2;
        f.replicas = vec![(&r2, &lost), (&r3, &unknown)];
        f.unchanged_for = HashMap::from([(2, ms(0)), (3, ms(5000))]);
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 2 });
        f.replicas = vec![(&r2, &lost), (&r3, &b)];
        assert!(matches!(
            assess(&f, 3),
            Verdict::PrimaryDead {
                basis: Basis::Silent,
                ..
            }
        ));
        // A receiver stopped by hand is no witness.
        let stopped = with_heartbeats(replica_probe("No", "0-1-9"), 500);
        f.replicas = vec![(&r2, &stopped), (&r3, &b)];
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 2 });
        // Nobody reachable: no witness.
        let gone = NodeProbe::default();
        f.replicas = vec![(&r2, &gone)];
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 2 });
        // Silence does not count where the primary could not be stopped.
        f.replicas = vec![(&r2, &lost), (&r3, &b)];
        f.silence_counts = false;
        assert_eq!(assess(&f, 3), Verdict::Suspect { failures: 2 });
    }

    #[test]
    fn silence_needs_two_heartbeat_periods() {
        let c = |ms| Channel {
            heartbeat_period_ms: ms,
            ..Channel::default()
        };
        assert_eq!(silence_needed(&c(0)), None);
        assert_eq!(silence_needed(&c(1000)), Some(Duration::from_millis(2000)));
        assert_eq!(silence_needed(&c(100)), Some(Duration::from_millis(300)));
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
