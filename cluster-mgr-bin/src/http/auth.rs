//! Authentication of API requests: the `Host`/`Origin` check against DNS rebinding, bearer
//! tokens with roles (the table is [`super::access`]), open mode on loopback, and the audit
//! trail of mutating requests.
//!
//! Invariants: every request passes [`check`] before any handler runs; a request is served
//! without a token only when it is `GET /healthz` or when the daemon is in open mode (`auth =
//! auto`, loopback bind, no token ever created — once one is seen that is remembered for the
//! life of the process); token secrets are compared by their SHA-256 only, and are never
//! logged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, ResponseError};
use futures::Stream;
use kunlun_core::ClusterManager;
use kunlun_meta::auth::{NewAuditEntry, Role, TokenInfo};
use kunlun_meta::store::repo;
use sha2::{Digest, Sha256};

use super::access::{self, Need};
use super::error::ApiError;
use super::session::{self, Session, Sessions};

/// How long a read in confirmed open mode waits for the store to re-confirm it.
const OPEN_RECHECK_DEADLINE: Duration = Duration::from_millis(100);
/// How often at most a token's `last_used_at` is written.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Live tokens remembered at most (see [`Checked`]).
const CHECKED_MAX: usize = 1024;

/// The authentication settings of one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `auth = tokens`: never open.
    pub tokens_required: bool,
    /// The API listens on a loopback address only.
    pub loopback: bool,
    /// Allowed `Host` values as `(host, port)`; no port means any port. Empty: any host.
    pub allowed_hosts: Vec<(String, Option<u16>)>,
    /// Deadline for a request's body, counted from when the middleware sees the request.
    pub body_timeout: Duration,
    /// `emit_allowed_clients`: peers whose `POST /HttpService/Emit` needs no token (the
    /// original's clients, Kunlun-XPanel among them, send none).
    pub emit_clients: Vec<crate::config::IpBlock>,
}

impl AuthSettings {
    /// Open on loopback until a token exists; loopback names on any port. What the in-process
    /// app ([`super::app`]) uses.
    pub fn loopback() -> AuthSettings {
        AuthSettings {
            tokens_required: false,
            loopback: true,
            allowed_hosts: ["localhost", "127.0.0.1", "[::1]"]
                .iter()
                .map(|h| (h.to_string(), None))
                .collect(),
            body_timeout: Duration::from_secs(10),
            emit_clients: Vec::new(),
        }
    }

    /// Parses `host` / `host:port` / `[v6]:port` entries (see [`parse_host`]).
    pub fn hosts_from(entries: &[String]) -> Vec<(String, Option<u16>)> {
        entries.iter().filter_map(|e| parse_host(e)).collect()
    }
}

