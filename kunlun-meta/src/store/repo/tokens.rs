//! API tokens (`kl_api_token`): name, role and the SHA-256 of the secret.
//!
//! Invariants: the secret itself is never stored or returned here (only its hash, computed by
//! the caller); a token is revoked by setting `revoked_at`, never deleted, so a name is never
//! reused and [`any_exists`] stays true once a token was created.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{conflict_as, now};
use crate::auth::{Role, TokenInfo};
use crate::error::{Error, Result};
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::kl_api_token as t;

#[derive(Queryable, Selectable)]
#[diesel(table_name = t, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
struct TokenRow {
    name: String,
    role: String,
    created_at: NaiveDateTime,
    last_used_at: Option<NaiveDateTime>,
    revoked_at: Option<NaiveDateTime>,
}

impl TryFrom<TokenRow> for TokenInfo {
    type Error = Error;
    fn try_from(r: TokenRow) -> Result<TokenInfo> {
        Ok(TokenInfo {
            role: r
                .role
                .parse::<Role>()
                .map_err(|e| Error::Database(format!("token {}: {e}", r.name)))?,
            name: r.name,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// Stores a new token; [`Error::Conflict`] when the name was ever used.
pub async fn insert(tx: &mut Tx, name: &str, role: Role, token_hash: &str) -> Result<TokenInfo> {
    crate::validate::name("name", name)?;
    let created_at = now();
    with_conn!(tx, c => diesel::insert_into(t::table)
        .values((
            t::name.eq(name),
            t::role.eq(role.as_str()),
            t::token_hash.eq(token_hash),
            t::created_at.eq(created_at),
        ))
        .execute(c)
        .await)
    .map_err(|e| conflict_as(e, || format!("a token named '{name}' exists (or existed)")))?;
    Ok(TokenInfo {
        name: name.to_string(),
        role,
        created_at,
        last_used_at: None,
        revoked_at: None,
    })
}

/// Every token, by name, revoked ones included.
pub async fn list(tx: &mut Tx) -> Result<Vec<TokenInfo>> {
    let rows = with_conn!(tx, c => t::table
        .order(t::name.asc())
        .select(TokenRow::as_select())
        .load::<TokenRow>(c)
        .await)?;
    rows.into_iter().map(TokenInfo::try_from).collect()
}

/// The token whose secret hashes to `token_hash`, revoked or not.
pub async fn find_by_hash(tx: &mut Tx, token_hash: &str) -> Result<Option<TokenInfo>> {
    let row = with_conn!(tx, c => t::table
        .filter(t::token_hash.eq(token_hash))
        .select(TokenRow::as_select())
        .first::<TokenRow>(c)
        .await
        .optional())?;
    row.map(TokenInfo::try_from).transpose()
}

/// Whether any token was ever created (revoked ones count).
pub async fn any_exists(tx: &mut Tx) -> Result<bool> {
    let n: i64 = with_conn!(tx, c => t::table.count().get_result(c).await)?;
    Ok(n > 0)
}

/// Revokes a token; [`Error::NotFound`] if no token has that name. Revoking twice keeps the
/// first time.
pub async fn revoke(tx: &mut Tx, name: &str) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(
            t::table.filter(t::name.eq(name)).filter(t::revoked_at.is_null()),
        )
        .set(t::revoked_at.eq(Some(now())))
        .execute(c)
        .await)?;
    if n == 0 {
        let exists: i64 =
            with_conn!(tx, c => t::table.filter(t::name.eq(name)).count().get_result(c).await)?;
        if exists == 0 {
            return Err(Error::not_found("token", name));
        }
    }
    Ok(())
}

/// Records that a token was used now.
pub async fn touch(tx: &mut Tx, name: &str) -> Result<()> {
    with_conn!(tx, c => diesel::update(t::table.filter(t::name.eq(name)))
        .set(t::last_used_at.eq(Some(now())))
        .execute(c)
        .await)?;
    Ok(())
}
