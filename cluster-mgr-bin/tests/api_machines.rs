//! API tests of `/v1/machines` through the daemon's real actix app, on SQLite and on MySQL.

mod common;

use actix_web::http::Method;
use actix_web::test;
use cluster_mgr::http::app;
use common::*;
use serde_json::{json, Value};

async fn crud(ts: TestStore) {
    let svc = test::init_service(app(state(&ts.store))).await;

    let (st, m) = call(
        &svc,
        Method::POST,
        "/v1/machines",
        Some(&machine_body("10.0.0.7").to_string()),
    )
    .await;
    assert_eq!(st.as_u16(), 201, "{m}");
    let id = m["id"].as_i64().expect("id");
    assert_eq!(m["hostaddr"], "10.0.0.7");
    assert_eq!(m["machine_type"], "storage");
    assert_eq!(
        m["ssh"],
        json!({"port": 2222, "user": "kunlun", "key_path": "/home/kunlun/.ssh/id_ed25519"})
    );
    assert_eq!(m["data_dirs"], json!(["/data/kl1", "/data/kl2"]));
    assert_eq!(m["port_range"], "57000-57100");
    assert_eq!(m["rack_id"], "rack-1");

    // Defaults filled in by validation; the address is stored in its canonical form (a host
    // name would be resolved at registration, and this test runs without DNS).
    let minimal = json!({"hostaddr": "10.0.8", "machine_type": "computer",
        "ssh_key_path": "/k", "data_dirs": ["/d"], "probe": false});
    let (st, m2) = call(
        &svc,
        Method::POST,
        "/v1/machines",
        Some(&minimal.to_string()),
    )
    .await;
    assert_eq!(st.as_u16(), 201, "{m2}");
    assert_eq!(m2["ssh"]["port"], 22);
    assert_eq!(m2["ssh"]["user"], "root");
    assert_eq!(m2["port_range"], "47000-48000");

    let (st, list) = call(&svc, Method::GET, "/v1/machines", None).await;
    assert_eq!(st.as_u16(), 200);
    let hosts: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["hostaddr"].as_str())
        .collect();
    assert_eq!(hosts, vec!["10.0.0.7", "10.0.0.8"]);

    let (st, shown) = call(&svc, Method::GET, &format!("/v1/machines/{id}"), None).await;
    assert_eq!(st.as_u16(), 200);
    assert_eq!(shown, m);

    // No SSH here: the change of SSH access and dirs is stored unchecked.
    let patch =
        json!({"ssh_port": 2200, "rack_id": "rack-9", "data_dirs": ["/data/x"], "probe": false});
    let (st, up) = call(
        &svc,
        Method::PATCH,
        &format!("/v1/machines/{id}"),
        Some(&patch.to_string()),
    )
    .await;
    assert_eq!(st.as_u16(), 200, "{up}");
    assert_eq!(up["ssh"]["port"], 2200);
    assert_eq!(up["ssh"]["user"], "kunlun", "untouched fields stay");
    assert_eq!(up["rack_id"], "rack-9");
    assert_eq!(up["data_dirs"], json!(["/data/x"]));
    assert!(up["probe"].is_null(), "unchecked: no probe facts: {up}");
    let (_, shown) = call(&svc, Method::GET, &format!("/v1/machines/{id}"), None).await;
    assert_eq!(shown, up, "the update is stored");

    let got = call(
        &svc,
        Method::PATCH,
        &format!("/v1/machines/{id}"),
        Some("{}"),
    )
    .await;
    assert_error(&got, 400, "invalid_field");

    let (st, body) = call(&svc, Method::DELETE, &format!("/v1/machines/{id}"), None).await;
    assert_eq!(st.as_u16(), 204, "{body}");
    assert_eq!(body, Value::Null);
    assert_error(
        &call(&svc, Method::GET, &format!("/v1/machines/{id}"), None).await,
        404,
        "not_found",
    );
    assert_error(
        &call(&svc, Method::DELETE, &format!("/v1/machines/{id}"), None).await,
        404,
        "not_found",
    );
    let upd = Some(r#"{"rack_id":"r"}"#);
    assert_error(
        &call(&svc, Method::PATCH, &format!("/v1/machines/{id}"), upd).await,
        404,
        "not_found",
    );

    // The host address is free again once the machine is deleted.
    let (st, _) = call(
        &svc,
        Method::POST,
        "/v1/machines",
        Some(&machine_body("10.0.0.7").to_string()),
    )
    .await;
    assert_eq!(st.as_u16(), 201);
}

