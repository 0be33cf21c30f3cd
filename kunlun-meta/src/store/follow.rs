//! Following the metadata shard's primary (MySQL backend): the store's connections always
//! go to the node discovery found writable, and move when that node stops being it.
//!
//! A watcher task checks the current primary every [`super::StoreConfig::primary_check`]
//! (`SELECT @@read_only` on a connection of its own) and at once when asked ([`Follow::ask`]:
//! a statement failed with a connection error or `ER_OPTION_PREVENTS_STATEMENT`, or a failover
//! just promoted a node). When the primary does not answer, or answers read-only, discovery runs
//! again over the `meta_group_seeds` plus the `meta_db_nodes` rows last read
//! ([`super::seeds::discover`]); a writable node found elsewhere becomes the target of every
//! lane at once (the pools are swapped, the old ones closed), and the move is logged with its
//! reason and kept in [`FollowStatus`].
//!
//! Invariants: the target changes only to a node that answered writable in this round of
//! discovery; a waiter ([`Follow::wait_primary`]) is released only by a check that *started*
//! after it asked and found a writable primary, so a retry never runs against the state that
//! made it fail (one that reached no node at all releases it with an error at once: with
//! every node silent no failover is coming, and the caller answers `Unavailable` in seconds,
//! not after the whole wait); the watcher holds the store only weakly and ends when the last handle is
//! dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use chrono::Utc;
use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::AsyncMysqlConnection;
use futures::FutureExt;
use tokio::sync::{watch, Notify};

use super::conn::Pools;
use super::seeds::{discover_reach, seed_opts, split_seed, MetaTls, SeedReport};
use crate::error::{Error, Result};

/// Moves kept in [`FollowStatus::moves`].
const MOVES_KEPT: usize = 16;
/// Pause between two discovery rounds while no writable primary is found.
const SEARCH_PAUSE: Duration = Duration::from_millis(250);
/// The `meta_db_nodes` rows are read again after this many good checks.
const REFRESH_EVERY: u32 = 30;

/// Connections of one store target: one pool per [`super::Lane`].
#[derive(Clone)]
pub(crate) struct Lanes {
    pub shared: Pools,
    pub system: Pools,
    pub background: Pools,
}

impl Lanes {
    /// Closes every pool: idle connections are dropped, busy ones when given back, and a
    /// caller still waiting for one gets an error (and follows the new target).
    fn close(&self) {
        for p in [&self.shared, &self.system, &self.background] {
            p.close();
        }
    }
}

/// Where the store's statements go now.
pub(crate) struct Target {
    pub lanes: Lanes,
    /// `host:port` of the metadata primary (MySQL), `None` on SQLite.
    pub primary: Option<String>,
    /// Password-free description (see [`super::Store::describe`]).
    pub describe: String,
}

pub use crate::api::{PrimaryMove, StoreFollow as FollowStatus};

/// How to reach the metadata nodes (the store's login) and build pools for one of them.
pub(crate) struct Connector {
    pub user: String,
    pub password: String,
    pub database: String,
    /// Settled at open (`prefer` resolved).
    pub tls: MetaTls,
    pub timeout: Duration,
    pub pool_size: usize,
}

impl Connector {
    /// `mysql://user@host:port/db`, never a password.
    pub fn describe(&self, primary: &str) -> String {
        format!("mysql://{}@{primary}/{}", self.user, self.database)
    }

    /// The three pools of a target on `primary` (`host:port`); nothing connects yet.
    pub fn lanes(&self, primary: &str) -> Result<Lanes> {
        let (host, port) = split_seed(primary)?;
        let opts = self.tls.apply(
            seed_opts(&host, port, &self.user, &self.password).db_name(Some(&self.database)),
        );
        // The URL is unused (custom_setup connects with `opts`); it only names the target.
        let describe = self.describe(primary);
        let pool = |size: usize| {
            let mut cfg = ManagerConfig::<AsyncMysqlConnection>::default();
            cfg.recycling_method = RecyclingMethod::Verified;
            let opts = opts.clone();
            cfg.custom_setup = Box::new(move |_url| {
                let opts = opts.clone();
                async move {
                    let raw = mysql_async::Conn::new(opts)
                        .await
                        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                    AsyncMysqlConnection::try_from(raw).await
                }
                .boxed()
            });
            let mgr = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new_with_config(
                describe.clone(),
                cfg,
            );
            Pool::builder(mgr)
                // One connection may be a side connection for DDL inside a transaction.
                .max_size(size.max(2))
                .build()
                .map(Pools::Mysql)
                .map_err(|e| Error::Database(format!("cannot build the mysql pool: {e}")))
        };
        Ok(Lanes {
            shared: pool(self.pool_size)?,
            system: pool(super::open::SYSTEM_POOL_SIZE)?,
            background: pool(self.pool_size)?,
        })
    }
}

