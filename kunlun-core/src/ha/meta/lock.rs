//! The metadata failover lock: `GET_LOCK` on a majority of the metadata shard's nodes.
//!
//! While the metadata primary is down nothing in the store can serialise managers (the leader
//! lease lives there too), so a manager fails the shard over only while it holds the named lock
//! [`LOCK_NAME`] on more than half of its nodes (the dead primary counted among them). Two
//! managers can never both hold a majority, whether the one acting is the leader or a standby
//! that took over after the leader's lease ran out.
//!
//! Invariants: the lock is tried without waiting (`GET_LOCK(…, 0)`) on every node at once,
//! each call under the storage client's deadlines; a manager that gets less than a majority
//! gives back what it got at once; the locks live in the connections of [`Majority`], so a
//! manager that dies loses them with its connections.

use kunlun_meta::model::MetaDbNode;

use super::{addr, all_at_once};
use crate::ha::promote::Login;
use crate::storage::{StorageConn, StorageOptions};

/// The name of the lock.
pub const LOCK_NAME: &str = "kunlun_meta_failover";

/// Locks needed among `nodes` nodes: more than half.
pub fn majority(nodes: usize) -> usize {
    nodes / 2 + 1
}

/// A held majority; [`Majority::release`] gives it back (dropping it closes the connections,
/// which releases it too).
pub struct Majority {
    conns: Vec<StorageConn>,
}

impl std::fmt::Debug for Majority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Majority({} nodes)", self.conns.len())
    }
}

impl Majority {
    /// How many nodes granted the lock.
    pub fn held(&self) -> usize {
        self.conns.len()
    }

    /// Releases the lock on every node that granted it.
    pub async fn release(self) {
        for mut c in self.conns {
            let _: Result<Vec<Option<i64>>, _> = c
                .query(&format!("SELECT RELEASE_LOCK('{LOCK_NAME}')"))
                .await;
            c.close().await;
        }
    }
}

async fn try_one(n: MetaDbNode, login: Login, opts: StorageOptions) -> Option<StorageConn> {
    let mut c = StorageConn::connect(&addr(&n, &login), opts).await.ok()?;
    let got: Vec<Option<i64>> = c
        .query(&format!("SELECT GET_LOCK('{LOCK_NAME}', 0)"))
        .await
        .ok()?;
    if got.first().copied().flatten() == Some(1) {
        Some(c)
    } else {
        c.close().await;
        None
    }
}

/// Takes the lock on a majority of `nodes`, or says how many granted it.
pub async fn take(
    nodes: &[MetaDbNode],
    login: &Login,
    opts: StorageOptions,
) -> Result<Majority, String> {
    let need = majority(nodes.len());
    let got: Vec<StorageConn> = all_at_once(
        nodes
            .iter()
            .cloned()
            .map(|n| try_one(n, login.clone(), opts)),
    )
    .await
    .into_iter()
    .flatten()
    .flatten()
    .collect();
    let m = Majority { conns: got };
    if m.held() >= need {
        Ok(m)
    } else {
        let held = m.held();
        m.release().await;
        Err(format!(
            "the metadata failover lock `{LOCK_NAME}` is held on {held} of {} nodes, {need} \
             needed (another manager is failing the shard over, or too few nodes answer)",
            nodes.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_is_more_than_half() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
        // Two disjoint sets of nodes can never both be a majority.
        for n in 1..10 {
            assert!(2 * majority(n) > n);
        }
    }
}
