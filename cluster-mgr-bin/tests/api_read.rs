//! API tests of the read endpoints: clusters, shards, shard nodes, compute nodes and jobs; a
//! cluster's self-healing policy (`GET`/`PATCH /v1/clusters/{id}/policy`) and its backup
//! schedule (`GET`/`PUT`/`DELETE /v1/clusters/{id}/backup_schedule`).

mod common;

use actix_web::http::Method;
use actix_web::test;
use cluster_mgr::http::app;
use common::*;
use kunlun_meta::model::{JobStatus, NewJob};
use serde_json::json;

async fn topology_reads(ts: TestStore) {
    let svc = test::init_service(app(state(&ts.store))).await;
    let (st, list) = call(&svc, Method::GET, "/v1/clusters", None).await;
    assert_eq!((st.as_u16(), list), (200, json!([])));

    let t = seed_topology(&ts.store, "cluster_a").await;
    let (st, list) = call(&svc, Method::GET, "/v1/clusters", None).await;
    assert_eq!(st.as_u16(), 200);
    assert_eq!(list[0]["name"], "cluster_a");
    assert_eq!(list[0]["ha_mode"], "rbr");

    let (st, detail) = call(
        &svc,
        Method::GET,
        &format!("/v1/clusters/{}", t.cluster_id),
        None,
    )
    .await;
    assert_eq!(st.as_u16(), 200, "{detail}");
    assert_eq!(detail["cluster"]["id"], t.cluster_id);
    assert_eq!(detail["shards"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        detail["shards"][0]["nodes"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(detail["comp_nodes"][0]["name"], "comp1");
    let text = detail.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("passwd"),
        "passwords leak: {text}"
    );

    let (st, shards) = call(
        &svc,
        Method::GET,
        &format!("/v1/clusters/{}/shards", t.cluster_id),
        None,
    )
    .await;
    assert_eq!(st.as_u16(), 200);
    let names: Vec<_> = shards
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("shard1"), json!("shard2")]);

    let sid = t.shard_ids[1];
    let (st, shard) = call(&svc, Method::GET, &format!("/v1/shards/{sid}"), None).await;
    assert_eq!(st.as_u16(), 200);
    assert_eq!(shard["name"], "shard2");
    let (st, nodes) = call(&svc, Method::GET, &format!("/v1/shards/{sid}/nodes"), None).await;
    assert_eq!(st.as_u16(), 200);
    let ports: Vec<_> = nodes
        .as_array()
        .expect("array")
        .iter()
        .map(|n| n["port"].clone())
        .collect();
    assert_eq!(ports, vec![json!(57020), json!(57021)]);
    assert!(!nodes.to_string().contains("s3cret"));

    let (st, comps) = call(
        &svc,
        Method::GET,
        &format!("/v1/clusters/{}/comp_nodes", t.cluster_id),
        None,
    )
    .await;
    assert_eq!(st.as_u16(), 200);
    assert_eq!(comps[0]["id"], t.comp_node_id);
    assert!(!comps.to_string().contains("s3cret"));

    for uri in [
        "/v1/clusters/9999",
        "/v1/clusters/9999/shards",
        "/v1/clusters/9999/comp_nodes",
        "/v1/shards/9999",
        "/v1/shards/9999/nodes",
    ] {
        assert_error(&call(&svc, Method::GET, uri, None).await, 404, "not_found");
    }
    for uri in [
        "/v1/clusters/x",
        "/v1/clusters/x/shards",
        "/v1/clusters/1e3/comp_nodes",
        "/v1/shards/x",
        "/v1/shards/%20/nodes",
    ] {
        assert_error(
            &call(&svc, Method::GET, uri, None).await,
            400,
            "invalid_field",
        );
    }
}

#[actix_web::test]
async fn topology_reads_on_sqlite() {
    topology_reads(sqlite_store().await).await;
}

#[actix_web::test]
async fn topology_reads_on_mysql() {
    topology_reads(mysql_store().await).await;
}

