//! Authentication of the API, in process over a real SQLite store: a table-driven walk of the
//! served OpenAPI document (every route and method: no token, a revoked token and every role
//! below the one needed are refused and change nothing; the role needed passes), open mode
//! until the first token, the Host/Origin checks, the audit trail, invented methods not growing
//! `/metrics`, and bounded free text.

mod common;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::test;
use cluster_mgr::http::access::{self, Need};
use cluster_mgr::http::tokens::create_token;
use cluster_mgr::http::{app, app_with_auth, Auth, AuthSettings, LeaderView};
use common::*;
use kunlun_meta::auth::Role;
use kunlun_meta::store::repo;
use kunlun_meta::Store;
use serde_json::{json, Value};

/// One request with optional token and headers; status and JSON body.
async fn req<S, B>(
    svc: &S,
    method: &Method,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut r = test::TestRequest::default().method(method.clone()).uri(uri);
    if let Some(t) = token {
        r = r.insert_header(("authorization", format!("Bearer {t}")));
    }
    for (k, v) in headers {
        r = r.insert_header((*k, *v));
    }
    if let Some(b) = body {
        r = r
            .insert_header(("content-type", "application/json"))
            .set_payload(b.to_string());
    }
    let res = test::call_service(svc, r.to_request()).await;
    let status = res.status();
    let bytes = test::read_body(res).await;
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

/// What a refused request must not change: the rows an API call could touch.
async fn snapshot(store: &Store) -> Value {
    let tokens: Vec<_> = store
        .read(async |tx| repo::tokens::list(tx).await)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.role, t.revoked_at))
        .collect();
    json!({
        "machines": serde_json::to_value(store.list_machines().await.unwrap()).unwrap(),
        "clusters": serde_json::to_value(store.list_clusters().await.unwrap()).unwrap(),
        "shards": serde_json::to_value(store.list_shards(None).await.unwrap()).unwrap(),
        "nodes": serde_json::to_value(store.list_shard_nodes(None).await.unwrap()).unwrap(),
        "comps": serde_json::to_value(store.list_comp_nodes(None).await.unwrap()).unwrap(),
        "jobs": serde_json::to_value(store.list_jobs(&Default::default()).await.unwrap()).unwrap(),
        "tokens": serde_json::to_value(tokens).unwrap(),
    })
}

/// Every `(method, path)` of the OpenAPI document, path parameters filled in.
fn operations(doc: &Value) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let filled: String = path
            .split('/')
            .map(|seg| {
                if seg == "{name}" {
                    "nosuch"
                } else if seg.starts_with('{') {
                    "1"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for m in item.as_object().expect("path item").keys() {
            if let Ok(method) = Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                out.push((method, filled.clone()));
            }
        }
    }
    out
}