/// Splits a `Host` value into lowercase host and port; `None` when it is not one.
pub fn parse_host(v: &str) -> Option<(String, Option<u16>)> {
    let v = v.trim().to_ascii_lowercase();
    if v.is_empty() {
        return None;
    }
    if v.starts_with('[') {
        let end = v.find(']')?;
        let host = v[..=end].to_string();
        return match &v[end + 1..] {
            "" => Some((host, None)),
            rest => Some((host, Some(rest.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match v.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((v, None)),
    }
}

/// Shared authentication state.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    /// A token was seen in the store: open mode is over for good.
    tokens_seen: AtomicBool,
    /// The store was read and held no token (open mode confirmed at least once).
    open_confirmed: AtomicBool,
    /// When each token's `last_used_at` was last written.
    touched: Mutex<HashMap<String, Instant>>,
    /// Tokens found live at one reading of the store's change counter.
    checked: Mutex<Checked>,
    /// The web console's logins.
    sessions: Sessions,
}

/// Live tokens by hash, as the store held them at its change counter `version`
/// ([`kunlun_meta::store::Store::data_version`]): while the counter reads the same, nothing was
/// committed, so no token was revoked, deleted or changed role; the first change (a revocation
/// among them) forgets them all, so revocation still takes effect at the next request.
#[derive(Default)]
struct Checked {
    version: Option<u64>,
    live: HashMap<String, TokenInfo>,
}

impl Checked {
    fn get(&self, hash: &str, version: u64) -> Option<TokenInfo> {
        (self.version == Some(version)).then(|| self.live.get(hash).cloned())?
    }

    /// Remembers `token`, read from the store after the counter read `version` (not when an
    /// older reading than the one remembered: that would forget newer checks).
    fn put(&mut self, hash: &str, version: u64, token: &TokenInfo) {
        match self.version {
            Some(cur) if cur != version && !super::cache::newer(version, cur) => return,
            Some(cur) if cur == version && self.live.len() < CHECKED_MAX => {}
            _ => {
                self.version = Some(version);
                self.live.clear();
            }
        }
        self.live.insert(hash.to_string(), token.clone());
    }
}

/// Who made a request (an extension of the request once [`check`] let it through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Open mode: no token.
    Anonymous,
    Token {
        name: String,
        role: Role,
    },
}

impl Auth {
    pub fn new(settings: AuthSettings) -> Auth {
        Auth {
            inner: Arc::new(Inner {
                settings,
                tokens_seen: AtomicBool::new(false),
                open_confirmed: AtomicBool::new(false),
                touched: Mutex::new(HashMap::new()),
                checked: Mutex::new(Checked::default()),
                sessions: Sessions::default(),
            }),
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    fn host_allowed(&self, host: &str) -> bool {
        let allowed = &self.inner.settings.allowed_hosts;
        if allowed.is_empty() {
            return true;
        }
        let Some((h, p)) = parse_host(host) else {
            return false;
        };
        allowed
            .iter()
            .any(|(ah, ap)| *ah == h && (ap.is_none() || *ap == p))
    }

    /// Whether a request needing `need` may go without a token right now.
    ///
    /// While the store cannot be read, reads stay open if open mode was confirmed before (so
    /// `/v1/leader`, `/v1/ha` and `/metrics` keep answering through a store outage); anything
    /// else fails closed with 503.
    async fn open(&self, cm: &ClusterManager, need: Role) -> Result<bool, ApiError> {
        let s = &self.inner.settings;
        if s.tokens_required || !s.loopback || self.inner.tokens_seen.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let check = async {
            match cm.store() {
                Ok(store) => store
                    .read(async |tx| repo::tokens::any_exists(tx).await)
                    .await
                    .map_err(|e| ApiError::from(kunlun_core::Error::from(e))),
                Err(e) => Err(ApiError::from(e)),
            }
        };
        let read_fallback =
            need == Role::Viewer && self.inner.open_confirmed.load(Ordering::Relaxed);
        // A frozen store must not make every read wait for the store's own deadline.
        let any = if read_fallback {
            tokio::time::timeout(OPEN_RECHECK_DEADLINE, check)
                .await
                .unwrap_or_else(|_| {
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the metadata store did not answer in time",
                    ))
                })
        } else {
            check.await
        };
        match any {
            Ok(true) => {
                self.inner.tokens_seen.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Ok(false) => {
                self.inner.open_confirmed.store(true, Ordering::Relaxed);
                Ok(true)
            }
            Err(_) if need == Role::Viewer && self.inner.open_confirmed.load(Ordering::Relaxed) => {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn checked(&self) -> std::sync::MutexGuard<'_, Checked> {
        self.inner.checked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The web console's sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Whether the console may be used without a token right now (open mode).
    pub async fn open_for_console(&self, cm: &ClusterManager) -> Result<bool, ApiError> {
        self.open(cm, Role::Admin).await
    }

    /// The live session cookie value `id` names, re-checked against its token (or, for an
    /// open-mode session, against open mode); a session whose token is gone or revoked, or
    /// whose open mode ended, is ended here.
    ///
    /// `need` is the role the request needs: an open-mode session stands for open mode, which
    /// keeps serving reads through a store outage (see [`Auth::open`]).
    pub async fn session(
        &self,
        cm: &ClusterManager,
        id: &str,
        need: Role,
    ) -> Result<Option<Session>, ApiError> {
        let Some(mut s) = self.inner.sessions.get(id) else {
            return Ok(None);
        };
        let live = match &s.token_hash {
            Some(h) => match self
                .authenticate_hash(cm, h, super::cache::reading_now(cm))
                .await
            {
                Ok(t) => {
                    if t.role != s.role {
                        self.inner.sessions.set_role(id, t.role);
                        s.role = t.role;
                    }
                    true
                }
                Err(e) if e.status == StatusCode::UNAUTHORIZED => false,
                Err(e) => return Err(e),
            },
            None => self.open(cm, need).await?,
        };
        if !live {
            self.inner.sessions.remove(id);
            return Ok(None);
        }
        Ok(Some(s))
    }

    /// The live token `secret` names, or 401.
    pub async fn authenticate(
        &self,
        cm: &ClusterManager,
        secret: &str,
    ) -> Result<TokenInfo, ApiError> {
        let reading = super::cache::reading_now(cm);
        self.authenticate_hash(cm, &token_hash(secret), reading)
            .await
    }

    /// The live token whose hash is `hash`, or 401; `version` is the store's change counter
    /// read before (see [`Checked`]).
    async fn authenticate_hash(
        &self,
        cm: &ClusterManager,
        hash: &str,
        version: Option<u64>,
    ) -> Result<TokenInfo, ApiError> {
        let hash = hash.to_string();
        let store = cm.store().map_err(ApiError::from)?;
        let known = version.and_then(|v| self.checked().get(&hash, v));
        let hit = known.is_some();
        let found = match known {
            Some(t) => Some(t),
            None => store
                .read(async |tx| repo::tokens::find_by_hash(tx, &hash).await)
                .await
                .map_err(|e| ApiError::from(kunlun_core::Error::from(e)))?,
        };
        self.inner.tokens_seen.store(true, Ordering::Relaxed);
        let token = match found {
            Some(t) if t.revoked_at.is_none() => t,
            Some(_) => return Err(unauthorized("the token was revoked")),
            None => return Err(unauthorized("unknown token")),
        };
        if let (Some(v), false) = (version, hit) {
            self.checked().put(&hash, v, &token);
        }
        let due = {
            let mut touched = self.inner.touched.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let due = touched
                .get(&token.name)
                .is_none_or(|t| now.duration_since(*t) >= TOUCH_EVERY);
            if due {
                touched.insert(token.name.clone(), now);
            }
            due
        };
        if due {
            let name = token.name.clone();
            if let Err(e) = store
                .tx(async |tx| repo::tokens::touch(tx, &name).await)
                .await
            {
                tracing::warn!(token = %token.name, error = %e, "cannot record the token's use");
            }
        }
        Ok(token)
    }
}

/// The name of the token a request was admitted with (none in open mode).
pub fn token_name(req: &actix_web::HttpRequest) -> Option<String> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Token { name, .. }) => Some(name.clone()),
        _ => None,
    }
}

/// `kl_` and 64 hex digits of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("kl_{}", hex(&bytes))
}

/// The stored form of a secret: SHA-256, hex.
pub fn token_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{why}: send `Authorization: Bearer <token>` (kunlunctl: --token, $KUNLUNCTL_TOKEN or ~/.config/kunlunctl/token)"),
    )
}

