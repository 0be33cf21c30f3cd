//! The OpenAPI document of the REST API, generated from the handlers' `#[utoipa::path]`
//! attributes and the `kunlun-meta` types, served at `/v1/openapi.json` with Swagger UI at `/docs/`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    cluster_jobs, clusters, failovers, health, jobs, leader, machines, scale_jobs, tokens, xa,
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Kunlun cluster manager", description = "REST API of cluster-mgr. Errors are JSON {code, message} with stable snake_case codes: invalid_request, malformed_json, invalid_field (400), not_found (404), method_not_allowed (405), conflict (409), payload_too_large (413), internal (500), store_unavailable and shutting_down (503); unauthorized (401: no, unknown or revoked bearer token), forbidden and origin_not_allowed (403), host_not_allowed (421). Every route but /healthz needs `Authorization: Bearer <token>` with the role the README lists, except in open mode (loopback bind, no token ever created)."),
    paths(
        health::healthz, leader::show,
        machines::register, machines::list, machines::show, machines::update, machines::delete,
        clusters::list, clusters::show, clusters::shards, clusters::comp_nodes, clusters::shard, clusters::shard_nodes,
        cluster_jobs::create, cluster_jobs::delete,
        scale_jobs::add_shards, scale_jobs::delete_shard, scale_jobs::add_nodes, scale_jobs::delete_node,
        scale_jobs::add_comps, scale_jobs::delete_comp,
        jobs::list, jobs::show,
        xa::list, xa::resolve,
        failovers::status, failovers::list, failovers::show, failovers::switchover, failovers::no_switch,
        tokens::create, tokens::list, tokens::revoke, tokens::audit,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "machines", description = "Hosts the manager installs database instances on"),
        (name = "clusters", description = "Clusters, shards, storage and compute nodes"),
        (name = "jobs", description = "Long-running work"),
        (name = "ha", description = "Shard high availability: health, failover records, switchover, no-switch"),
        (name = "xa", description = "In-doubt 2PC branches: listing and resolution by hand"),
        (name = "auth", description = "API tokens (admin) and the audit trail of mutating requests"),
        (name = "health", description = "Liveness of the daemon and its metadata store; leadership among managers sharing it"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme every route but `/healthz` needs.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`kl_...` token; roles viewer < operator < admin (README \"Security\")",
                    ))
                    .build(),
            ),
        );
    }
}
