//! Shared setup of the shard-HA tests: a semi-sync `ReplicaSet` registered as an `rbr`
//! cluster in a SQLite metadata store, the HA monitor running over it, a writer that records
//! every acknowledged write, and the after-checks every scenario ends with.
#![allow(dead_code)]

pub mod clients;
pub mod invariant;
pub mod netns;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{MariaDb, MariaDbOptions, ReplicaSet, ReplicaSetOptions};
use anyhow::{bail, Context, Result};
use kunlun_core::ha::{FailoverRecord, HaConfig, HaHandle, HaMonitor, Outcome};
use kunlun_core::storage::{NodeAddr, StorageConn, StorageOptions};
use kunlun_core::xa::XaConfig;
use kunlun_core::CoreConfig;
use kunlun_meta::model::{Cluster, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::{Store, StoreConfig};
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Generous bound on every wait of a test (not a timing assertion).
pub const LIMIT: Duration = Duration::from_secs(90);

/// One scenario's world.
pub struct HaEnv {
    pub set: ReplicaSet,
    pub store: Store,
    pub cluster: Cluster,
    pub shard_id: i64,
    /// Node ids in `set.nodes()` order (primary first).
    pub node_ids: Vec<i64>,
    pub ha: HaHandle,
    pub proxy: Option<Proxy>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    _dir: tempfile::TempDir,
}

/// Settings a scenario may change.
pub struct EnvOptions {
    pub replicas: usize,
    pub ha: HaConfig,
    /// Registers the primary behind a TCP proxy (the manager's view only; replicas connect
    /// directly), so a test can cut the manager off.
    pub proxy_primary: bool,
    /// Runs the primary inside this network namespace `(name, address)`; every client
    /// reaches it at that address.
    pub primary_netns: Option<(String, String)>,
    /// Address the primary listens on (another loopback address, say), without a namespace.
    pub primary_bind: Option<String>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            replicas: 2,
            ha: test_ha_config(),
            proxy_primary: false,
            primary_netns: None,
            primary_bind: None,
        }
    }
}

