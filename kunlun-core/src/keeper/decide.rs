//! The instance keeper's decisions, pure and unit-tested: which instances it tends at all,
//! whether one found down is started again or left to someone else (HA, the operator, a job,
//! a rebuild), and when it stops trying (backoff, crash loop).
//!
//! Invariant: the keeper never takes a role decision. A dead recorded primary is HA's to fail
//! over; the keeper starts it in place only where no failover can happen (HA does not watch
//! the shard, no other node of the shard could take over, or HA declined the failover), and a
//! failed-over old primary only while HA waits for it to rejoin as a replica.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kunlun_meta::model::{Cluster, ClusterPolicy, ClusterStatus, NodeStatus};

use crate::ha::HaStance;

/// What to do with an instance found down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tend {
    /// Start it again; `why` says what it is (for the event).
    Restart { why: String },
    /// Leave it down; `why` says who decides instead.
    Leave { why: String },
}

impl Tend {
    fn restart(why: &str) -> Tend {
        Tend::Restart { why: why.into() }
    }
    fn leave(why: &str) -> Tend {
        Tend::Leave { why: why.into() }
    }
}

/// Why no instance of `cluster` is tended this round, if none is: a cluster being deleted,
/// `auto_restart` off, or a job changing it (an install or removal of its nodes must not race
/// a restart).
pub fn cluster_skip(cluster: &Cluster, policy: &ClusterPolicy, job_busy: bool) -> Option<String> {
    if cluster.status == ClusterStatus::Deleted {
        return Some("its cluster is being deleted".into());
    }
    if !policy.auto_restart {
        return Some(format!("auto_restart is off for cluster {}", cluster.id));
    }
    if job_busy {
        return Some(format!("a job is changing cluster {}", cluster.id));
    }
    None
}

/// Whether a node of `status` is checked at all: `active` nodes, and a storage node HA took out
/// (`inactive`, which may be an old primary HA waits for). `manual_stop` (the operator's
/// stop), `creating` (a job installs it) and `deleted` (a job removes it) never are.
pub fn watched(status: NodeStatus, storage: bool) -> bool {
    match status {
        NodeStatus::Active => true,
        NodeStatus::Inactive => storage,
        NodeStatus::ManualStop | NodeStatus::Creating | NodeStatus::Deleted => false,
    }
}

/// What the keeper knows of a storage node found down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageFacts {
    pub status: NodeStatus,
    /// Metadata records it as its shard's primary (`member_state = source`).
    pub primary: bool,
    /// HA watches its shard (the cluster's `ha_mode` is `rbr`).
    pub ha_watched: bool,
    /// Another `active` node of its shard was not found down: something could take over.
    pub others_in_service: bool,
    /// What HA does about its shard; `None` where HA is not running (yet).
    pub ha: Option<HaStance>,
}

/// Whether a storage node found down is started again (see the module invariant).
pub fn storage(f: &StorageFacts) -> Tend {
    if !watched(f.status, true) {
        return Tend::leave("not in service");
    }
    if f.ha.is_some_and(|h| h.busy) {
        return Tend::leave("HA's failover or switchover of its shard is running");
    }
    let stance = f.ha.unwrap_or_default();
    if f.status == NodeStatus::Inactive {
        return if stance.awaiting_rejoin {
            Tend::restart("a failed-over old primary; HA rejoins it as a replica once it answers")
        } else {
            Tend::leave(
                "taken out of service by HA (kept out for rebuild, or the old primary of a \
                 failover HA no longer waits for): a rebuild or the operator decides",
            )
        };
    }
    if !f.primary {
        return Tend::restart("a replica");
    }
    if !f.ha_watched {
        return Tend::restart("the primary of a shard HA does not fail over (ha_mode is not rbr)");
    }
    if !f.others_in_service {
        return Tend::restart("the primary, and no other node of its shard could take over");
    }
    match f.ha {
        None => Tend::leave("the primary: left to HA's failover (HA is not running yet)"),
        Some(h) if h.declined => Tend::restart(
            "the primary, whose failover HA declined: started in place, it holds every \
             acknowledged write",
        ),
        Some(_) => Tend::leave("the primary: left to HA's failover"),
    }
}

/// Whether a compute node found down is started again: only an `active` one.
pub fn compute(status: NodeStatus) -> Tend {
    if watched(status, false) {
        Tend::restart("a compute node")
    } else {
        Tend::leave("not in service")
    }
}

/// How many restarts, how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Restarts within `window` after which the keeper stops trying.
    pub max_restarts: u32,
    pub window: Duration,
    /// Wait after the first restart before another; doubled after each one.
    pub base_backoff: Duration,
    /// Longest wait between two restarts.
    pub max_backoff: Duration,
}

/// The wait after the `n`-th restart of a window (`n` ≥ 1): `base · 2^(n-1)`, at most `max`.
pub fn backoff(n: u32, base: Duration, max: Duration) -> Duration {
    let shift = n.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << shift).min(max)
}

