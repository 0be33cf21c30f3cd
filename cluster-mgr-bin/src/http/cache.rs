//! Answers of the list endpoints (and of the `GET`s of one cluster or shard), kept while the
//! embedded store holds the same data.
//!
//! A page of `GET /v1/machines` is a join over a hundred rows turned into 50 KiB of JSON; under
//! many clients the same pages are asked for again and again between two changes of the store.
//! Each answer is kept with the store's change counter ([`Store::data_version`]) read *before*
//! its rows were, and served again only to a request that reads the same counter: nothing was
//! committed in between, by this process or any other on the file, so the answer is what the
//! store would give now. The first change empties the cache.
//!
//! Invariants: an answer is never served at a counter other than the one it was stored with; a
//! request that cannot read the counter (MySQL, a lock) reads the store as before; errors are
//! never kept; at most [`BUDGET`] bytes of bodies and keys and [`MAX_ANSWERS`] answers are
//! kept, and no key longer than [`MAX_KEY`]; a reading older than the cache's never empties it.
//! When several requests miss the same page at the same reading, one reads the store and the
//! others get its answer, or its error (so a change does not send every client to the store
//! together): they read the same counter, so its rows are at least as new as the store was
//! when each of them arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use kunlun_meta::api::Page;
use kunlun_meta::store::Store;
use serde::Serialize;
use tokio::sync::OnceCell;

use super::error::ApiError;

/// Bytes of answer bodies and keys kept at most.
pub const BUDGET: usize = 32 << 20;
/// Answers kept at most.
pub const MAX_ANSWERS: usize = 4096;
/// Longest path and query kept (`?after=000…1` names the same page as `?after=1`).
pub const MAX_KEY: usize = 256;

/// The store's change counter as read once for a request, before anything of it was read
/// from the store (by the token check: [`super::auth`]); an extension of the request.
#[derive(Debug, Clone, Copy)]
pub struct Reading(pub Option<u64>);

/// The store's change counter now (`None` on MySQL, or while the store is not open).
pub fn reading_now(cm: &kunlun_core::ClusterManager) -> Option<u64> {
    cm.store().ok()?.data_version()
}

/// The request's reading: the one taken for its token check, else one taken now.
fn reading(req: &HttpRequest, store: &Store) -> Option<u64> {
    let taken = req.extensions().get::<Reading>().and_then(|r| r.0);
    taken.or_else(|| store.data_version())
}

/// The shared cache of list answers (cheap to clone).
#[derive(Clone, Default)]
pub struct Pages {
    inner: Arc<Mutex<State>>,
}

/// One read of the store that requests missing the same page share.
type Flight = Arc<OnceCell<Result<Arc<Answer>, ApiError>>>;

#[derive(Default)]
struct State {
    /// The store's counter the kept answers belong to (none yet).
    version: Option<u64>,
    bytes: usize,
    answers: HashMap<String, Arc<Answer>>,
    /// Pages being read from the store at `version`.
    flights: HashMap<String, Flight>,
}

/// One kept answer: the JSON array of the page and its cursor.
struct Answer {
    body: Bytes,
    next: Option<i64>,
}

/// Whether counter reading `a` came after `b`. SQLite's counter is 32 bits and wraps, so this
/// is serial number arithmetic: `a` is newer when it is less than half the range ahead.
pub(crate) fn newer(a: u64, b: u64) -> bool {
    let ahead = a.wrapping_sub(b) & 0xffff_ffff;
    ahead != 0 && ahead < 1 << 31
}

impl State {
    /// Moves to counter `v` when it is newer, dropping everything kept for the old one;
    /// whether answers read at `v` may be kept (not when `v` is older).
    fn at(&mut self, v: u64) -> bool {
        match self.version {
            Some(cur) if cur == v => true,
            Some(cur) if !newer(v, cur) => false,
            _ => {
                self.version = Some(v);
                self.bytes = 0;
                self.answers.clear();
                self.flights.clear();
                true
            }
        }
    }
}

/// Takes a finished (or abandoned) flight off the map, so that a later miss at the same counter
/// (after an error, say) reads the store again.
struct Landing<'a> {
    pages: &'a Pages,
    key: &'a str,
    flight: &'a Flight,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut st = self.pages.lock();
        if st
            .flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            st.flights.remove(self.key);
        }
    }
}