/// The shard's alarm once it satisfies `ok`, or what it is when [`LIMIT`] has passed: a
/// failover's record is published before the monitor applies its outcome (the alarm), so a
/// test that just saw the record waits for the alarm instead of reading it once.
pub async fn wait_alarm(
    shared: &kunlun_core::ha::HaShared,
    shard_id: i64,
    ok: impl Fn(&str) -> bool,
) -> Option<String> {
    let until = Instant::now() + LIMIT;
    loop {
        let a = shared.alarms().get(&shard_id).cloned();
        if a.as_deref().is_some_and(&ok) || Instant::now() > until {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fast probing for tests; the XA hook on.
pub fn test_ha_config() -> HaConfig {
    let core = CoreConfig::default();
    HaConfig {
        interval: Duration::from_millis(500),
        storage: StorageOptions {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
        },
        flap_window: Duration::from_secs(300),
        xa: Some(XaConfig {
            wait_max: Duration::from_secs(1),
            ..XaConfig::from_core(&core)
        }),
        ..HaConfig::default()
    }
}

/// Starts a semi-sync set whose replicas notice a dead source within ~2 s.
pub fn start_set(replicas: usize) -> Result<ReplicaSet> {
    start_set_in(replicas, None, None)
}

/// [`start_set`] with the primary in a network namespace `(name, address)`, or listening on
/// `primary_bind`.
pub fn start_set_in(
    replicas: usize,
    primary_netns: Option<(String, String)>,
    primary_bind: Option<String>,
) -> Result<ReplicaSet> {
    let node = MariaDbOptions {
        extra_args: vec!["--slave-net-timeout=2".into()],
        ..MariaDbOptions::default()
    };
    let primary = match (primary_netns, primary_bind) {
        (Some((ns, ip)), _) => Some(MariaDbOptions {
            netns: Some(ns),
            bind_address: Some(ip),
            ..node.clone()
        }),
        (None, Some(ip)) => Some(MariaDbOptions {
            bind_address: Some(ip),
            ..node.clone()
        }),
        (None, None) => None,
    };
    let set = ReplicaSet::start_with(ReplicaSetOptions {
        replicas,
        semi_sync: true,
        node,
        primary,
    })?;
    set.primary().sql(
        "CREATE DATABASE ha; CREATE TABLE ha.w (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT SELECT, INSERT ON ha.* TO app@'%';",
    )?;
    set.wait_replicated(LIMIT)?;
    Ok(set)
}

impl HaEnv {
    pub async fn start(o: EnvOptions) -> Result<HaEnv> {
        let replicas = o.replicas;
        let (netns, bind) = (o.primary_netns.clone(), o.primary_bind.clone());
        let set =
            tokio::task::spawn_blocking(move || start_set_in(replicas, netns, bind)).await??;
        let dir = tempfile::tempdir()?;
        let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db"))).await?;
        let ports: Vec<u16> = set.nodes().map(MariaDb::port).collect();
        let proxy = if o.proxy_primary {
            Some(Proxy::start(ports[0]).await?)
        } else {
            None
        };
        let first = proxy.as_ref().map_or(ports[0], |p| p.port);
        let mut hosts: Vec<(String, u16)> = set.nodes().map(|n| (n.tcp_host(), n.port())).collect();
        if let Some(h) = hosts.first_mut() {
            h.1 = first;
        }
        let (cluster, shard_id, node_ids) = register_shard_at(&store, &hosts).await?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ha = HaMonitor::spawn(store.clone(), o.ha, &tasks, cancel.clone());
        Ok(HaEnv {
            set,
            store,
            cluster,
            shard_id,
            node_ids,
            ha,
            proxy,
            cancel,
            tasks,
            _dir: dir,
        })
    }

    /// The harness server of a node id.
    pub fn server(&self, node_id: i64) -> &MariaDb {
        let i = self
            .node_ids
            .iter()
            .position(|n| *n == node_id)
            .unwrap_or(0);
        self.set.nodes().nth(i).unwrap_or(self.set.primary())
    }

    /// Metadata's nodes of the shard.
    pub async fn nodes(&self) -> Result<Vec<ShardNode>> {
        Ok(self.store.list_shard_nodes(Some(self.shard_id)).await?)
    }

    /// Metadata's primary.
    pub async fn primary_id(&self) -> Result<i64> {
        primary_of(&self.store, self.shard_id).await
    }

    /// Waits until a failover record with outcome `Promoted` beyond the first `seen` exists.
    pub async fn wait_promoted(&self, seen: usize) -> Result<FailoverRecord> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let done: Vec<_> = self
                .ha
                .shared()
                .failovers(Some(self.shard_id))
                .into_iter()
                .filter(|r| r.outcome == Outcome::Promoted)
                .collect();
            if done.len() > seen {
                return Ok(done[0].clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "no failover within {LIMIT:?}; records {:?}; events {:?}",
                    self.ha.shared().failovers(None),
                    self.ha.shared().events()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the monitor.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The after-checks: exactly one writable node among `live` (node ids whose server answers),
    /// it is metadata's primary, it holds every acknowledged write, and every other active
    /// node replicates from it and has them too.
    pub async fn check_converged(&self, live: &[i64], acked: &[i64]) -> Result<i64> {
        let primary = self.primary_id().await?;
        let deadline = Instant::now() + LIMIT;
        loop {
            let r = self.check_once(primary, live, acked).await;
            match r {
                Ok(()) => return Ok(primary),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("events: {:?}", self.ha.shared().events())))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn check_once(&self, primary: i64, live: &[i64], acked: &[i64]) -> Result<()> {
        let nodes = self.nodes().await?;
        let mut writable = Vec::new();
        for id in live {
            let ro: Vec<i64> = root_query(self.server(*id), "SELECT @@read_only").await?;
            if ro.first() == Some(&0) {
                writable.push(*id);
            }
        }
        if writable != vec![primary] {
            bail!("writable nodes {writable:?}, metadata primary {primary}");
        }
        let pport = self.server(primary).port();
        let want: std::collections::BTreeSet<i64> = acked.iter().copied().collect();
        for n in nodes.iter().filter(|n| live.contains(&n.id)) {
            let srv = self.server(n.id);
            if n.id != primary && n.status == NodeStatus::Active {
                let st = slave_status(srv).await?;
                if st.0 != pport || st.1 != "Yes" {
                    bail!(
                        "node {} replicates from port {} io={} (primary port {pport})",
                        n.id,
                        st.0,
                        st.1
                    );
                }
                let pos: Vec<String> =
                    root_query(self.server(primary), "SELECT @@gtid_binlog_pos").await?;
                let pos = pos.into_iter().next().unwrap_or_default();
                let got: Vec<i64> =
                    root_query(srv, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")).await?;
                if got.first() != Some(&0) {
                    bail!("node {} did not reach {pos}", n.id);
                }
            }
            if n.id == primary || n.status == NodeStatus::Active {
                let have: std::collections::BTreeSet<i64> = root_query(srv, "SELECT id FROM ha.w")
                    .await?
                    .into_iter()
                    .collect();
                let missing: Vec<_> = want.difference(&have).take(10).collect();
                if !missing.is_empty() {
                    bail!("node {} lacks acknowledged writes, e.g. {missing:?}", n.id);
                }
            }
        }
        Ok(())
    }
}

impl Drop for HaEnv {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Registers an `rbr` cluster `ha_c` with one shard whose nodes are `ports` (the first is the
/// primary, registered at `first_port`); returns the cluster, the shard id and the node ids.
pub async fn register_shard(
    store: &Store,
    ports: &[u16],
    first_port: u16,
) -> Result<(Cluster, i64, Vec<i64>)> {
    let hosts: Vec<(String, u16)> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                "127.0.0.1".to_string(),
                if i == 0 { first_port } else { *p },
            )
        })
        .collect();
    register_shard_at(store, &hosts).await
}

/// [`register_shard`] with each node's `(host, port)`; the first is the primary.
pub async fn register_shard_at(
    store: &Store,
    hosts: &[(String, u16)],
) -> Result<(Cluster, i64, Vec<i64>)> {
    register_named_shard(store, "ha_c", hosts).await
}

/// [`register_shard_at`] as cluster `name` (several shards in one store need distinct names).
pub async fn register_named_shard(
    store: &Store,
    name: &str,
    hosts: &[(String, u16)],
) -> Result<(Cluster, i64, Vec<i64>)> {
    let shards = [hosts.to_vec()];
    let (cluster, mut out) = store
        .tx(async |tx| {
            crate::rows::insert_cluster(tx, name, &shards, |_| "shard1".into(), ("root", "")).await
        })
        .await?;
    let (shard_id, ids) = out.remove(0);
    Ok((cluster, shard_id, ids))
}

/// Metadata's primary of a shard.
pub async fn primary_of(store: &Store, shard_id: i64) -> Result<i64> {
    let nodes = store.list_shard_nodes(Some(shard_id)).await?;
    nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)
        .map(|n| n.id)
        .context("no primary in metadata")
}

fn root_addr(host: String, port: u16) -> NodeAddr {
    NodeAddr {
        host,
        port,
        user: "root".into(),
        password: String::new(),
    }
}

/// A query as root over TCP, bounded.
pub async fn root_query<T>(db: &MariaDb, sql: &str) -> Result<Vec<T>>
where
    T: mysql_async::prelude::FromRow + Send + 'static,
{
    let opts = StorageOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(40),
    };
    let mut c = StorageConn::connect(&root_addr(db.tcp_host(), db.port()), opts).await?;
    let r = c.query(sql).await?;
    c.close().await;
    Ok(r)
}

/// `(Master_Port, Slave_IO_Running)` of a replica.
async fn slave_status(db: &MariaDb) -> Result<(u16, String)> {
    let rows: Vec<mysql_async::Row> = root_query(db, "SHOW SLAVE STATUS").await?;
    let r = rows.first().context("not a replica")?;
    let get = |c: &str| -> String {
        r.columns_ref()
            .iter()
            .position(|x| x.name_str() == c)
            .and_then(|i| r.as_ref(i))
            .map(|v| match v {
                mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    };
    Ok((
        get("Master_Port").parse().unwrap_or(0),
        get("Slave_IO_Running"),
    ))
}

/// A client writing `INSERT INTO ha.w` as the unprivileged `app` user to whatever metadata
/// names primary, recording each acknowledged id; ids are never reused.
pub struct Writer {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    first_ack_after: Arc<Mutex<Option<(Instant, Instant)>>>,
}

impl Writer {
    pub fn start(store: Store, shard_id: i64) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let first_ack_after = Arc::new(Mutex::new(None));
        let (a, s, f) = (acked.clone(), stop.clone(), first_ack_after.clone());
        let task = tokio::spawn(async move { write_loop(store, shard_id, a, s, f).await });
        Writer {
            acked,
            stop,
            task,
            first_ack_after,
        }
    }

    /// Ids acknowledged so far.
    pub fn acked(&self) -> Vec<i64> {
        self.acked.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Waits until `n` more writes than now were acknowledged (the load reached a primary).
    pub async fn wait_more(&self, n: usize) -> Result<()> {
        let base = self.acked().len();
        let deadline = Instant::now() + LIMIT;
        while self.acked().len() < base + n {
            if Instant::now() > deadline {
                bail!("writes stalled at {}", self.acked().len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Arms the stopwatch: the next acknowledged write after `t0` sets the pair.
    pub fn arm(&self, t0: Instant) {
        if let Ok(mut g) = self.first_ack_after.lock() {
            *g = Some((t0, t0));
        }
    }

    /// Time from the armed instant to the first write acknowledged after it.
    pub fn first_ack_delay(&self) -> Option<Duration> {
        let g = self.first_ack_after.lock().ok()?;
        let (t0, t1) = (*g)?;
        (t1 > t0).then(|| t1 - t0)
    }

    pub async fn finish(self) -> Vec<i64> {
        self.stop.cancel();
        let acked = self.acked.clone();
        let _ = self.task.await;
        acked.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

async fn write_loop(
    store: Store,
    shard_id: i64,
    acked: Arc<Mutex<Vec<i64>>>,
    stop: CancellationToken,
    first: Arc<Mutex<Option<(Instant, Instant)>>>,
) {
    let mut next_id: i64 = 1;
    let mut conn: Option<mysql_async::Conn> = None;
    while !stop.is_cancelled() {
        if conn.is_none() {
            conn = connect_app(&store, shard_id).await;
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let id = next_id;
        next_id += 1;
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            c.query_drop(format!("INSERT INTO ha.w VALUES ({id})")),
        )
        .await;
        match r {
            Ok(Ok(())) => {
                if let Ok(mut g) = acked.lock() {
                    g.push(id);
                }
                if let Ok(mut g) = first.lock() {
                    if let Some((t0, t1)) = g.as_mut() {
                        if t1 == t0 {
                            *t1 = Instant::now();
                        }
                    }
                }
            }
            _ => {
                // Unknown outcome: not acknowledged; reconnect to whatever is primary now.
                conn = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connect_app(store: &Store, shard_id: i64) -> Option<mysql_async::Conn> {
    let nodes = store.list_shard_nodes(Some(shard_id)).await.ok()?;
    let p = nodes
        .iter()
        .find(|n| n.member_state == MemberState::Source)?;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(p.hostaddr.clone())
        .tcp_port(p.port)
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false);
    tokio::time::timeout(Duration::from_secs(1), mysql_async::Conn::new(opts))
        .await
        .ok()?
        .ok()
}

/// A TCP proxy on 127.0.0.1 that can cut every connection and refuse new ones.
pub struct Proxy {
    pub port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(target: u16) -> Result<Proxy> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (o, g, s) = (open.clone(), generation.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => return,
                    a = l.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                if !o.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let cut = g.lock().map(|t| t.clone()).unwrap_or_default();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            open,
            generation,
            stop,
        })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut g) = self.generation.lock() {
            g.cancel();
            *g = CancellationToken::new();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