#[actix_web::test]
async fn every_route_of_the_openapi_document_is_guarded_by_role() {
    let ts = sqlite_store().await;
    let store = ts.store.clone();
    seed_topology(&store, "guarded").await;
    let reg: kunlun_meta::api::RegisterMachine =
        serde_json::from_value(machine_body("10.9.9.9")).unwrap();
    store
        .insert_machine(&reg.validate().unwrap())
        .await
        .unwrap();
    let mut tokens = std::collections::BTreeMap::new();
    for role in Role::ALL {
        let t = create_token(&store, role.as_str(), role).await.unwrap();
        tokens.insert(role, t.token);
    }
    let revoked = create_token(&store, "gone", Role::Admin).await.unwrap();
    store
        .tx(async |tx| repo::tokens::revoke(tx, "gone").await)
        .await
        .unwrap();
    let svc = test::init_service(app(state(&store))).await;

    let (st, doc) = req(
        &svc,
        &Method::GET,
        "/v1/openapi.json",
        Some(&tokens[&Role::Viewer]),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let ops = operations(&doc);
    assert!(
        ops.len() >= 30,
        "only {} operations in the document",
        ops.len()
    );

    let before = snapshot(&store).await;
    let body = Some("{}");
    for (method, path) in &ops {
        let need = access::need(method, path);
        let Need::Role(need) = need else {
            assert_eq!(path, "/healthz", "only /healthz is open");
            continue;
        };
        let (st, v) = req(&svc, method, path, None, &[], body).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token: {v}"
        );
        assert_eq!(v["code"], "unauthorized");
        let (st, _) = req(&svc, method, path, Some(&revoked.token), &[], body).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a revoked token"
        );
        let (st, _) = req(&svc, method, path, Some("kl_forged"), &[], body).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with an unknown token"
        );
        for role in Role::ALL.into_iter().filter(|r| *r < need) {
            let (st, v) = req(&svc, method, path, Some(&tokens[&role]), &[], body).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path} as {role}: {v}");
            assert_eq!(v["code"], "forbidden");
        }
    }
    assert_eq!(
        snapshot(&store).await,
        before,
        "a refused request changed the store"
    );

    // The role needed gets past authentication (whatever the handler then answers).
    let mut passed = 0;
    for (method, path) in &ops {
        let token = match access::need(method, path) {
            Need::Nothing => None,
            Need::Role(r) => Some(tokens[&r].as_str()),
        };
        let (st, v) = req(&svc, method, path, token, &[], body).await;
        assert!(
            st != StatusCode::UNAUTHORIZED && st != StatusCode::FORBIDDEN,
            "{method} {path} with the role needed: {st} {v}"
        );
        passed += 1;
    }
    println!(
        "{} operations walked, {passed} passed with their role",
        ops.len()
    );

    // Refused attempts with a valid token are audited; anonymous ones are not.
    let (st, audit) = req(
        &svc,
        &Method::GET,
        "/v1/audit?limit=1000",
        Some(&tokens[&Role::Admin]),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let audit = audit.as_array().expect("audit list").clone();
    assert!(audit
        .iter()
        .any(|e| e["token_name"] == "viewer" && e["status"] == 403));
    assert!(
        audit.iter().all(|e| e["token_name"].is_string()),
        "anonymous entries"
    );
    let (st, _) = req(
        &svc,
        &Method::GET,
        "/v1/audit?limit=0",
        Some(&tokens[&Role::Admin]),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

/// A token admitted many times (so remembered at the store's change counter) is refused at the
/// first request after another handle on the file (the CLI, another daemon) revoked it.
#[actix_web::test]
async fn a_token_revoked_elsewhere_is_refused_at_the_next_request() {
    let ts = sqlite_store().await;
    let t = create_token(&ts.store, "ops", Role::Admin).await.unwrap();
    let v = create_token(&ts.store, "eyes", Role::Viewer).await.unwrap();
    let svc = test::init_service(app(state(&ts.store))).await;
    for _ in 0..3 {
        for secret in [&t.token, &v.token] {
            let (st, _) = req(&svc, &Method::GET, "/v1/machines", Some(secret), &[], None).await;
            assert_eq!(st, StatusCode::OK);
        }
    }
    let other = Store::open(&ts.config).await.expect("a second handle");
    other
        .tx(async |tx| repo::tokens::revoke(tx, "ops").await)
        .await
        .unwrap();
    let (st, v1) = req(
        &svc,
        &Method::GET,
        "/v1/machines",
        Some(&t.token),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v1}");
    // The other token still works, and keeps working once remembered again.
    for _ in 0..2 {
        let (st, _) = req(
            &svc,
            &Method::GET,
            "/v1/machines",
            Some(&v.token),
            &[],
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
}

#[actix_web::test]
async fn open_on_loopback_until_the_first_token_then_tokens_only() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let (st, _) = req(&svc, &Method::GET, "/v1/machines", None, &[], None).await;
    assert_eq!(st, StatusCode::OK, "open mode");
    let (st, created) = req(
        &svc,
        &Method::POST,
        "/v1/tokens",
        None,
        &[],
        Some(r#"{"name":"root","role":"admin"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().expect("secret").to_string();
    let (st, _) = req(&svc, &Method::GET, "/v1/machines", None, &[], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a token exists now");
    let (st, list) = req(&svc, &Method::GET, "/v1/tokens", Some(&secret), &[], None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        !list.to_string().contains(&secret[3..]),
        "list shows the secret"
    );
    let (st, _) = req(
        &svc,
        &Method::DELETE,
        "/v1/tokens/root",
        Some(&secret),
        &[],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = req(&svc, &Method::GET, "/v1/machines", Some(&secret), &[], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "revoked");
    let (st, _) = req(&svc, &Method::GET, "/v1/machines", None, &[], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "open mode never comes back");
    let (st, _) = req(&svc, &Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(st, StatusCode::OK);

    // A new app on the same store (a restart) is not open either.
    let svc = test::init_service(app(state(&ts.store))).await;
    let (st, _) = req(&svc, &Method::GET, "/v1/machines", None, &[], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn auth_tokens_is_never_open_and_foreign_hosts_and_origins_are_refused() {
    let ts = sqlite_store().await;
    let auth = Auth::new(AuthSettings {
        tokens_required: true,
        ..AuthSettings::loopback()
    });
    let svc = test::init_service(app_with_auth(
        state(&ts.store),
        LeaderView::standalone(),
        auth,
    ))
    .await;
    let (st, _) = req(&svc, &Method::GET, "/v1/machines", None, &[], None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "no token ever, still closed");
    let admin = create_token(&ts.store, "root", Role::Admin)
        .await
        .unwrap()
        .token;

    let (st, v) = req(
        &svc,
        &Method::GET,
        "/v1/machines",
        Some(&admin),
        &[("host", "evil.example")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::MISDIRECTED_REQUEST, "{v}");
    assert_eq!(v["code"], "host_not_allowed");
    let (st, _) = req(
        &svc,
        &Method::GET,
        "/healthz",
        None,
        &[("host", "evil.example:8010")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::MISDIRECTED_REQUEST);
    let (st, _) = req(
        &svc,
        &Method::GET,
        "/v1/machines",
        Some(&admin),
        &[("host", "localhost:8010")],
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let body = serde_json::to_string(&machine_body("10.1.1.1")).unwrap();
    let (st, v) = req(
        &svc,
        &Method::POST,
        "/v1/machines",
        Some(&admin),
        &[
            ("host", "127.0.0.1:8010"),
            ("origin", "http://evil.example"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "origin_not_allowed");
    assert!(ts.store.list_machines().await.unwrap().is_empty());
    let (st, v) = req(
        &svc,
        &Method::POST,
        "/v1/machines",
        Some(&admin),
        &[
            ("host", "127.0.0.1:8010"),
            ("origin", "http://127.0.0.1:8010"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

#[actix_web::test]
async fn invented_methods_do_not_grow_metrics_and_free_text_is_bounded() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    for i in 0..5 {
        let m = Method::from_bytes(format!("WARMUP{i}").as_bytes()).unwrap();
        req(&svc, &m, "/v1/machines", None, &[], None).await;
    }
    let metrics = |svc| async move {
        let r = test::TestRequest::get().uri("/metrics").to_request();
        let res = test::call_service(svc, r).await;
        test::read_body(res).await.len()
    };
    // The first scrape adds the /metrics series themselves.
    metrics(&svc).await;
    let before = metrics(&svc).await;
    for i in 0..200 {
        let m = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let (st, _) = req(&svc, &m, "/v1/machines", None, &[], None).await;
        assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    }
    let after = metrics(&svc).await;
    println!("/metrics: {before} bytes before, {after} after 200 invented methods");
    // Counter values may gain digits; the label sets must not grow.
    assert!(after < before + 64, "{before} -> {after}");

    for nick in [
        "x".repeat(250_000),
        "bell\u{7}".to_string(),
        "esc\u{1b}[2J".to_string(),
    ] {
        let body = json!({"name": "c1", "nick_name": nick, "ha_mode": "rbr", "shards": 1, "nodes": 1, "comps": 1});
        let (st, v) = req(
            &svc,
            &Method::POST,
            "/v1/clusters",
            None,
            &[],
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains("nick_name"),
            "{v}"
        );
    }
    for (field, value) in [
        ("innodb_size_mb", 4_294_967_295u64),
        ("max_connections", 4_294_967_295),
    ] {
        let mut body = json!({"name": "c1", "ha_mode": "rbr", "shards": 1, "nodes": 1, "comps": 1});
        body[field] = json!(value);
        let (st, v) = req(
            &svc,
            &Method::POST,
            "/v1/clusters",
            None,
            &[],
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["message"].as_str().unwrap_or("").contains(field), "{v}");
    }
    let body = json!({"name": "c1", "ha_mode": "rbr", "shards": 256, "nodes": 256, "comps": 256});
    let (st, _) = req(
        &svc,
        &Method::POST,
        "/v1/clusters",
        None,
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(ts
        .store
        .list_jobs(&Default::default())
        .await
        .unwrap()
        .is_empty());
}
