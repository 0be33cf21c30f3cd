//! The audit trail (`kl_audit`): one row per mutating API request.
//!
//! Invariant: rows are only appended; the path is cut to 1024 characters and the other text
//! fields are bounded by the caller (method, client address), so a request cannot grow a row
//! without bound.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::now;
use crate::auth::{AuditEntry, NewAuditEntry};
use crate::error::Result;
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::kl_audit as a;

/// Longest path kept.
pub const MAX_AUDIT_PATH: usize = 1024;

#[derive(Queryable, Selectable)]
#[diesel(table_name = a, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
struct AuditRow {
    id: i64,
    at: NaiveDateTime,
    token_name: Option<String>,
    method: String,
    path: String,
    client: String,
    status: i64,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends one entry.
pub async fn insert(tx: &mut Tx, e: &NewAuditEntry) -> Result<()> {
    with_conn!(tx, c => diesel::insert_into(a::table)
        .values((
            a::at.eq(now()),
            a::token_name.eq(e.token_name.as_deref()),
            a::method.eq(cut(&e.method, 16)),
            a::path.eq(cut(&e.path, MAX_AUDIT_PATH)),
            a::client.eq(cut(&e.client, 64)),
            a::status.eq(e.status),
        ))
        .execute(c)
        .await)?;
    Ok(())
}

/// The newest `limit` entries, newest first.
pub async fn list(tx: &mut Tx, limit: i64) -> Result<Vec<AuditEntry>> {
    let rows = with_conn!(tx, c => a::table
        .order(a::id.desc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load::<AuditRow>(c)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: r.at,
            token_name: r.token_name,
            method: r.method,
            path: r.path,
            client: r.client,
            status: r.status,
        })
        .collect())
}
