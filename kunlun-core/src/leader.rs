//! Leadership among `cluster-mgr` processes sharing one metadata store: an actor that takes and
//! renews the lease `kl_leader_lease` and publishes this process's role on a `watch` channel.
//!
//! Invariant: this process reports itself leader only while a renew confirmed the lease and the
//! lease, measured on the local monotonic clock from that renew's *start*, cannot yet have
//! expired for anybody else (less the store clock's one-second granularity and a stop margin
//! for the actors). A renew that loses the compare-and-swap, or is not confirmed in that time,
//! ends the term at once, so two processes never act as leader at the same time; a renew the
//! store failed (its metadata primary failing over) is tried again every 250 ms while the term
//! goes on until that same deadline, which is what lets the leader fail the metadata shard
//! over and renew on its new primary. Every
//! lease statement runs on the store's own system pool, never queued behind API requests.

use std::time::Duration;

use kunlun_meta::model::{ClusterMgrNode, MemberState};
use kunlun_meta::store::repo::{lease, meta};
use kunlun_meta::store::{LeaseClock, Store};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::ClusterManager;

/// The lease the cluster managers compete for.
pub const DEFAULT_LEASE_NAME: &str = "cluster_mgr";
/// The store keeps `expires_at` in whole seconds (its clock is read with `UNIX_TIMESTAMP()`),
/// so a lease may end up to this much earlier than `renew start + ttl`.
pub const STORE_CLOCK_GRANULARITY: Duration = Duration::from_secs(1);
/// Shortest lease accepted: it must outlast the clock granularity plus a stop margin.
pub const MIN_TTL: Duration = Duration::from_secs(2);
/// Longest stop margin (time left to the actors to stop before the lease may expire).
const MAX_STOP_MARGIN: Duration = Duration::from_secs(1);
/// Deadline of the release at shutdown (and of a `cluster_mgr_nodes` write).
const RELEASE_DEADLINE: Duration = Duration::from_secs(3);
/// Pause before a leader tries again a renew the store failed (not refused).
const RENEW_RETRY: Duration = Duration::from_millis(250);
/// Pause before a failed `cluster_mgr_nodes` write is tried again.
const ROW_RETRY: Duration = Duration::from_secs(5);

/// Settings of the leadership actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// Row of `kl_leader_lease` competed for.
    pub lease_name: String,
    /// Who we are in the lease: `hostaddr:port` plus a suffix unique to this process.
    pub holder: String,
    /// Our row in `cluster_mgr_nodes`.
    pub hostaddr: String,
    pub port: u16,
    /// How long a lease lasts after each renew.
    pub ttl: Duration,
    /// How often the leader renews and a follower tries to take over.
    pub renew_interval: Duration,
}

impl LeaderConfig {
    /// Defaults for `hostaddr:port`: lease `cluster_mgr`, renew every `ttl / 3`.
    pub fn new(hostaddr: &str, port: u16, ttl: Duration) -> Self {
        LeaderConfig {
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            holder: format!("{hostaddr}:{port}/{}", process_suffix()),
            hostaddr: hostaddr.to_string(),
            port,
            ttl,
            renew_interval: ttl / 3,
        }
    }

    /// Refuses settings under which a leader could not renew before its own deadline.
    pub fn validate(&self) -> crate::Result<()> {
        if self.ttl < MIN_TTL {
            return Err(Error::Invalid(format!(
                "leader lease ttl {:?} is shorter than {MIN_TTL:?}",
                self.ttl
            )));
        }
        let window = act_window(self.ttl);
        if self.renew_interval.is_zero() || self.renew_interval >= window {
            return Err(Error::Invalid(format!(
                "leader renew interval {:?} must be above 0 and below {window:?} (ttl {:?} less clock granularity and stop margin)",
                self.renew_interval, self.ttl
            )));
        }
        Ok(())
    }
}

/// This process's role, as published on the watch channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum LeaderState {
    /// The store is not open yet or the first attempt has not answered.
    Starting,
    /// We hold the lease at `epoch`; the background actors run.
    Leader { epoch: i64 },
    /// Someone else holds it (`leader`, `epoch`), or nobody could be confirmed (`None`).
    Follower {
        leader: Option<String>,
        epoch: Option<i64>,
    },
}

impl LeaderState {
    pub fn is_leader(&self) -> bool {
        matches!(self, LeaderState::Leader { .. })
    }

    /// `leader`, `follower` or `starting`.
    pub fn role(&self) -> &'static str {
        match self {
            LeaderState::Starting => "starting",
            LeaderState::Leader { .. } => "leader",
            LeaderState::Follower { .. } => "follower",
        }
    }
}

