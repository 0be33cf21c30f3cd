//! Shard failover records (`kl_failover`): one row per automatic failover, switchover or
//! refusal, with its per-phase timeline kept as JSON text, so the history outlives the daemon.
//!
//! Invariant: a row is written once with everything known at the end of the attempt; only
//! `old_primary_fate` changes afterwards (when the old primary returns). The row types live
//! here, not in `rows.rs`, because the record's domain type belongs to `kunlun-core`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::last_insert_id;
use crate::error::{Error, Result};
use crate::store::conn::{with_conn, Tx};
use crate::store::schema::kl_failover as fo;

/// Most rows [`list`] reads at once: the largest page of the API plus the one row that tells
/// whether more follow.
pub const MAX_ROWS: i64 = crate::api::MAX_PAGE_LIMIT as i64 + 1;

/// A stored failover record; `kind`, `outcome` and `phases` (a JSON array) are kept as the
/// caller's text.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = fo, check_for_backend(diesel::sqlite::Sqlite, diesel::mysql::Mysql))]
pub struct FailoverRow {
    pub id: i64,
    pub cluster_id: i64,
    pub shard_id: i64,
    pub kind: String,
    pub started_at: NaiveDateTime,
    pub old_primary: i64,
    pub new_primary: Option<i64>,
    pub outcome: String,
    /// 1 when the promoted replica provably held every acknowledged write, else 0.
    pub proven_lossless: i64,
    pub possible_loss: Option<String>,
    pub reason: Option<String>,
    pub fence: Option<String>,
    pub phases: String,
    pub old_primary_fate: Option<String>,
    pub total_ms: i64,
}

#[derive(Insertable)]
#[diesel(table_name = fo)]
struct NewRow<'a> {
    cluster_id: i64,
    shard_id: i64,
    kind: &'a str,
    started_at: NaiveDateTime,
    old_primary: i64,
    new_primary: Option<i64>,
    outcome: &'a str,
    proven_lossless: i64,
    possible_loss: Option<&'a str>,
    reason: Option<&'a str>,
    fence: Option<&'a str>,
    phases: &'a str,
    old_primary_fate: Option<&'a str>,
    total_ms: i64,
}

/// Stores a record (its `id` is ignored) and returns the id the store gave it.
pub async fn insert(tx: &mut Tx, r: &FailoverRow) -> Result<i64> {
    if r.kind.is_empty() || r.outcome.is_empty() {
        return Err(Error::Invalid(
            "failover record: kind and outcome must not be empty".into(),
        ));
    }
    let row = NewRow {
        cluster_id: r.cluster_id,
        shard_id: r.shard_id,
        kind: &r.kind,
        started_at: r.started_at,
        old_primary: r.old_primary,
        new_primary: r.new_primary,
        outcome: &r.outcome,
        proven_lossless: r.proven_lossless,
        possible_loss: r.possible_loss.as_deref(),
        reason: r.reason.as_deref(),
        fence: r.fence.as_deref(),
        phases: &r.phases,
        old_primary_fate: r.old_primary_fate.as_deref(),
        total_ms: r.total_ms,
    };
    with_conn!(tx, c => diesel::insert_into(fo::table).values(&row).execute(c).await)?;
    last_insert_id(tx).await
}

/// One record; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<FailoverRow> {
    let row = with_conn!(tx, c => fo::table
        .filter(fo::id.eq(id))
        .select(FailoverRow::as_select())
        .first::<FailoverRow>(c)
        .await
        .optional())?;
    row.ok_or_else(|| Error::not_found("failover", id))
}

/// Records newest first, optionally of one shard and only those with an id below `before`
/// (the keyset cursor of the next page), at most `limit` (1..=[`MAX_ROWS`]). Served by
/// the primary key, or the `(shard_id, id)` index for one shard.
pub async fn list(
    tx: &mut Tx,
    shard_id: Option<i64>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<FailoverRow>> {
    let limit = limit.clamp(1, MAX_ROWS);
    with_conn!(tx, c => {
        let mut b = fo::table
            .select(FailoverRow::as_select())
            .order(fo::id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(s) = shard_id {
            b = b.filter(fo::shard_id.eq(s));
        }
        if let Some(id) = before {
            b = b.filter(fo::id.lt(id));
        }
        b.load::<FailoverRow>(c).await
    })
}

/// Sets the old primary's fate of record `id`; [`Error::NotFound`] if unknown.
pub async fn set_fate(tx: &mut Tx, id: i64, fate: &str) -> Result<()> {
    let n = with_conn!(tx, c => diesel::update(fo::table.filter(fo::id.eq(id)))
        .set(fo::old_primary_fate.eq(Some(fate)))
        .execute(c)
        .await)?;
    if n == 0 {
        return Err(Error::not_found("failover", id));
    }
    Ok(())
}
