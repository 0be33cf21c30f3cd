//! Crash watch: one idle session per shard primary, parked in `SELECT SLEEP(..)`. When the
//! primary's process dies, its kernel closes the session's socket at once, so the watch sees
//! it end within milliseconds and tells the monitor, which probes that shard right away instead
//! of at its next round (see `ha::detect` for what a lost watch lets it conclude: nothing
//! alone).
//!
//! A hung server or a cut network ends no session: the watch then only notices when its sleep
//! does not come back within its deadline, and the probes' own path decides.
//!
//! Invariants: at most one watch per node; a watch reports at most once (then ends, and the
//! monitor starts a new one once a probe finds the node answering again); a watch that cannot
//! connect reports nothing (the probes judge the node); a watch never writes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// How long one parked statement sleeps; a new one follows at once. Short enough that a
/// session the manager dropped (the node stopped being primary) leaves the server soon.
const SLEEP: Duration = Duration::from_secs(5);

/// Extra time a parked statement may take beyond [`SLEEP`] before the watch reports the node
/// silent.
const GRACE: Duration = Duration::from_secs(2);

/// A watch ended: its session was lost or its statement did not come back in time.
#[derive(Debug, Clone)]
pub(crate) struct WatchEvent {
    pub node_id: i64,
    pub shard_id: i64,
    /// When the watch saw it.
    pub at: Instant,
    /// What happened, for the event log.
    pub why: String,
}

struct Watch {
    shard_id: i64,
    addr: NodeAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The monitor's watches, by node id.
pub(crate) struct Watches {
    running: HashMap<i64, Watch>,
    tx: mpsc::UnboundedSender<WatchEvent>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("nodes", &self.running.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Watches {
    /// No watches yet; their reports go to `tx`. Every watch stops with `cancel`.
    pub(crate) fn new(tx: mpsc::UnboundedSender<WatchEvent>, cancel: CancellationToken) -> Self {
        Watches {
            running: HashMap::new(),
            tx,
            cancel,
        }
    }

    /// Watches exactly the answering primaries `up` (`(shard, node, address)`) among the
    /// shards in `scope` (every shard when `None`): stops the others' watches of those shards,
    /// starts the missing ones (also where an earlier watch ended).
    pub(crate) fn sync(
        &mut self,
        scope: Option<&HashSet<i64>>,
        up: &[(i64, i64, NodeAddr)],
        opts: StorageOptions,
    ) {
        let in_scope = |shard: i64| scope.is_none_or(|s| s.contains(&shard));
        let wanted: HashMap<i64, &(i64, i64, NodeAddr)> = up.iter().map(|w| (w.1, w)).collect();
        self.running.retain(|id, w| {
            let keep = !in_scope(w.shard_id)
                || (!w.task.is_finished()
                    && wanted
                        .get(id)
                        .is_some_and(|(s, _, a)| *s == w.shard_id && *a == w.addr));
            if !keep {
                w.stop.cancel();
            }
            keep
        });
        for (shard_id, node_id, addr) in up {
            if !in_scope(*shard_id) || self.running.contains_key(node_id) {
                continue;
            }
            let stop = self.cancel.child_token();
            let task = tokio::spawn(watch(
                *node_id,
                *shard_id,
                addr.clone(),
                opts,
                self.tx.clone(),
                stop.clone(),
            ));
            self.running.insert(
                *node_id,
                Watch {
                    shard_id: *shard_id,
                    addr: addr.clone(),
                    stop,
                    task,
                },
            );
        }
    }

    /// Nodes watched now.
    pub(crate) fn watched(&self) -> usize {
        self.running.len()
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for w in self.running.values() {
            w.stop.cancel();
        }
    }
}

/// One watch: connect, then park a statement after another until the session ends.
async fn watch(
    node_id: i64,
    shard_id: i64,
    addr: NodeAddr,
    opts: StorageOptions,
    tx: mpsc::UnboundedSender<WatchEvent>,
    stop: CancellationToken,
) {
    let opts = StorageOptions {
        connect_timeout: opts.connect_timeout,
        read_timeout: SLEEP + GRACE,
    };
    let connected = tokio::select! {
        _ = stop.cancelled() => return,
        c = StorageConn::connect(&addr, opts) => c,
    };
    let Ok(mut conn) = connected else {
        return;
    };
    // A server-wide statement time limit would end every sleep.
    let _ = conn.exec("SET SESSION max_statement_time = 0").await;
    let sql = format!("SELECT SLEEP({})", SLEEP.as_secs());
    loop {
        let r = tokio::select! {
            // The session is dropped with its statement still running: the server ends it
            // when the sleep returns.
            _ = stop.cancelled() => return,
            r = conn.query::<mysql_async::Row>(&sql) => r,
        };
        if let Err(crate::storage::Error::Server { .. }) = r {
            // The server answered (a killed statement, a limit): the session lives; sleep
            // again after a pause rather than report a loss.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        if let Err(e) = r {
            let why = match e {
                crate::storage::Error::Timeout { .. } => format!(
                    "no answer from node {node_id} within {:?} to the watch's {SLEEP:?} sleep",
                    SLEEP + GRACE
                ),
                other => format!("the watch's session to node {node_id} ended: {other}"),
            };
            let _ = tx.send(WatchEvent {
                node_id,
                shard_id,
                at: Instant::now(),
                why,
            });
            return;
        }
    }
}
