//! Shared setup of the XA recovery tests and benchmark: a metadata MariaDB holding the store
//! (MySQL backend) and a cluster whose shards are real MariaDB servers, plus a test
//! coordinator that runs 2PC exactly as a Kunlun compute node does.
//!
//! Invariant: every server belongs to one [`XaEnv`] and is stopped when it is dropped, so tests
//! run in parallel and a test's prepared branches never outlive it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::MariaDb;
use anyhow::{anyhow, bail, Context, Result};
use kunlun_core::xa::{KunlunXid, RoundSummary, XaConfig, XaMetrics, XaResolver};
use kunlun_meta::model::{
    Cluster, HaMode, MemberState, MetaDbNode, NewCluster, NewShard, NewShardNode, NodeStatus,
    SyncState, TxnCmd,
};
use kunlun_meta::store::{repo, Store, StoreConfig};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// Coordinator deadline used by the tests (`global_txn_commit_log_wait_max_sec`).
pub const WAIT_MAX_SEC: u64 = 1;
/// Accounts per shard in the bank tables.
pub const ACCOUNTS: i64 = 10;
/// Opening balance of each account.
pub const OPENING: i64 = 1000;

/// The metadata server, the shard servers, the store and one cluster over the shards.
pub struct XaEnv {
    pub meta: MariaDb,
    pub shards: Vec<MariaDb>,
    pub store: Store,
    pub cluster: Cluster,
    pub shard_ids: Vec<i64>,
    pub cfg: XaConfig,
}

fn start_servers(n: usize) -> Result<Vec<MariaDb>> {
    let handles: Vec<_> = (0..n).map(|_| std::thread::spawn(MariaDb::start)).collect();
    handles
        .into_iter()
        .map(|h| h.join().map_err(|_| anyhow!("server start panicked"))?)
        .collect()
}

impl XaEnv {
    /// Starts the metadata server and `n_shards` single-node shards, opens the store on the
    /// metadata server and registers a cluster `xa_c` with one primary per shard. Each shard
    /// gets database `bank` with `ACCOUNTS` accounts of `OPENING` and a `transfers` ledger.
    pub async fn start(n_shards: usize) -> Result<XaEnv> {
        let mut servers =
            tokio::task::spawn_blocking(move || start_servers(n_shards + 1)).await??;
        let meta = servers.remove(0);
        let shards = servers;
        let mut scfg = StoreConfig::mysql(
            vec![format!("127.0.0.1:{}", meta.port())],
            "root",
            "",
            "kunlun_metadata_db",
        );
        scfg.connect_timeout = Duration::from_secs(10);
        let store = Store::open(&scfg)
            .await
            .context("open the store on the metadata server")?;
        let ports: Vec<u16> = shards.iter().map(MariaDb::port).collect();
        let (cluster, shard_ids) = store
            .tx(async |tx| {
                let cluster = repo::clusters::insert(
                    tx,
                    &NewCluster {
                        name: "xa_c".into(),
                        nick_name: None,
                        owner: None,
                        business: None,
                        ha_mode: HaMode::NoRep,
                        memo: None,
                    },
                )
                .await?;
                let mut ids = Vec::new();
                for (i, port) in ports.iter().enumerate() {
                    let shard = repo::shards::insert(
                        tx,
                        &NewShard {
                            name: format!("shard{}", i + 1),
                            db_cluster_id: cluster.id,
                            num_nodes: 1,
                            sync_num: 0,
                        },
                    )
                    .await?;
                    repo::nodes::insert(
                        tx,
                        &NewShardNode {
                            shard_id: shard.id,
                            db_cluster_id: cluster.id,
                            hostaddr: "127.0.0.1".into(),
                            port: *port,
                            user_name: "root".into(),
                            passwd: String::new(),
                            master_priority: 0,
                            member_state: MemberState::Source,
                            status: NodeStatus::Active,
                            innodb_buffer_pool_mb: 64,
                        },
                    )
                    .await?;
                    ids.push(shard.id);
                }
                Ok((cluster, ids))
            })
            .await
            .context("register the cluster")?;
        for (i, s) in shards.iter().enumerate() {
            let base = i as i64 * ACCOUNTS;
            let values: Vec<String> = (0..ACCOUNTS)
                .map(|k| format!("({}, {OPENING})", base + k))
                .collect();
            s.sql(&format!(
                "CREATE DATABASE bank; \
                 CREATE TABLE bank.accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB; \
                 CREATE TABLE bank.transfers (xid VARCHAR(64) PRIMARY KEY, delta BIGINT NOT NULL) ENGINE=InnoDB; \
                 INSERT INTO bank.accounts VALUES {};",
                values.join(",")
            ))?;
        }
        let cfg = XaConfig {
            interval: Duration::from_millis(200),
            wait_max: Duration::from_secs(WAIT_MAX_SEC),
            retention: Duration::from_secs(24 * 3600),
            purge_every: Duration::from_secs(3600),
            storage: Default::default(),
            clusters: Default::default(),
        };
        Ok(XaEnv {
            meta,
            shards,
            store,
            cluster,
            shard_ids,
            cfg,
        })
    }