async fn job_reads(ts: TestStore) {
    let svc = test::init_service(app(state(&ts.store))).await;
    assert_eq!(call(&svc, Method::GET, "/v1/jobs", None).await.1, json!([]));
    let mut ids = Vec::new();
    for t in ["create_cluster", "add_shards", "create_cluster"] {
        let j = NewJob {
            job_type: t.into(),
            job_info: json!({"paras": {"x": 1}}),
            user_name: Some("tester".into()),
        };
        ids.push(ts.store.create_job(&j).await.expect("create job").id);
    }
    ts.store
        .update_job(ids[0], JobStatus::Done, Some(&json!({"ok": true})))
        .await
        .expect("update job");

    let (st, all) = call(&svc, Method::GET, "/v1/jobs", None).await;
    assert_eq!(st.as_u16(), 200);
    let got: Vec<i64> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|j| j["id"].as_i64())
        .collect();
    assert_eq!(got, vec![ids[2], ids[1], ids[0]], "newest first");

    let (_, done) = call(&svc, Method::GET, "/v1/jobs?status=done", None).await;
    assert_eq!(done.as_array().map(Vec::len), Some(1));
    assert_eq!(done[0]["id"], ids[0]);
    let (_, typed) = call(
        &svc,
        Method::GET,
        "/v1/jobs?job_type=create_cluster&limit=1",
        None,
    )
    .await;
    assert_eq!(typed.as_array().map(Vec::len), Some(1));
    assert_eq!(typed[0]["id"], ids[2]);

    let (st, one) = call(&svc, Method::GET, &format!("/v1/jobs/{}", ids[0]), None).await;
    assert_eq!(st.as_u16(), 200);
    assert_eq!(one["job_type"], "create_cluster");
    assert_eq!(one["status"], "done");
    assert_eq!(one["memo"], json!({"ok": true}));

    assert_error(
        &call(&svc, Method::GET, "/v1/jobs/777777", None).await,
        404,
        "not_found",
    );
    assert_error(
        &call(&svc, Method::GET, "/v1/jobs/seven", None).await,
        400,
        "invalid_field",
    );
    for q in [
        "colour=red",
        "status=exploded",
        "limit=-1",
        "limit=abc",
        "limit=0",
        "limit=1001",
        "job_type=a%27b",
    ] {
        assert_error(
            &call(&svc, Method::GET, &format!("/v1/jobs?{q}"), None).await,
            400,
            "invalid_field",
        );
    }
}

#[actix_web::test]
async fn job_reads_on_sqlite() {
    job_reads(sqlite_store().await).await;
}

#[actix_web::test]
async fn job_reads_on_mysql() {
    job_reads(mysql_store().await).await;
}