impl Pages {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer kept for `key` at counter `v`.
    fn get(&self, key: &str, v: u64) -> Option<Arc<Answer>> {
        let st = self.lock();
        (st.version == Some(v)).then(|| st.answers.get(key).cloned())?
    }

    /// The read of `key` at `v` to join or lead; `None` when `v` is older than the cache's.
    fn flight(&self, key: &str, v: u64) -> Option<Flight> {
        let mut st = self.lock();
        st.at(v)
            .then(|| st.flights.entry(key.to_string()).or_default().clone())
    }

    /// Keeps `answer` for `key` at `v`, unless the counter moved on meanwhile.
    fn put(&self, key: &str, v: u64, answer: Arc<Answer>) {
        let mut st = self.lock();
        if st.version != Some(v) || st.answers.contains_key(key) {
            return;
        }
        let size = answer.body.len() + key.len();
        if size > BUDGET {
            return;
        }
        if st.bytes + size > BUDGET || st.answers.len() >= MAX_ANSWERS {
            st.answers.clear();
            st.bytes = 0;
        }
        st.answers.insert(key.to_string(), answer);
        st.bytes += size;
    }

    /// The answer of a list endpoint: kept (see the module comment) or from `fetch`, which reads
    /// `store` and must depend on nothing but the request's path and query.
    pub async fn page<T, F>(
        &self,
        req: &HttpRequest,
        store: &Store,
        fetch: F,
    ) -> Result<HttpResponse, ApiError>
    where
        T: Serialize,
        F: AsyncFnOnce() -> Result<Page<T>, ApiError>,
    {
        let read = async || {
            let page = fetch().await?;
            Ok((to_json(&page.items)?, page.next))
        };
        self.keep(req, reading(req, store), read).await
    }

    /// The JSON answer of a `GET` of one thing, as [`Pages::page`].
    pub async fn json<T, F>(
        &self,
        req: &HttpRequest,
        store: &Store,
        fetch: F,
    ) -> Result<HttpResponse, ApiError>
    where
        T: Serialize,
        F: AsyncFnOnce() -> Result<T, ApiError>,
    {
        let read = async || Ok((to_json(&fetch().await?)?, None));
        self.keep(req, reading(req, store), read).await
    }

    /// The answer kept for the request at counter `version`, or the one `read` gives (kept
    /// when there is a counter).
    async fn keep<F>(
        &self,
        req: &HttpRequest,
        version: Option<u64>,
        read: F,
    ) -> Result<HttpResponse, ApiError>
    where
        F: AsyncFnOnce() -> Result<(Bytes, Option<i64>), ApiError>,
    {
        let respond = |a: &Answer| super::page::answer(req, a.next, a.body.clone());
        let key = format!("{}?{}", req.path(), req.query_string());
        let v = version.filter(|_| key.len() <= MAX_KEY);
        let Some((v, flight)) = v.and_then(|v| {
            if let Some(a) = self.get(&key, v) {
                return Some((v, Err(a)));
            }
            self.flight(&key, v).map(|f| (v, Ok(f)))
        }) else {
            let (body, next) = read().await?;
            return Ok(respond(&Answer { body, next }));
        };
        let flight = match flight {
            Err(kept) => return Ok(respond(&kept)),
            Ok(f) => f,
        };
        let _landing = Landing {
            pages: self,
            key: &key,
            flight: &flight,
        };
        let got = flight
            .get_or_init(async || {
                let (body, next) = read().await?;
                Ok(Arc::new(Answer { body, next }))
            })
            .await
            .clone();
        let got = got?;
        self.put(&key, v, got.clone());
        Ok(respond(&got))
    }
}