/// Time a leader stops early so its actors are stopped before the lease can expire.
pub fn stop_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(MAX_STOP_MARGIN)
}

/// How long after a renew's start its lease may be acted on.
pub fn act_window(ttl: Duration) -> Duration {
    ttl.saturating_sub(STORE_CLOCK_GRANULARITY + stop_margin(ttl))
}

/// Until when a lease confirmed by a renew that started at `renew_started` may be acted on
/// (local monotonic clock). Measured from the start, not the answer, because the store may have
/// stamped the expiry at any moment in between.
pub fn act_until(renew_started: Instant, ttl: Duration) -> Instant {
    renew_started + act_window(ttl)
}

/// Whether a leader whose last confirmed renew allows acting until `until` must step down at
/// `now`.
pub fn must_step_down(now: Instant, until: Instant) -> bool {
    now >= until
}

/// A suffix telling two processes on one host apart (and one process from its restart).
fn process_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// What one attempt to take or renew the lease found.
enum Attempt {
    Held(lease::Lease),
    Other(Option<lease::Lease>),
}

/// The leadership actor; see the module doc. Create with [`Leadership::new`], run with
/// [`Leadership::run`].
pub struct Leadership {
    cfg: LeaderConfig,
    tx: watch::Sender<LeaderState>,
    /// Until when the lease we hold may be acted on; the fenced store handles of our terms
    /// read it before every write ([`kunlun_meta::store::WriteFence::clock`]).
    clock: LeaseClock,
}

impl Leadership {
    /// The actor and a receiver of its state (starts as [`LeaderState::Starting`]).
    pub fn new(cfg: LeaderConfig) -> (Leadership, watch::Receiver<LeaderState>) {
        let (tx, rx) = watch::channel(LeaderState::Starting);
        (
            Leadership {
                cfg,
                tx,
                clock: LeaseClock::default(),
            },
            rx,
        )
    }

    /// The lease clock this actor keeps: set to the act-until instant of every confirmed
    /// renew, cleared when it steps down. Hand it to the terms ([`crate::Term::leader`]).
    pub fn clock(&self) -> LeaseClock {
        self.clock.clone()
    }