async fn duplicate_host_is_conflict(ts: TestStore) {
    let svc = test::init_service(app(state(&ts.store))).await;
    let body = machine_body("10.1.1.1").to_string();
    assert_eq!(
        call(&svc, Method::POST, "/v1/machines", Some(&body))
            .await
            .0
            .as_u16(),
        201
    );
    assert_error(
        &call(&svc, Method::POST, "/v1/machines", Some(&body)).await,
        409,
        "conflict",
    );
    let (_, list) = call(&svc, Method::GET, "/v1/machines", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}

#[actix_web::test]
async fn crud_on_sqlite() {
    crud(sqlite_store().await).await;
}

#[actix_web::test]
async fn crud_on_mysql() {
    crud(mysql_store().await).await;
}

#[actix_web::test]
async fn duplicate_host_is_conflict_on_sqlite() {
    duplicate_host_is_conflict(sqlite_store().await).await;
}

#[actix_web::test]
async fn duplicate_host_is_conflict_on_mysql() {
    duplicate_host_is_conflict(mysql_store().await).await;
}

/// Each `(field, value)` makes an otherwise valid registration invalid.
fn bad_values() -> Vec<(&'static str, Value)> {
    vec![
        ("hostaddr", json!("")),
        ("hostaddr", json!("a".repeat(254))),
        ("hostaddr", json!("10.0.0.1'; DROP TABLE server_nodes; --")),
        ("hostaddr", json!("host\"name")),
        ("hostaddr", json!("höst.example")),
        ("ssh_user", json!("")),
        ("ssh_user", json!("u".repeat(65))),
        ("ssh_user", json!("o'brien")),
        ("ssh_user", json!("root;reboot")),
        ("rack_id", json!("机架-1")),
        ("rack_id", json!("rack\"1")),
        ("rack_id", json!("")),
        ("ssh_key_path", json!("relative/key")),
        ("ssh_key_path", json!("")),
        ("data_dirs", json!([])),
        ("data_dirs", json!(["relative"])),
        ("data_dirs", json!(["/data/a;rm -rf /"])),
        ("port_range", json!("60000-50000")),
        ("port_range", json!("abc")),
        ("ssh_port", json!(0)),
        ("total_mem_mb", json!(-1)),
    ]
}

#[actix_web::test]
async fn invalid_fields_are_refused_and_nothing_is_stored() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    for (field, value) in bad_values() {
        let mut body = machine_body("10.9.9.9");
        body[field] = value.clone();
        let got = call(&svc, Method::POST, "/v1/machines", Some(&body.to_string())).await;
        assert_error(&got, 400, "invalid_field");
        let msg = got.1["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(field),
            "message for {field}={value} should name the field: {msg}"
        );
    }
    let (_, list) = call(&svc, Method::GET, "/v1/machines", None).await;
    assert_eq!(list, json!([]), "a refused request stores nothing");
}

#[actix_web::test]
async fn invalid_update_fields_are_refused() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let (_, m) = call(
        &svc,
        Method::POST,
        "/v1/machines",
        Some(&machine_body("10.2.2.2").to_string()),
    )
    .await;
    let uri = format!("/v1/machines/{}", m["id"]);
    for (field, value) in bad_values().into_iter().filter(|(f, _)| *f != "hostaddr") {
        let body = json!({ field: value });
        let got = call(&svc, Method::PATCH, &uri, Some(&body.to_string())).await;
        assert_error(&got, 400, "invalid_field");
    }
    // hostaddr and machine_type are not updatable: unknown fields.
    assert_error(
        &call(
            &svc,
            Method::PATCH,
            &uri,
            Some(r#"{"hostaddr":"10.3.3.3"}"#),
        )
        .await,
        400,
        "invalid_field",
    );
    let (_, after) = call(&svc, Method::GET, &uri, None).await;
    assert_eq!(after, m, "a refused update changes nothing");
}

