//! Keeping failover records in the metadata store (`kl_failover`) so the history outlives the
//! daemon: conversion between [`FailoverRecord`] and its row, and the store calls with a
//! deadline.
//!
//! Invariant: a record is stored once, when its attempt has ended, and gets the store's id;
//! when the store cannot take it, the record stays in memory only under an id at or above
//! [`MEMORY_ID_BASE`], which no stored record reaches, so ids never clash.

use std::time::Duration;

use kunlun_meta::store::repo::failovers::{self as repo_fo, FailoverRow};
use kunlun_meta::store::Store;

use super::failover::{
    ErrantFollower, FailoverKind, FailoverRecord, FollowerIssue, Outcome, Phase,
};
use crate::error::{Error, Result};

/// First id of a record the store could not take.
pub const MEMORY_ID_BASE: u64 = 1 << 53;

/// Longest wait for one store call of the monitor (it must not stall probing).
const STORE_DEADLINE: Duration = Duration::from_secs(5);

fn kind_str(k: FailoverKind) -> &'static str {
    match k {
        FailoverKind::Automatic => "automatic",
        FailoverKind::Switchover => "switchover",
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Promoted => "promoted",
        Outcome::Refused => "refused",
        Outcome::Failed => "failed",
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `phases` column: the plain array of phases, or, when the record names followers or
/// unproven fences, an object `{phases, errant_followers, not_replicating, fence_unproven}`.
/// Kept in the one JSON column so these lists need no schema change; rows written before
/// them (plain arrays) still read.
#[derive(serde::Serialize, serde::Deserialize)]
struct PhasesColumn {
    phases: serde_json::Value,
    #[serde(default)]
    errant_followers: Vec<ErrantFollower>,
    #[serde(default)]
    not_replicating: Vec<FollowerIssue>,
    #[serde(default)]
    fence_unproven: Vec<FollowerIssue>,
}

/// The row of a record (its id is not part of an insert).
pub fn to_row(r: &FailoverRecord) -> FailoverRow {
    let plain = r.errant_followers.is_empty()
        && r.not_replicating.is_empty()
        && r.fence_unproven.is_empty();
    let phases = if plain {
        serde_json::to_string(&r.phases)
    } else {
        serde_json::to_string(&PhasesColumn {
            phases: serde_json::to_value(&r.phases).unwrap_or_default(),
            errant_followers: r.errant_followers.clone(),
            not_replicating: r.not_replicating.clone(),
            fence_unproven: r.fence_unproven.clone(),
        })
    }
    .unwrap_or_else(|_| "[]".into());
    FailoverRow {
        id: i64_of(r.id),
        cluster_id: r.cluster_id,
        shard_id: r.shard_id,
        kind: kind_str(r.kind).into(),
        started_at: r.started_at.naive_utc(),
        old_primary: r.old_primary,
        new_primary: r.new_primary,
        outcome: outcome_str(r.outcome).into(),
        proven_lossless: i64::from(r.proven_lossless),
        possible_loss: r.possible_loss.clone(),
        reason: r.reason.clone(),
        fence: r.fence.clone(),
        phases,
        old_primary_fate: r.old_primary_fate.clone(),
        total_ms: i64_of(r.total_ms),
    }
}

/// The record of a stored row; text that does not parse is a database error naming it.
pub fn from_row(r: FailoverRow) -> Result<FailoverRecord> {
    let bad = |what: &str, v: &str| Error::Internal(format!("stored kl_failover.{what} '{v}'"));
    let kind = match r.kind.as_str() {
        "automatic" => FailoverKind::Automatic,
        "switchover" => FailoverKind::Switchover,
        other => return Err(bad("kind", other)),
    };
    let outcome = match r.outcome.as_str() {
        "promoted" => Outcome::Promoted,
        "refused" => Outcome::Refused,
        "failed" => Outcome::Failed,
        other => return Err(bad("outcome", other)),
    };
    let (phases, col) = match serde_json::from_str::<PhasesColumn>(&r.phases) {
        Ok(c) => (parse_phases(&c.phases.to_string()), Some(c)),
        Err(_) => (parse_phases(&r.phases), None),
    };
    let phases = phases.ok_or_else(|| bad("phases", &r.phases))?;
    let (errant_followers, not_replicating, fence_unproven) = match col {
        Some(c) => (c.errant_followers, c.not_replicating, c.fence_unproven),
        None => Default::default(),
    };
    Ok(FailoverRecord {
        errant_followers,
        not_replicating,
        fence_unproven,
        facts_bound: false,
        id: u64::try_from(r.id).map_err(|_| bad("id", &r.id.to_string()))?,
        cluster_id: r.cluster_id,
        shard_id: r.shard_id,
        kind,
        started_at: r.started_at.and_utc(),
        old_primary: r.old_primary,
        new_primary: r.new_primary,
        outcome,
        proven_lossless: r.proven_lossless != 0,
        possible_loss: r.possible_loss,
        reason: r.reason,
        fence: r.fence,
        phases,
        old_primary_fate: r.old_primary_fate,
        total_ms: u64::try_from(r.total_ms).unwrap_or(0),
    })
}

fn parse_phases(s: &str) -> Option<Vec<Phase>> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    v.as_array()?
        .iter()
        .map(|p| {
            Some(Phase {
                name: p.get("name")?.as_str()?.to_string(),
                ms: p.get("ms")?.as_u64()?,
                note: p.get("note").and_then(|n| n.as_str()).map(str::to_string),
            })
        })
        .collect()
}

