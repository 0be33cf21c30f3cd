//! Shard HA through the real daemon and the real `kunlunctl`: the daemon's monitor probes a
//! registered semi-sync shard (`GET /v1/ha`), a switchover asked with
//! `kunlunctl failover switchover` moves the primary on the servers and in metadata, and
//! `kunlunctl failover list|show|no-switch` report and control it.

use std::time::{Duration, Instant};

use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::cli::{ctl, workdir};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::ha::{register_shard, root_query, start_set, LIMIT};
use kunlun_tests::MariaDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_and_failover_records_through_the_daemon_and_kunlunctl() {
    let set = tokio::task::spawn_blocking(|| start_set(2))
        .await
        .unwrap()
        .expect("replica set");
    let dir = workdir();
    let sqlite = dir.path().join("meta.db");
    let ports: Vec<u16> = set.nodes().map(MariaDb::port).collect();
    let (_, shard, ids) = {
        let store = Store::open(&StoreConfig::sqlite(&sqlite)).await.unwrap();
        register_shard(&store, &ports, ports[0]).await.unwrap()
    };
    let (d, s2) = (dir.path().to_path_buf(), sqlite.clone());
    let daemon = tokio::task::spawn_blocking(move || Daemon::start(&d, &s2))
        .await
        .unwrap()
        .expect("daemon");
    let url = daemon.url();

    // The monitor probes every node of the shard.
    let deadline = Instant::now() + LIMIT;
    loop {
        let u = url.clone();
        let v = tokio::task::spawn_blocking(move || ctl(&u, &["failover", "list"]))
            .await
            .unwrap();
        let health: serde_json::Value = reqwest::get(format!("{url}/v1/ha"))
            .await
            .and_then(|r| r.error_for_status())
            .unwrap()
            .json()
            .await
            .unwrap();
        let up = health["nodes"]
            .as_array()
            .map(|n| n.iter().filter(|x| x["state"] == "up").count())
            .unwrap_or(0);
        if up == 3 {
            assert_eq!(v.code, 0, "{v:?}");
            assert!(v.stdout.contains("no failovers"), "{v:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not all nodes up: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (u, sh, to) = (url.clone(), shard.to_string(), ids[2].to_string());
    let out = tokio::task::spawn_blocking(move || {
        ctl(&u, &["failover", "switchover", "--shard", &sh, "--to", &to]).ok()
    })
    .await
    .unwrap();
    assert!(out.stdout.contains("promoted"), "{out:?}");
    assert!(out.stdout.contains("phase catch_up"), "{out:?}");
    let ro: Vec<i64> = root_query(&set.replicas()[1], "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![0], "the named replica is the writable primary");
    let ro: Vec<i64> = root_query(set.primary(), "SELECT @@read_only")
        .await
        .unwrap();
    assert_eq!(ro, vec![1], "the old primary is read-only");
    let nodes: serde_json::Value = reqwest::get(format!("{url}/v1/shards/{shard}/nodes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let source: Vec<i64> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["member_state"] == "source")
        .filter_map(|n| n["id"].as_i64())
        .collect();
    assert_eq!(source, vec![ids[2]]);

    let (u, sh) = (url.clone(), shard.to_string());
    let (list, show, hold, bad) = tokio::task::spawn_blocking(move || {
        let list = ctl(&u, &["--json", "failover", "list", "--shard", &sh]).ok();
        let show = ctl(&u, &["failover", "show", "1"]).ok();
        let hold = ctl(
            &u,
            &["failover", "no-switch", "--shard", &sh, "--seconds", "60"],
        )
        .ok();
        let bad = ctl(
            &u,
            &["failover", "no-switch", "--shard", "999", "--seconds", "1"],
        );
        (list, show, hold, bad)
    })
    .await
    .unwrap();
    let recs = list.json();
    assert_eq!(recs.as_array().map(Vec::len), Some(1), "{recs}");
    assert_eq!(recs[0]["kind"], "switchover");
    assert_eq!(recs[0]["new_primary"].as_i64(), Some(ids[2]));
    assert!(show.stdout.contains("switchover"), "{show:?}");
    assert!(
        hold.stdout.contains("no automatic failover for 60 s"),
        "{hold:?}"
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("not_found"), "{bad:?}");
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kunlun_cluster_mgr_ha_failovers_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kunlun_cluster_mgr_ha_node_up{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE kunlun_cluster_mgr_ha_replication_restarts_total counter")
            && metrics.contains("# TYPE kunlun_cluster_mgr_ha_replicas_repointed_total counter"),
        "{metrics}"
    );
    let doc: serde_json::Value = reqwest::get(format!("{url}/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/v1/ha",
        "/v1/failovers",
        "/v1/failovers/{id}",
        "/v1/shards/{id}/switchover",
        "/v1/shards/{id}/no_switch",
    ] {
        assert!(doc["paths"].get(p).is_some(), "OpenAPI lacks {p}");
    }
    drop(daemon);

    // The records live in the metadata store: a restarted daemon still lists them.
    let (d, s2) = (dir.path().to_path_buf(), sqlite.clone());
    let daemon = tokio::task::spawn_blocking(move || Daemon::start(&d, &s2))
        .await
        .unwrap()
        .expect("daemon restarted");
    let u = daemon.url();
    let (list, missing) = tokio::task::spawn_blocking(move || {
        (
            ctl(&u, &["--json", "failover", "list"]).ok(),
            ctl(&u, &["failover", "show", "424242"]),
        )
    })
    .await
    .unwrap();
    let recs = list.json();
    assert_eq!(recs.as_array().map(Vec::len), Some(1), "{recs}");
    assert_eq!(recs[0]["kind"], "switchover");
    assert_eq!(recs[0]["new_primary"].as_i64(), Some(ids[2]));
    assert!(
        recs[0]["phases"].as_array().is_some_and(|p| !p.is_empty()),
        "{recs}"
    );
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("not_found"), "{missing:?}");
    drop(daemon);
}
