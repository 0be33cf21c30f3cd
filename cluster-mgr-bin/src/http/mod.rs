//! The HTTP API of the daemon: one route table ([`app`]), extractor settings that turn every
//! bad request into a JSON [`error::ApiError`], and the request metrics middleware.
//!
//! Invariant: every response this app produces for an error — unknown route, bad JSON, bad
//! path or query, failed call — is JSON `{code, message}`; never actix's plain-text errors.

pub mod access;
pub mod auth;
pub mod backup_schedule;
pub mod backup_storages;
pub mod backups;
pub mod body;
pub mod cache;
pub mod cluster_jobs;
pub mod clusters;
pub mod error;
pub mod failovers;
pub mod health;
pub mod instances;
pub mod jobs;
pub mod keeper;
pub mod leader;
pub mod limit;
pub mod machines;
pub mod meta;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod policy;
pub mod scale_jobs;
pub mod session;
pub mod tokens;
pub mod xa;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{middleware, web, App};
use kunlun_core::ClusterManager;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::{Auth, AuthSettings};
pub use leader::LeaderView;
pub use metrics::Metrics;

/// Largest JSON body accepted.
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub manager: ClusterManager,
    pub metrics: Metrics,
    /// List answers kept while the store is unchanged ([`cache`]).
    pub pages: cache::Pages,
}

/// The whole application with no leader election: one standalone term over the state's engine
/// for this app (made at its first request), with no actors unless the caller starts them on
/// it and passes it with [`LeaderView::standalone_with`] to [`app_with_leader`].
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_with_leader(state, LeaderView::standalone())
}

/// The whole application with a leadership view, authenticated like a loopback daemon with
/// `auth = auto` (open until a token exists).
pub fn app_with_leader(
    state: AppState,
    leader: LeaderView,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_with_auth(state, leader, Auth::new(AuthSettings::loopback()))
}

/// The whole application: state, leadership view, authentication, extractor error handlers,
/// middleware and the route table.
pub fn app_with_auth(
    state: AppState,
    leader: LeaderView,
    auth: Auth,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state.manager))
        .app_data(web::Data::new(state.metrics))
        .app_data(web::Data::new(state.pages))
        .app_data(web::Data::new(leader))
        .app_data(web::Data::new(limit::Limiter::new(limit::MAX_IN_FLIGHT)))
        .app_data(web::Data::new(auth))
        .app_data(
            web::JsonConfig::default()
                .limit(MAX_JSON_BODY)
                .error_handler(error::json_error),
        )
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        // Admission runs inside authentication (an unauthenticated burst takes no slot), and
        // both inside the metrics middleware, so refused requests are counted too.
        .wrap(middleware::from_fn(limit::admit))
        .wrap(middleware::from_fn(auth::check))
        .wrap(middleware::from_fn(metrics::track))
        .configure(routes)
        .configure(crate::ui::routes)
        .service(SwaggerUi::new("/docs/{_:.*}").url("/v1/openapi.json", openapi::ApiDoc::openapi()))
        .default_service(web::to(error::route_not_found))
}