fn bearer(req: &ServiceRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            Ok(Some(t.trim().to_string()))
        }
        _ => Err(unauthorized(
            "the Authorization header is not `Bearer <token>`",
        )),
    }
}

/// Why a request was refused, and by which token when it carried a valid one.
struct Refusal {
    error: ApiError,
    token: Option<String>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal { error, token: None }
    }
}

/// Checks `Host`, `Origin`, then the token against the role the route needs.
async fn admit(req: &ServiceRequest, auth: &Auth, cm: &ClusterManager) -> Result<Caller, Refusal> {
    // A browser always sends Host; a request without it (HTTP/1.0) cannot come from a
    // rebinding page.
    if let Some(host) = req.headers().get(header::HOST) {
        let ok = host.to_str().is_ok_and(|h| auth.host_allowed(h));
        if !ok {
            return Err(Refusal::from(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                format!(
                    "Host {:?} is not one this manager answers to (http_allowed_hosts)",
                    String::from_utf8_lossy(host.as_bytes())
                ),
            )));
        }
    }
    if access::is_mutating(req.method()) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin.to_str().is_ok_and(|o| {
                o.split_once("://")
                    .is_some_and(|(_, hostport)| auth.host_allowed(hostport))
            });
            if !ok {
                return Err(Refusal::from(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    "a browser page from another origin may not change anything here",
                )));
            }
        }
    }
    let need = match access::need(req.method(), req.path()) {
        Need::Nothing => return Ok(Caller::Anonymous),
        Need::Role(r) => r,
    };
    let Some(secret) = bearer(req)? else {
        // The console's session cookie. A session that cannot be checked now (store outage)
        // counts as none: the request is then judged as it would be without the cookie.
        if let Some(id) = session::cookie_in(req.headers()) {
            if let Ok(Some(s)) = auth.session(cm, &id, need).await {
                match session_caller(req, s, need) {
                    Ok(c) => return Ok(c),
                    // Without its CSRF token the cookie adds nothing; a request open mode or
                    // `emit_allowed_clients` admits without it is admitted as before.
                    Err(r) if r.error.code == session::CSRF_REFUSED => {
                        if auth.open(cm, need).await.unwrap_or(false) || emit_client(req, auth) {
                            return Ok(Caller::Anonymous);
                        }
                        return Err(r);
                    }
                    Err(r) => return Err(r),
                }
            }
        }
        if auth.open(cm, need).await? || emit_client(req, auth) {
            return Ok(Caller::Anonymous);
        }
        return Err(unauthorized("this API needs a token").into());
    };
    // One reading of the store's counter for the request: the token check and a kept answer
    // (`super::cache`) both go by it.
    let reading = super::cache::reading_now(cm);
    req.extensions_mut().insert(super::cache::Reading(reading));
    let token = auth
        .authenticate_hash(cm, &token_hash(&secret), reading)
        .await?;
    if token.role < need {
        return Err(forbidden(req, &token.name, token.role, need));
    }
    Ok(Caller::Token {
        name: token.name,
        role: token.role,
    })
}

