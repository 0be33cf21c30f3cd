//! API tests of the service endpoints (`/healthz`, `/metrics`, OpenAPI, Swagger UI), unknown
//! routes, and the behaviour while the metadata store cannot be reached.

mod common;

use std::time::Duration;

use actix_web::http::Method;
use actix_web::test;
use cluster_mgr::http::{app, AppState, Metrics};
use common::*;
use kunlun_core::{ClusterManager, CoreConfig};
use kunlun_meta::store::StoreConfig;

#[actix_web::test]
async fn healthz_is_ok_with_a_store() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let (st, h) = call(&svc, Method::GET, "/healthz", None).await;
    assert_eq!(st.as_u16(), 200, "{h}");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"], "sqlite");
    assert!(h.get("reason").is_none(), "{h}");
    assert!(h["version"].as_str().is_some());
}

#[actix_web::test]
async fn metrics_count_requests_by_route_and_status() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    call(&svc, Method::GET, "/v1/machines", None).await;
    call(&svc, Method::GET, "/v1/machines/12345", None).await;
    let req = test::TestRequest::get().uri("/metrics").to_request();
    let res = test::call_service(&svc, req).await;
    assert_eq!(res.status().as_u16(), 200);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = String::from_utf8(test::read_body(res).await.to_vec()).expect("utf-8");
    for needle in [
        r#"kunlun_cluster_mgr_http_requests_total{method="GET",route="/v1/machines",status="200"} 1"#,
        r#"kunlun_cluster_mgr_http_requests_total{method="GET",route="/v1/machines/{id}",status="404"} 1"#,
        "kunlun_cluster_mgr_http_request_duration_seconds_bucket",
        "kunlun_cluster_mgr_meta_store_up 1",
        "kunlun_cluster_mgr_build_info{version=",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[actix_web::test]
async fn openapi_document_and_swagger_ui() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let (st, doc) = call(&svc, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(st.as_u16(), 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for path in [
        "/v1/machines",
        "/v1/machines/{id}",
        "/v1/clusters/{id}",
        "/v1/shards/{id}/nodes",
        "/v1/jobs",
        "/healthz",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    for schema in [
        "RegisterMachine",
        "UpdateMachine",
        "Machine",
        "ErrorBody",
        "ClusterDetail",
        "Job",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "OpenAPI lacks schema {schema}"
        );
    }
    let res = test::call_service(&svc, test::TestRequest::get().uri("/docs/").to_request()).await;
    assert_eq!(res.status().as_u16(), 200);
    let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap_or_default();
    assert!(html.contains("swagger"), "{html}");
}

#[actix_web::test]
async fn unknown_routes_are_json_404() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    for uri in [
        "/",
        "/v1",
        "/v1/nothing",
        "/v2/machines",
        "/v1/machines/1/extra",
    ] {
        assert_error(&call(&svc, Method::GET, uri, None).await, 404, "not_found");
    }
    assert_error(
        &call(&svc, Method::PUT, "/v1/clusters", Some("{}")).await,
        405,
        "method_not_allowed",
    );
    assert_error(
        &call(&svc, Method::DELETE, "/healthz", None).await,
        405,
        "method_not_allowed",
    );
}

/// A manager whose store never opens (nothing listens on the seed): every store call is a 503
/// `store_unavailable` and `/healthz` is degraded with the reason, while the daemon serves.
#[actix_web::test]
async fn unreachable_store_gives_503_and_degraded_health() {
    let cfg = StoreConfig {
        connect_timeout: Duration::from_millis(300),
        ..StoreConfig::mysql(
            vec!["127.0.0.1:1".into()],
            "root",
            "pw-never-logged",
            "kunlun_metadata_db",
        )
    };
    let manager = ClusterManager::connect(CoreConfig::default(), cfg);
    let metrics = Metrics::new().expect("metrics");
    let svc = test::init_service(app(AppState {
        manager: manager.clone(),
        metrics,
        pages: Default::default(),
    }))
    .await;

    let (st, h) = call(&svc, Method::GET, "/healthz", None).await;
    assert_eq!(st.as_u16(), 503, "{h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["store"], "mysql");
    assert!(h["reason"].as_str().is_some_and(|r| !r.is_empty()), "{h}");
    assert!(!h.to_string().contains("pw-never-logged"));

    assert_error(
        &call(&svc, Method::GET, "/v1/machines", None).await,
        503,
        "store_unavailable",
    );
    assert_error(
        &call(&svc, Method::GET, "/v1/jobs/1", None).await,
        503,
        "store_unavailable",
    );
    let body = machine_body("10.6.6.6").to_string();
    assert_error(
        &call(&svc, Method::POST, "/v1/machines", Some(&body)).await,
        503,
        "store_unavailable",
    );
    // Authentication needs the store (is there a token? is this one valid?) and fails closed:
    // even bad input and /metrics get 503 until it answers; /healthz stays open and degraded.
    assert_error(
        &call(&svc, Method::POST, "/v1/machines", Some("{")).await,
        503,
        "store_unavailable",
    );
    assert_error(
        &call(&svc, Method::GET, "/metrics", None).await,
        503,
        "store_unavailable",
    );

    // Shutdown stops the connect loop promptly and later calls say so.
    tokio::time::timeout(
        Duration::from_secs(5),
        manager.shutdown(Duration::from_secs(3)),
    )
    .await
    .expect("shutdown joins the connect task");
    assert_error(
        &call(&svc, Method::GET, "/v1/machines", None).await,
        503,
        "shutting_down",
    );
}