/// What the keeper does now with a node it found down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Restart,
    /// Backing off until the instant.
    Wait(Instant),
    /// `max_restarts` within the window: stop trying and raise the alarm (once).
    GiveUp,
    /// Already given up: the alarm stands until the node is seen up again.
    GivenUp,
}

/// One node's restart history: restarts within the window, the backoff, and whether the
/// keeper gave up on it.
#[derive(Debug, Clone, Default)]
pub struct Track {
    restarts: VecDeque<Instant>,
    next_try: Option<Instant>,
    given_up: bool,
}

impl Track {
    /// The node is down at `now`: restart it, wait, or give up.
    pub fn next(&mut self, now: Instant, l: &Limits) -> Next {
        if self.given_up {
            return Next::GivenUp;
        }
        self.forget_before(now, l.window);
        if self.restarts.len() >= l.max_restarts.max(1) as usize {
            self.given_up = true;
            return Next::GiveUp;
        }
        match self.next_try {
            Some(t) if t > now => Next::Wait(t),
            _ => Next::Restart,
        }
    }

    /// A restart began at `now` (whatever its outcome): it counts, and the next waits.
    pub fn restarted(&mut self, now: Instant, l: &Limits) {
        self.restarts.push_back(now);
        let n = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
        self.next_try = now.checked_add(backoff(n, l.base_backoff, l.max_backoff));
    }

    /// A restart brought the server up (it answered, a replica replicates): the backoff ends,
    /// the restart stays counted. A server that dies again later is restarted at once, up to
    /// the limit of the window.
    pub fn started(&mut self) {
        self.next_try = None;
    }

    /// The node was seen up. The backoff ends (it is for starts that do not bring the server
    /// up; a server that ran and died later is started at once), but the restarts stay counted
    /// for the window, so a server that runs a few seconds after each start is still a crash
    /// loop. A node the keeper had given up on (the operator fixed and started it) starts
    /// afresh. Returns whether it had been given up.
    pub fn seen_up(&mut self) -> bool {
        self.next_try = None;
        let was = std::mem::take(&mut self.given_up);
        if was {
            self.restarts.clear();
        }
        was
    }

    /// Restarts counted in the window ending at `now`.
    pub fn restarts_in_window(&mut self, now: Instant, window: Duration) -> usize {
        self.forget_before(now, window);
        self.restarts.len()
    }

