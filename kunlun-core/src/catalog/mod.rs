//! Compute-node topology push: writes each cluster's shards, storage nodes, primaries and the
//! metadata shard into every compute node's catalog (`kunlun_sys.pg_cluster_meta`,
//! `pg_cluster_meta_nodes`, `pg_shard`, `pg_shard_node` in database `postgres`) and keeps it
//! current ([`CatalogSync`] re-pushes after changes and failures).
//!
//! Invariants: what is written is computed by the pure [`desired_catalog`] from one metadata
//! snapshot; each compute node gets all of its cluster's rows in one transaction, so a compute
//! node sees the whole old topology or the whole new one; one unreachable compute node never
//! delays or fails the others (each is pushed in parallel, with connect and statement
//! deadlines); passwords never reach a log, a `Debug` or a serialised row.

mod facade;
mod pg;
mod push;
mod rows;
mod sync;

use std::time::Duration;

use kunlun_meta::tls::TlsSettings;

pub use facade::CompCatalog;
pub use pg::SCHEMA;
pub use push::{
    desired_for_cluster, push_cluster, read_catalog, user_objects, CompPush, PushReport,
};
pub use rows::{
    desired_catalog, ha_mode_code, CatalogRows, ClusterMetaRow, MetaNodeRow, MetaShardInfo,
    ShardNodeRow, ShardRow, StorageLogin,
};
pub use sync::{CatalogSync, CatalogSyncConfig};

/// Deadlines and TLS of the push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogOptions {
    /// Connecting and logging in to one compute node.
    pub connect_timeout: Duration,
    /// Each statement (also set as the session's `statement_timeout` on the server).
    pub statement_timeout: Duration,
    /// TLS to the compute nodes (`catalog_tls`, `catalog_tls_ca`). Default `prefer`.
    pub tls: TlsSettings,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        CatalogOptions {
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            tls: TlsSettings::default(),
        }
    }
}

impl CatalogOptions {
    /// The default deadlines with the manager's configured TLS for compute nodes (carried by
    /// the store, see [`kunlun_meta::StoreConfig::cluster_tls`]).
    pub fn for_store(store: &kunlun_meta::Store) -> CatalogOptions {
        CatalogOptions {
            tls: store.cluster_tls().clone(),
            ..CatalogOptions::default()
        }
    }
}

/// Whether the compute node at `host:port` answers a login as `user`/`password` (database
/// `postgres`, under `opts`' deadlines): `Ok` once it did, the session closed again.
pub(crate) async fn answers(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    opts: &CatalogOptions,
) -> crate::error::Result<()> {
    let comp = kunlun_meta::model::CompNode {
        id: 0,
        db_cluster_id: 0,
        name: String::new(),
        hostaddr: host.to_string(),
        port,
        user_name: user.to_string(),
        passwd: password.to_string(),
        status: kunlun_meta::model::NodeStatus::Active,
        max_conns: 0,
        when_created: None,
    };
    pg::Session::connect(&comp, None, opts).await.map(drop)
}
