//! Leadership over HTTP: `GET /v1/leader` (who leads, at which epoch, this instance's role),
//! and [`Acting`], the extractor that hands HA, XA and job handlers the manager whose
//! background actors run (this leadership term's) instead of the always-on one that serves
//! reads.
//!
//! Invariant: every instance answers; a follower's HA routes answer 503 (the monitor runs on
//! the leader only), never a stale view of an earlier term.

use std::future::{ready, Ready};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use kunlun_core::leader::{LeaderConfig, LeaderState};
use kunlun_core::ClusterManager;
use serde::Serialize;
use tokio::sync::watch;

use super::error::ApiError;

/// What the HTTP layer knows of leadership. `standalone` (no election: an embedding or a
/// test that runs the actors on the one manager) acts as a leader of its own.
#[derive(Clone)]
pub struct LeaderView {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    rx: watch::Receiver<LeaderState>,
    holder: String,
    ttl: Duration,
    renew_interval: Duration,
    /// The manager of the current leadership term while we lead.
    acting: RwLock<Option<ClusterManager>>,
}

impl LeaderView {
    /// No election runs: the one manager does everything.
    pub fn standalone() -> Self {
        LeaderView { inner: None }
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
        }
    }

    /// Sets (term started) or clears (term ended) the manager running the actors.
    pub fn set_acting(&self, m: Option<ClusterManager>) {
        if let Some(i) = &self.inner {
            match i.acting.write() {
                Ok(mut g) => *g = m,
                Err(p) => *p.into_inner() = m,
            }
        }
    }

    /// The manager running the actors now, if it is not the main one.
    fn acting(&self) -> Option<ClusterManager> {
        let i = self.inner.as_ref()?;
        match i.acting.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
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

/// The manager whose background actors run (the leader's current term), else the main one:
/// HA status, switchover, no-switch, XA and job acceptance go through it (so an accepted job
/// wakes the leader's runner at once; on a follower it is a row the leader's runner polls).
pub struct Acting(pub ClusterManager);

impl std::ops::Deref for Acting {
    type Target = ClusterManager;
    fn deref(&self) -> &ClusterManager {
        &self.0
    }
}

impl FromRequest for Acting {
    type Error = ApiError;
    type Future = Ready<Result<Acting, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        // A term being shut down answers `shutting_down`; the main manager serves instead.
        let term = req
            .app_data::<web::Data<LeaderView>>()
            .and_then(|v| v.acting())
            .filter(|m| m.store().is_ok());
        let main = req
            .app_data::<web::Data<ClusterManager>>()
            .map(|m| m.get_ref().clone());
        ready(match term.or(main) {
            Some(m) => Ok(Acting(m)),
            None => Err(ApiError::from(kunlun_core::Error::Internal(
                "no cluster manager in the app state".into(),
            ))),
        })
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
}