async fn bounded<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(STORE_DEADLINE, f).await.map_err(|_| {
        Error::Unavailable(format!(
            "metadata store: no answer within {STORE_DEADLINE:?}"
        ))
    })?
}

/// Stores a finished record; returns the id the store gave it.
pub async fn insert(store: &Store, r: &FailoverRecord) -> Result<u64> {
    let row = to_row(r);
    let id =
        bounded(async { Ok(store.tx(async |tx| repo_fo::insert(tx, &row).await).await?) }).await?;
    u64::try_from(id).map_err(|_| Error::Internal(format!("kl_failover id {id} is negative")))
}

/// Sets the old primary's fate of a stored record.
pub async fn set_fate(store: &Store, id: u64, fate: &str) -> Result<()> {
    let id = i64_of(id);
    let fate = fate.to_string();
    bounded(async {
        Ok(store
            .tx(async |tx| repo_fo::set_fate(tx, id, &fate).await)
            .await?)
    })
    .await
}

/// Stored records, newest first, optionally of one shard, with ids below `before`: at most
/// `limit` (clamped to 1..=1001: the API's largest page and one more).
pub async fn list(
    store: &Store,
    shard_id: Option<i64>,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<FailoverRecord>> {
    // Memory-only ids (from 2^53) are above every stored one and pass as they are; only a
    // cursor beyond i64 (never an id) drops the bound.
    let before = before.and_then(|b| i64::try_from(b).ok());
    let limit = i64::try_from(limit).unwrap_or(repo_fo::MAX_ROWS);
    let rows = bounded(async {
        Ok(store
            .read(async |tx| repo_fo::list(tx, shard_id, before, limit).await)
            .await?)
    })
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// One stored record ([`Error::NotFound`] if unknown).
pub async fn get(store: &Store, id: u64) -> Result<FailoverRecord> {
    let not_found = || Error::NotFound {
        what: "failover",
        id: id.to_string(),
    };
    let id = i64::try_from(id).map_err(|_| not_found())?;
    let row =
        bounded(async { Ok(store.read(async |tx| repo_fo::get(tx, id).await).await?) }).await?;
    from_row(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_its_row() {
        let mut r = FailoverRecord::new(FailoverKind::Automatic, 1, 2, 3);
        r.id = 7;
        r.outcome = Outcome::Promoted;
        r.new_primary = Some(4);
        r.proven_lossless = true;
        r.fence = Some("process stopped over ssh".into());
        r.phases = vec![
            Phase {
                name: "detect".into(),
                ms: 3000,
                note: Some("3 failed probes".into()),
            },
            Phase {
                name: "promote".into(),
                ms: 12,
                note: None,
            },
        ];
        r.total_ms = 3012;
        // Stored timestamps keep microseconds at most.
        r.started_at = chrono::DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        let back = from_row(to_row(&r)).unwrap();
        assert_eq!(back, r);
        assert!(
            to_row(&r).phases.starts_with('['),
            "plain array when nothing to name"
        );

        r.errant_followers.push(ErrantFollower {
            node_id: 9,
            gtids: "0-9-..3".into(),
        });
        r.not_replicating.push(FollowerIssue {
            node_id: 8,
            why: "IO thread Connecting (error 1045: Access denied)".into(),
        });
        let back = from_row(to_row(&r)).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_row_that_does_not_parse_is_an_error_not_a_panic() {
        let mut row = to_row(&FailoverRecord::new(FailoverKind::Switchover, 1, 2, 3));
        row.phases = "not json".into();
        assert!(from_row(row.clone()).is_err());
        row.phases = "[]".into();
        row.kind = "sideways".into();
        assert!(from_row(row.clone()).is_err());
        row.kind = "switchover".into();
        row.outcome = "maybe".into();
        assert!(from_row(row).is_err());
    }
}
