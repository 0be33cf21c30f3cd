//! Guards of the scale API that refuse at accept time, through the real daemon (SQLite, job
//! runner on) and the real CLI: `delete_shard` of a cluster's last shard is 409 with what to do
//! instead (delete the cluster), and nothing changes: no job row, the shard stays. A cluster of
//! two shards (metadata only, no instances) loses one through `shard rm --wait`, after which
//! its remaining shard is refused the same way.

use kunlun_meta::model::{HaMode, NewCluster, NewShard, Shard};
use kunlun_meta::store::repo::{clusters, shards};
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::cli::{ctl, workdir};
use kunlun_tests::daemon::Daemon;
use serde_json::{json, Value};

const LAST_SHARD: &str = "a cluster keeps at least one shard; delete the cluster instead";

/// A cluster `name` with shards `shard1..=shardN` and no instances, written to the store.
async fn seed(store: &Store, name: &str, n: usize) -> (i64, Vec<Shard>) {
    let name = name.to_string();
    store
        .tx(async move |tx| {
            let c = clusters::insert(
                tx,
                &NewCluster {
                    name: name.clone(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await?;
            let mut out = Vec::new();
            for k in 1..=n {
                out.push(
                    shards::insert(
                        tx,
                        &NewShard {
                            name: format!("shard{k}"),
                            db_cluster_id: c.id,
                            num_nodes: 0,
                            sync_num: 0,
                        },
                    )
                    .await?,
                );
            }
            Ok((c.id, out))
        })
        .await
        .expect("seed cluster")
}

fn delete(url: &str) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .delete(url)
        .send()
        .expect("request");
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

fn get(url: &str) -> Value {
    reqwest::blocking::get(url)
        .expect("request")
        .json()
        .expect("JSON")
}

fn shard_ids(base: &str, cluster: i64) -> Vec<i64> {
    let d = get(&format!("{base}/v1/clusters/{cluster}"));
    d["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("cluster detail: {d}"))
        .iter()
        .map(|s| s["shard"]["id"].as_i64().expect("shard id"))
        .collect()
}

#[test]
fn delete_shard_refuses_a_clusters_last_shard_and_changes_nothing() {
    let wd = workdir();
    let db = wd.path().join("meta.db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ((solo, solo_shards), (pair, pair_shards)) = rt.block_on(async {
        let store = Store::open(&StoreConfig::sqlite(&db)).await.expect("store");
        (seed(&store, "solo", 1).await, seed(&store, "pair", 2).await)
    });
    let mut daemon = Daemon::start(wd.path(), &db).expect("daemon");
    let base = daemon.url();
    let only = solo_shards[0].id;

    // The API: 409 `conflict` naming the way out; no job written, the shard kept.
    let (st, v) = delete(&format!("{base}/v1/clusters/{solo}/shards/{only}"));
    assert_eq!((st, v["code"].as_str()), (409, Some("conflict")), "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains(LAST_SHARD), "{v}");
    assert!(
        msg.contains(&format!("shard {only}")) && msg.contains("solo"),
        "{v}"
    );
    assert_eq!(get(&format!("{base}/v1/jobs")), json!([]), "no job row");
    assert_eq!(shard_ids(&base, solo), vec![only]);

    // The CLI: the same refusal, exit 1, nothing on stdout, also with --json --wait.
    for args in [
        &["shard", "rm", "solo", &only.to_string(), "--wait"][..],
        &[
            "--json",
            "shard",
            "rm",
            &solo.to_string(),
            &only.to_string(),
            "--wait",
        ],
    ] {
        let out = ctl(&base, args);
        assert_eq!(out.code, 1, "{args:?}: {out:#?}");
        assert!(
            out.stderr.contains(LAST_SHARD) && out.stderr.contains("(conflict)"),
            "{args:?}: {out:#?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:#?}");
    }
    assert_eq!(get(&format!("{base}/v1/jobs")), json!([]), "no job row");
    assert_eq!(shard_ids(&base, solo), vec![only]);

    // Bad ids stay 404 (checked before the last-shard rule).
    let (st, v) = delete(&format!("{base}/v1/clusters/{solo}/shards/999999"));
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (st, v) = delete(&format!(
        "{base}/v1/clusters/{solo}/shards/{}",
        pair_shards[0].id
    ));
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("not_found")),
        "another cluster's shard: {v}"
    );

    // Two shards: one may go; then the other is the last and is refused.
    let (keep, drop) = (pair_shards[0].id, pair_shards[1].id);
    let out = ctl(&base, &["shard", "rm", "pair", &drop.to_string(), "--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
    assert_eq!(shard_ids(&base, pair), vec![keep]);
    let (st, v) = delete(&format!("{base}/v1/clusters/{pair}/shards/{keep}"));
    assert_eq!((st, v["code"].as_str()), (409, Some("conflict")), "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap_or_default()
        .contains(LAST_SHARD));
    let jobs = get(&format!("{base}/v1/jobs"));
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(1),
        "only the accepted delete_shard: {jobs}"
    );
    assert_eq!(shard_ids(&base, pair), vec![keep]);
    daemon.stop();
}
