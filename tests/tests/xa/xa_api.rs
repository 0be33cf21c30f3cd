//! The XA endpoints and commands end to end: the real `cluster-mgr` (SQLite metadata, its
//! resolver slowed to one round per 100 s so the test sees branches before it does) over two
//! real MariaDB shards, `GET /v1/clusters/{id}/xa`, `POST .../xa/{xid}/resolve`, `/metrics`,
//! and the real `kunlunctl xa list|resolve`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kunlun_core::xa::KunlunXid;
use kunlun_meta::model::{
    HaMode, MemberState, NewCluster, NewShard, NewShardNode, NodeStatus, TxnCmd,
};
use kunlun_meta::store::repo::commit_log::NewCommitLogEntry;
use kunlun_meta::store::{repo, Store, StoreConfig};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::MariaDb;
use serde_json::{json, Value};

fn start_daemon(dir: &Path, sqlite: &Path) -> Result<Daemon> {
    let d = Daemon::start_with(
        dir,
        sqlite,
        &[
            "thread_work_interval = 100",
            "global_txn_commit_log_wait_max_sec = 1",
        ],
    )?;
    // Ready once the resolver's first round (at start) is done: the next is 100 s away.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::blocking::get(d.url_for("/metrics")) {
            let text = r.text().unwrap_or_default();
            if text
                .lines()
                .any(|l| l.starts_with("kunlun_cluster_mgr_xa_rounds_total ") && !l.ends_with(" 0"))
            {
                return Ok(d);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "cluster-mgr did not finish its first XA round:\n{}",
                d.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A detached prepared branch writing one row on `db`.
fn detached_branch(db: &MariaDb, x: KunlunXid, id: i64) {
    db.sql(&format!(
        "XA START '{x}'; INSERT INTO bank.t VALUES ({id}); XA END '{x}'; XA PREPARE '{x}'"
    ))
    .expect("prepared branch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_branches_are_listed_resolved_and_counted_over_http_and_kunlunctl() {
    // Both binaries are built before the clock of the slowed resolver starts.
    tokio::task::spawn_blocking(|| kunlun_tests::cli::bin("kunlunctl"))
        .await
        .unwrap();
    let dir = kunlun_tests::cli::workdir();
    let sqlite = dir.path().join("meta.sqlite3");
    let d = {
        let (dir, sqlite) = (dir.path().to_path_buf(), sqlite.clone());
        tokio::task::spawn_blocking(move || start_daemon(&dir, &sqlite))
            .await
            .unwrap()
            .expect("daemon")
    };
    let shards = tokio::task::spawn_blocking(|| [MariaDb::start(), MariaDb::start()])
        .await
        .unwrap()
        .map(|s| s.expect("shard"));
    for s in &shards {
        s.sql("CREATE DATABASE bank; CREATE TABLE bank.t (id INT PRIMARY KEY)")
            .unwrap();
    }
    let store = Store::open(&StoreConfig::sqlite(&sqlite))
        .await
        .expect("store");
    let ports: Vec<u16> = shards.iter().map(MariaDb::port).collect();
    let cluster = store
        .tx(async |tx| {
            let c = repo::clusters::insert(
                tx,
                &NewCluster {
                    name: "xa_api".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::NoRep,
                    memo: None,
                },
            )
            .await?;
            for (i, port) in ports.iter().enumerate() {
                let s = repo::shards::insert(
                    tx,
                    &NewShard {
                        name: format!("s{i}"),
                        db_cluster_id: c.id,
                        num_nodes: 1,
                        sync_num: 0,
                    },
                )
                .await?;
                repo::nodes::insert(
                    tx,
                    &NewShardNode {
                        shard_id: s.id,
                        db_cluster_id: c.id,
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
            }
            Ok(c)
        })
        .await
        .expect("cluster");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let logged = KunlunXid {
        comp_node_id: 1,
        start_ts: now - 100,
        local_xid: 1,
    };
    let undecided = KunlunXid {
        comp_node_id: 1,
        start_ts: now - 100,
        local_xid: 2,
    };
    for (i, s) in shards.iter().enumerate() {
        detached_branch(s, logged, 10 + i as i64);
        detached_branch(s, undecided, 20 + i as i64);
    }
    let e = NewCommitLogEntry {
        comp_node_id: 1,
        txn_id: logged.txn_id(),
        next_txn_cmd: TxnCmd::Commit,
        written_shards: None,
    };
    store
        .tx(async |tx| repo::commit_log::insert(tx, "xa_api", &e, None).await)
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let base = format!("{}/v1/clusters/{}/xa", d.url(), cluster.id);
    let list: Value = http.get(&base).send().await.unwrap().json().await.unwrap();
    let shards_json = list["shards"].as_array().expect("shards");
    assert_eq!(shards_json.len(), 2, "{list}");
    for s in shards_json {
        let mut got: Vec<(String, Value)> = s["branches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["xid"].as_str().unwrap().to_string(),
                    b["decision"].clone(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                (logged.to_string(), json!("commit")),
                (undecided.to_string(), Value::Null)
            ],
            "{list}"
        );
        assert!(s["branches"][0]["age_sec"].as_u64().unwrap() >= 100);
    }
    let unknown = http
        .get(format!("{}/v1/clusters/999999/xa", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // Against the log: refused with 409; bad bodies: 400.
    let post = |xid: String, body: Value| {
        let http = http.clone();
        let url = format!("{base}/{xid}/resolve");
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    let r = post(
        logged.to_string(),
        json!({"action": "rollback", "reason": "test"}),
    )
    .await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "conflict");
    let r = post(
        logged.to_string(),
        json!({"action": "maybe", "reason": "test"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(
        logged.to_string(),
        json!({"action": "commit", "reason": ""}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = post(
        "not-an-xid".into(),
        json!({"action": "commit", "reason": "x"}),
    )
    .await;
    assert_eq!(r.status(), 400);

    let r = http
        .post(format!("{base}/{logged}/resolve"))
        .header("x-kunlun-user", "alice")
        .json(&json!({"action": "commit", "reason": "INC-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["decision"], "commit");
    assert_eq!(done["ended_on"].as_array().unwrap().len(), 2, "{done}");
    for s in &shards {
        assert_eq!(
            s.value("SELECT COUNT(*) FROM bank.t WHERE id IN (10, 11)")
                .unwrap()
                .as_deref(),
            Some("1")
        );
    }

    // The CLI: list shows the undecided one; resolve rolls it back.
    let server = d.url();
    let id = cluster.id.to_string();
    let undecided_s = undecided.to_string();
    let (listed, resolved, jobs) = tokio::task::spawn_blocking(move || {
        let listed = kunlun_tests::cli::ctl(&server, &["xa", "list", &id]).ok();
        let resolved = kunlun_tests::cli::ctl(
            &server,
            &[
                "xa",
                "resolve",
                &id,
                &undecided_s,
                "--action",
                "rollback",
                "--reason",
                "coordinator gone",
            ],
        )
        .ok();
        let jobs =
            kunlun_tests::cli::ctl(&server, &["--json", "job", "list", "--type", "xa_resolve"])
                .ok();
        (listed, resolved, jobs)
    })
    .await
    .unwrap();
    assert!(
        listed.stdout.contains(&undecided.to_string()) && listed.stdout.contains("none logged"),
        "{listed:?}"
    );
    assert!(resolved.stdout.contains("abort"), "{resolved:?}");
    for s in &shards {
        assert!(s.rows("XA RECOVER").unwrap().is_empty());
        assert_eq!(
            s.value("SELECT COUNT(*) FROM bank.t").unwrap().as_deref(),
            Some("1")
        );
    }
    let jobs = jobs.json();
    let jobs = jobs.as_array().expect("job list");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(
        jobs.iter()
            .any(|j| j["user_name"] == "alice" && j["job_info"]["reason"] == "INC-1"),
        "{jobs:?}"
    );

    let metrics = http
        .get(format!("{}/metrics", d.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "xa_branches_found_total",
        "xa_branches_committed_total",
        "xa_branches_rolled_back_total",
        "xa_oldest_in_doubt_age_seconds",
    ] {
        assert!(
            metrics.contains(&format!("kunlun_cluster_mgr_{name} ")),
            "{name} missing from /metrics"
        );
    }
}