#[actix_web::test]
async fn malformed_and_mistyped_bodies_are_json_errors() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let post = |b: &'static str| call(&svc, Method::POST, "/v1/machines", Some(b));
    assert_error(&post(r#"{"hostaddr":"#).await, 400, "malformed_json");
    assert_error(&post("not json").await, 400, "malformed_json");
    assert_error(&post("").await, 400, "malformed_json");
    assert_error(
        &post(
            r#"{"hostaddr":"h","machine_type":"storage","ssh_key_path":"/k","data_dirs":["/d"]} x"#,
        )
        .await,
        400,
        "malformed_json",
    );
    // Wrong types, out-of-range numbers, unknown enum values, unknown and missing fields.
    let mut wrong = machine_body("10.4.4.4");
    wrong["ssh_port"] = json!("22");
    assert_error(
        &call(&svc, Method::POST, "/v1/machines", Some(&wrong.to_string())).await,
        400,
        "invalid_field",
    );
    wrong["ssh_port"] = json!(70000);
    assert_error(
        &call(&svc, Method::POST, "/v1/machines", Some(&wrong.to_string())).await,
        400,
        "invalid_field",
    );
    let mut wrong = machine_body("10.4.4.4");
    wrong["data_dirs"] = json!("/d");
    assert_error(
        &call(&svc, Method::POST, "/v1/machines", Some(&wrong.to_string())).await,
        400,
        "invalid_field",
    );
    let mut wrong = machine_body("10.4.4.4");
    wrong["machine_type"] = json!("gpu");
    assert_error(
        &call(&svc, Method::POST, "/v1/machines", Some(&wrong.to_string())).await,
        400,
        "invalid_field",
    );
    let mut unknown = machine_body("10.4.4.4");
    unknown["colour"] = json!("red");
    let got = call(
        &svc,
        Method::POST,
        "/v1/machines",
        Some(&unknown.to_string()),
    )
    .await;
    assert_error(&got, 400, "invalid_field");
    assert!(
        got.1["message"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{}",
        got.1
    );
    let got = post(r#"{"machine_type":"storage","ssh_key_path":"/k","data_dirs":["/d"]}"#).await;
    assert_error(&got, 400, "invalid_field");
    assert!(
        got.1["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hostaddr"),
        "{}",
        got.1
    );
    assert_error(&post("[]").await, 400, "invalid_field");
    assert_error(&post("null").await, 400, "invalid_field");
}

#[actix_web::test]
async fn content_type_and_size_limits() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let body = machine_body("10.5.5.5").to_string();
    let req = test::TestRequest::post()
        .uri("/v1/machines")
        .insert_header(("content-type", "text/plain"))
        .set_payload(body);
    let res = test::call_service(&svc, req.to_request()).await;
    assert_eq!(res.status().as_u16(), 415);
    let v: Value = test::read_body_json(res).await;
    assert_eq!(v["code"], "unsupported_media_type");

    let mut huge = machine_body("10.5.5.5");
    huge["data_dirs"] = json!(vec!["/d".repeat(1000); 200]);
    let got = call(&svc, Method::POST, "/v1/machines", Some(&huge.to_string())).await;
    assert_error(&got, 413, "payload_too_large");
}

#[actix_web::test]
async fn bad_ids_and_unknown_ids() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    for uri in [
        "/v1/machines/abc",
        "/v1/machines/1.5",
        "/v1/machines/99999999999999999999",
        "/v1/machines/%27%3B",
    ] {
        assert_error(
            &call(&svc, Method::GET, uri, None).await,
            400,
            "invalid_field",
        );
        assert_error(
            &call(&svc, Method::DELETE, uri, None).await,
            400,
            "invalid_field",
        );
    }
    assert_error(
        &call(&svc, Method::GET, "/v1/machines/424242", None).await,
        404,
        "not_found",
    );
    assert_error(
        &call(&svc, Method::GET, "/v1/machines/-1", None).await,
        404,
        "not_found",
    );
    assert_error(
        &call(&svc, Method::PUT, "/v1/machines/1", Some("{}")).await,
        405,
        "method_not_allowed",
    );
}
