//! The console's login (an API token in, a session cookie out) and logout.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::auth::{NewAuditEntry, Role};
use maud::{html, DOCTYPE};
use serde::Deserialize;

use super::{html_response, secure_headers};
use crate::http::auth::{record, Auth};
use crate::http::session;

/// Longest token accepted (ours are 67 characters).
const MAX_TOKEN: usize = 256;

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `POST /ui/login`: `token`, or `open=1` in open mode; `next` is where to go after.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    open: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Only a console page of this origin may be the target after login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.len() <= 512
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

fn secure(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// A login or logout posted by a page of another site or origin (another port of this host
/// counts as the same site for cookies, not for `Sec-Fetch-Site: same-origin`). Browsers send
/// the header; clients that are not browsers do not, and are judged by `Origin` as before.
fn cross_origin(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
}

fn refused_cross_origin() -> HttpResponse {
    secure_headers(HttpResponse::Forbidden())
        .content_type("text/plain; charset=utf-8")
        .body("a page of another origin may not log in or out here; nothing was done")
}

fn client(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".into(), |a| a.to_string())
}

pub async fn form(
    auth: web::Data<Auth>,
    cm: web::Data<ClusterManager>,
    q: Option<web::Query<NextQuery>>,
) -> HttpResponse {
    let next = safe_next(q.as_ref().and_then(|q| q.next.as_deref()));
    let open = auth.open_for_console(&cm).await.unwrap_or(false);
    login_page(&next, open, None, StatusCode::OK)
}

fn login_page(next: &str, open: bool, error: Option<&str>, status: StatusCode) -> HttpResponse {
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head { (super::head_common("Log in")) }
            body.login {
                main #main {
                    h1 { "kunlun " b { "cluster-mgr" } }
                    @if let Some(e) = error {
                        div.error #login-error role="alert" { (e) }
                    }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="off"
                            required maxlength=(MAX_TOKEN) autofocus
                            aria-describedby="token-help";
                        p #token-help .hint {
                            "A token made with " code { "kunlunctl token create NAME --role viewer|operator|admin" }
                            ". Its role decides what this console lets you do."
                        }
                        button type="submit" #login { "Log in" }
                    }
                    @if open {
                        form method="post" action="/ui/login" {
                            input type="hidden" name="next" value=(next);
                            input type="hidden" name="open" value="1";
                            p.hint { "This manager has no tokens yet and listens on loopback only (open mode): anyone on this host may use it." }
                            button type="submit" #login-open .secondary { "Continue without a token" }
                        }
                    }
                }
            }
        }
    };
    html_response(status, m)
}

pub async fn submit(
    req: HttpRequest,
    auth: web::Data<Auth>,
    cm: web::Data<ClusterManager>,
    form: Result<web::Form<LoginForm>, actix_web::Error>,
) -> HttpResponse {
    if cross_origin(&req) {
        return refused_cross_origin();
    }
    let Ok(form) = form else {
        return login_page(
            "/ui/",
            false,
            Some("the login form did not arrive whole; try again"),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = safe_next(form.next.as_deref());
    let open = auth.open_for_console(&cm).await.unwrap_or(false);
    let (id, name, status) = if form.open.as_deref() == Some("1") && form.token.is_empty() {
        if !open {
            return login_page(
                &next,
                false,
                Some("this manager has tokens: log in with one"),
                StatusCode::UNAUTHORIZED,
            );
        }
        let (id, _) = auth.sessions().create(None, None, Role::Admin);
        (id, None, 303)
    } else {
        let token = form.token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN || token.chars().any(char::is_control) {
            return login_page(
                &next,
                open,
                Some("enter an API token"),
                StatusCode::BAD_REQUEST,
            );
        }
        match auth.authenticate(&cm, token).await {
            Ok(t) => {
                let hash = crate::http::auth::token_hash(token);
                let (id, _) = auth
                    .sessions()
                    .create(Some(hash), Some(t.name.clone()), t.role);
                (id, Some(t.name), 303)
            }
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                tracing::info!(peer = ?req.peer_addr(), "console login refused");
                return login_page(
                    &next,
                    open,
                    Some("that token is unknown or revoked"),
                    StatusCode::UNAUTHORIZED,
                );
            }
            Err(e) => {
                return login_page(&next, open, Some(&e.message), e.status);
            }
        }
    };
    // A new login replaces the session the browser had (no session outlives its cookie).
    if let Some(old) = session::cookie(&req) {
        auth.sessions().remove(&old);
    }
    record(
        &cm,
        NewAuditEntry {
            token_name: name,
            method: "POST".into(),
            path: "/ui/login".into(),
            client: client(&req),
            status,
        },
    )
    .await;
    secure_headers(HttpResponse::SeeOther())
        .insert_header((header::SET_COOKIE, session::set_cookie(&id, secure(&req))))
        .insert_header((header::LOCATION, next))
        .finish()
}

pub async fn logout(
    req: HttpRequest,
    auth: web::Data<Auth>,
    cm: web::Data<ClusterManager>,
    form: Result<web::Form<LogoutForm>, actix_web::Error>,
) -> HttpResponse {
    if cross_origin(&req) {
        return refused_cross_origin();
    }
    if let Some(id) = session::cookie(&req) {
        if let Some(s) = auth.sessions().get(&id) {
            let ok = form.is_ok_and(|f| session::csrf_ok(&s, &f.csrf));
            if !ok {
                return secure_headers(HttpResponse::Forbidden())
                    .content_type("text/plain; charset=utf-8")
                    .body("logout needs the session's CSRF token; nothing was done");
            }
            auth.sessions().remove(&id);
            record(
                &cm,
                NewAuditEntry {
                    token_name: s.name,
                    method: "POST".into(),
                    path: "/ui/logout".into(),
                    client: client(&req),
                    status: 303,
                },
            )
            .await;
        }
    }
    secure_headers(HttpResponse::SeeOther())
        .insert_header((header::SET_COOKIE, session::clear_cookie(secure(&req))))
        .insert_header((header::LOCATION, "/ui/login"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/ui/clusters/3")), "/ui/clusters/3");
        assert_eq!(
            safe_next(Some("/ui/jobs?status=done")),
            "/ui/jobs?status=done"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/v1/clusters",
            "/ui/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }
}
