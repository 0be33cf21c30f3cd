//! Prometheus metrics of the daemon and `GET /metrics` (text exposition format).
//!
//! Invariant: metrics live in the daemon's own `Registry` (no global default registry), so
//! several daemons in one test process do not share counters. Request labels use the matched
//! route pattern (`/v1/machines/{id}`), never the raw path, and the method only when it is a
//! standard one (anything else is `other`), to keep cardinality bounded.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The daemon's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    store_up: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("kunlun_cluster_mgr".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request, by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        )?;
        let store_up = IntGauge::new(
            "meta_store_up",
            "1 if the metadata store answered its last ping, else 0",
        )?;
        let build = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "Version of the running cluster-mgr (always 1)",
            ),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(store_up.clone()))?;
        registry.register(Box::new(build))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            store_up,
        })
    }

    /// Records whether the store answered.
    pub fn set_store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Middleware (`from_fn`) counting every request and timing it.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method()).to_string();
    let start = Instant::now();
    let res = next.call(req).await;
    if let Some(m) = metrics {
        let status = match &res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        let seconds = start.elapsed().as_secs_f64();
        m.observe(&route, &method, status, seconds);
        tracing::debug!(%method, %route, status, ms = seconds * 1000.0, "request");
    }
    res
}

/// The metrics label of a method: a standard one by name, any invented one `other`.
fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// `GET /metrics`.
pub async fn get_metrics(
    metrics: web::Data<Metrics>,
    manager: web::Data<kunlun_core::ClusterManager>,
    term: Option<super::leader::Leading>,
) -> HttpResponse {
    metrics.set_store_up(manager.ping_store().await.is_ok());
    match metrics.render() {
        Ok(mut text) => {
            // XA counters always appear (zero on a follower); HA ones while the monitor runs.
            let xa = term.as_ref().map(|t| t.xa_stats()).unwrap_or_default();
            text.push_str(&super::xa::metrics_text(&xa));
            if let Some(ha) = term.as_ref().and_then(|t| t.ha_status().ok()) {
                text.push_str(&super::failovers::metrics_text(&ha));
            }
            if let Some(k) = term.as_ref().and_then(|t| t.keeper_status()) {
                text.push_str(&super::keeper::metrics_text(&k));
            }
            HttpResponse::Ok()
                .content_type(TextEncoder::new().format_type())
                .body(text)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}
