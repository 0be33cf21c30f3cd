//! The leadership lease (`kl_leader_lease`): one row per lease name, taken over only when
//! expired, renewed only by its holder, with an epoch that grows on every change of holder.
//!
//! Invariants: every change is a compare-and-swap on `(holder, epoch)`, so two managers can
//! never both believe they hold the same epoch; time is the database server's clock, so the
//! managers' own clocks do not matter.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::commit_log::server_now;
use crate::error::{Error, Result};
use crate::store::conn::{with_conn, ConnRef, Tx};
use crate::store::rows::LeaseRow;
use crate::store::schema::kl_leader_lease as lease;

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Grows by one whenever the holder changes; writes of a leader carry it as a fence.
    pub epoch: i64,
    /// UTC, by the database server's clock.
    pub expires_at: NaiveDateTime,
}

impl From<LeaseRow> for Lease {
    fn from(r: LeaseRow) -> Self {
        Lease {
            name: r.name,
            holder: r.holder,
            epoch: r.epoch,
            expires_at: r.expires_at,
        }
    }
}

/// The database server's clock as a UTC timestamp.
pub async fn server_time(tx: &mut Tx) -> Result<NaiveDateTime> {
    let secs = server_now(tx).await?;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.naive_utc())
        .ok_or_else(|| Error::Database(format!("server clock {secs} is out of range")))
}

/// The lease `name`, if it was ever taken.
pub async fn get(tx: &mut Tx, name: &str) -> Result<Option<Lease>> {
    let row = with_conn!(tx, c => lease::table
        .filter(lease::name.eq(name))
        .select(LeaseRow::as_select())
        .first::<LeaseRow>(c)
        .await
        .optional())?;
    Ok(row.map(Lease::from))
}

/// Takes (when free or expired) or renews (when `holder` has it) the lease for `ttl`.
/// Returns the lease when `holder` holds it afterwards, `None` when someone else does.
pub async fn acquire(
    tx: &mut Tx,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>> {
    let now = server_time(tx).await?;
    let ttl = chrono::Duration::from_std(ttl)
        .map_err(|_| Error::Invalid(format!("lease ttl {ttl:?} too long")))?;
    let until = now + ttl;
    let Some(cur) = get(tx, name).await? else {
        let row = LeaseRow {
            name: name.to_string(),
            holder: holder.to_string(),
            epoch: 1,
            expires_at: until,
        };
        return match with_conn!(tx, c => diesel::insert_into(lease::table).values(&row).execute(c).await)
        {
            Ok(_) => Ok(Some(row.into())),
            // Someone else created it first.
            Err(Error::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        };
    };
    let epoch = if cur.holder == holder {
        cur.epoch
    } else if cur.expires_at <= now {
        cur.epoch + 1
    } else {
        return Ok(None);
    };
    let n = with_conn!(tx, c => diesel::update(
            lease::table
                .filter(lease::name.eq(name))
                .filter(lease::holder.eq(&cur.holder))
                .filter(lease::epoch.eq(cur.epoch))
                // A renew keeps holder and epoch: only the expiry tells that it happened since
                // our read (two takers of an expired lease must not both win).
                .filter(lease::expires_at.eq(cur.expires_at)),
        )
        .set((lease::holder.eq(holder), lease::epoch.eq(epoch), lease::expires_at.eq(until)))
        .execute(c)
        .await)?;
    Ok((n == 1).then(|| Lease {
        name: name.to_string(),
        holder: holder.to_string(),
        epoch,
        expires_at: until,
    }))
}

/// Whether `holder` still holds the lease at `epoch` and it has not expired (a write fence).
pub async fn holds(tx: &mut Tx, name: &str, holder: &str, epoch: i64) -> Result<bool> {
    let now = server_time(tx).await?;
    Ok(get(tx, name)
        .await?
        .is_some_and(|l| l.holder == holder && l.epoch == epoch && l.expires_at > now))
}

/// Like [`holds`], as a write fence inside a write transaction: on MySQL the lease row is
/// read `FOR UPDATE`, so no other manager can take the lease over until this transaction
/// ends (SQLite write transactions are serial already). A leader's write that must not land
/// after its term ended checks this first, in the same transaction.
pub async fn fence(tx: &mut Tx, name: &str, holder: &str, epoch: i64) -> Result<bool> {
    fence_locked(tx, name, holder, epoch, "FOR UPDATE").await
}

/// Like [`fence`], but the lease row is read with a shared lock on MySQL (`LOCK IN SHARE
/// MODE`): the holder's fenced writes do not queue behind one another, while a renew or a
/// takeover (an `UPDATE` of the row) still waits until this transaction ends. The check every
/// write of a fenced [`crate::store::Store`] makes first.
pub async fn fence_shared(tx: &mut Tx, name: &str, holder: &str, epoch: i64) -> Result<bool> {
    fence_locked(tx, name, holder, epoch, "LOCK IN SHARE MODE").await
}

/// The lease check of [`fence`] and [`fence_shared`]; `lock` is the MySQL locking clause used
/// inside a write transaction.
async fn fence_locked(
    tx: &mut Tx,
    name: &str,
    holder: &str,
    epoch: i64,
    lock: &'static str,
) -> Result<bool> {
    let now = server_time(tx).await?;
    let locking = tx.locking_reads();
    let r = match tx.conn_ref()? {
        ConnRef::Mysql(c) if locking => {
            diesel::sql_query(format!(
                "SELECT name, holder, epoch, expires_at FROM kl_leader_lease WHERE name = ? {lock}"
            ))
            .bind::<diesel::sql_types::Text, _>(name)
            .get_result::<LeaseRow>(c)
            .await
        }
        ConnRef::Mysql(c) => {
            lease::table
                .filter(lease::name.eq(name))
                .select(LeaseRow::as_select())
                .first::<LeaseRow>(c)
                .await
        }
        ConnRef::Sqlite(c) => {
            lease::table
                .filter(lease::name.eq(name))
                .select(LeaseRow::as_select())
                .first::<LeaseRow>(c)
                .await
        }
    };
    let row = tx.check(r.optional())?;
    Ok(row.is_some_and(|l| l.holder == holder && l.epoch == epoch && l.expires_at > now))
}

/// Gives the lease up at once (it expires now); false if `holder` did not hold it at `epoch`.
pub async fn release(tx: &mut Tx, name: &str, holder: &str, epoch: i64) -> Result<bool> {
    let now = server_time(tx).await?;
    let n = with_conn!(tx, c => diesel::update(
            lease::table
                .filter(lease::name.eq(name))
                .filter(lease::holder.eq(holder))
                .filter(lease::epoch.eq(epoch)),
        )
        .set(lease::expires_at.eq(now))
        .execute(c)
        .await)?;
    Ok(n == 1)
}