/// The route table.
fn routes(cfg: &mut web::ServiceConfig) {
    // `allow`: the methods routed below on that path, sent as `Allow` with a 405 for any other
    // (RFC 9110 15.5.6); the API tests hold them to the OpenAPI document.
    let resource = |path: &str, allow: &'static str| {
        web::resource(path).default_service(web::to(move |req: actix_web::HttpRequest| {
            error::method_not_allowed(req, allow)
        }))
    };
    cfg.service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(resource("/metrics", "GET").route(web::get().to(metrics::get_metrics)))
        .service(resource("/v1/leader", "GET").route(web::get().to(leader::show)))
        .service(resource("/v1/meta", "GET").route(web::get().to(meta::show)))
        .service(
            resource("/v1/machines", "GET, POST")
                .route(web::get().to(machines::list))
                .route(web::post().to(machines::register)),
        )
        .service(
            resource("/v1/machines/{id}", "GET, PATCH, DELETE")
                .route(web::get().to(machines::show))
                .route(web::patch().to(machines::update))
                .route(web::delete().to(machines::delete)),
        )
        .service(
            resource("/v1/backup_storages", "GET, POST")
                .route(web::get().to(backup_storages::list))
                .route(web::post().to(backup_storages::add)),
        )
        .service(
            resource("/v1/backup_storages/{name}", "GET, DELETE")
                .route(web::get().to(backup_storages::show))
                .route(web::delete().to(backup_storages::delete)),
        )
        .service(
            resource("/v1/clusters", "GET, POST")
                .route(web::get().to(clusters::list))
                .route(web::post().to(cluster_jobs::create)),
        )
        .service(
            resource("/v1/clusters/{id}", "GET, DELETE")
                .route(web::get().to(clusters::show))
                .route(web::delete().to(cluster_jobs::delete)),
        )
        .service(
            resource("/v1/clusters/{id}/policy", "GET, PATCH")
                .route(web::get().to(policy::show))
                .route(web::patch().to(policy::update)),
        )
        .service(
            resource("/v1/clusters/{id}/shards", "GET, POST")
                .route(web::get().to(clusters::shards))
                .route(web::post().to(scale_jobs::add_shards)),
        )
        .service(
            resource("/v1/clusters/{id}/shards/{shard_id}", "DELETE")
                .route(web::delete().to(scale_jobs::delete_shard)),
        )
        .service(
            resource("/v1/clusters/{id}/shards/{shard_id}/nodes", "POST")
                .route(web::post().to(scale_jobs::add_nodes)),
        )
        .service(
            resource(
                "/v1/clusters/{id}/shards/{shard_id}/nodes/{node_id}",
                "DELETE",
            )
            .route(web::delete().to(scale_jobs::delete_node)),
        )
        .service(
            resource("/v1/clusters/{id}/comp_nodes", "GET, POST")
                .route(web::get().to(clusters::comp_nodes))
                .route(web::post().to(scale_jobs::add_comps)),
        )
        .service(
            resource("/v1/clusters/{id}/comp_nodes/{comp_id}", "DELETE")
                .route(web::delete().to(scale_jobs::delete_comp)),
        )
        .service(resource("/v1/shards/{id}", "GET").route(web::get().to(clusters::shard)))
        .service(
            resource("/v1/shards/{id}/nodes", "GET").route(web::get().to(clusters::shard_nodes)),
        )
        .service(resource("/v1/clusters/{id}/xa", "GET").route(web::get().to(xa::list)))
        .service(
            resource("/v1/clusters/{id}/xa/{xid}/resolve", "POST")
                .route(web::post().to(xa::resolve)),
        )
        .service(
            resource("/v1/instances/{instance}/stop", "POST")
                .route(web::post().to(instances::stop)),
        )
        .service(
            resource("/v1/instances/{instance}/start", "POST")
                .route(web::post().to(instances::start)),
        )
        .service(
            resource("/v1/instances/{instance}/restart", "POST")
                .route(web::post().to(instances::restart)),
        )
        .service(
            resource("/v1/instances/{instance}/rebuild", "POST")
                .route(web::post().to(instances::rebuild)),
        )
        .service(
            resource("/v1/clusters/{id}/backups", "POST").route(web::post().to(backups::create)),
        )
        .service(
            resource("/v1/clusters/{id}/restore", "POST")
                .route(web::post().to(backups::restore_into)),
        )
        .service(
            resource("/v1/clusters/{id}/backup_schedule", "GET, PUT, DELETE")
                .route(web::get().to(backup_schedule::show))
                .route(web::put().to(backup_schedule::set))
                .route(web::delete().to(backup_schedule::delete)),
        )
        .service(resource("/v1/backups", "GET").route(web::get().to(backups::list)))
        .service(
            resource("/v1/backups/{id}", "GET, DELETE")
                .route(web::get().to(backups::show))
                .route(web::delete().to(backups::delete)),
        )
        .service(
            resource("/v1/backups/{id}/restore", "POST").route(web::post().to(backups::restore)),
        )
        .service(resource("/v1/backups/{id}/archive", "GET").route(web::get().to(backups::archive)))
        .service(resource("/v1/backups/{id}/verify", "POST").route(web::post().to(backups::verify)))
        .service(resource("/v1/jobs", "GET").route(web::get().to(jobs::list)))
        .service(resource("/v1/jobs/{id}", "GET").route(web::get().to(jobs::show)))
        .service(resource("/v1/ha", "GET").route(web::get().to(failovers::status)))
        .service(resource("/v1/failovers", "GET").route(web::get().to(failovers::list)))
        .service(resource("/v1/failovers/{id}", "GET").route(web::get().to(failovers::show)))
        .service(
            resource("/v1/shards/{id}/switchover", "POST")
                .route(web::post().to(failovers::switchover)),
        )
        .service(
            resource("/v1/shards/{id}/no_switch", "POST")
                .route(web::post().to(failovers::no_switch)),
        )
        .service(
            resource("/v1/tokens", "GET, POST")
                .route(web::get().to(tokens::list))
                .route(web::post().to(tokens::create)),
        )
        .service(resource("/v1/tokens/{name}", "DELETE").route(web::delete().to(tokens::revoke)))
        .service(resource("/v1/audit", "GET").route(web::get().to(tokens::audit)))
        .service(
            resource(crate::emit::PATH, "POST, OPTIONS")
                .app_data(web::PayloadConfig::new(crate::emit::MAX_BODY))
                .route(web::post().to(crate::emit::emit))
                .route(web::method(actix_web::http::Method::OPTIONS).to(crate::emit::preflight)),
        );
}