    /// Waits for `manager`'s store, then takes or renews the lease every `renew_interval`
    /// until `cancel` fires; then releases the lease if held (stop the leader's actors
    /// before cancelling, so a standby never starts while they still run).
    pub async fn run(self, manager: ClusterManager, cancel: CancellationToken) {
        // The store's system pool: API requests queueing for the shared pool never delay a
        // renew past the lease (issue 11: 1,000 concurrent GETs used to depose the leader).
        let store = loop {
            match manager.store() {
                Ok(s) => break s.system(),
                Err(Error::ShuttingDown) => return,
                Err(_) => tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                },
            }
        };
        tracing::info!(holder = %self.cfg.holder, ttl = ?self.cfg.ttl, renew = ?self.cfg.renew_interval, "leader election started");
        // Our `cluster_mgr_nodes` row follows the state in its own task, so a slow write never
        // delays a renew.
        let rows = tokio::spawn(keep_row(
            store.clone(),
            self.cfg.clone(),
            self.tx.subscribe(),
        ));
        // While leader: the last confirmed lease's epoch and until when we may act on it.
        let mut term: Option<(i64, Instant)> = None;
        loop {
            let started = Instant::now();
            // A follower's attempt gets one renew interval; a leader's ends when its lease
            // can no longer be trusted.
            let deadline = match term {
                Some((_, until)) => until,
                None => started + self.cfg.renew_interval.max(Duration::from_millis(500)),
            };
            let mut renew_failed = false;
            let outcome = tokio::select! {
                _ = cancel.cancelled() => break,
                r = tokio::time::timeout_at(deadline, self.attempt(&store)) => r,
            };
            term = match (outcome, term) {
                (Ok(Ok(Attempt::Held(l))), prev) => {
                    let until = act_until(started, self.cfg.ttl);
                    self.clock.set(Some((l.epoch, until.into_std())));
                    if prev.map(|(e, _)| e) != Some(l.epoch) {
                        tracing::info!(epoch = l.epoch, holder = %self.cfg.holder, "this cluster manager is now the leader");
                        self.publish(LeaderState::Leader { epoch: l.epoch });
                    }
                    Some((l.epoch, until))
                }
                (Ok(Ok(Attempt::Other(cur))), prev) => {
                    if prev.is_some() {
                        tracing::warn!(leader = ?cur.as_ref().map(|l| &l.holder), "lost the leader lease; stepping down");
                    }
                    self.clock.set(None);
                    let state = LeaderState::Follower {
                        leader: cur.as_ref().map(|l| l.holder.clone()),
                        epoch: cur.as_ref().map(|l| l.epoch),
                    };
                    self.publish(state);
                    None
                }
                // The store failed (its primary may be failing over): the lease stays ours
                // until it expires, whoever the store's next primary is (the lease row is
                // replicated like any other), so the term goes on until then and the renew is
                // tried again soon. Only a renew that answered "someone else" or did not
                // answer in time ends the term early.
                (Ok(Err(e)), Some((epoch, until))) if !must_step_down(Instant::now(), until) => {
                    renew_failed = true;
                    tracing::warn!(error = %e, epoch, acting_for = ?until.saturating_duration_since(Instant::now()), "cannot renew the leader lease; acting on it until it expires");
                    Some((epoch, until))
                }
                (Ok(Err(e)), prev) => {
                    if prev.is_some() {
                        tracing::warn!(error = %e, "cannot renew the leader lease; stepping down");
                    } else {
                        tracing::debug!(error = %e, "cannot read the leader lease");
                    }
                    self.publish_unknown();
                    None
                }
                (Err(_), prev) => {
                    if prev.is_some() {
                        tracing::warn!("leader lease renew not confirmed before it could expire; stepping down");
                    }
                    self.publish_unknown();
                    None
                }
            };
            let next = if renew_failed {
                Instant::now() + RENEW_RETRY.min(self.cfg.renew_interval)
            } else {
                started + self.cfg.renew_interval
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            if let Some((_, until)) = term {
                if must_step_down(Instant::now(), until) {
                    tracing::warn!("leader lease not renewed in time; stepping down");
                    self.publish_unknown();
                    term = None;
                }
            }
        }
        self.clock.set(None);
        if let Some((epoch, _)) = term {
            self.publish(LeaderState::Follower {
                leader: None,
                epoch: Some(epoch),
            });
            let name = self.cfg.lease_name.clone();
            let holder = self.cfg.holder.clone();
            let release = store.tx(async |tx| lease::release(tx, &name, &holder, epoch).await);
            match tokio::time::timeout(RELEASE_DEADLINE, release).await {
                Ok(Ok(true)) => tracing::info!(epoch, "leader lease released"),
                Ok(Ok(false)) => tracing::info!(epoch, "leader lease was no longer ours"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot release the leader lease; it expires by itself")
                }
                Err(_) => tracing::warn!("leader lease release timed out; it expires by itself"),
            }
        }
        // The row writer writes the last state, then ends with the channel.
        drop(self.tx);
        if tokio::time::timeout(RELEASE_DEADLINE, rows).await.is_err() {
            tracing::warn!("updating this manager's cluster_mgr_nodes row timed out");
        }
    }

    /// One take-or-renew, and when someone else holds the lease, who.
    async fn attempt(&self, store: &Store) -> kunlun_meta::Result<Attempt> {
        let name = self.cfg.lease_name.as_str();
        let holder = self.cfg.holder.as_str();
        let ttl = self.cfg.ttl;
        store
            .tx(async |tx| {
                Ok(match lease::acquire(tx, name, holder, ttl).await? {
                    Some(l) => Attempt::Held(l),
                    None => Attempt::Other(lease::get(tx, name).await?),
                })
            })
            .await
    }

    fn publish(&self, s: LeaderState) {
        self.tx.send_if_modified(|cur| {
            let changed = *cur != s;
            *cur = s;
            changed
        });
    }

    /// Nobody could be confirmed leader (the store did not answer in time).
    fn publish_unknown(&self) {
        self.clock.set(None);
        self.publish(LeaderState::Follower {
            leader: None,
            epoch: None,
        });
    }
}