fn forbidden(req: &ServiceRequest, name: &str, role: Role, need: Role) -> Refusal {
    Refusal {
        error: ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token '{name}' has role {role}; {} {} needs {need}",
                req.method(),
                req.path()
            ),
        ),
        token: Some(name.to_string()),
    }
}

/// A request carrying the console's session cookie instead of a bearer token: the session's
/// role must suffice, and a change must carry the session's CSRF token.
fn session_caller(req: &ServiceRequest, s: Session, need: Role) -> Result<Caller, Refusal> {
    if let Some(name) = &s.name {
        if s.role < need {
            return Err(forbidden(req, name, s.role, need));
        }
    }
    if access::is_mutating(req.method()) {
        let given = req
            .headers()
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !session::csrf_ok(&s, given) {
            return Err(Refusal {
                error: ApiError::new(
                    StatusCode::FORBIDDEN,
                    session::CSRF_REFUSED,
                    "a change made with the console's session cookie must carry the session's \
                     CSRF token in the X-CSRF-Token header; nothing was done",
                ),
                token: s.name,
            });
        }
    }
    Ok(match s.name {
        Some(name) => Caller::Token { name, role: s.role },
        None => Caller::Anonymous,
    })
}

/// A token-less Emit request from a peer on `emit_allowed_clients`.
fn emit_client(req: &ServiceRequest, auth: &Auth) -> bool {
    req.path() == crate::emit::PATH
        && req.peer_addr().is_some_and(|a| {
            auth.settings()
                .emit_clients
                .iter()
                .any(|b| b.contains(a.ip()))
        })
}

