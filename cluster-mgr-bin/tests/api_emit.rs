//! The KunlunBase job API `POST /HttpService/Emit` through the daemon's real actix app on
//! SQLite, without machines: every answer is HTTP 200 in the original's shape; instant errors
//! (not JSON, no or unknown job type, unsupported types) are `70001`; async types answer
//! `accept` with a job id even for bad paras, and `get_status` then shows the original's
//! 700xx code; refusals of our own checks (last shard, primary, unknown ids) get the
//! original's codes; sync types answer inline. (The runner is not started: nothing touches a
//! machine.)

mod common;

use actix_web::http::{Method, Version};
use actix_web::test;
use cluster_mgr::http::app;
use common::*;
use serde_json::{json, Value};

/// Posts one Emit request; asserts HTTP 200, `text/plain` and the CORS header.
async fn emit<S, B>(svc: &S, body: &str) -> Value
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let req = test::TestRequest::post()
        .uri("/HttpService/Emit")
        .version(Version::HTTP_10)
        .insert_header(("content-type", "text/plain"))
        .set_payload(body.to_string())
        .to_request();
    let res = test::call_service(svc, req).await;
    assert_eq!(res.status().as_u16(), 200, "Emit always answers 200");
    let h = res.headers();
    assert!(h
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/plain")));
    assert_eq!(h.get("access-control-allow-origin").unwrap(), "*");
    let bytes = test::read_body(res).await;
    assert!(bytes.ends_with(b"\n"));
    serde_json::from_slice(&bytes).expect("a JSON answer")
}

fn job(job_type: &str, paras: Value) -> String {
    json!({"version": "1.0", "job_id": "", "job_type": job_type, "timestamp": "1435749309",
           "user_name": "kunlun_test", "paras": paras})
    .to_string()
}

fn status_req(id: &str) -> String {
    json!({"version": "1.0", "job_id": id, "job_type": "get_status", "timestamp": "1", "paras": {}})
        .to_string()
}