/// The follower's state shared by the store handles and the watcher task.
pub(crate) struct Follow {
    connector: Connector,
    seeds: Vec<String>,
    /// `host:port` of the `meta_db_nodes` rows last read.
    known: Mutex<Vec<String>>,
    /// Asks so far; a check serves every ask made before it started.
    asked: AtomicU64,
    /// The highest ask served by a check that found a writable primary, and the highest ask
    /// answered by a search that reached no node at all (no failover is coming: waiting is
    /// pointless).
    served: watch::Sender<(u64, u64)>,
    wake: Notify,
    status: Mutex<FollowStatus>,
    report: Mutex<SeedReport>,
    /// How long a statement that failed on the old primary waits for a new one (its one retry).
    pub wait: Duration,
    check_every: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Follow {
    pub(crate) fn new(
        connector: Connector,
        seeds: Vec<String>,
        report: SeedReport,
        wait: Duration,
        check_every: Duration,
    ) -> Follow {
        let (served, _) = watch::channel((0, 0));
        Follow {
            status: Mutex::new(FollowStatus {
                primary: report.chosen.clone(),
                since: Utc::now().naive_utc(),
                candidates: seeds.clone(),
                searching: None,
                searching_since: None,
                moves: Vec::new(),
            }),
            connector,
            seeds,
            known: Mutex::new(Vec::new()),
            asked: AtomicU64::new(0),
            served,
            wake: Notify::new(),
            report: Mutex::new(report),
            wait,
            check_every,
        }
    }

    /// Asks for a check now; returns the ask's number for [`Follow::wait_primary`].
    pub(crate) fn ask(&self, reason: &str) -> u64 {
        let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(reason, ask = n, "metadata primary check asked");
        self.wake.notify_one();
        n
    }

    /// Waits (at most [`Follow::wait`]) until a check that started after ask `n` found a
    /// writable primary; false when none did in time. Returns at once, false, when a check after the ask found no node answering.
    pub(crate) async fn wait_primary(&self, n: u64) -> bool {
        let mut rx = self.served.subscribe();
        let r = tokio::time::timeout(
            self.wait,
            rx.wait_for(|(found, unreachable)| *found >= n || *unreachable >= n),
        )
        .await;
        matches!(r, Ok(Ok(s)) if s.0 >= n)
    }

    pub(crate) fn status(&self) -> FollowStatus {
        lock(&self.status).clone()
    }

    pub(crate) fn report(&self) -> SeedReport {
        lock(&self.report).clone()
    }

    /// The seeds, then the known nodes not among them.
    fn candidates(&self) -> Vec<String> {
        let mut c = self.seeds.clone();
        for k in lock(&self.known).iter() {
            if !c.contains(k) {
                c.push(k.clone());
            }
        }
        c
    }

    fn serve(&self, n: u64, found: Searched) {
        self.served.send_if_modified(|(f, u)| {
            let slot = match found {
                Searched::Found => f,
                Searched::Unreachable => u,
                Searched::NotWritable => return false,
            };
            let more = n > *slot;
            if more {
                *slot = n;
            }
            more
        });
    }

    fn set_searching(&self, why: Option<String>) {
        let mut st = lock(&self.status);
        st.searching_since = match (&why, st.searching_since) {
            (None, _) => None,
            (Some(_), Some(t)) => Some(t),
            (Some(_), None) => Some(Utc::now().naive_utc()),
        };
        st.searching = why;
    }
}

/// Where the watcher swaps targets: the store's slot, held weakly.
pub(crate) struct Slot {
    pub target: RwLock<Arc<Target>>,
}

impl Slot {
    pub(crate) fn current(&self) -> Arc<Target> {
        match self.target.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, t: Arc<Target>) -> Arc<Target> {
        let mut g = match self.target.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::replace(&mut *g, t)
    }
}

/// A connection of the watcher to the node it checks.
struct Checker {
    at: String,
    conn: mysql_async::Conn,
}

/// Whether `primary` answers writable, on the watcher's own connection (reopened as needed).
async fn check(
    checker: &mut Option<Checker>,
    primary: &str,
    c: &Connector,
) -> std::result::Result<(), String> {
    use mysql_async::prelude::Queryable;
    if checker.as_ref().is_some_and(|k| k.at != primary) {
        *checker = None;
    }
    if checker.is_none() {
        let (host, port) = split_seed(primary).map_err(|e| e.to_string())?;
        let connect = c.tls.connect(seed_opts(&host, port, &c.user, &c.password));
        let (conn, _) = match tokio::time::timeout(c.timeout, connect).await {
            Err(_) => return Err(format!("no connection within {:?}", c.timeout)),
            Ok(r) => r?,
        };
        *checker = Some(Checker {
            at: primary.to_string(),
            conn,
        });
    }
    let Some(k) = checker.as_mut() else {
        return Err("no connection".into());
    };
    let r = tokio::time::timeout(
        c.timeout,
        k.conn.query_first::<i64, _>("SELECT @@read_only"),
    )
    .await;
    match r {
        Ok(Ok(Some(0))) => Ok(()),
        Ok(Ok(_)) => Err("it is read-only now (read_only=1)".into()),
        Ok(Err(e)) => {
            *checker = None;
            Err(e.to_string())
        }
        Err(_) => {
            *checker = None;
            Err(format!("no answer within {:?}", c.timeout))
        }
    }
}

/// Reads the `meta_db_nodes` rows through `lanes` (best effort) into the known nodes.
async fn refresh_known(follow: &Follow, lanes: &Lanes, timeout: Duration) {
    let read = async {
        let mut tx = super::conn::Tx::autocommit(&lanes.system, timeout).await?;
        super::repo::meta::list_meta_nodes(&mut tx).await
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(rows)) => {
            let nodes: Vec<String> = rows
                .iter()
                .map(|n| {
                    if n.hostaddr.contains(':') {
                        format!("[{}]:{}", n.hostaddr, n.port)
                    } else {
                        format!("{}:{}", n.hostaddr, n.port)
                    }
                })
                .collect();
            *lock(&follow.known) = nodes;
            let all = follow.candidates();
            lock(&follow.status).candidates = all;
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot read meta_db_nodes"),
        Err(_) => tracing::debug!("reading meta_db_nodes timed out"),
    }
}

/// One discovery round after `why`: moves the store when a writable node is found elsewhere.
/// True when a writable primary is known afterwards.
/// What a search for the primary found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Searched {
    Found,
    /// Some node answered, none writable: a failover may follow.
    NotWritable,
    /// No node answered at all.
    Unreachable,
}