async fn policy_reads_and_patches(ts: TestStore) {
    let svc = test::init_service(app(state(&ts.store))).await;
    let t = seed_topology(&ts.store, "cluster_p").await;
    let uri = format!("/v1/clusters/{}/policy", t.cluster_id);
    let (st, p) = call(&svc, Method::GET, &uri, None).await;
    assert_eq!(st.as_u16(), 200, "{p}");
    assert_eq!(
        p,
        json!({"cluster_id": t.cluster_id, "auto_restart": true, "auto_rebuild": true})
    );
    let (st, p) = call(
        &svc,
        Method::PATCH,
        &uri,
        Some(r#"{"auto_restart": false}"#),
    )
    .await;
    assert_eq!(st.as_u16(), 200, "{p}");
    assert_eq!(
        p,
        json!({"cluster_id": t.cluster_id, "auto_restart": false, "auto_rebuild": true})
    );
    let (st, p) = call(
        &svc,
        Method::PATCH,
        &uri,
        Some(r#"{"auto_rebuild": false}"#),
    )
    .await;
    assert_eq!(st.as_u16(), 200, "{p}");
    assert_eq!(
        p["auto_restart"], false,
        "a switch left out keeps its value: {p}"
    );
    assert_eq!(p["auto_rebuild"], false);
    assert_eq!(call(&svc, Method::GET, &uri, None).await.1, p);

    // Bad bodies change nothing.
    for body in [
        "{}",
        r#"{"auto_restart": true, "auto_restrat": true}"#,
        r#"{"auto_restart": "on"}"#,
        r#"{"auto_restart": null, "auto_rebuild": null}"#,
        "[true]",
        r#"{"auto_restart": false, "auto_restart": true}"#,
        "not json",
    ] {
        let (st, v) = call(&svc, Method::PATCH, &uri, Some(body)).await;
        assert_eq!(st.as_u16(), 400, "{body}: {v}");
        assert!(v["code"].is_string(), "{body}: {v}");
    }
    assert_eq!(call(&svc, Method::GET, &uri, None).await.1, p);
    assert_error(
        &call(
            &svc,
            Method::PATCH,
            "/v1/clusters/9999/policy",
            Some(r#"{"auto_restart": true}"#),
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &call(&svc, Method::GET, "/v1/clusters/9999/policy", None).await,
        404,
        "not_found",
    );
    assert_error(
        &call(&svc, Method::POST, &uri, Some(r#"{"auto_restart": true}"#)).await,
        405,
        "method_not_allowed",
    );
    // Every PATCH is in the audit trail, with its answer's status.
    let audit = ts
        .store
        .read(async |tx| kunlun_meta::store::repo::audit::list(tx, 100).await)
        .await
        .expect("audit");
    let patches: Vec<i64> = audit
        .iter()
        .filter(|e| e.method == "PATCH" && e.path.ends_with("/policy"))
        .map(|e| e.status)
        .collect();
    assert_eq!(
        patches.iter().filter(|s| **s == 200).count(),
        2,
        "{audit:?}"
    );
    assert!(
        patches.contains(&400) && patches.contains(&404),
        "{audit:?}"
    );
}

#[actix_web::test]
async fn policy_reads_and_patches_on_sqlite() {
    policy_reads_and_patches(sqlite_store().await).await;
}

#[actix_web::test]
async fn policy_reads_and_patches_on_mysql() {
    policy_reads_and_patches(mysql_store().await).await;
}

async fn backup_schedule_is_set_shown_and_removed(ts: TestStore) {
    use kunlun_meta::store::repo::backup_storage::{self, NewBackupStorage};
    let svc = test::init_service(app(state(&ts.store))).await;
    let t = seed_topology(&ts.store, "cluster_s").await;
    ts.store
        .tx(async |tx| {
            backup_storage::insert(
                tx,
                &NewBackupStorage {
                    name: "st1".into(),
                    hostaddr: "127.0.0.1".into(),
                    path: "/backups".into(),
                    machine_id: 1,
                },
            )
            .await
        })
        .await
        .expect("a storage row");
    let uri = format!("/v1/clusters/{}/backup_schedule", t.cluster_id);
    assert_error(&call(&svc, Method::GET, &uri, None).await, 404, "not_found");
    let body = r#"{"storage": "st1", "window": "23:00:00-01:00:00", "keep_count": 2}"#;
    let (st, s) = call(&svc, Method::PUT, &uri, Some(body)).await;
    assert_eq!(st.as_u16(), 200, "{s}");
    assert_eq!(
        (&s["cluster_id"], &s["storage"], &s["window"]),
        (
            &json!(t.cluster_id),
            &json!("st1"),
            &json!("23:00:00-01:00:00")
        ),
        "{s}"
    );
    assert_eq!(
        (&s["keep_count"], &s["keep_days"], &s["enabled"]),
        (&json!(2), &json!(null), &json!(true)),
        "{s}"
    );
    assert_eq!(call(&svc, Method::GET, &uri, None).await.1, s);
    // The original's columns follow the window.
    let (_, shards) = call(
        &svc,
        Method::GET,
        &format!("/v1/clusters/{}/shards", t.cluster_id),
        None,
    )
    .await;
    for sh in shards.as_array().expect("shards") {
        assert_eq!(sh["coldbackup_period"], "23:00:00-01:00:00", "{sh}");
    }

    // Bad bodies are 400 and change nothing; unknown cluster or storage 404.
    for bad in [
        r#"{"storage": "st1", "window": "24:00:00-01:00:00"}"#,
        r#"{"storage": "st1", "window": "01:00:00-01:00:00"}"#,
        r#"{"storage": "st1", "window": "1:00-2:00"}"#,
        r#"{"storage": "st1", "window": 5}"#,
        r#"{"storage": "st1"}"#,
        r#"{"storage": "", "window": "01:00:00-02:00:00"}"#,
        r#"{"storage": "st1", "window": "01:00:00-02:00:00", "keep_count": 0}"#,
        r#"{"storage": "st1", "window": "01:00:00-02:00:00", "keep_count": -1}"#,
        r#"{"storage": "st1", "window": "01:00:00-02:00:00", "keep_days": 0}"#,
        r#"{"storage": "st1", "window": "01:00:00-02:00:00", "keep_days": 36501}"#,
        r#"{"storage": "st1", "window": "01:00:00-02:00:00", "keep": 1}"#,
        "[]",
    ] {
        let (st, v) = call(&svc, Method::PUT, &uri, Some(bad)).await;
        assert_eq!(st.as_u16(), 400, "{bad}: {v}");
        assert!(v["code"].is_string(), "{bad}: {v}");
    }
    let nowhere = r#"{"storage": "nowhere", "window": "01:00:00-02:00:00"}"#;
    assert_error(
        &call(&svc, Method::PUT, &uri, Some(nowhere)).await,
        404,
        "not_found",
    );
    assert_error(
        &call(
            &svc,
            Method::PUT,
            "/v1/clusters/9999/backup_schedule",
            Some(body),
        )
        .await,
        404,
        "not_found",
    );
    assert_eq!(call(&svc, Method::GET, &uri, None).await.1, s);

    // A storage a schedule names stays registered.
    let (st, v) = call(&svc, Method::DELETE, "/v1/backup_storages/st1", None).await;
    assert_eq!(st.as_u16(), 409, "{v}");
    let (st, _) = call(&svc, Method::DELETE, &uri, None).await;
    assert_eq!(st.as_u16(), 204);
    assert_error(&call(&svc, Method::GET, &uri, None).await, 404, "not_found");
    assert_error(
        &call(&svc, Method::DELETE, &uri, None).await,
        404,
        "not_found",
    );
    let (st, v) = call(&svc, Method::DELETE, "/v1/backup_storages/st1", None).await;
    assert_eq!(st.as_u16(), 204, "{v}");
}

#[actix_web::test]
async fn backup_schedule_is_set_shown_and_removed_on_sqlite() {
    backup_schedule_is_set_shown_and_removed(sqlite_store().await).await;
}

#[actix_web::test]
async fn backup_schedule_is_set_shown_and_removed_on_mysql() {
    backup_schedule_is_set_shown_and_removed(mysql_store().await).await;
}
