//! The web console under `/ui/`: server-rendered HTML (maud), one small embedded script and
//! one stylesheet, nothing fetched from elsewhere.
//!
//! - Reads render on the server from the same calls the REST handlers make; each page's live
//!   part (`#live`) is re-fetched by the script (header [`LIVE_HEADER`]) every few seconds.
//! - Every change goes through the REST API itself (`/v1/...`), sent by the script with the
//!   session cookie and the session's CSRF token: the API's own role checks and validation
//!   messages apply, and a viewer's session is refused there even if a button were forged.
//! - Login turns an API token into a session ([`crate::http::session`]); pages without a live
//!   session redirect to the login page.
//!
//! Invariant: every value from the store or a request is escaped by maud (no `PreEscaped` of
//! outside data); pages send a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline ones, no framing).

mod cluster;
mod ha;
mod jobs;
mod login;
mod overview;
mod render;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::auth::Role;
use maud::{html, Markup, DOCTYPE};

use crate::http::error::ApiError;
use crate::http::session::{self, Session};
use crate::http::Auth;

/// The header the script sends to get only a page's live part.
pub const LIVE_HEADER: &str = "x-console-live";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's routes (all under `/ui`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(to_overview))
        .route("/ui/", web::get().to(overview::page))
        .route("/ui/login", web::get().to(login::form))
        .route("/ui/login", web::post().to(login::submit))
        .route("/ui/logout", web::post().to(login::logout))
        .route("/ui/assets/console.css", web::get().to(css))
        .route("/ui/assets/console.js", web::get().to(js))
        .route("/ui/machines", web::get().to(overview::machines))
        .route("/ui/clusters/new", web::get().to(cluster::new_form))
        .route("/ui/clusters/{id}", web::get().to(cluster::page))
        .route("/ui/failovers", web::get().to(ha::failovers))
        .route("/ui/failovers/{id}", web::get().to(ha::failover))
        .route("/ui/xa", web::get().to(ha::xa))
        .route("/ui/jobs", web::get().to(jobs::list))
        .route("/ui/jobs/{id}", web::get().to(jobs::show));
}

async fn to_overview() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(ty: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, ty))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Who is looking at a page.
pub struct Ctx {
    pub session: Session,
}

impl Ctx {
    /// May start jobs, switch over, resolve XA (the API's operator routes).
    pub fn can_operate(&self) -> bool {
        self.session.role >= Role::Operator
    }

    fn who(&self) -> String {
        match &self.session.name {
            Some(n) => format!("{n} ({})", self.session.role),
            None => "open mode (no tokens yet)".to_string(),
        }
    }
}

/// The page's viewer, or a redirect to the login page (with `next` set to this page).
async fn guard(req: &HttpRequest) -> Result<Ctx, HttpResponse> {
    let (Some(auth), Some(cm)) = (
        req.app_data::<web::Data<Auth>>(),
        req.app_data::<web::Data<ClusterManager>>(),
    ) else {
        return Err(HttpResponse::InternalServerError().body("no auth state"));
    };
    let found = match session::cookie(req) {
        Some(id) => auth.session(cm, &id, Role::Viewer).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(session)) => Ok(Ctx { session }),
        Ok(None) => {
            let next = match req.query_string() {
                "" => req.path().to_string(),
                q => format!("{}?{q}", req.path()),
            };
            let to = format!("/ui/login?next={}", render::url_encode(&next));
            Err(secure_headers(HttpResponse::SeeOther())
                .insert_header((header::LOCATION, to))
                .finish())
        }
        Err(e) => Err(error_page(req, &e)),
    }
}

/// The headers every console page carries.
fn secure_headers(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header((
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ))
    .insert_header((header::X_FRAME_OPTIONS, "DENY"))
    .insert_header((header::REFERRER_POLICY, "same-origin"))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

fn html_response(status: actix_web::http::StatusCode, m: Markup) -> HttpResponse {
    secure_headers(HttpResponse::build(status))
        .content_type("text/html; charset=utf-8")
        .body(m.into_string())
}

/// A page that could not be shown at all (the store is down); to the live refresh, only the
/// error.
fn error_page(req: &HttpRequest, e: &ApiError) -> HttpResponse {
    if req.headers().contains_key(LIVE_HEADER) {
        return html_response(e.status, render::error_box(e));
    }
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "cluster-mgr: error" }
                   link rel="stylesheet" href="/ui/assets/console.css"; }
            body { main #main { (render::error_box(e)) } }
        }
    };
    html_response(e.status, m)
}

/// What every page's `<head>` holds.
fn head_common(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · cluster-mgr" }
        link rel="stylesheet" href="/ui/assets/console.css";
    }
}

/// The console's sections, for the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Failovers,
    Jobs,
    Machines,
    Xa,
}

/// A whole page, or only its live part when the script asks for it.
///
/// `head` is shown once (forms live there, so a refresh never resets what is typed); `live`
/// is re-fetched every `refresh_ms` (0: never).
pub fn respond(
    req: &HttpRequest,
    ctx: &Ctx,
    title: &str,
    nav: Nav,
    head: Markup,
    live: Result<Markup, ApiError>,
    refresh_ms: u32,
) -> HttpResponse {
    let status = live
        .as_ref()
        .map_or_else(|e| e.status, |_| actix_web::http::StatusCode::OK);
    let live = live.unwrap_or_else(|e| render::error_box(&e));
    if req.headers().contains_key(LIVE_HEADER) {
        let mut res = html_response(status, live);
        if let Ok(v) = header::HeaderValue::from_str(&refresh_ms.to_string()) {
            res.headers_mut()
                .insert(header::HeaderName::from_static("x-console-refresh"), v);
        }
        return res;
    }
    let link = |to: &str, n: Nav, label: &str| {
        html! {
            a href=(to) aria-current=[(n == nav).then_some("page")] { (label) }
        }
    };
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_common(title))
                meta name="csrf-token" content=(ctx.session.csrf);
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "kunlun " b { "cluster-mgr" } }
                    nav aria-label="Sections" {
                        (link("/ui/", Nav::Overview, "Overview"))
                        (link("/ui/failovers", Nav::Failovers, "Failovers"))
                        (link("/ui/jobs", Nav::Jobs, "Jobs"))
                        (link("/ui/machines", Nav::Machines, "Machines"))
                        (link("/ui/xa", Nav::Xa, "XA in doubt"))
                    }
                    form.who method="post" action="/ui/logout" {
                        span #who { (ctx.who()) }
                        input type="hidden" name="csrf" value=(ctx.session.csrf);
                        button.link type="submit" { "Log out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    div #flash role="alert" aria-live="assertive" hidden {}
                    (head)
                    div #live data-refresh=(refresh_ms) aria-live="polite" { (live) }
                }
            }
        }
    };
    html_response(status, m)
}
