//! Leadership over HTTP: `GET /v1/leader` (who leads, at which epoch, this instance's role),
//! and [`Leading`], the extractor that hands HA and XA handlers the current leadership
//! [`Term`] (the actors running here). Handlers that only read or write rows take the
//! always-on engine (`web::Data<ClusterManager>`) instead.
//!
//! Invariant: every instance answers; a route that needs the term answers 503 on a follower
//! (the actors run on the leader only), never a stale view of an earlier term and never the
//! engine in its place.

use std::future::{ready, Ready};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use kunlun_core::leader::{LeaderConfig, LeaderState};
use kunlun_core::{ClusterManager, Term};
use serde::Serialize;
use tokio::sync::watch;

use super::error::ApiError;

/// What the HTTP layer knows of leadership. `standalone` (no election: an embedding or a
/// test that runs the actors on one instance) acts as a leader of its own, whose one term
/// lives as long as the process.
#[derive(Clone)]
pub struct LeaderView {
    inner: Option<Arc<Inner>>,
    /// The standalone term: given, or made over the app's engine at the first request.
    standalone: Arc<std::sync::OnceLock<Term>>,
}

struct Inner {
    rx: watch::Receiver<LeaderState>,
    holder: String,
    ttl: Duration,
    renew_interval: Duration,
    /// The current leadership term while we lead.
    acting: RwLock<Option<Term>>,
}

impl LeaderView {
    /// No election runs: one term over the app's engine, made at the first request that
    /// needs it (with no actors: HA calls answer 503 as before the monitor starts).
    pub fn standalone() -> Self {
        LeaderView {
            inner: None,
            standalone: Arc::default(),
        }
    }

    /// No election runs, and `term` (whose actors the caller started) serves every request.
    pub fn standalone_with(term: Term) -> Self {
        let v = Self::standalone();
        let _ = v.standalone.set(term);
        v
    }

    /// The view of a running [`kunlun_core::leader::Leadership`].
    pub fn new(rx: watch::Receiver<LeaderState>, cfg: &LeaderConfig) -> Self {
        LeaderView {
            inner: Some(Arc::new(Inner {
                rx,
                holder: cfg.holder.clone(),
                ttl: cfg.ttl,
                renew_interval: cfg.renew_interval,
                acting: RwLock::new(None),
            })),
            standalone: Arc::default(),
        }
    }

    /// Sets (term started) or clears (term ended) the term running the actors.
    pub fn set_acting(&self, m: Option<Term>) {
        if let Some(i) = &self.inner {
            match i.acting.write() {
                Ok(mut g) => *g = m,
                Err(p) => *p.into_inner() = m,
            }
        }
    }

    /// The term running the actors now: the standalone one, or the leader's current term
    /// unless it is ending. `Err` says why there is none (503 `store_unavailable`, as before
    /// the monitor starts).
    fn term(&self, engine: Option<&ClusterManager>) -> Result<Term, kunlun_core::Error> {
        let Some(i) = &self.inner else {
            if let Some(t) = self.standalone.get() {
                return Ok(t.clone());
            }
            let engine = engine.ok_or_else(|| {
                kunlun_core::Error::Internal("no cluster manager in the app state".into())
            })?;
            return Ok(self
                .standalone
                .get_or_init(|| Term::standalone(engine))
                .clone());
        };
        let acting = match i.acting.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(t) = acting.filter(Term::is_running) {
            return Ok(t);
        }
        let role = i.rx.borrow().role();
        Err(kunlun_core::Error::Unavailable(if role == "leader" {
            "this instance's leadership term is starting or ending: retry in a moment; see \
             GET /v1/leader"
                .to_string()
        } else {
            format!(
                "this instance is not the leader ({role}): the shard HA monitor and XA recovery \
                 run on the leader only; see GET /v1/leader"
            )
        }))
    }

    /// The term running the actors here over `engine` (see [`Leading`]), or why there is none.
    pub fn term_for(&self, engine: &ClusterManager) -> Result<Term, kunlun_core::Error> {
        self.term(Some(engine))
    }

    /// `leader`, `follower`, `starting`, or `standalone`.
    pub fn role(&self) -> &'static str {
        match &self.inner {
            None => "standalone",
            Some(i) => i.rx.borrow().role(),
        }
    }

    /// The answer of `GET /v1/leader`.
    pub fn info(&self) -> LeaderInfo {
        let Some(i) = &self.inner else {
            return LeaderInfo {
                role: "standalone".into(),
                this_instance: None,
                leader: None,
                epoch: None,
                lease_secs: None,
                renew_secs: None,
            };
        };
        let state = i.rx.borrow().clone();
        let (leader, epoch) = match &state {
            LeaderState::Starting => (None, None),
            LeaderState::Leader { epoch } => (Some(i.holder.clone()), Some(*epoch)),
            LeaderState::Follower { leader, epoch } => (leader.clone(), *epoch),
        };
        LeaderInfo {
            role: state.role().into(),
            this_instance: Some(i.holder.clone()),
            leader,
            epoch,
            lease_secs: Some(i.ttl.as_secs_f64()),
            renew_secs: Some(i.renew_interval.as_secs_f64()),
        }
    }
}