/// Middleware (`from_fn`): admits or refuses each request, then records mutating ones that
/// carried a valid token or ran in open mode in the audit trail.
pub async fn check(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let (Some(auth), Some(cm)) = (
        req.app_data::<web::Data<Auth>>().cloned(),
        req.app_data::<web::Data<ClusterManager>>().cloned(),
    ) else {
        let e = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no auth state",
        );
        return Ok(req.into_response(e.error_response()).map_into_right_body());
    };
    let caller = match admit(&req, &auth, &cm).await {
        Ok(c) => c,
        Err(Refusal { error, token }) => {
            // A valid token above its role is worth a trace in the store; anonymous refusals
            // only go to the log, so they cannot grow the store.
            if token.is_some() && access::is_mutating(req.method()) {
                let e = NewAuditEntry {
                    token_name: token,
                    method: req.method().to_string(),
                    path: req.path().to_string(),
                    client: peer(&req),
                    status: i64::from(error.status.as_u16()),
                };
                record(&cm, e).await;
            }
            tracing::info!(method = %req.method(), path = %req.path(), code = error.code, "request refused");
            // The original's clients read every answer of the Emit API as HTTP 200.
            let res = if req.path() == crate::emit::PATH {
                crate::emit::instant(crate::emit::codes::INVALID_REQUEST, &error.message)
            } else {
                error.error_response()
            };
            return Ok(req.into_response(res).map_into_right_body());
        }
    };
    // Emit carries reads (get_status polls) and writes on one path: its handler audits the
    // job types that change something (`crate::emit`), naming the type.
    // The console's login and logout are audited by their handler (a failed login by an
    // unauthenticated client must not grow the store).
    let mutating = access::is_mutating(req.method())
        && req.path() != crate::emit::PATH
        && !req.path().starts_with("/ui/");
    let method = req.method().clone();
    let path = req.path().to_string();
    let client = peer(&req);
    req.extensions_mut().insert(caller.clone());
    // A body sent slowly on purpose must not hold a connection (and a worker's slot) forever.
    let payload = req.take_payload();
    req.set_payload(body_deadline(payload, auth.settings().body_timeout));
    let res = next.call(req).await?;
    if mutating {
        let token_name = match &caller {
            Caller::Anonymous => None,
            Caller::Token { name, .. } => Some(name.clone()),
        };
        record(
            &cm,
            NewAuditEntry {
                token_name,
                method: method.to_string(),
                path,
                client,
                status: i64::from(res.status().as_u16()),
            },
        )
        .await;
    }
    Ok(res.map_into_left_body())
}

/// The body stream, failing once `timeout` has passed.
fn body_deadline(inner: Payload, timeout: Duration) -> Payload {
    let stream = Deadline {
        inner,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        timeout,
        done: false,
    };
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    done: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            let msg = format!("request body not received within {:?}", self.timeout);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                msg,
            )))));
        }
        Poll::Pending
    }
}

fn peer(req: &ServiceRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// Writes one audit entry (best effort: a failure is logged).
pub(crate) async fn record(cm: &ClusterManager, e: NewAuditEntry) {
    let Ok(store) = cm.store() else {
        tracing::warn!(method = %e.method, path = %e.path, "cannot audit: store not open");
        return;
    };
    if let Err(err) = store.tx(async |tx| repo::audit::insert(tx, &e).await).await {
        tracing::warn!(method = %e.method, path = %e.path, error = %err, "cannot write the audit trail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_parse_with_and_without_port() {
        assert_eq!(
            parse_host("LocalHost:8010"),
            Some(("localhost".into(), Some(8010)))
        );
        assert_eq!(parse_host("[::1]:80"), Some(("[::1]".into(), Some(80))));
        assert_eq!(parse_host("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(parse_host("a.example"), Some(("a.example".into(), None)));
        assert_eq!(parse_host("a.example:x"), None);
        assert_eq!(parse_host("[::1]x"), None);
    }

    #[test]
    fn only_configured_hosts_pass() {
        let a = Auth::new(AuthSettings {
            tokens_required: true,
            loopback: false,
            allowed_hosts: AuthSettings::hosts_from(&[
                "mgr.example:8010".into(),
                "10.0.0.1".into(),
            ]),
            body_timeout: Duration::from_secs(1),
            emit_clients: Vec::new(),
        });
        assert!(a.host_allowed("MGR.example:8010"));
        assert!(!a.host_allowed("mgr.example:8011"));
        assert!(!a.host_allowed("mgr.example"));
        assert!(a.host_allowed("10.0.0.1:1234"));
        assert!(!a.host_allowed("evil.example"));
    }

    #[test]
    fn secrets_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("kl_") && a.len() == 67);
        let h = token_hash(&a);
        assert_eq!(h.len(), 64);
        assert_eq!(h, token_hash(&a));
        assert!(!h.contains(&a[3..]));
    }
}
