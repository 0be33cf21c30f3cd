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
//! never kept; at most [`BUDGET`] bytes of bodies and [`MAX_ANSWERS`] answers are kept; when
//! several requests miss the same page at once, one reads the store and the others wait for its
//! answer (so a change does not send every client to the store together).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use kunlun_meta::api::Page;
use kunlun_meta::store::Store;
use serde::Serialize;

use super::error::ApiError;

/// Bytes of answer bodies kept at most.
pub const BUDGET: usize = 32 << 20;
/// Answers kept at most.
pub const MAX_ANSWERS: usize = 4096;

/// The shared cache of list answers (cheap to clone).
#[derive(Clone, Default)]
pub struct Pages {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The store's counter the kept answers belong to.
    version: u64,
    bytes: usize,
    answers: HashMap<String, Arc<Answer>>,
    /// Pages being read from the store at `version`: a request that misses one waits here.
    fills: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// One kept answer: the JSON array of the page and its cursor.
struct Answer {
    body: Bytes,
    next: Option<i64>,
}

impl State {
    /// Moves to counter `v`, dropping everything kept for another.
    fn at(&mut self, v: u64) {
        if self.version != v {
            self.version = v;
            self.bytes = 0;
            self.answers.clear();
            self.fills.clear();
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
        (st.version == v).then(|| st.answers.get(key).cloned())?
    }

    /// The lock a request that missed `key` at `v` takes before reading the store.
    fn fill(&self, key: &str, v: u64) -> Arc<tokio::sync::Mutex<()>> {
        let mut st = self.lock();
        st.at(v);
        st.fills.entry(key.to_string()).or_default().clone()
    }

    /// Keeps `answer` (when there is one: a failed read keeps nothing) for `key` at `v`,
    /// unless the counter moved on meanwhile, and drops the page's `fill` lock.
    fn put(
        &self,
        key: &str,
        v: u64,
        answer: Option<Arc<Answer>>,
        fill: &Arc<tokio::sync::Mutex<()>>,
    ) {
        let mut st = self.lock();
        if st.version != v {
            return;
        }
        if st.fills.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            st.fills.remove(key);
        }
        let Some(answer) = answer else { return };
        let size = answer.body.len();
        if size > BUDGET {
            return;
        }
        if st.bytes + size > BUDGET || st.answers.len() >= MAX_ANSWERS {
            st.answers.clear();
            st.bytes = 0;
        }
        if let Some(old) = st.answers.insert(key.to_string(), answer) {
            st.bytes -= old.body.len();
        }
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
        self.keep(req, store.data_version(), read).await
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
        self.keep(req, store.data_version(), read).await
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
        let Some(v) = version else {
            let (body, next) = read().await?;
            return Ok(respond(&Answer { body, next }));
        };
        let key = format!("{}?{}", req.path(), req.query_string());
        if let Some(a) = self.get(&key, v) {
            return Ok(respond(&a));
        }
        let fill = self.fill(&key, v);
        let _filling = fill.lock().await;
        if let Some(a) = self.get(&key, v) {
            return Ok(respond(&a));
        }
        let got = read()
            .await
            .map(|(body, next)| Arc::new(Answer { body, next }));
        self.put(&key, v, got.as_ref().ok().cloned(), &fill);
        Ok(respond(got?.as_ref()))
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

    fn answer(n: usize) -> Arc<Answer> {
        Arc::new(Answer {
            body: Bytes::from(vec![b'x'; n]),
            next: None,
        })
    }

    #[test]
    fn an_answer_is_served_only_at_its_counter() {
        let p = Pages::default();
        let f = p.fill("/a?", 7);
        p.put("/a?", 7, Some(answer(3)), &f);
        assert!(p.get("/a?", 7).is_some());
        assert!(p.get("/a?", 8).is_none(), "another counter");
        assert!(p.get("/b?", 7).is_none(), "another page");
        // A fill at a newer counter drops the old answers.
        let _ = p.fill("/b?", 8);
        assert!(p.get("/a?", 7).is_none());
        assert!(!p.lock().fills.contains_key("/a?"));
    }

    #[test]
    fn an_answer_read_before_a_change_is_not_kept_after_it() {
        let p = Pages::default();
        let f = p.fill("/a?", 7);
        // Another request saw the next counter while this one read the store.
        let _ = p.fill("/b?", 8);
        p.put("/a?", 7, Some(answer(3)), &f);
        assert!(p.get("/a?", 7).is_none());
        assert!(p.get("/a?", 8).is_none());
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let p = Pages::default();
        let half = BUDGET / 2 + 1;
        for k in ["/a?", "/b?"] {
            let f = p.fill(k, 1);
            p.put(k, 1, Some(answer(half)), &f);
        }
        let st = p.lock();
        assert!(st.bytes <= BUDGET, "{} kept", st.bytes);
        assert_eq!(st.answers.len(), 1);
        assert!(st.fills.is_empty(), "filled pages leave no lock behind");
        drop(st);
        let f = p.fill("/big?", 1);
        p.put("/big?", 1, Some(answer(BUDGET + 1)), &f);
        assert!(p.get("/big?", 1).is_none(), "larger than the whole budget");
        let f = p.fill("/err?", 1);
        p.put("/err?", 1, None, &f);
        assert!(p.get("/err?", 1).is_none());
        assert!(
            p.lock().fills.is_empty(),
            "a failed read leaves no lock behind"
        );
    }
}