/// Who leads the cluster managers sharing this metadata store, as this instance sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeaderInfo {
    /// This instance: `leader`, `follower`, `starting` (store not answered yet) or
    /// `standalone` (no election).
    pub role: String,
    /// This instance's lease holder id, `hostaddr:port/suffix`.
    pub this_instance: Option<String>,
    /// The lease holder leading, when known.
    pub leader: Option<String>,
    /// The lease's epoch (grows at every change of leader), when known.
    pub epoch: Option<i64>,
    /// `leader_lease_secs`.
    pub lease_secs: Option<f64>,
    /// How often the lease is renewed (a follower tries to take over as often).
    pub renew_secs: Option<f64>,
}

/// Who leads, at which epoch, and this instance's role.
#[utoipa::path(
    get, path = "/v1/leader", tag = "health",
    responses((status = 200, description = "Leadership as this instance sees it", body = LeaderInfo))
)]
pub async fn show(view: web::Data<LeaderView>) -> HttpResponse {
    HttpResponse::Ok().json(view.info())
}

/// The leadership term running on this instance (see [`LeaderView`]): HA status,
/// switchover, no-switch and XA go through it. On a follower, or while a term ends, the
/// extraction fails with 503 `store_unavailable` (the code a follower's HA routes have always
/// answered); `Option<Leading>` serves a route either way.
pub struct Leading(pub Term);

impl std::ops::Deref for Leading {
    type Target = Term;
    fn deref(&self) -> &Term {
        &self.0
    }
}

impl FromRequest for Leading {
    type Error = ApiError;
    type Future = Ready<Result<Leading, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let engine = req.app_data::<web::Data<ClusterManager>>();
        let term = match req.app_data::<web::Data<LeaderView>>() {
            Some(v) => v.term(engine.map(|e| e.get_ref())),
            // Every app registers a view (`http::app_with_auth`).
            None => Err(kunlun_core::Error::Internal(
                "no leadership view in the app state".into(),
            )),
        };
        ready(term.map(Leading).map_err(ApiError::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_reports_the_published_state() {
        let cfg = LeaderConfig::new("127.0.0.1", 8010, Duration::from_secs(6));
        let (tx, rx) = watch::channel(LeaderState::Starting);
        let v = LeaderView::new(rx, &cfg);
        assert_eq!(v.role(), "starting");
        tx.send_replace(LeaderState::Leader { epoch: 4 });
        let i = v.info();
        assert_eq!((i.role.as_str(), i.epoch), ("leader", Some(4)));
        assert_eq!(i.leader, Some(cfg.holder.clone()));
        assert_eq!(i.renew_secs, Some(2.0));
        tx.send_replace(LeaderState::Follower {
            leader: Some("other:1/x".into()),
            epoch: Some(5),
        });
        let i = v.info();
        assert_eq!(i.role, "follower");
        assert_eq!(i.leader.as_deref(), Some("other:1/x"));
        assert_eq!(LeaderView::standalone().info().role, "standalone");
    }

    #[actix_web::test]
    async fn only_a_running_term_is_handed_out_and_a_follower_gets_503() {
        let store = kunlun_meta::store::StoreConfig::mysql(
            vec!["127.0.0.1:1".into()],
            "u",
            "p",
            "kunlun_metadata_db",
        );
        let engine = ClusterManager::connect(kunlun_core::CoreConfig::default(), store);
        let cfg = LeaderConfig::new("127.0.0.1", 8010, Duration::from_secs(6));
        let (tx, rx) = watch::channel(LeaderState::Follower {
            leader: None,
            epoch: None,
        });
        let v = LeaderView::new(rx, &cfg);
        let refused = v.term(Some(&engine)).expect_err("a follower has no term");
        assert!(matches!(refused, kunlun_core::Error::Unavailable(_)));
        let status = actix_web::ResponseError::status_code(&ApiError::from(refused));
        assert_eq!(status.as_u16(), 503);

        tx.send_replace(LeaderState::Leader { epoch: 3 });
        let fence = kunlun_core::ha::TermFence {
            lease: cfg.lease_name.clone(),
            holder: cfg.holder.clone(),
            epoch: 3,
        };
        let term = Term::leader(&engine, fence, None);
        v.set_acting(Some(term.clone()));
        assert_eq!(
            v.term(Some(&engine)).expect("the leader's term").epoch(),
            Some(3)
        );
        term.shutdown(Duration::from_secs(1)).await;
        assert!(
            v.term(Some(&engine)).is_err(),
            "an ending term is not handed out"
        );

        let alone = LeaderView::standalone();
        let t = alone.term(Some(&engine)).expect("a standalone term");
        assert_eq!(t.epoch(), None);
        engine.shutdown(Duration::from_secs(1)).await;
    }
}
