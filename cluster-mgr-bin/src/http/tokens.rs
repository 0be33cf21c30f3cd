//! `/v1/tokens` (create, list, revoke API tokens) and `/v1/audit` (the audit trail), plus
//! [`create_token`], which the bootstrap command `cluster-mgr token create` shares.
//!
//! Invariant: a token's secret exists only in the answer to its creation; the store keeps its
//! SHA-256, and nothing here logs it.

use super::body::JsonObject;
use actix_web::{web, HttpResponse};
use kunlun_core::ClusterManager;
use kunlun_meta::api::ErrorBody;
use kunlun_meta::auth::{AuditEntry, AuditQuery, CreateToken, CreatedToken, Role, TokenInfo};
use kunlun_meta::store::repo;
use kunlun_meta::Store;

use super::auth::{new_secret, token_hash};
use super::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Creates a token named `name` with `role` and returns its secret (the only time it exists
/// outside the caller's hands).
pub async fn create_token(
    store: &Store,
    name: &str,
    role: Role,
) -> kunlun_meta::Result<CreatedToken> {
    kunlun_meta::validate::name("name", name)?;
    let secret = new_secret();
    let hash = token_hash(&secret);
    let info = store
        .tx(async |tx| repo::tokens::insert(tx, name, role, &hash).await)
        .await?;
    tracing::info!(token = %info.name, role = %info.role, "API token created");
    Ok(CreatedToken {
        name: info.name,
        role: info.role,
        token: secret,
    })
}

fn store(cm: &ClusterManager) -> Result<&Store> {
    cm.store().map_err(ApiError::from)
}

fn meta(e: kunlun_meta::Error) -> ApiError {
    ApiError::from(kunlun_core::Error::from(e))
}

/// Create an API token (admin). The answer holds the secret; it is shown this once.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "auth",
    request_body = CreateToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, body = ErrorBody),
        (status = 409, description = "The name is (or was) in use", body = ErrorBody),
    )
)]
pub async fn create(
    cm: web::Data<ClusterManager>,
    body: JsonObject<CreateToken>,
) -> Result<HttpResponse> {
    body.validate().map_err(meta)?;
    let t = create_token(store(&cm)?, &body.name, body.role)
        .await
        .map_err(meta)?;
    Ok(HttpResponse::Created().json(t))
}

/// List API tokens (admin), revoked ones included; never their secrets.
#[utoipa::path(
    get, path = "/v1/tokens", tag = "auth",
    responses((status = 200, body = Vec<TokenInfo>), (status = 503, body = ErrorBody))
)]
pub async fn list(cm: web::Data<ClusterManager>) -> Result<HttpResponse> {
    let list = store(&cm)?
        .read(async |tx| repo::tokens::list(tx).await)
        .await
        .map_err(meta)?;
    Ok(HttpResponse::Ok().json(list))
}

/// Revoke an API token (admin). It is refused from now on; its name stays taken.
#[utoipa::path(
    delete, path = "/v1/tokens/{name}", tag = "auth",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 204), (status = 404, body = ErrorBody))
)]
pub async fn revoke(
    cm: web::Data<ClusterManager>,
    name: web::Path<String>,
) -> Result<HttpResponse> {
    let name = name.into_inner();
    store(&cm)?
        .tx(async |tx| repo::tokens::revoke(tx, &name).await)
        .await
        .map_err(meta)?;
    tracing::info!(token = %name, "API token revoked");
    Ok(HttpResponse::NoContent().finish())
}

/// The audit trail (admin): mutating requests, newest first.
#[utoipa::path(
    get, path = "/v1/audit", tag = "auth",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ErrorBody))
)]
pub async fn audit(
    cm: web::Data<ClusterManager>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse> {
    let limit = q.limit().map_err(meta)?;
    let list = store(&cm)?
        .read(async |tx| repo::audit::list(tx, limit).await)
        .await
        .map_err(meta)?;
    Ok(HttpResponse::Ok().json(list))
}
