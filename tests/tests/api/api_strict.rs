//! Strict request bodies on the operator controls of a real semi-sync shard through the real
//! daemon: a malformed `POST /v1/shards/{id}/switchover` (wrong type, unknown field,
//! `text/plain`, invalid JSON) and an out-of-range `no_switch` are refused with 400/415 and
//! nothing happens (the primary stays writable on the servers, no failover record); then no
//! body at all switches to the best replica, as documented.
//!
//! Issue 11 items 6 and 7: such bodies used to perform a real switchover, and
//! `seconds = 2^64-1` panicked the handler.

use std::time::{Duration, Instant};

use kunlun_meta::store::{Store, StoreConfig};
use kunlun_tests::cli::workdir;
use kunlun_tests::daemon::Daemon;
use kunlun_tests::ha::{register_shard, root_query, start_set, LIMIT};
use kunlun_tests::MariaDb;
use serde_json::Value;

async fn read_only(db: &MariaDb) -> i64 {
    let ro: Vec<i64> = root_query(db, "SELECT @@read_only")
        .await
        .expect("read_only");
    ro.first().copied().expect("one row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_switchover_and_no_switch_bodies_change_nothing() {
    let set = tokio::task::spawn_blocking(|| start_set(1))
        .await
        .expect("join")
        .expect("replica set");
    let dir = workdir();
    let sqlite = dir.path().join("meta.db");
    let ports: Vec<u16> = set.nodes().map(MariaDb::port).collect();
    let (_, shard, ids) = {
        let store = Store::open(&StoreConfig::sqlite(&sqlite))
            .await
            .expect("store");
        register_shard(&store, &ports, ports[0])
            .await
            .expect("register")
    };
    let (d, s2) = (dir.path().to_path_buf(), sqlite.clone());
    let daemon = tokio::task::spawn_blocking(move || Daemon::start(&d, &s2))
        .await
        .expect("join")
        .expect("daemon");
    let url = daemon.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");

    // The monitor runs and sees both nodes, so a switchover would be carried out.
    let deadline = Instant::now() + LIMIT;
    loop {
        let up = match http.get(format!("{url}/v1/ha")).send().await {
            Ok(r) if r.status().is_success() => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|h| {
                    h["nodes"]
                        .as_array()
                        .map(|n| n.iter().filter(|x| x["state"] == "up").count())
                })
                .unwrap_or(0),
            _ => 0,
        };
        if up == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the HA monitor never saw both nodes up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let switchover = format!("{url}/v1/shards/{shard}/switchover");
    let no_switch = format!("{url}/v1/shards/{shard}/no_switch");
    let json = "application/json";
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        // (what, body, content type, status, code)
        (
            "wrong type",
            r#"{"target_node_id":"two"}"#,
            Some(json),
            400,
            "invalid_field",
        ),
        (
            "unknown field",
            r#"{"target":2}"#,
            Some(json),
            400,
            "invalid_field",
        ),
        ("null", "null", Some(json), 400, "invalid_field"),
        ("an array", "[]", Some(json), 400, "invalid_field"),
        (
            "text/plain",
            "{}",
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        ("no content type", "{}", None, 415, "unsupported_media_type"),
        ("invalid JSON", "{", Some(json), 400, "malformed_json"),
        (
            "trailing garbage",
            "{} x",
            Some(json),
            400,
            "malformed_json",
        ),
    ];
    for (what, body, ct, status, code) in cases {
        let mut req = http.post(&switchover).body(body.to_string());
        if let Some(ct) = ct {
            req = req.header("content-type", *ct);
        }
        let r = req.send().await.expect("switchover request");
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (got, v["code"].as_str()),
            (*status, Some(*code)),
            "switchover with {what}: {v}"
        );
    }
    for (what, body, ct, status) in [
        ("2^64-1", r#"{"seconds":18446744073709551615}"#, json, 400),
        ("1e12", r#"{"seconds":1e12}"#, json, 400),
        ("10^12", r#"{"seconds":1000000000000}"#, json, 400),
        ("7 days + 1 s", r#"{"seconds":604801}"#, json, 400),
        ("negative", r#"{"seconds":-1}"#, json, 400),
        ("text/plain", r#"{"seconds":60}"#, "text/plain", 415),
    ] {
        let r = http
            .post(&no_switch)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("no_switch request");
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "no_switch with {what}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    // Nothing happened: the primary is writable, the replica read-only, no record, metadata
    // unchanged, and no hold set (checked below: the switchover goes ahead).
    assert_eq!(
        read_only(set.primary()).await,
        0,
        "the primary is still writable"
    );
    assert_eq!(
        read_only(&set.replicas()[0]).await,
        1,
        "the replica is still read-only"
    );
    let recs: Value = http
        .get(format!("{url}/v1/failovers"))
        .send()
        .await
        .expect("failovers")
        .json()
        .await
        .expect("json");
    assert_eq!(recs, Value::Array(vec![]), "no failover record");
    let nodes: Value = http
        .get(format!("{url}/v1/shards/{shard}/nodes"))
        .send()
        .await
        .expect("nodes")
        .json()
        .await
        .expect("json");
    let source: Vec<i64> = nodes
        .as_array()
        .expect("array")
        .iter()
        .filter(|n| n["member_state"] == "source")
        .filter_map(|n| n["id"].as_i64())
        .collect();
    assert_eq!(source, vec![ids[0]], "metadata still names the old primary");

    // The documented form: no body at all is the best replica, and it is carried out.
    let r = http.post(&switchover).send().await.expect("switchover");
    assert_eq!(r.status().as_u16(), 200);
    let rec: Value = r.json().await.expect("record");
    assert_eq!(rec["outcome"], "promoted", "{rec}");
    assert_eq!(rec["new_primary"].as_i64(), Some(ids[1]), "{rec}");
    assert_eq!(
        read_only(&set.replicas()[0]).await,
        0,
        "the replica was promoted"
    );
    assert_eq!(
        read_only(set.primary()).await,
        1,
        "the old primary is read-only"
    );
    drop(daemon);
}
