//! `POST /v1/instances/{host}:{port}/{stop|start|restart}` and the Emit `control_instance`
//! type through the daemon's real actix app on SQLite, without machines: the refusals that
//! come before anything is done (a bad address or body 400/415, an unknown instance 404, a
//! shard's primary without force 409, an instance without a registered machine 409), none of
//! which writes a job row; Emit's bad paras and refusals are failed job rows with 70103.
//! (Stop, start and restart on real servers: `tests/tests/provision/provision_control.rs`.)

mod common;

use actix_web::http::{Method, StatusCode, Version};
use actix_web::test;
use cluster_mgr::http::app;
use common::*;
use serde_json::{json, Value};

#[actix_web::test]
async fn control_refusals_do_nothing_and_write_no_job() {
    let ts = sqlite_store().await;
    let topo = seed_topology(&ts.store, "ctl1").await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let post = |path: &str, body: Option<&str>| {
        let (path, body) = (path.to_string(), body.map(str::to_string));
        let svc = &svc;
        async move { call(svc, Method::POST, &path, body.as_deref()).await }
    };

    // Not host:port, a port out of range: 400 before any lookup.
    for bad in [
        "nohost",
        "127.0.0.1:0",
        "127.0.0.1:x",
        ":57010",
        "127.0.0.1:70000",
    ] {
        let r = post(&format!("/v1/instances/{bad}/stop"), None).await;
        assert_error(&r, 400, "invalid_field");
    }
    // No instance there (a deleted-and-gone or never-installed one).
    let r = post("/v1/instances/127.0.0.1:1/start", None).await;
    assert_error(&r, 404, "not_found");
    // An unknown action is no route.
    let r = post("/v1/instances/127.0.0.1:57010/kill", None).await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.1);
    // Bodies: exactly `{"force": bool}`, as JSON.
    let r = post(
        "/v1/instances/127.0.0.1:57011/stop",
        Some(r#"{"forse": true}"#),
    )
    .await;
    assert_error(&r, 400, "invalid_field");
    let r = post("/v1/instances/127.0.0.1:57011/stop", Some("{")).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
    let req = test::TestRequest::post()
        .uri("/v1/instances/127.0.0.1:57011/stop")
        .insert_header(("content-type", "text/plain"))
        .set_payload("force")
        .to_request();
    assert_eq!(test::call_service(&svc, req).await.status(), 415);

    // The primary of shard 1 (port 57010): stop and restart need force; start does not.
    for action in ["stop", "restart"] {
        let r = post(&format!("/v1/instances/127.0.0.1:57010/{action}"), None).await;
        assert_error(&r, 409, "conflict");
        let m = r.1["message"].as_str().unwrap_or_default();
        assert!(m.contains("primary") && m.contains("force"), "{m}");
    }
    // With force (and for a replica, or the compute node) the next check is the machine:
    // none is registered at 127.0.0.1, so nothing can be reached.
    for (path, body) in [
        (
            "/v1/instances/127.0.0.1:57010/stop",
            Some(r#"{"force": true}"#),
        ),
        ("/v1/instances/127.0.0.1:57011/stop", None),
        ("/v1/instances/127.0.0.1:57011/restart", Some("{}")),
        (
            "/v1/instances/127.0.0.1:47001/start",
            Some(r#"{"force": false}"#),
        ),
    ] {
        let r = post(path, body).await;
        assert_error(&r, 409, "conflict");
        assert!(
            r.1["message"]
                .as_str()
                .unwrap_or_default()
                .contains("machine"),
            "{path}: {}",
            r.1
        );
    }
    // Nothing was recorded, and no node changed status.
    let (st, jobs) = call(&svc, Method::GET, "/v1/jobs", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(jobs, json!([]), "refusals write no job row");
    let (_, nodes) = call(
        &svc,
        Method::GET,
        &format!("/v1/shards/{}/nodes", topo.shard_ids[0]),
        None,
    )
    .await;
    let statuses: Vec<&Value> = nodes
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| &n["status"])
        .collect();
    assert!(statuses.iter().all(|s| *s == "active"), "{nodes}");
}

/// Posts one Emit request (the original's transport: HTTP/1.0, `text/plain`).
async fn emit<S, B>(svc: &S, body: Value) -> Value
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
    assert_eq!(res.status().as_u16(), 200);
    serde_json::from_slice(&test::read_body(res).await).expect("a JSON answer")
}

#[actix_web::test]
async fn emit_control_instance_refusals_are_failed_jobs_with_70103() {
    let ts = sqlite_store().await;
    seed_topology(&ts.store, "ctl2").await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let cases = [
        json!({"port": "57011", "control": "stop"}),
        json!({"hostaddr": "127.0.0.1", "control": "stop"}),
        json!({"hostaddr": "127.0.0.1", "port": "57011"}),
        json!({"hostaddr": "127.0.0.1", "port": "x", "control": "stop"}),
        json!({"hostaddr": "127.0.0.1", "port": "57011", "control": "kill"}),
        // Unknown instance; the primary (the original has no force).
        json!({"hostaddr": "127.0.0.1", "port": "1", "control": "start"}),
        json!({"hostaddr": "127.0.0.1", "port": "57010", "control": "stop",
               "machine_type": "storage", "cluster_id": "1"}),
    ];
    for paras in cases {
        let a = emit(
            &svc,
            json!({"version": "1.0", "job_id": "", "job_type": "control_instance",
                   "timestamp": "1", "user_name": "kunlun_test", "paras": paras}),
        )
        .await;
        assert_eq!(a["status"], "accept", "{paras}: {a}");
        let id = a["job_id"].as_str().expect("job id").to_string();
        let st = emit(
            &svc,
            json!({"version": "1.0", "job_id": id, "job_type": "get_status",
                   "timestamp": "1", "paras": {}}),
        )
        .await;
        assert_eq!(st["status"], "failed", "{paras}: {st}");
        assert_eq!(st["error_code"], "70103", "{paras}: {st}");
    }
}
