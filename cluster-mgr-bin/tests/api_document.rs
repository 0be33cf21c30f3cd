//! The served answers match the OpenAPI document, class by class: one regression test for each
//! kind of mismatch the schemathesis fuzz (`tests/tests/api/api_fuzz.rs`) found — timestamps
//! without an offset under `format: date-time`, statuses the document did not list (401, 403,
//! 413, 415, 421, 503, 400 on paths and queries), 405 without `Allow`, enums documented by
//! their Rust names instead of their wire values, page limits the document did not bound, and
//! `/healthz` documented as needing a token.

mod common;

use std::collections::BTreeSet;

use actix_web::http::{Method, StatusCode};
use actix_web::test;
use cluster_mgr::http::app;
use common::*;
use serde_json::{json, Value};

/// `(path, methods)` of every operation in the document.
fn paths(doc: &Value) -> Vec<(String, BTreeSet<String>)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(p, item)| {
            let methods = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|k| {
                    [
                        "get", "post", "put", "patch", "delete", "head", "options", "trace",
                    ]
                    .contains(&k.as_str())
                })
                .map(|k| k.to_uppercase())
                .collect();
            (p.clone(), methods)
        })
        .collect()
}

/// `/a/{id}/b` -> `/a/1/b`.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

async fn document<S, B>(svc: &S) -> Value
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let (st, doc) = call(svc, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK, "{doc}");
    doc
}

#[actix_web::test]
async fn a_method_a_path_lacks_is_405_with_allow_naming_the_documented_methods() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let doc = document(&svc).await;
    let all = ["GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "BREW"];
    let mut checked = 0;
    for (path, methods) in paths(&doc) {
        for m in all.iter().filter(|m| !methods.contains(**m)) {
            let req = test::TestRequest::default()
                .method(Method::from_bytes(m.as_bytes()).expect("method"))
                .uri(&concrete(&path))
                .to_request();
            let res = test::call_service(&svc, req).await;
            assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            let allow: BTreeSet<String> = res
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{m} {path}: 405 without Allow"))
                .split(',')
                .map(|s| s.trim().to_string())
                .collect();
            assert_eq!(
                allow, methods,
                "{m} {path}: Allow is not the document's methods"
            );
            let body: Value = serde_json::from_slice(&test::read_body(res).await).expect("JSON");
            assert_eq!(body["code"], "method_not_allowed", "{m} {path}: {body}");
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} method/path pairs checked");
}

#[actix_web::test]
async fn every_operation_lists_the_answers_of_the_layers_in_front_of_its_handler() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let doc = document(&svc).await;
    for (path, methods) in paths(&doc) {
        for m in methods {
            let op = &doc["paths"][&path][m.to_lowercase()];
            let has = |s: &str| op["responses"].get(s).is_some();
            let what = format!("{m} {path}");
            assert!(has("421"), "{what}: no 421 (Host check)");
            if path == "/healthz" {
                assert_eq!(
                    op["security"],
                    json!([{}]),
                    "{what}: must be documented as open"
                );
                assert!(!has("401"), "{what}");
                continue;
            }
            for s in ["401", "403", "503"] {
                assert!(has(s), "{what}: no {s}");
            }
            let params = op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            let body = op.get("requestBody").is_some();
            if params || body {
                assert!(
                    has("400"),
                    "{what}: no 400 for a bad path, query or body value"
                );
            }
            if body {
                assert!(has("413") && has("415"), "{what}: no 413/415 for its body");
            }
        }
    }
}

#[actix_web::test]
async fn documented_enums_are_the_wire_values_the_api_accepts() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let doc = document(&svc).await;
    let schemas = &doc["components"]["schemas"];
    for (name, values) in [
        ("MachineType", json!(["storage", "computer"])),
        ("HaMode", json!(["no_rep", "mgr", "rbr"])),
        (
            "JobStatus",
            json!(["not_started", "ongoing", "done", "failed"]),
        ),
        ("NodeStats", json!(["running", "idle", "dead"])),
    ] {
        assert_eq!(schemas[name]["enum"], values, "{name}: {}", schemas[name]);
        assert!(
            schemas[name]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name} lost its description"
        );
    }
    // A documented value is accepted as such (not refused as an unknown variant).
    let (st, v) = call(&svc, Method::GET, "/v1/jobs?status=not_started", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = call(&svc, Method::GET, "/v1/jobs?status=NotStarted", None).await;
    assert_error(&(st, v), 400, "invalid_field");
}

#[actix_web::test]
async fn page_limits_are_bounded_in_the_document_as_they_are_enforced() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let doc = document(&svc).await;
    let mut checked = 0;
    for (path, methods) in paths(&doc) {
        if !methods.contains("GET") {
            continue;
        }
        let op = &doc["paths"][&path]["get"];
        let Some(limit) = op["parameters"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["name"] == "limit" && p["in"] == "query")
        }) else {
            continue;
        };
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
            (&json!(1), &json!(1000)),
            "GET {path}: {limit}"
        );
        let uri = concrete(&path);
        let (st, v) = call(&svc, Method::GET, &format!("{uri}?limit=1000"), None).await;
        assert_eq!(st, StatusCode::OK, "GET {path}?limit=1000: {v}");
        for bad in [0, 1001] {
            let got = call(&svc, Method::GET, &format!("{uri}?limit={bad}"), None).await;
            assert_error(&got, 400, "invalid_field");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} paginated lists");
}

/// Every string under a timestamp-like key of `v`, with its key.
fn timestamps(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let stamp = k.ends_with("_at")
                    || k.starts_with("when_")
                    || k == "at"
                    || k == "svc_since"
                    || k == "prepare_ts";
                match x {
                    Value::String(s) if stamp => out.push((k.clone(), s.clone())),
                    _ => timestamps(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| timestamps(x, out)),
        _ => {}
    }
}

#[actix_web::test]
async fn timestamps_in_answers_are_rfc3339_with_an_offset() {
    let ts = sqlite_store().await;
    let topo = seed_topology(&ts.store, "c1").await;
    let svc = test::init_service(app(state(&ts.store))).await;
    // Open mode: the first token can be made over the API; it then has to be used.
    let (st, made) = call(
        &svc,
        Method::POST,
        "/v1/tokens",
        Some(r#"{"name":"doc_admin","role":"admin"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().expect("token").to_string();
    let mut found = Vec::new();
    for uri in [
        "/v1/tokens".to_string(),
        "/v1/audit".to_string(),
        format!("/v1/clusters/{}", topo.cluster_id),
        format!("/v1/shards/{}/nodes", topo.shard_ids[0]),
    ] {
        let req = test::TestRequest::get()
            .uri(&uri)
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request();
        let res = test::call_service(&svc, req).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {uri}");
        let v: Value = serde_json::from_slice(&test::read_body(res).await).expect("JSON");
        timestamps(&v, &mut found);
    }
    for key in ["created_at", "at", "when_created"] {
        assert!(
            found.iter().any(|(k, _)| k == key),
            "no {key} seen in {found:?}"
        );
    }
    for (k, s) in &found {
        let t = chrono::DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{k} = {s:?} is not RFC 3339: {e}"));
        assert_eq!(t.offset().local_minus_utc(), 0, "{k} = {s:?} is not UTC");
    }
}
