//! Which clusters this manager works on (`clusters_to_serve`): every cluster, or only those
//! listed. The actors a term runs (HA monitor, XA resolver, catalog sync, job runner) each
//! leave the clusters outside it alone; [`crate::ClusterManager::serves_cluster`] asks it.
//!
//! Invariant: the empty list means every cluster; a non-empty list holds at most
//! [`MAX_CLUSTERS`] distinct positive ids (checked where it is built, [`ClusterScope::only`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Most cluster ids one manager may be limited to.
pub const MAX_CLUSTERS: usize = 4096;

/// Every cluster, or only some; cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterScope {
    only: Option<Arc<BTreeSet<i64>>>,
}

impl ClusterScope {
    /// Every cluster (the default).
    pub fn all() -> Self {
        ClusterScope::default()
    }

    /// Only the clusters `ids`; an empty list means every cluster. Refuses ids that are not
    /// positive, repeated ids and more than [`MAX_CLUSTERS`] (`Invalid`, naming the value).
    pub fn only(ids: &[i64]) -> Result<Self> {
        if ids.is_empty() {
            return Ok(Self::all());
        }
        if ids.len() > MAX_CLUSTERS {
            return Err(Error::Invalid(format!(
                "clusters_to_serve: {} cluster ids, at most {MAX_CLUSTERS}",
                ids.len()
            )));
        }
        let mut set = BTreeSet::new();
        for &id in ids {
            if id <= 0 {
                return Err(Error::Invalid(format!(
                    "clusters_to_serve: {id} is not a cluster id (a positive integer)"
                )));
            }
            if !set.insert(id) {
                return Err(Error::Invalid(format!(
                    "clusters_to_serve: cluster {id} is listed twice"
                )));
            }
        }
        Ok(ClusterScope {
            only: Some(Arc::new(set)),
        })
    }

    /// Whether cluster `id` is served here.
    pub fn serves(&self, id: i64) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(&id))
    }

    /// Whether every cluster is served (no list).
    pub fn serves_all(&self) -> bool {
        self.only.is_none()
    }

    /// The listed ids, ascending (empty when every cluster is served).
    pub fn ids(&self) -> Vec<i64> {
        self.only
            .as_ref()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

impl std::fmt::Display for ClusterScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.only {
            None => f.write_str("all clusters"),
            Some(s) => {
                let ids: Vec<String> = s.iter().map(i64::to_string).collect();
                write!(f, "clusters {}", ids.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_serves_every_cluster_a_list_only_its_own() {
        let all = ClusterScope::all();
        assert!(all.serves(1) && all.serves(i64::MAX) && all.serves_all());
        assert_eq!(ClusterScope::only(&[]).unwrap(), all);
        let some = ClusterScope::only(&[7, 3]).unwrap();
        assert!(some.serves(3) && some.serves(7));
        assert!(!some.serves(4) && !some.serves_all());
        assert_eq!(some.ids(), vec![3, 7]);
        assert_eq!(some.to_string(), "clusters 3,7");
        assert_eq!(all.to_string(), "all clusters");
    }

    #[test]
    fn bad_lists_are_refused_by_name() {
        for (ids, says) in [
            (vec![0], "0 is not a cluster id"),
            (vec![-2], "-2 is not a cluster id"),
            (vec![5, 5], "cluster 5 is listed twice"),
        ] {
            let e = ClusterScope::only(&ids).expect_err("refused").to_string();
            assert!(e.contains(says), "{e}");
        }
        let many: Vec<i64> = (1..=(MAX_CLUSTERS as i64 + 1)).collect();
        let e = ClusterScope::only(&many).expect_err("too many").to_string();
        assert!(e.contains("at most"), "{e}");
        assert!(ClusterScope::only(&many[..MAX_CLUSTERS]).is_ok());
    }
}
