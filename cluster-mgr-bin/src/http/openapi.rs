//! The OpenAPI document of the REST API, generated from the handlers' `#[utoipa::path]`
//! attributes and the `kunlun-meta` types, served at `/v1/openapi.json` with Swagger UI at `/docs/`.
//!
//! Invariant: every status an operation can answer is listed on it, also those that come from
//! the layers in front of every handler ([`CommonAnswers`]: authentication, the `Host` check,
//! admission, extractors); the fuzz test (`tests/tests/api/api_fuzz.rs`, schemathesis) holds the
//! served answers to this document.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    backup_schedule, backup_storages, backups, cluster_jobs, clusters, failovers, health,
    instances, jobs, leader, machines, meta, policy, scale_jobs, tokens, xa,
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Kunlun cluster manager", description = "REST API of cluster-mgr. Errors are JSON {code, message} with stable snake_case codes: invalid_request, malformed_json, invalid_field (400), not_found (404), method_not_allowed (405), conflict (409), payload_too_large (413), internal (500), store_unavailable and shutting_down (503); unauthorized (401: no, unknown or revoked bearer token), forbidden and origin_not_allowed (403), host_not_allowed (421). Every route but /healthz needs `Authorization: Bearer <token>` with the role the README lists, except in open mode (loopback bind, no token ever created)."),
    paths(
        health::healthz, leader::show, meta::show,
        machines::register, machines::list, machines::show, machines::update, machines::delete,
        clusters::list, clusters::show, clusters::shards, clusters::comp_nodes, clusters::shard, clusters::shard_nodes,
        cluster_jobs::create, cluster_jobs::delete,
        policy::show, policy::update,
        backup_storages::add, backup_storages::list, backup_storages::show, backup_storages::delete,
        scale_jobs::add_shards, scale_jobs::delete_shard, scale_jobs::add_nodes, scale_jobs::delete_node,
        scale_jobs::add_comps, scale_jobs::delete_comp,
        instances::stop, instances::start, instances::restart, instances::rebuild,
        jobs::list, jobs::show,
        backups::create, backups::list, backups::show, backups::delete, backups::restore,
        backups::restore_into,
        backups::archive, backups::verify,
        backup_schedule::show, backup_schedule::set, backup_schedule::delete,
        xa::list, xa::resolve,
        failovers::status, failovers::list, failovers::show, failovers::switchover, failovers::no_switch,
        tokens::create, tokens::list, tokens::revoke, tokens::audit,
    ),
    modifiers(&BearerAuth, &CommonAnswers),
    security(("bearer" = [])),
    tags(
        (name = "machines", description = "Hosts the manager installs database instances on"),
        (name = "clusters", description = "Clusters, shards, storage and compute nodes"),
        (name = "jobs", description = "Long-running work"),
        (name = "backups", description = "Cluster backups: start one, the catalogue, removal, schedules and retention"),
        (name = "ha", description = "Shard high availability: health, failover records, switchover, no-switch"),
        (name = "xa", description = "In-doubt 2PC branches: listing and resolution by hand"),
        (name = "auth", description = "API tokens (admin) and the audit trail of mutating requests"),
        (name = "backup_storages", description = "Backup storages: where cluster backups are kept"),
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

/// Adds to every operation the answers of the layers every request passes before its handler
/// (authentication, `Host` check, admission, extractors), so the document lists every status a
/// client can get. `/healthz` needs no token and says so (empty security requirement).
struct CommonAnswers;

/// Whether a common answer applies to an operation (`open`: it needs no token).
type Applies = fn(&Operation, bool) -> bool;

/// `(status, description, applies)`: which operations get which common answer.
const COMMON: &[(&str, &str, Applies)] = &[
    (
        "400",
        "invalid_field / invalid_request / malformed_json: a path, query or body value is unusable",
        |op, _| op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some(),
    ),
    (
        "401",
        "unauthorized: no, unknown or revoked bearer token",
        |_, open| !open,
    ),
    (
        "403",
        "forbidden: the token's role is too low; origin_not_allowed: a browser `Origin` that is not the API's own",
        |_, open| !open,
    ),
    (
        "413",
        "payload_too_large: the body exceeds 256 KiB",
        |op, _| op.request_body.is_some(),
    ),
    (
        "415",
        "unsupported_media_type: a body that is not `application/json`",
        |op, _| op.request_body.is_some(),
    ),
    (
        "421",
        "host_not_allowed: the `Host` header names none of the configured names (DNS rebinding guard)",
        |_, _| true,
    ),
    (
        "503",
        "store_unavailable: the metadata store does not answer; overloaded: too many requests in flight (`Retry-After`); shutting_down",
        |_, open| !open,
    ),
];

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let open = path == "/healthz";
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                // The switchover body may be left out (the best replica), but when sent it is
                // an object: `null` is refused like any other wrong type.
                if path == "/v1/shards/{id}/switchover" {
                    if let Some(body) = op.request_body.as_mut() {
                        body.required = Some(Required::False);
                    }
                }
                if open {
                    op.security = Some(vec![SecurityRequirement::default()]);
                }
                for (status, description, applies) in COMMON {
                    if !applies(op, open) || op.responses.responses.contains_key(*status) {
                        continue;
                    }
                    let body = ContentBuilder::new()
                        .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
                        .build();
                    let answer = ResponseBuilder::new()
                        .description(*description)
                        .content("application/json", body)
                        .build();
                    op.responses
                        .responses
                        .insert(status.to_string(), RefOr::T(answer));
                }
            }
        }
    }
}