#[track_caller]
fn assert_instant(v: &Value, code: &str) {
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error_code"], code, "{v}");
    assert!(
        v["error_info"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
}

/// Posts an async job; asserts `accept`; returns its id and `get_status`'s answer for it.
async fn accept_then_status<S, B>(svc: &S, job_type: &str, paras: Value) -> (String, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let a = emit(svc, &job(job_type, paras)).await;
    assert_eq!(a["status"], "accept", "{job_type}: {a}");
    assert_eq!(a["error_code"], "0");
    let id = a["job_id"].as_str().expect("job_id string").to_string();
    assert!(id.parse::<i64>().is_ok(), "{a}");
    let st = emit(svc, &status_req(&id)).await;
    (id, st)
}

#[track_caller]
fn assert_failed(v: &Value, code: &str) {
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error_code"], code, "{v}");
    assert!(
        v["error_info"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
}

#[actix_web::test]
async fn instant_errors_and_sync_types_answer_as_the_original() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;

    let pre = test::TestRequest::default()
        .method(Method::OPTIONS)
        .uri("/HttpService/Emit")
        .to_request();
    let res = test::call_service(&svc, pre).await;
    assert_eq!(res.status().as_u16(), 200);
    let methods = res.headers().get("access-control-allow-methods").unwrap();
    assert!(methods.to_str().unwrap().contains("POST"));

    assert_instant(&emit(&svc, "{not json").await, "70001");
    assert_instant(&emit(&svc, r#"{"paras":{}}"#).await, "70001");
    let v = emit(&svc, &job("no_such_job", json!({}))).await;
    assert_instant(&v, "70001");
    assert!(v["error_info"]
        .as_str()
        .unwrap()
        .contains("Unrecongnized job type"));
    for t in [
        "logical_backup",
        "restore_new_cluster",
        "expand_cluster",
        "raft_mission",
    ] {
        let v = emit(&svc, &job(t, json!({"cluster_id": "1"}))).await;
        assert_instant(&v, "70001");
        assert!(
            v["error_info"].as_str().unwrap().contains("not supported"),
            "{v}"
        );
    }

    // get_status: unknown or malformed ids; `ver` instead of `version` is accepted.
    let v = emit(&svc, &status_req("424242")).await;
    assert_eq!(
        (&v["error_code"], &v["status"]),
        (&json!("70104"), &json!("failed")),
        "{v}"
    );
    assert_eq!(v["error_info"], "job_id no find");
    let v = emit(
        &svc,
        r#"{"ver":"1.0","job_id":"x1","job_type":"get_status","paras":{}}"#,
    )
    .await;
    assert_eq!(v["error_code"], "70104", "{v}");

    let v = emit(&svc, &job("get_meta_mode", json!({}))).await;
    assert_eq!(
        (&v["status"], &v["error_code"]),
        (&json!("done"), &json!("0")),
        "{v}"
    );
    assert_eq!(v["attachment"]["mode"], "no_rep");
    let v = emit(&svc, &job("get_backup_storage", json!({}))).await;
    assert_eq!(v["status"], "done");
    assert_eq!(v["attachment"]["list_backup_storage"], json!([]));
    let v = emit(&svc, &job("get_meta_summary", json!({}))).await;
    assert_eq!(v["status"], "done", "{v}");
    assert!(v["attachment"]["list_meta"].is_array());
    // The original's quirk: its handler sets no status.
    let v = emit(&svc, &job("get_cluster_detail", json!({}))).await;
    assert_eq!(
        (&v["status"], &v["error_code"]),
        (&json!("failed"), &json!("70001"))
    );
    assert_eq!(v["attachment"]["work_mode"], "community");
    let v = emit(
        &svc,
        &job(
            "get_variable",
            json!({"hostaddr": "127.0.0.1", "port": "1", "variable": "x"}),
        ),
    )
    .await;
    assert_failed(&v, "70108");
    let v = emit(&svc, &job("get_variable", json!({"hostaddr": "127.0.0.1"}))).await;
    assert_failed(&v, "70103");
}

#[actix_web::test]
async fn bad_paras_are_accepted_then_failed_with_the_original_codes() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let cc = json!({"ha_mode": "rbr", "shards": "1", "nodes": "3", "comps": "1",
        "max_storage_size": "20", "max_connections": "6", "cpu_cores": "8", "innodb_size": "1"});
    let without = |k: &str| {
        let mut p = cc.clone();
        p.as_object_mut().unwrap().remove(k);
        p
    };
    let with = |k: &str, v: &str| {
        let mut p = cc.clone();
        p[k] = json!(v);
        p
    };
    for (paras, code) in [
        (without("ha_mode"), "70071"),
        (without("shards"), "70072"),
        (with("shards", "0"), "70073"),
        (with("shards", "x"), "70073"),
        (without("nodes"), "70074"),
        (with("comps", "257"), "70077"),
        (without("max_storage_size"), "70078"),
        (without("max_connections"), "70079"),
        (without("cpu_cores"), "70080"),
        (without("innodb_size"), "70081"),
        (with("innodb_size", "0"), "70082"),
        (
            {
                let mut p = cc.clone();
                p["storage_iplists"] = json!(["127.0.0.99"]);
                p
            },
            "70181",
        ),
    ] {
        let (_, v) = accept_then_status(&svc, "create_cluster", paras.clone()).await;
        assert_failed(&v, code);
        assert!(v["attachment"].is_object(), "{v}");
    }

    let topo = seed_topology(&ts.store, "t1").await;
    let cid = topo.cluster_id.to_string();
    let s1 = topo.shard_ids[0].to_string();
    for (t, paras, code) in [
        ("delete_cluster", json!({}), "70096"),
        ("delete_cluster", json!({"cluster_id": "9999"}), "70098"),
        ("delete_cluster", json!({"cluster_name": "nope"}), "70097"),
        ("add_shards", json!({"shards": "1", "nodes": "1"}), "70119"),
        (
            "add_shards",
            json!({"cluster_id": "9999", "shards": "1", "nodes": "1"}),
            "70152",
        ),
        (
            "add_shards",
            json!({"cluster_id": cid, "nodes": "1"}),
            "70120",
        ),
        ("delete_shard", json!({"cluster_id": cid}), "70140"),
        (
            "add_comps",
            json!({"cluster_id": cid, "comps": "1", "computer_iplists": ["127.0.0.99"]}),
            "70185",
        ),
        ("add_nodes", json!({"cluster_id": cid}), "70155"),
        (
            "add_nodes",
            json!({"cluster_id": cid, "nodes": "1", "shard_id": "9999"}),
            "70161",
        ),
        ("add_comps", json!({"cluster_id": cid}), "70108"),
        (
            "delete_comp",
            json!({"cluster_id": cid, "comp_id": topo.comp_node_id.to_string()}),
            "70157",
        ),
        (
            "delete_node",
            json!({"cluster_id": cid, "shard_id": s1}),
            "70170",
        ),
        (
            "delete_node",
            json!({"cluster_id": cid, "shard_id": s1, "hostaddr": "127.0.0.1"}),
            "70171",
        ),
        (
            "delete_node",
            json!({"cluster_id": cid, "shard_id": s1, "hostaddr": "127.0.0.1", "port": "57020"}),
            "70173",
        ),
        (
            "delete_node",
            json!({"cluster_id": cid, "shard_id": s1, "hostaddr": "127.0.0.1", "port": "57010"}),
            "70172",
        ),
        (
            "create_machine",
            json!({"machine_type": "storage"}),
            "70052",
        ),
        ("create_machine", json!({"hostaddr": "127.0.0.9"}), "70050"),
        (
            "create_machine",
            json!({"hostaddr": "127.0.0.9", "machine_type": "tape"}),
            "70051",
        ),
        (
            "create_machine",
            json!({"hostaddr": "127.0.0.9", "machine_type": "storage", "rack_id": "1"}),
            "70054",
        ),
        (
            "delete_machine",
            json!({"hostaddr": "127.0.0.9", "machine_type": "storage"}),
            "70066",
        ),
        ("manual_switch", json!({"shard_id": s1}), "70025"),
        // A backup window: no cluster id, a malformed window, no storage registered.
        (
            "update_cluster_coldback_time_period",
            json!({"time_period_str": "01:00:00-02:00:00"}),
            "70025",
        ),
        (
            "update_cluster_coldback_time_period",
            json!({"cluster_id": cid, "time_period_str": "01:00-02:00"}),
            "70005",
        ),
        (
            "update_cluster_coldback_time_period",
            json!({"cluster_id": cid, "time_period_str": "01:00:00-02:00:00"}),
            "70005",
        ),
        (
            "manual_switch",
            json!({"cluster_id": cid, "shard_id": s1, "master_hostaddr": "127.0.0.1_57011"}),
            "70033",
        ),
    ] {
        let (id, v) = accept_then_status(&svc, t, paras.clone()).await;
        assert_failed(&v, code);
        let (st, row) = call(&svc, Method::GET, &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(st.as_u16(), 200);
        assert_eq!(
            (&row["job_type"], &row["status"]),
            (&json!(t), &json!("failed")),
            "{paras}"
        );
        assert_eq!(row["user_name"], "kunlun_test");
        assert_eq!(row["job_info"]["paras"], paras, "the request is kept");
    }
    // Job types are audited by name; get_status polls are not.
    let (st, audit) = call(&svc, Method::GET, "/v1/audit?limit=1000", None).await;
    assert_eq!(st.as_u16(), 200, "{audit}");
    let paths: Vec<&str> = audit
        .as_array()
        .expect("audit list")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"/HttpService/Emit create_cluster"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/HttpService/Emit delete_node"),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains("get_status")), "{paths:?}");
    // Nothing was changed by any of them.

    let (_, shards) = call(
        &svc,
        Method::GET,
        &format!("/v1/clusters/{cid}/shards"),
        None,
    )
    .await;
    assert_eq!(shards.as_array().unwrap().len(), 2);
    let (_, machines) = call(&svc, Method::GET, "/v1/machines", None).await;
    assert_eq!(machines.as_array().map_or(0, Vec::len), 0, "{machines}");
    // add_nodes without shard_id: every shard of the cluster, in one job.
    let paras = json!({"cluster_id": topo.cluster_id.to_string(), "nodes": "1"});
    let (id, v) = accept_then_status(&svc, "add_nodes", paras).await;
    assert_eq!(v["status"], "not_started", "{v}");
    let (_, row) = call(&svc, Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(row["job_info"]["shard_ids"], json!(topo.shard_ids), "{row}");
    let want: String = topo.shard_ids.iter().map(|i| format!("{i},")).collect();
    assert_eq!(v["attachment"]["shard_id"], want);
}

#[actix_web::test]
async fn cluster_jobs_are_our_jobs_in_the_original_layout() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let cc = json!({"ha_mode": "rbr", "shards": "2", "nodes": "3", "comps": "1",
        "max_storage_size": "20", "max_connections": "6", "cpu_cores": "8",
        "innodb_size": "64", "nick_name": "my nick", "dbcfg": "0", "fullsync_level": "1"});
    let (id, v) = accept_then_status(&svc, "create_cluster", cc).await;
    assert_eq!(v["status"], "not_started", "{v}");
    assert_eq!(v["error_code"], "0");
    let a = &v["attachment"];
    let name = a["cluster_name"].as_str().unwrap();
    let (ts_part, id_part) = name
        .strip_prefix("cluster_")
        .and_then(|r| r.split_once('_'))
        .expect("cluster_<ts>_<id>");
    assert!(ts_part.parse::<i64>().unwrap() > 1_700_000_000, "{name}");
    assert_eq!(id_part, "000001");
    assert_eq!(a["nick_name"], "my nick");
    assert_eq!(a["job_steps"], "shard,computer");
    assert_eq!(a["storage_state"], "prepare");
    assert_eq!(a["computer_user"], "abc");
    assert!(a.get("computer_pwd").is_none());
    let (_, row) = call(&svc, Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(row["job_type"], "create_cluster");
    assert_eq!(row["job_info"]["name"], name);
    assert_eq!(row["job_info"]["innodb_size_mb"], 64);

    // The replica of a seeded shard: accepted onto our delete_node job.
    let topo = seed_topology(&ts.store, "t2").await;
    let paras = json!({"cluster_id": topo.cluster_id.to_string(),
        "shard_id": topo.shard_ids[0].to_string(), "hostaddr": "127.0.0.1", "port": "57011"});
    let (_, v) = accept_then_status(&svc, "delete_node", paras).await;
    assert_eq!(v["status"], "not_started", "{v}");
    assert_eq!(v["attachment"]["storage_state"], "prepare");
    assert_eq!(v["attachment"]["shard_id"], topo.shard_ids[0].to_string());
    // A second job on the same cluster is refused by our busy check, with the type's code.
    let paras = json!({"cluster_id": topo.cluster_id.to_string(), "comps": "1"});
    let (_, v) = accept_then_status(&svc, "add_comps", paras).await;
    assert_failed(&v, "70148");
    assert!(
        v["error_info"].as_str().unwrap().contains("in progress"),
        "{v}"
    );
}

#[actix_web::test]
async fn allowed_clients_need_no_token_for_emit_only() {
    use cluster_mgr::http::{app_with_auth, Auth, AuthSettings, LeaderView};
    let ts = sqlite_store().await;
    let auth = Auth::new(AuthSettings {
        tokens_required: true,
        emit_clients: vec!["127.0.0.0/8".parse().unwrap()],
        ..AuthSettings::loopback()
    });
    let svc = test::init_service(app_with_auth(
        state(&ts.store),
        LeaderView::standalone(),
        auth,
    ))
    .await;
    let post = |peer: &str, uri: &str| {
        test::TestRequest::post()
            .uri(uri)
            .peer_addr(peer.parse().unwrap())
            .set_payload(job("get_meta_mode", json!({})))
            .to_request()
    };
    let res = test::call_service(&svc, post("127.0.0.5:40000", "/HttpService/Emit")).await;
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(
        (&v["status"], &v["attachment"]["mode"]),
        (&json!("done"), &json!("no_rep")),
        "{v}"
    );

    // Another peer: refused, in the Emit answer's shape (HTTP 200, 70001).
    let res = test::call_service(&svc, post("192.0.2.7:40000", "/HttpService/Emit")).await;
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_instant(&v, "70001");
    assert!(v["error_info"].as_str().unwrap().contains("token"), "{v}");

    // The allow-list opens nothing but Emit.
    let res = test::call_service(&svc, post("127.0.0.5:40000", "/v1/clusters")).await;
    assert_eq!(res.status().as_u16(), 401);
}
