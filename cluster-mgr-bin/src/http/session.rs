//! Console sessions: what the web console's login (`POST /ui/login`) turns an API token into.
//!
//! A session is a random 256-bit id sent to the browser as the `kl_session` cookie (HttpOnly,
//! SameSite=Strict, `Secure` over TLS) and kept here by its SHA-256 only, with the token it
//! stands for (by the token's own hash: the secret is never kept), that token's role and a
//! per-session CSRF token.
//!
//! Invariants: a session is only as good as its token, re-read from the store on every use (a
//! revoked token ends its sessions at once); an open-mode session (no token, granted only while
//! the daemon is in open mode) ends as soon as open mode does; a request authenticated by the
//! cookie that changes anything must carry the session's CSRF token (the `X-CSRF-Token`
//! header; the console's logout form sends it as its `csrf` field), compared in constant
//! time; sessions are bounded in number (per token too) and age, and held in this process only (another instance does not know
//! them: log in again after a switch of instance).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpRequest;
use kunlun_meta::auth::Role;

/// The cookie's name.
pub const COOKIE: &str = "kl_session";
/// The header carrying the CSRF token of a cookie-authenticated change.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lives from its login.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a login beyond it drops the oldest.
pub const MAX_SESSIONS: usize = 1024;
/// Sessions of one token kept at once; its login beyond it drops its own oldest (so one
/// token's logins cannot push out every other token's sessions).
pub const MAX_PER_TOKEN: usize = 16;
/// The error code of a cookie-authenticated change without its CSRF token.
pub const CSRF_REFUSED: &str = "csrf_token_missing";

/// One console login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the token logged in with; `None` for an open-mode session.
    pub token_hash: Option<String>,
    /// The token's name (who acts); `None` in open mode.
    pub name: Option<String>,
    /// The token's role when it logged in (re-read at each use).
    pub role: Role,
    /// The CSRF token of the session's pages.
    pub csrf: String,
    created: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session; returns the cookie value (the id) and the session.
    pub fn create(
        &self,
        token_hash: Option<String>,
        name: Option<String>,
        role: Role,
    ) -> (String, Session) {
        let id = random_hex();
        let s = Session {
            token_hash,
            name,
            role,
            csrf: random_hex(),
            created: Instant::now(),
        };
        let mut map = self.lock();
        map.retain(|_, s| s.created.elapsed() < MAX_AGE);
        let th = s.token_hash.clone();
        let oldest = |map: &HashMap<String, Session>, same_token: bool| {
            map.iter()
                .filter(|(_, o)| !same_token || o.token_hash == th)
                .min_by_key(|(_, o)| o.created)
                .map(|(k, _)| k.clone())
        };
        while map.values().filter(|o| o.token_hash == th).count() >= MAX_PER_TOKEN {
            let Some(k) = oldest(&map, true) else { break };
            map.remove(&k);
        }
        while map.len() >= MAX_SESSIONS {
            let Some(k) = oldest(&map, false) else { break };
            map.remove(&k);
        }
        map.insert(hash(&id), s.clone());
        (id, s)
    }

    /// The live session a cookie value names.
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = hash(id);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.created.elapsed() < MAX_AGE => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session (logout, or its token is gone).
    pub fn remove(&self, id: &str) {
        self.lock().remove(&hash(id));
    }

    /// Updates the role kept for a session (the token's role is re-read at each use).
    pub fn set_role(&self, id: &str, role: Role) {
        if let Some(s) = self.lock().get_mut(&hash(id)) {
            s.role = role;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `kl_session` cookie of a request, if it sends one that looks like ours.
pub fn cookie(req: &HttpRequest) -> Option<String> {
    cookie_in(req.headers())
}

/// [`cookie`] on bare headers (the middleware sees a `ServiceRequest`).
pub fn cookie_in(headers: &actix_web::http::header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        MAX_AGE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether `given` is the session's CSRF token (constant time).
pub fn csrf_ok(s: &Session, given: &str) -> bool {
    let (a, b) = (s.csrf.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    super::auth::hex(&bytes)
}

/// The stored form of a session id: its SHA-256, as a token's secret is kept.
fn hash(id: &str) -> String {
    super::auth::token_hash(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_ends_on_logout() {
        let s = Sessions::default();
        let (id, sess) = s.create(Some("h".into()), Some("ops".into()), Role::Operator);
        assert_eq!(id.len(), 64);
        assert_eq!(s.get(&id), Some(sess.clone()));
        assert!(
            !s.lock().contains_key(&id),
            "the id itself is never the key"
        );
        assert_eq!(s.get(&"0".repeat(64)), None);
        assert!(csrf_ok(&sess, &sess.csrf.clone()));
        assert!(!csrf_ok(&sess, ""));
        assert!(!csrf_ok(&sess, &"0".repeat(64)));
        s.remove(&id);
        assert_eq!(s.get(&id), None);
    }

    #[test]
    fn sessions_are_bounded_per_token_and_in_all() {
        let s = Sessions::default();
        let (admin, _) = s.create(Some("a".into()), Some("admin".into()), Role::Admin);
        let (v1, _) = s.create(Some("v".into()), Some("val".into()), Role::Viewer);
        for _ in 0..MAX_SESSIONS {
            s.create(Some("v".into()), Some("val".into()), Role::Viewer);
        }
        assert_eq!(s.get(&v1), None, "the token's oldest went first");
        assert!(
            s.get(&admin).is_some(),
            "another token's logins do not push it out"
        );
        assert_eq!(s.lock().len(), MAX_PER_TOKEN + 1);
        for i in 0..MAX_SESSIONS {
            s.create(Some(format!("t{i}")), None, Role::Viewer);
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        assert_eq!(s.get(&admin), None, "in all, the oldest went first");
    }

    #[test]
    fn the_cookie_is_read_among_others_and_malformed_ones_are_ignored() {
        let id = "ab".repeat(32);
        let req = TestRequest::default()
            .insert_header((header::COOKIE, format!("a=1; {COOKIE}={id}; b=2")))
            .to_http_request();
        assert_eq!(cookie(&req), Some(id.clone()));
        let req = TestRequest::default()
            .insert_header((header::COOKIE, format!("{COOKIE}=x'; drop")))
            .to_http_request();
        assert_eq!(cookie(&req), None);
        assert!(set_cookie(&id, true).contains("HttpOnly; SameSite=Strict"));
        assert!(set_cookie(&id, true).ends_with("; Secure"));
        assert!(!set_cookie(&id, false).contains("Secure"));
    }
}