    fn forget_before(&mut self, now: Instant, window: Duration) {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.restarts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::HaMode;

    fn facts(status: NodeStatus, primary: bool) -> StorageFacts {
        StorageFacts {
            status,
            primary,
            ha_watched: true,
            others_in_service: true,
            ha: Some(HaStance::default()),
        }
    }

    fn restarts(t: &Tend) -> bool {
        matches!(t, Tend::Restart { .. })
    }

    #[test]
    fn only_nodes_in_service_are_watched() {
        use NodeStatus::*;
        assert!(watched(Active, true) && watched(Active, false));
        assert!(watched(Inactive, true), "maybe an old primary HA waits for");
        assert!(!watched(Inactive, false));
        for s in [ManualStop, Creating, Deleted] {
            assert!(!watched(s, true) && !watched(s, false), "{s:?}");
            assert!(!restarts(&storage(&facts(s, false))), "{s:?}");
            assert!(!restarts(&compute(s)), "{s:?}");
        }
        assert!(restarts(&compute(Active)));
    }

    #[test]
    fn a_replica_is_restarted_unless_ha_is_failing_its_shard_over() {
        assert!(restarts(&storage(&facts(NodeStatus::Active, false))));
        let mut f = facts(NodeStatus::Active, false);
        f.ha = Some(HaStance {
            busy: true,
            ..HaStance::default()
        });
        assert!(!restarts(&storage(&f)), "HA's task owns the shard");
        // Without HA (not started yet) a replica is still the keeper's.
        f.ha = None;
        assert!(restarts(&storage(&f)));
    }

    #[test]
    fn a_dead_primary_is_left_to_ha_unless_nothing_else_can_act() {
        let p = facts(NodeStatus::Active, true);
        assert!(!restarts(&storage(&p)), "HA fails it over");
        assert!(
            !restarts(&storage(&StorageFacts { ha: None, ..p })),
            "HA not running yet: still not the keeper's call"
        );
        // HA declined (no provable candidate, no-switch, anti-flapping, retries used up).
        let declined = StorageFacts {
            ha: Some(HaStance {
                declined: true,
                ..HaStance::default()
            }),
            ..p
        };
        assert!(restarts(&storage(&declined)));
        // ... but never while HA's task runs on the shard.
        let busy = StorageFacts {
            ha: Some(HaStance {
                declined: true,
                busy: true,
                awaiting_rejoin: false,
            }),
            ..p
        };
        assert!(!restarts(&storage(&busy)));
        // A single-node shard (or every other node down too): nothing could take over.
        let alone = StorageFacts {
            others_in_service: false,
            ..p
        };
        assert!(restarts(&storage(&alone)));
        // A shard HA does not watch (no_rep, mgr): nobody fails it over.
        let unwatched = StorageFacts {
            ha_watched: false,
            ..p
        };
        assert!(restarts(&storage(&unwatched)));
    }

    #[test]
    fn an_inactive_node_is_restarted_only_while_ha_waits_for_it() {
        let f = facts(NodeStatus::Inactive, false);
        assert!(!restarts(&storage(&f)), "kept out for rebuild");
        let waited = StorageFacts {
            ha: Some(HaStance {
                awaiting_rejoin: true,
                ..HaStance::default()
            }),
            ..f
        };
        assert!(restarts(&storage(&waited)));
    }

    #[test]
    fn clusters_are_skipped_when_deleted_switched_off_or_busy() {
        let c = Cluster {
            id: 7,
            name: "c".into(),
            nick_name: None,
            owner: None,
            ddl_log_tblname: None,
            business: None,
            ha_mode: HaMode::Rbr,
            status: ClusterStatus::Inuse,
            memo: None,
            when_created: None,
        };
        let on = ClusterPolicy::default_for(7);
        assert_eq!(cluster_skip(&c, &on, false), None);
        let off = ClusterPolicy {
            auto_restart: false,
            ..on
        };
        assert!(cluster_skip(&c, &off, false)
            .unwrap()
            .contains("auto_restart is off"));
        // auto_rebuild is not the keeper's switch.
        let no_rebuild = ClusterPolicy {
            auto_rebuild: false,
            ..on
        };
        assert_eq!(cluster_skip(&c, &no_rebuild, false), None);
        assert!(cluster_skip(&c, &on, true).unwrap().contains("a job"));
        let deleted = Cluster {
            status: ClusterStatus::Deleted,
            ..c
        };
        assert!(cluster_skip(&deleted, &on, false).is_some());
    }

    fn limits() -> Limits {
        Limits {
            max_restarts: 3,
            window: Duration::from_secs(600),
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let (b, m) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(1, b, m), Duration::from_secs(2));
        assert_eq!(backoff(2, b, m), Duration::from_secs(4));
        assert_eq!(backoff(3, b, m), Duration::from_secs(8));
        assert_eq!(backoff(10, b, m), m);
        assert_eq!(backoff(u32::MAX, b, m), m, "no overflow");
    }

    #[test]
    fn restarts_back_off_and_stop_after_the_limit_within_the_window() {
        let l = limits();
        let t0 = Instant::now();
        let mut t = Track::default();
        assert_eq!(t.next(t0, &l), Next::Restart);
        t.restarted(t0, &l);
        // Down again at once: wait out the backoff.
        assert_eq!(t.next(t0, &l), Next::Wait(t0 + Duration::from_secs(2)));
        // ... unless that restart brought the server up: then it died later, and is
        // restarted at once.
        let mut up = t.clone();
        up.started();
        assert_eq!(up.next(t0, &l), Next::Restart);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(t.next(t1, &l), Next::Restart);
        t.restarted(t1, &l);
        assert_eq!(t.next(t1, &l), Next::Wait(t1 + Duration::from_secs(4)));
        let t2 = t1 + Duration::from_secs(4);
        assert_eq!(t.next(t2, &l), Next::Restart);
        t.restarted(t2, &l);
        // A third restart within the window and down again: give up, once.
        let t3 = t2 + Duration::from_secs(8);
        assert_eq!(t.next(t3, &l), Next::GiveUp);
        assert_eq!(
            t.next(t3 + l.window * 2, &l),
            Next::GivenUp,
            "until seen up"
        );
        // The operator fixed and started it: a fresh start.
        assert!(t.seen_up());
        assert_eq!(t.restarts_in_window(t3, l.window), 0);
        assert_eq!(t.next(t3, &l), Next::Restart);
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let l = limits();
        let t0 = Instant::now();
        let mut t = Track::default();
        for i in 0..2 {
            t.restarted(t0 + Duration::from_secs(i), &l);
        }
        // Up for a while between crashes: not given up, the count stays for the window, the
        // backoff ends (the next crash is restarted at once).
        assert!(!t.seen_up());
        assert_eq!(t.next(t0 + Duration::from_secs(2), &l), Next::Restart);
        assert_eq!(
            t.restarts_in_window(t0 + Duration::from_secs(100), l.window),
            2
        );
        // A crash long after: the old restarts no longer count.
        let later = t0 + l.window + Duration::from_secs(5);
        assert_eq!(t.next(later, &l), Next::Restart);
        assert_eq!(t.restarts_in_window(later, l.window), 0);
    }
}
