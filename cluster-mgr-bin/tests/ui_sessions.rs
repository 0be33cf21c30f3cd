//! The web console's sessions, in process over a real SQLite store: a login turns a token into
//! a cookie that acts with the token's role on the API, a change needs the session's CSRF
//! token, revocation and logout end the session, a login from another origin is refused, and a
//! cookie of open mode changes no API answer.

mod common;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::test;
use cluster_mgr::http::app;
use cluster_mgr::http::tokens::create_token;
use common::*;
use kunlun_meta::auth::Role;
use kunlun_meta::store::repo;
use serde_json::Value;

/// A bad cluster body: admitted requests get 400 from its validation, and nothing is created
/// either way.
const BAD_CLUSTER: &str = r#"{"name":"bad name!","ha_mode":"rbr","shards":1,"nodes":1,"comps":1}"#;

struct Answer {
    status: StatusCode,
    headers: actix_web::http::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The session id the answer sets.
    fn cookie(&self) -> String {
        let c = self.header("set-cookie");
        assert!(c.contains("HttpOnly; SameSite=Strict"), "{c}");
        c.trim_start_matches("kl_session=")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// The CSRF token a page carries.
    fn csrf(&self) -> String {
        let m = r#"name="csrf-token" content=""#;
        let i = self.body.find(m).expect("a csrf meta") + m.len();
        self.body[i..i + 64].to_string()
    }
}

async fn send<S, B>(
    svc: &S,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut r = test::TestRequest::default().method(method).uri(uri);
    for (k, v) in headers {
        r = r.insert_header((*k, *v));
    }
    if let Some((ty, b)) = body {
        r = r
            .insert_header(("content-type", ty))
            .set_payload(b.to_string());
    }
    let res = test::call_service(svc, r.to_request()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = test::read_body(res).await;
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

#[actix_web::test]
async fn a_console_session_acts_with_its_tokens_role_and_needs_its_csrf_token() {
    let ts = sqlite_store().await;
    let store = ts.store.clone();
    let op = create_token(&store, "alice", Role::Operator).await.unwrap();
    let viewer = create_token(&store, "val", Role::Viewer).await.unwrap();
    let svc = test::init_service(app(state(&store))).await;

    // No session: pages lead to the login, the API asks for a token.
    let a = send(&svc, Method::GET, "/ui/clusters/1", &[], None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header("location"), "/ui/login?next=/ui/clusters/1");
    let a = send(
        &svc,
        Method::POST,
        "/ui/login",
        &[],
        Some((FORM, "token=kl_nope")),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.header("set-cookie").is_empty());
    // From another origin, even with a good token: refused.
    let body = format!("token={}", op.token);
    let a = send(
        &svc,
        Method::POST,
        "/ui/login",
        &[("sec-fetch-site", "cross-site")],
        Some((FORM, &body)),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.header("set-cookie").is_empty());

    let body = format!("token={}&next=/ui/jobs", op.token);
    let a = send(&svc, Method::POST, "/ui/login", &[], Some((FORM, &body))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.header("location"), "/ui/jobs");
    let sid = a.cookie();
    let cookie = format!("kl_session={sid}");
    let page = send(&svc, Method::GET, "/ui/", &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("alice (operator)"));
    assert!(page
        .header("content-security-policy")
        .contains("script-src 'self'"));
    let csrf = page.csrf();

    // The cookie acts with the operator's role; a change needs the CSRF token.
    let a = send(
        &svc,
        Method::GET,
        "/v1/clusters",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = send(
        &svc,
        Method::POST,
        "/v1/clusters",
        &[("cookie", &cookie)],
        Some((JSON, BAD_CLUSTER)),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["code"], "csrf_token_missing");
    let wrong = "0".repeat(64);
    let a = send(
        &svc,
        Method::POST,
        "/v1/clusters",
        &[("cookie", &cookie), ("x-csrf-token", &wrong)],
        Some((JSON, BAD_CLUSTER)),
    )
    .await;
    assert_eq!(a.json()["code"], "csrf_token_missing");
    let a = send(
        &svc,
        Method::POST,
        "/v1/clusters",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        Some((JSON, BAD_CLUSTER)),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "admitted: {}", a.body);
    // Admin routes stay the admin's.
    let a = send(
        &svc,
        Method::GET,
        "/v1/tokens",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["code"], "forbidden");

    // A viewer's session reads, and is refused a change with a valid CSRF token.
    let body = format!("token={}", viewer.token);
    let v = send(&svc, Method::POST, "/ui/login", &[], Some((FORM, &body))).await;
    let vcookie = format!("kl_session={}", v.cookie());
    let vpage = send(&svc, Method::GET, "/ui/", &[("cookie", &vcookie)], None).await;
    assert!(!vpage.body.contains("new-cluster"), "no create button");
    let a = send(
        &svc,
        Method::POST,
        "/v1/clusters",
        &[("cookie", &vcookie), ("x-csrf-token", &vpage.csrf())],
        Some((JSON, BAD_CLUSTER)),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.json()["code"], "forbidden");

    // Logout needs the CSRF token, then ends the session.
    let a = send(
        &svc,
        Method::POST,
        "/ui/logout",
        &[("cookie", &vcookie)],
        Some((FORM, "csrf=nope")),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let body = format!("csrf={}", vpage.csrf());
    let a = send(
        &svc,
        Method::POST,
        "/ui/logout",
        &[("cookie", &vcookie)],
        Some((FORM, &body)),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(a.header("set-cookie").contains("Max-Age=0"));
    let a = send(&svc, Method::GET, "/ui/", &[("cookie", &vcookie)], None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "logged out");

    // Revoking the operator's token ends its session at once, for pages and the API.
    store
        .tx(async |tx| repo::tokens::revoke(tx, "alice").await)
        .await
        .unwrap();
    let a = send(&svc, Method::GET, "/ui/", &[("cookie", &cookie)], None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let a = send(
        &svc,
        Method::POST,
        "/v1/clusters",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        Some((JSON, BAD_CLUSTER)),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // Nothing was created; logins and the logout are in the audit trail, the failed login not.
    assert!(store.list_clusters().await.unwrap().is_empty());
    let audit = store
        .read(async |tx| repo::audit::list(tx, 100).await)
        .await
        .unwrap();
    let ui: Vec<(Option<String>, String)> = audit
        .iter()
        .filter(|e| e.path.starts_with("/ui/"))
        .map(|e| (e.token_name.clone(), e.path.clone()))
        .collect();
    assert!(
        ui.contains(&(Some("alice".into()), "/ui/login".into())),
        "{ui:?}"
    );
    assert!(
        ui.contains(&(Some("val".into()), "/ui/logout".into())),
        "{ui:?}"
    );
    assert_eq!(ui.len(), 3, "{ui:?}");
}

#[actix_web::test]
async fn an_open_mode_cookie_changes_no_api_answer_and_ends_with_open_mode() {
    let ts = sqlite_store().await;
    let store = ts.store.clone();
    let svc = test::init_service(app(state(&store))).await;
    let page = send(&svc, Method::GET, "/ui/login", &[], None).await;
    assert!(page.body.contains("Continue without a token"));
    let a = send(&svc, Method::POST, "/ui/login", &[], Some((FORM, "open=1"))).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let cookie = format!("kl_session={}", a.cookie());
    let page = send(&svc, Method::GET, "/ui/", &[("cookie", &cookie)], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("open mode"));
    // Without the CSRF token the request is judged as without the cookie: open mode admits it.
    let a = send(
        &svc,
        Method::POST,
        "/v1/clusters",
        &[("cookie", &cookie)],
        Some((JSON, BAD_CLUSTER)),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    // Open mode ends with the first token, and the open session with it.
    create_token(&store, "root", Role::Admin).await.unwrap();
    let a = send(&svc, Method::GET, "/ui/", &[("cookie", &cookie)], None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let a = send(&svc, Method::POST, "/ui/login", &[], Some((FORM, "open=1"))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.header("set-cookie").is_empty());
}
