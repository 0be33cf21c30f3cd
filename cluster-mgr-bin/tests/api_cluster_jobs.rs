//! API tests of the cluster jobs through the daemon's real actix app on SQLite:
//! `POST /v1/clusters` and `DELETE /v1/clusters/{id}` answer `202 {job_id}` at once with a
//! `not_started` job; bad input is 400, a name in use 409, an unknown cluster 404, a cluster
//! another job is changing 409. (The runner is not started here: nothing touches a machine.)

mod common;

use actix_web::http::Method;
use actix_web::test;
use cluster_mgr::http::app;
use common::*;
use serde_json::json;

#[actix_web::test]
async fn create_and_delete_cluster_are_accepted_as_jobs() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let body = json!({"name": "c9", "ha_mode": "rbr", "shards": 2, "nodes": 3, "comps": 1});
    let (st, v) = call(&svc, Method::POST, "/v1/clusters", Some(&body.to_string())).await;
    assert_eq!(st.as_u16(), 202, "{v}");
    let job_id = v["job_id"].as_i64().expect("job_id");
    let (st, job) = call(&svc, Method::GET, &format!("/v1/jobs/{job_id}"), None).await;
    assert_eq!(st.as_u16(), 200);
    assert_eq!(job["job_type"], "create_cluster");
    assert_eq!(job["status"], "not_started");

    let zero = json!({"name": "c0", "ha_mode": "rbr", "shards": 0, "nodes": 3, "comps": 1});
    let got = call(&svc, Method::POST, "/v1/clusters", Some(&zero.to_string())).await;
    assert_eq!(got.0.as_u16(), 400, "{}", got.1);

    // A cluster that exists: its name is taken, and a delete while one is pending is 409.
    let topo = seed_topology(&ts.store, "taken").await;
    let dup = json!({"name": "taken", "ha_mode": "rbr", "shards": 1, "nodes": 1, "comps": 1});
    let got = call(&svc, Method::POST, "/v1/clusters", Some(&dup.to_string())).await;
    assert_error(&got, 409, "conflict");
    let path = format!("/v1/clusters/{}", topo.cluster_id);
    let (st, v) = call(&svc, Method::DELETE, &path, None).await;
    assert_eq!(st.as_u16(), 202, "{v}");
    let got = call(&svc, Method::DELETE, &path, None).await;
    assert_error(&got, 409, "conflict");
    let got = call(&svc, Method::DELETE, "/v1/clusters/9999", None).await;
    assert_error(&got, 404, "not_found");
}