    /// Registers the metadata server itself as the metadata shard's primary.
    pub async fn register_meta_shard(&self) -> Result<()> {
        let n = MetaDbNode {
            id: 0,
            hostaddr: "127.0.0.1".into(),
            port: self.meta.port(),
            user_name: "root".into(),
            passwd: String::new(),
            master_priority: 0,
            member_state: MemberState::Source,
            sync_state: SyncState::Fsync,
        };
        self.store
            .tx(async |tx| repo::meta::insert_meta_node(tx, &n).await)
            .await?;
        Ok(())
    }

    pub fn resolver(&self) -> (XaResolver, std::sync::Arc<XaMetrics>) {
        let m = std::sync::Arc::new(XaMetrics::default());
        (
            XaResolver::new(self.store.clone(), self.cfg.clone(), m.clone()),
            m,
        )
    }

    /// Runs rounds (pausing `interval` between them) until a round finds no Kunlun branch,
    /// at most `max_rounds`; returns the summaries.
    pub async fn settle(&self, r: &mut XaResolver, max_rounds: usize) -> Result<Vec<RoundSummary>> {
        let mut out = Vec::new();
        for _ in 0..max_rounds {
            let s = r.round().await?;
            let found = s.total().found;
            out.push(s);
            if found == 0 {
                return Ok(out);
            }
            tokio::time::sleep(self.cfg.interval).await;
        }
        bail!(
            "branches still prepared after {max_rounds} rounds: {:?}",
            self.all_prepared()?
        )
    }

    /// Waits until `start_ts + WAIT_MAX_SEC` of `xid` has passed on the metadata clock (the
    /// age a manual rollback asks for).
    pub async fn wait_past_deadline(&self, xid: KunlunXid) -> Result<()> {
        self.wait_clock_past(u64::from(xid.start_ts) + WAIT_MAX_SEC)
            .await
    }

    /// The metadata server's clock (unix s), the one the resolver dates first sightings by.
    pub async fn meta_clock(&self) -> Result<u64> {
        let now: i64 = self
            .store
            .autocommit(async |tx| repo::commit_log::server_now(tx).await)
            .await?;
        Ok(u64::try_from(now)?)
    }

