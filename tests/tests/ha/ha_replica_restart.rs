//! Replica upkeep against real MariaDB: a replica runs with `skip-slave-start` (as a
//! provisioned replica's `my.cnf` has it), so after its `mariadbd` is killed and started again
//! on the same datadir its replication threads stay stopped; the HA monitor starts them
//! again, and a row written on the primary afterwards arrives. A replica whose source was
//! reset is repointed at the primary by GTID; one that holds an errant transaction, or whose
//! SQL thread stopped with an error, is left as it is and reported.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kunlun_core::ha::{HaHandle, HaMonitor, HaStats};
use kunlun_meta::model::ShardNode;
use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::ha::{register_shard_at, root_query, test_ha_config, LIMIT};
use kunlun_tests::{MariaDb, MariaDbOptions, ReplicaSet, ReplicaSetOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A primary and one `skip-slave-start` replica registered as an `rbr` shard, with the HA
/// monitor running over it.
struct Env {
    set: ReplicaSet,
    store: Store,
    shard_id: i64,
    /// Primary's and replica's node ids.
    ids: [i64; 2],
    ha: HaHandle,
    cancel: CancellationToken,
    tasks: TaskTracker,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Result<Env> {
        let set = tokio::task::spawn_blocking(|| -> Result<ReplicaSet> {
            let set = ReplicaSet::start_with(ReplicaSetOptions {
                replicas: 1,
                semi_sync: true,
                node: MariaDbOptions {
                    extra_args: vec!["--slave-net-timeout=2".into(), "--skip-slave-start".into()],
                    ..MariaDbOptions::default()
                },
                primary: None,
            })?;
            set.primary()
                .sql("CREATE DATABASE ha; CREATE TABLE ha.w (id BIGINT PRIMARY KEY);")?;
            set.wait_replicated(LIMIT)?;
            Ok(set)
        })
        .await??;
        let dir = tempfile::tempdir()?;
        let store = Store::open(&StoreConfig::sqlite(dir.path().join("meta.db"))).await?;
        let hosts: Vec<(String, u16)> = set.nodes().map(|n| (n.tcp_host(), n.port())).collect();
        let (_, shard_id, ids) = register_shard_at(&store, &hosts).await?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ha = HaMonitor::spawn(store.clone(), test_ha_config(), &tasks, cancel.clone());
        Ok(Env {
            set,
            store,
            shard_id,
            ids: [ids[0], ids[1]],
            ha,
            cancel,
            tasks,
            _dir: dir,
        })
    }

    fn replica(&self) -> &MariaDb {
        &self.set.replicas()[0]
    }

    fn stats(&self) -> HaStats {
        self.ha.shared().stats()
    }

    /// Events of the replica whose text contains `what`.
    fn events_of_replica(&self, what: &str) -> Vec<String> {
        self.ha
            .shared()
            .events()
            .into_iter()
            .filter(|e| e.node_id == Some(self.ids[1]) && e.what.contains(what))
            .map(|e| e.what)
            .collect()
    }

    async fn wait_event(&self, what: &str) -> Result<String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(e) = self.events_of_replica(what).pop() {
                return Ok(e);
            }
            if Instant::now() > deadline {
                bail!(
                    "no event '{what}' within {LIMIT:?}; events {:?}",
                    self.ha.shared().events()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the monitor has finished `n` more rounds.
    async fn rounds(&self, n: u64) {
        let start = self.stats().rounds;
        while self.stats().rounds < start + n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `id` on the primary and waits until the replica has it.
    async fn write_and_see(&self, id: i64) -> Result<()> {
        let p = self.set.primary();
        root_query::<u8>(p, &format!("INSERT INTO ha.w VALUES ({id})")).await?;
        let pos: Vec<String> = root_query(p, "SELECT @@gtid_binlog_pos").await?;
        let pos = pos.into_iter().next().unwrap_or_default();
        let got: Vec<i64> = root_query(
            self.replica(),
            &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"),
        )
        .await?;
        if got.first() != Some(&0) {
            bail!("replica did not reach {pos}");
        }
        let have: Vec<i64> = root_query(
            self.replica(),
            &format!("SELECT id FROM ha.w WHERE id = {id}"),
        )
        .await?;
        if have != vec![id] {
            bail!("row {id} missing on the replica");
        }
        Ok(())
    }

    async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn replica_row(&self) -> Result<ShardNode> {
        let nodes = self.store.list_shard_nodes(Some(self.shard_id)).await?;
        nodes
            .into_iter()
            .find(|n| n.id == self.ids[1])
            .context("replica row")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The replica's default channel as `SHOW SLAVE STATUS` reports it (`None`: no source set).
async fn slave_status(db: &MariaDb) -> Result<Option<SlaveStatus>> {
    let rows: Vec<mysql_async::Row> = root_query(db, "SHOW SLAVE STATUS").await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let get = |c: &str| -> String {
        r.columns_ref()
            .iter()
            .position(|x| x.name_str() == c)
            .and_then(|i| r.as_ref(i))
            .map(|v| match v {
                mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                mysql_async::Value::NULL => String::new(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    };
    Ok(Some(SlaveStatus {
        master_port: get("Master_Port").parse().unwrap_or(0),
        io: get("Slave_IO_Running"),
        sql: get("Slave_SQL_Running"),
        sql_errno: get("Last_SQL_Errno").parse().unwrap_or(0),
    }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SlaveStatus {
    master_port: u16,
    io: String,
    sql: String,
    sql_errno: i64,
}

async fn one_value(db: &MariaDb, sql: &str) -> Result<String> {
    let v: Vec<Option<String>> = root_query(db, sql).await?;
    Ok(v.into_iter().next().flatten().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_skip_slave_start_replica_gets_its_replication_restarted() {
    let env = Env::start().await.expect("env");
    env.write_and_see(1).await.expect("replicating at start");
    let pport = env.set.primary().port();

    // kill -9 of the replica's server by its pid, then the same datadir and options again.
    let pid = env.replica().pid().expect("replica pid");
    let e = &env;
    tokio::task::block_in_place(|| e.replica().kill9()).expect("kill");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    tokio::task::block_in_place(|| e.replica().restart()).expect("restart");
    assert_ne!(env.replica().pid(), Some(pid));
    let up = Instant::now();

    let what = env
        .wait_event("replication restarted")
        .await
        .expect("the monitor restarts the replica's threads");
    eprintln!(
        "replication restarted {} ms after the replica's server answered again",
        up.elapsed().as_millis()
    );
    assert!(what.contains("stopped without an error"), "{what}");
    env.write_and_see(2)
        .await
        .expect("a row written after the restart arrives on the replica");
    let st = slave_status(env.replica())
        .await
        .unwrap()
        .expect("a source");
    assert_eq!(
        (st.master_port, st.io.as_str(), st.sql.as_str()),
        (pport, "Yes", "Yes")
    );
    // The replica's own semi-sync master side is off again (the server started with it on),
    // and the primary's commits are acknowledged by it.
    assert_eq!(
        one_value(env.replica(), "SELECT @@rpl_semi_sync_master_enabled")
            .await
            .unwrap(),
        "0"
    );
    let deadline = Instant::now() + LIMIT;
    loop {
        let rows: Vec<(String, String)> = root_query(
            env.set.primary(),
            "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'",
        )
        .await
        .unwrap();
        if rows.first().map(|r| r.1.as_str()) == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "no semi-sync client: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.stats().replication_restarts, 1, "{:?}", env.stats());
    assert_eq!(env.stats().replicas_repointed, 0);
    assert_eq!(
        env.replica_row().await.unwrap().status,
        kunlun_meta::model::NodeStatus::Active
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_an_sql_error_is_left_alone_and_reported() {
    let env = Env::start().await.expect("env");
    env.write_and_see(1).await.expect("replicating at start");
    // A row only the replica has (no GTID of its own), then the same key from the primary:
    // the SQL thread stops with a duplicate-key error; the IO thread is stopped by hand.
    root_query::<u8>(
        env.replica(),
        "SET SESSION sql_log_bin = 0; INSERT INTO ha.w VALUES (100)",
    )
    .await
    .unwrap();
    root_query::<u8>(env.set.primary(), "INSERT INTO ha.w VALUES (100)")
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let st = slave_status(env.replica())
            .await
            .unwrap()
            .expect("a source");
        if st.sql == "No" && st.sql_errno != 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no SQL error: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    root_query::<u8>(env.replica(), "STOP SLAVE IO_THREAD")
        .await
        .unwrap();

    let what = env
        .wait_event("replication stopped with an error")
        .await
        .expect("reported");
    assert!(what.contains("Last_SQL_Errno 1062"), "{what}");
    env.rounds(6).await;
    let st = slave_status(env.replica())
        .await
        .unwrap()
        .expect("a source");
    assert_eq!(
        (st.io.as_str(), st.sql.as_str(), st.sql_errno),
        ("No", "No", 1062)
    );
    assert_eq!(env.stats().replication_restarts, 0);
    assert_eq!(env.stats().replicas_repointed, 0);
    assert!(env.events_of_replica("replication restarted").is_empty());
    assert_eq!(
        env.events_of_replica("replication stopped with an error")
            .len(),
        1,
        "reported once, not every round"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_no_source_is_repointed_at_the_primary() {
    let env = Env::start().await.expect("env");
    env.write_and_see(1).await.expect("replicating at start");
    root_query::<u8>(env.replica(), "STOP SLAVE; RESET SLAVE ALL")
        .await
        .unwrap();
    let what = env
        .wait_event("repointed from no source")
        .await
        .expect("repointed");
    assert!(what.contains("MASTER_USE_GTID=slave_pos"), "{what}");
    env.write_and_see(2).await.expect("replicates again");
    let st = slave_status(env.replica())
        .await
        .unwrap()
        .expect("a source");
    assert_eq!(st.master_port, env.set.primary().port());
    let rows: Vec<i64> = root_query(env.replica(), "SELECT id FROM ha.w ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![1, 2], "nothing applied twice or lost");
    assert_eq!(env.stats().replicas_repointed, 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_an_errant_transaction_is_not_repointed() {
    let env = Env::start().await.expect("env");
    env.write_and_see(1).await.expect("replicating at start");
    // A local write in its own GTID domain (it does not disturb domain 0's stream): the
    // primary never had it, so repointing would hide a divergence.
    root_query::<u8>(
        env.replica(),
        "SET SESSION gtid_domain_id = 7; INSERT INTO ha.w VALUES (500)",
    )
    .await
    .unwrap();
    root_query::<u8>(env.replica(), "STOP SLAVE; RESET SLAVE ALL")
        .await
        .unwrap();
    let what = env
        .wait_event("errant transactions")
        .await
        .expect("reported");
    assert!(what.contains("7-"), "{what}");
    env.rounds(6).await;
    assert_eq!(
        slave_status(env.replica()).await.unwrap(),
        None,
        "left without a source"
    );
    assert_eq!(env.stats().replicas_repointed, 0);
    assert_eq!(env.events_of_replica("errant transactions").len(), 1);
    env.stop().await;
}