/// `value` as a JSON body.
fn to_json<T: Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        tracing::error!(error = %e, "cannot write an answer as JSON");
        ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot write the answer as JSON",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answer(n: usize) -> Arc<Answer> {
        Arc::new(Answer {
            body: Bytes::from(vec![b'x'; n]),
            next: None,
        })
    }

    fn get_req(uri: &str) -> HttpRequest {
        actix_web::test::TestRequest::get()
            .uri(uri)
            .to_http_request()
    }

    /// `keep` of `uri` at `version`, counting the store reads in `reads`.
    async fn keep(
        p: &Pages,
        uri: &str,
        version: Option<u64>,
        reads: &AtomicUsize,
        body: &'static str,
    ) -> Result<String, ApiError> {
        let res = p
            .keep(&get_req(uri), version, async || {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                if body.is_empty() {
                    return Err(ApiError::not_found("no such page"));
                }
                Ok((Bytes::from_static(body.as_bytes()), Some(7)))
            })
            .await?;
        assert_eq!(
            res.headers()
                .get("x-next-cursor")
                .map(|h| h.to_str().unwrap()),
            Some("7")
        );
        assert_eq!(
            res.headers()
                .get("content-type")
                .map(|h| h.to_str().unwrap()),
            Some("application/json")
        );
        let b = res.into_body().try_into_bytes().ok().unwrap();
        Ok(String::from_utf8(b.to_vec()).unwrap())
    }

    #[actix_web::test]
    async fn an_answer_is_read_once_per_counter_and_page() {
        let (p, reads) = (Pages::default(), AtomicUsize::new(0));
        assert_eq!(keep(&p, "/a", Some(1), &reads, "[1]").await.unwrap(), "[1]");
        assert_eq!(keep(&p, "/a", Some(1), &reads, "[2]").await.unwrap(), "[1]");
        assert_eq!(reads.load(Ordering::SeqCst), 1, "kept at the same counter");
        assert_eq!(
            keep(&p, "/a?x=1", Some(1), &reads, "[3]").await.unwrap(),
            "[3]"
        );
        assert_eq!(keep(&p, "/a", Some(2), &reads, "[4]").await.unwrap(), "[4]");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            3,
            "another page, another counter"
        );
        // An older reading reads the store and leaves the newer answers alone.
        assert_eq!(keep(&p, "/a", Some(1), &reads, "[5]").await.unwrap(), "[5]");
        assert_eq!(keep(&p, "/a", Some(2), &reads, "[6]").await.unwrap(), "[4]");
        // No counter (MySQL): read every time.
        for _ in 0..2 {
            keep(&p, "/a", None, &reads, "[7]").await.unwrap();
        }
        assert_eq!(reads.load(Ordering::SeqCst), 6);
        // A key longer than MAX_KEY is never kept.
        let long = format!("/a?after={}1", "0".repeat(MAX_KEY));
        for _ in 0..2 {
            keep(&p, &long, Some(2), &reads, "[8]").await.unwrap();
        }
        assert_eq!(reads.load(Ordering::SeqCst), 8);
    }

    #[actix_web::test]
    async fn requests_missing_one_page_together_share_one_read_and_errors_are_not_kept() {
        let (p, reads) = (Pages::default(), AtomicUsize::new(0));
        let all =
            futures::future::join_all((0..20).map(|_| keep(&p, "/a", Some(1), &reads, "[1]")))
                .await;
        assert!(all.iter().all(|r| r.as_deref() == Ok("[1]")), "{all:?}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(p.lock().flights.is_empty(), "no flight left behind");
        let errs =
            futures::future::join_all((0..5).map(|_| keep(&p, "/b", Some(1), &reads, ""))).await;
        assert!(errs
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.status == 404)));
        assert_eq!(reads.load(Ordering::SeqCst), 2, "the error was shared");
        assert_eq!(keep(&p, "/b", Some(1), &reads, "[2]").await.unwrap(), "[2]");
        assert_eq!(reads.load(Ordering::SeqCst), 3, "but not kept");
        assert!(p.lock().flights.is_empty());
    }

    #[test]
    fn the_counter_wraps() {
        assert!(newer(2, 1));
        assert!(!newer(1, 2));
        assert!(!newer(5, 5));
        assert!(newer(0, 0xffff_ffff), "after the wrap");
        assert!(!newer(0xffff_ffff, 0));
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let p = Pages::default();
        let half = BUDGET / 2 + 1;
        for k in ["/a?", "/b?"] {
            assert!(p.flight(k, 1).is_some());
            p.put(k, 1, answer(half));
        }
        let st = p.lock();
        assert!(st.bytes <= BUDGET, "{} kept", st.bytes);
        assert_eq!(st.answers.len(), 1);
        drop(st);
        p.put("/big?", 1, answer(BUDGET + 1));
        assert!(p.get("/big?", 1).is_none(), "larger than the whole budget");
        // An answer read before a change is not kept after it.
        assert!(p.flight("/c?", 2).is_some());
        p.put("/a?", 1, answer(3));
        assert!(p.get("/a?", 1).is_none() && p.get("/a?", 2).is_none());
    }
}