async fn search(slot: &Slot, follow: &Follow, why: &str) -> Searched {
    let c = &follow.connector;
    let candidates = follow.candidates();
    let (found, answered) =
        discover_reach(&candidates, &c.user, &c.password, &c.tls, c.timeout).await;
    let report = match found {
        Ok(r) => r,
        Err(e) => {
            let first = lock(&follow.status).searching.is_none();
            if first {
                tracing::warn!(reason = why, error = %e, "metadata primary lost; searching for the new one");
            } else {
                tracing::debug!(error = %e, "still no writable metadata primary");
            }
            follow.set_searching(Some(why.to_string()));
            return if answered {
                Searched::NotWritable
            } else {
                Searched::Unreachable
            };
        }
    };
    let cur = slot.current();
    let from = cur.primary.clone().unwrap_or_default();
    if report.chosen != from {
        let lanes = match c.lanes(&report.chosen) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot build pools for the new metadata primary");
                return Searched::NotWritable;
            }
        };
        let old = slot.set(Arc::new(Target {
            lanes: lanes.clone(),
            primary: Some(report.chosen.clone()),
            describe: c.describe(&report.chosen),
        }));
        old.lanes.close();
        tracing::warn!(from = %from, to = %report.chosen, reason = why, report = %report, "metadata store moved to a new primary");
        {
            let mut st = lock(&follow.status);
            st.primary = report.chosen.clone();
            st.since = Utc::now().naive_utc();
            st.moves.push(PrimaryMove {
                from,
                to: report.chosen.clone(),
                reason: why.to_string(),
                at: Utc::now().naive_utc(),
            });
            if st.moves.len() > MOVES_KEPT {
                st.moves.remove(0);
            }
        }
        refresh_known(follow, &lanes, c.timeout).await;
    } else if lock(&follow.status).searching.is_some() {
        tracing::info!(primary = %from, "the metadata primary answers writable again");
    }
    *lock(&follow.report) = report;
    follow.set_searching(None);
    Searched::Found
}

/// The watcher; see the module doc. Ends when the store is gone.
pub(crate) async fn watch(slot: Weak<Slot>, follow: Arc<Follow>) {
    let mut checker: Option<Checker> = None;
    let mut good = 0u32;
    if let Some(s) = slot.upgrade() {
        refresh_known(&follow, &s.current().lanes, follow.connector.timeout).await;
    }
    loop {
        let Some(s) = slot.upgrade() else { return };
        let n = follow.asked.load(Ordering::SeqCst);
        let primary = s.current().primary.clone().unwrap_or_default();
        let searching = lock(&follow.status).searching.clone();
        let found = match searching {
            // While searching every round is a discovery round.
            Some(why) => search(&s, &follow, &why).await,
            None => match check(&mut checker, &primary, &follow.connector).await {
                Ok(()) => {
                    good += 1;
                    if good >= REFRESH_EVERY {
                        good = 0;
                        refresh_known(&follow, &s.current().lanes, follow.connector.timeout).await;
                    }
                    Searched::Found
                }
                Err(e) => {
                    checker = None;
                    search(&s, &follow, &format!("primary {primary}: {e}")).await
                }
            },
        };
        follow.serve(n, found);
        drop(s);
        let pause = if found == Searched::Found {
            follow.check_every
        } else {
            SEARCH_PAUSE
        };
        tokio::select! {
            _ = follow.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