    /// Waits until the metadata clock reads more than `t` (bounded: at most `t` minus the
    /// clock now plus a minute, then an error).
    pub async fn wait_clock_past(&self, t: u64) -> Result<()> {
        let start = self.meta_clock().await?;
        let give_up = std::time::Instant::now()
            + Duration::from_secs(t.saturating_sub(start).saturating_add(60));
        loop {
            if self.meta_clock().await? > t {
                return Ok(());
            }
            if std::time::Instant::now() >= give_up {
                bail!("the metadata clock did not pass {t}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `data` of every prepared branch on shard `i` (`XA RECOVER`).
    pub fn prepared(&self, i: usize) -> Result<Vec<String>> {
        prepared_on(&self.shards[i])
    }

    /// Prepared branches on every shard, as `(shard index, data)`.
    pub fn all_prepared(&self) -> Result<Vec<(usize, String)>> {
        let mut v = Vec::new();
        for i in 0..self.shards.len() {
            v.extend(self.prepared(i)?.into_iter().map(|d| (i, d)));
        }
        Ok(v)
    }

    /// The decision logged for `xid`, if any.
    pub async fn decision(&self, xid: KunlunXid) -> Result<Option<TxnCmd>> {
        let name = self.cluster.name.clone();
        let row = self
            .store
            .read(async |tx| {
                repo::commit_log::get(tx, &name, i64::from(xid.comp_node_id), xid.txn_id()).await
            })
            .await?;
        Ok(row.map(|r| r.next_txn_cmd))
    }

    /// Sum of all balances over all shards.
    pub fn total_balance(&self) -> Result<i64> {
        let mut t = 0;
        for s in &self.shards {
            t += s
                .value("SELECT COALESCE(SUM(balance), 0) FROM bank.accounts")?
                .unwrap_or_default()
                .parse::<i64>()?;
        }
        Ok(t)
    }

    /// Whether shard `i` holds the ledger row of `xid` (the branch committed).
    pub fn has_transfer(&self, i: usize, xid: KunlunXid) -> Result<bool> {
        Ok(self.shards[i]
            .value(&format!(
                "SELECT COUNT(*) FROM bank.transfers WHERE xid = '{xid}'"
            ))?
            .as_deref()
            == Some("1"))
    }

    /// A connection to the metadata database, as a compute node has.
    pub async fn meta_conn(&self) -> Result<Conn> {
        Ok(Conn::from_url(format!(
            "mysql://root@127.0.0.1:{}/kunlun_metadata_db",
            self.meta.port()
        ))
        .await?)
    }

    /// Rolls back every prepared branch left on the shards (cleanup).
    pub fn rollback_leftovers(&self) -> Result<()> {
        for s in self.shards.iter().chain(std::iter::once(&self.meta)) {
            for row in s.rows("XA RECOVER FORMAT='SQL'")? {
                if let Some(x) = row.get(3) {
                    // A branch whose owner is still connected cannot be ended here.
                    let _ = s.sql(&format!("XA ROLLBACK {x}"));
                }
            }
        }
        Ok(())
    }
}

/// `data` of every prepared branch on a server.
pub fn prepared_on(db: &MariaDb) -> Result<Vec<String>> {
    Ok(db
        .rows("XA RECOVER")?
        .into_iter()
        .filter_map(|r| r.get(3).cloned())
        .collect())
}

/// A fresh Kunlun xid for compute node `cn`, started now.
pub fn new_xid(cn: u32) -> KunlunXid {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let start_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    KunlunXid {
        comp_node_id: cn,
        start_ts,
        local_xid: NEXT.fetch_add(1, Ordering::Relaxed),
    }
}

/// Where a coordinator is in 2PC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Started,
    Prepared,
    Logged,
    Committed,
    RolledBack,
}

/// One global transaction run by the test coordinator: a connection per written shard.
pub struct Txn2pc {
    pub xid: KunlunXid,
    pub cluster: String,
    pub conns: Vec<(usize, Conn)>,
    pub phase: Phase,
    /// The coordinator's `global_txn_commit_log_wait_max_sec` (the env's `cfg.wait_max`).
    pub wait_max_sec: u64,
    /// Unix second at which phase 1 ended, as a compute node dates its deadline from.
    pub prepared_at: Option<u64>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Txn2pc {
    /// `XA START` on every shard in `shards` (indexes into `env.shards`).
    pub async fn begin(env: &XaEnv, xid: KunlunXid, shards: &[usize]) -> Result<Txn2pc> {
        let mut conns = Vec::new();
        for &i in shards {
            let mut c = env.shards[i].conn().await?;
            c.query_drop("SET SESSION innodb_lock_wait_timeout = 2")
                .await?;
            c.query_drop(format!("XA START '{xid}'")).await?;
            conns.push((i, c));
        }
        Ok(Txn2pc {
            xid,
            cluster: env.cluster.name.clone(),
            conns,
            phase: Phase::Started,
            wait_max_sec: env.cfg.wait_max.as_secs(),
            prepared_at: None,
        })
    }

    /// Runs a statement in the branch on shard `i`.
    pub async fn exec(&mut self, i: usize, sql: &str) -> Result<()> {
        let c = self.conn(i)?;
        c.query_drop(sql).await?;
        Ok(())
    }

    /// Moves `delta` into account `account` on shard `i` and records the ledger row.
    pub async fn add(&mut self, i: usize, account: i64, delta: i64) -> Result<()> {
        let xid = self.xid;
        self.exec(
            i,
            &format!("UPDATE bank.accounts SET balance = balance + ({delta}) WHERE id = {account}"),
        )
        .await?;
        self.exec(
            i,
            &format!("INSERT INTO bank.transfers VALUES ('{xid}', {delta})"),
        )
        .await
    }

    fn conn(&mut self, i: usize) -> Result<&mut Conn> {
        self.conns
            .iter_mut()
            .find(|(s, _)| *s == i)
            .map(|(_, c)| c)
            .ok_or_else(|| anyhow!("no branch on shard {i}"))
    }

    /// Phase one on every branch: `XA END`, `XA PREPARE`.
    pub async fn prepare(&mut self) -> Result<()> {
        let xid = self.xid;
        for (_, c) in &mut self.conns {
            c.query_drop(format!("XA END '{xid}'")).await?;
            c.query_drop(format!("XA PREPARE '{xid}'")).await?;
        }
        self.phase = Phase::Prepared;
        self.prepared_at = Some(unix_now());
        Ok(())
    }

    /// The compute node's guarded commit-log insert, its deadline dated as a compute node
    /// does: the end of phase 1 (else the xid's start) plus `wait_max_sec`. `Ok(false)`:
    /// refused (deadline passed, or a decision, e.g. the resolver's abort claim, is already
    /// logged).
    pub async fn log_commit(&mut self, meta: &mut Conn) -> Result<bool> {
        let dated = self.prepared_at.unwrap_or(u64::from(self.xid.start_ts));
        let deadline = dated + self.wait_max_sec;
        let shards: Vec<String> = self.conns.iter().map(|(i, _)| i.to_string()).collect();
        let sql = format!(
            "INSERT INTO commit_log_{} (comp_node_id, txn_id, next_txn_cmd, written_shards) \
             VALUES (?, ?, IF(unix_timestamp() > ?, NULL, 'commit'), ?)",
            self.cluster
        );
        let r = meta
            .exec_drop(
                sql,
                (
                    self.xid.comp_node_id,
                    self.xid.txn_id(),
                    deadline,
                    format!("[{}]", shards.join(",")),
                ),
            )
            .await;
        match r {
            Ok(()) => {
                self.phase = Phase::Logged;
                Ok(true)
            }
            Err(mysql_async::Error::Server(e)) if e.code == 1048 || e.code == 1062 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Phase two: `XA COMMIT` on every branch.
    pub async fn commit(&mut self) -> Result<()> {
        let xid = self.xid;
        for (_, c) in &mut self.conns {
            c.query_drop(format!("XA COMMIT '{xid}'")).await?;
        }
        self.phase = Phase::Committed;
        Ok(())
    }

    /// `XA ROLLBACK` on every prepared branch (what a coordinator does when its log write failed).
    pub async fn rollback(&mut self) -> Result<()> {
        let xid = self.xid;
        for (_, c) in &mut self.conns {
            c.query_drop(format!("XA ROLLBACK '{xid}'")).await?;
        }
        self.phase = Phase::RolledBack;
        Ok(())
    }

    /// Kills the coordinator: `KILL` of every branch session from an admin connection, so the
    /// prepared branches become detached (unprepared ones are rolled back by the server).
    pub async fn kill(self, env: &XaEnv) -> Result<()> {
        for (i, c) in self.conns {
            let id = c.id();
            let mut admin = env.shards[i].conn().await?;
            admin.query_drop(format!("KILL {id}")).await?;
            admin.disconnect().await?;
            drop(c);
        }
        Ok(())
    }
}

/// Runs a full transfer of `amount` from account `from` on shard 0 to account `to` on shard 1.
pub async fn transfer(
    env: &XaEnv,
    meta: &mut Conn,
    cn: u32,
    from: i64,
    to: i64,
    amount: i64,
) -> Result<KunlunXid> {
    let xid = new_xid(cn);
    let mut t = Txn2pc::begin(env, xid, &[0, 1]).await?;
    t.add(0, from, -amount).await?;
    t.add(1, to, amount).await?;
    t.prepare().await?;
    if !t.log_commit(meta).await? {
        t.rollback().await?;
        return Ok(xid);
    }
    t.commit().await?;
    Ok(xid)
}