/// Keeps our `cluster_mgr_nodes` row current: `source` while leading, `replica` otherwise
/// (best effort: the row is informational; a failed write is retried every few seconds).
async fn keep_row(store: Store, cfg: LeaderConfig, mut rx: watch::Receiver<LeaderState>) {
    let mut written: Option<MemberState> = None;
    let mut open = true;
    while open {
        let want = match &*rx.borrow_and_update() {
            LeaderState::Starting => None,
            LeaderState::Leader { .. } => Some(MemberState::Source),
            LeaderState::Follower { .. } => Some(MemberState::Replica),
        };
        let mut failed = false;
        if let Some(state) = want.filter(|w| Some(*w) != written) {
            let row = ClusterMgrNode {
                hostaddr: cfg.hostaddr.clone(),
                port: cfg.port,
                prometheus_port: None,
                member_state: state,
            };
            let write = store.tx(async |tx| match state {
                MemberState::Source => meta::claim_mgr_source(tx, &row).await,
                _ => meta::upsert_mgr_node(tx, &row).await,
            });
            match tokio::time::timeout(RELEASE_DEADLINE, write).await {
                Ok(Ok(())) => written = Some(state),
                Ok(Err(e)) => {
                    failed = true;
                    tracing::warn!(error = %e, "cannot update this manager's cluster_mgr_nodes row");
                }
                Err(_) => {
                    failed = true;
                    tracing::warn!("updating this manager's cluster_mgr_nodes row timed out");
                }
            }
        }
        open = if failed {
            tokio::select! {
                r = rx.changed() => r.is_ok(),
                _ = tokio::time::sleep(ROW_RETRY) => true,
            }
        } else {
            rx.changed().await.is_ok()
        };
    }
    // The channel closed: write the final state if it differs (a last chance, no retry).
    let last = rx.borrow().clone();
    if matches!(last, LeaderState::Follower { .. }) && written == Some(MemberState::Source) {
        let row = ClusterMgrNode {
            hostaddr: cfg.hostaddr.clone(),
            port: cfg.port,
            prometheus_port: None,
            member_state: MemberState::Replica,
        };
        if let Err(e) = store
            .tx(async |tx| meta::upsert_mgr_node(tx, &row).await)
            .await
        {
            tracing::warn!(error = %e, "cannot mark this manager's cluster_mgr_nodes row replica");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_acted_on_until_ttl_less_granularity_and_margin_from_the_renew_start() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(stop_margin(ttl), Duration::from_secs(1));
        assert_eq!(act_until(t0, ttl), t0 + Duration::from_secs(8));
        assert!(!must_step_down(
            t0 + Duration::from_millis(7999),
            act_until(t0, ttl)
        ));
        assert!(must_step_down(
            t0 + Duration::from_secs(8),
            act_until(t0, ttl)
        ));
        // Short test leases: 3 s → 3 - 1 - 0.3.
        let short = Duration::from_secs(3);
        assert_eq!(act_window(short), Duration::from_millis(1700));
        // Always strictly inside the lease, however short.
        for ms in [2000u64, 2500, 3000, 10_000, 60_000] {
            let ttl = Duration::from_millis(ms);
            assert!(act_window(ttl) + STORE_CLOCK_GRANULARITY < ttl, "{ms}");
        }
    }

    #[test]
    fn a_slow_renew_does_not_extend_the_term() {
        // The renew started at t0 and answered 5 s later: the window still counts from t0.
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let until = act_until(t0, ttl);
        assert!(must_step_down(
            t0 + Duration::from_secs(5) + act_window(ttl),
            until
        ));
    }

    #[test]
    fn config_defaults_and_refusals() {
        let c = LeaderConfig::new("127.0.0.1", 8010, Duration::from_secs(10));
        assert!(c.holder.starts_with("127.0.0.1:8010/"), "{}", c.holder);
        let suffix = c.holder.trim_start_matches("127.0.0.1:8010/");
        assert!(
            suffix.starts_with(&format!("{}-", std::process::id())),
            "{suffix}"
        );
        assert_eq!(c.renew_interval, Duration::from_secs(10) / 3);
        c.validate().unwrap();
        let short = LeaderConfig::new("h", 1, Duration::from_secs(1));
        assert!(matches!(short.validate(), Err(Error::Invalid(_))));
        let mut slow = c.clone();
        slow.renew_interval = Duration::from_secs(9);
        assert!(matches!(slow.validate(), Err(Error::Invalid(_))));
        slow.renew_interval = Duration::ZERO;
        assert!(matches!(slow.validate(), Err(Error::Invalid(_))));
        LeaderConfig::new("h", 1, MIN_TTL).validate().unwrap();
    }

    #[test]
    fn state_serializes_with_its_role() {
        let s = serde_json::to_value(LeaderState::Leader { epoch: 3 }).unwrap();
        assert_eq!(s, serde_json::json!({"role": "leader", "epoch": 3}));
        assert!(!LeaderState::Starting.is_leader());
        assert_eq!(
            LeaderState::Follower {
                leader: None,
                epoch: None
            }
            .role(),
            "follower"
        );
    }
}
