//! Shared set-up of the in-process API tests: the daemon's real actix app over a temp SQLite
//! store or a fresh database on a real MariaDB, plus request helpers returning JSON.
#![allow(dead_code)] // each test binary uses a different subset

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::test;
use cluster_mgr::http::{AppState, Metrics};
use kunlun_core::{ClusterManager, CoreConfig};
use kunlun_meta::store::{Store, StoreConfig};
use serde_json::{json, Value};

/// A store the test owns; dropping it removes the SQLite file or the MySQL database.
pub struct TestStore {
    pub store: Store,
    pub config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
    mysql_drop: Option<(String, String)>,
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some((url, db)) = self.mysql_drop.take() {
            // Best effort: a leftover database only costs disk, never correctness.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    use mysql_async::prelude::Queryable;
                    let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
                    c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                        .await?;
                    c.disconnect().await
                })
                .map_err(std::io::Error::other)
            })
            .join();
        }
    }
}

/// A fresh SQLite store in a temp directory.
pub async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StoreConfig::sqlite(dir.path().join("data/meta.sqlite3"));
    let store = Store::open(&config).await.expect("open sqlite store");
    TestStore {
        store,
        config,
        _dir: Some(dir),
        mysql_drop: None,
    }
}

/// `KUNLUN_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`.
pub fn mysql_url() -> String {
    std::env::var("KUNLUN_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A fresh database with a random name on the test MariaDB. Fails loudly if there is none.
pub async fn mysql_store() -> TestStore {
    let url = mysql_url();
    let opts = mysql_async::Opts::from_url(&url).expect("KUNLUN_TEST_MYSQL_URL is a mysql:// URL");
    let db = format!("kl_api_{}_{}", std::process::id(), rand_suffix());
    let seed = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let config = StoreConfig::mysql(
        vec![seed],
        opts.user().unwrap_or("root"),
        opts.pass().unwrap_or(""),
        &db,
    );
    let store = Store::open(&config).await.unwrap_or_else(|e| {
        panic!("cannot open a MySQL store on {url} (set KUNLUN_TEST_MYSQL_URL): {e}")
    });
    TestStore {
        store,
        config,
        _dir: None,
        mysql_drop: Some((url, db)),
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() % 1_000_000_000
}

/// The daemon's app state over `store`.
pub fn state(store: &Store) -> AppState {
    AppState {
        manager: ClusterManager::new(CoreConfig::default(), store.clone()),
        metrics: Metrics::new().expect("metrics"),
        pages: Default::default(),
    }
}

/// One request to the service; returns the status and the body parsed as JSON (`Null` if empty,
/// `{"_text": ...}` if not JSON).
pub async fn call<S, B>(
    svc: &S,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut req = test::TestRequest::default().method(method).uri(uri);
    if let Some(b) = body {
        req = req
            .insert_header(("content-type", "application/json"))
            .set_payload(b.to_string());
    }
    let res = test::call_service(svc, req.to_request()).await;
    let status = res.status();
    let bytes = test::read_body(res).await;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({ "_text": String::from_utf8_lossy(&bytes) }))
    };
    (status, value)
}

/// Asserts an error response: status, JSON `{code, message}` with the given code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "body: {}", got.1);
    assert_eq!(got.1["code"], code, "body: {}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {}",
        got.1
    );
}

/// A valid registration body for `hostaddr`.
pub fn machine_body(hostaddr: &str) -> Value {
    json!({
        "hostaddr": hostaddr,
        "machine_type": "storage",
        "ssh_port": 2222,
        "ssh_user": "kunlun",
        "ssh_key_path": "/home/kunlun/.ssh/id_ed25519",
        "data_dirs": ["/data/kl1", "/data/kl2"],
        "port_range": "57000-57100",
        "rack_id": "rack-1",
        "total_mem_mb": 16384,
        "total_cpu_cores": 8,
        // No sshd behind these addresses: stored unprobed (and so `dead`).
        "probe": false
    })
}

/// Ids of the topology [`seed_topology`] writes.
pub struct Topology {
    pub cluster_id: i64,
    pub shard_ids: Vec<i64>,
    pub comp_node_id: i64,
}

/// Writes one `rbr` cluster named `name` with two shards of two nodes each and one compute node
/// straight into the store (the API has no create endpoint yet).
pub async fn seed_topology(store: &Store, name: &str) -> Topology {
    use kunlun_meta::model::{
        HaMode, MemberState, NewCluster, NewCompNode, NewShard, NewShardNode, NodeStatus,
    };
    use kunlun_meta::store::repo;
    let name = name.to_string();
    store
        .tx(async move |tx| {
            let c = repo::clusters::insert(
                tx,
                &NewCluster {
                    name: name.clone(),
                    nick_name: Some("nick".into()),
                    owner: Some("abc".into()),
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await?;
            let mut shard_ids = Vec::new();
            for s in 1..=2u16 {
                let shard = repo::shards::insert(
                    tx,
                    &NewShard {
                        name: format!("shard{s}"),
                        db_cluster_id: c.id,
                        num_nodes: 2,
                        sync_num: 1,
                    },
                )
                .await?;
                for n in 0..2u16 {
                    repo::nodes::insert(
                        tx,
                        &NewShardNode {
                            shard_id: shard.id,
                            db_cluster_id: c.id,
                            hostaddr: "127.0.0.1".into(),
                            port: 57000 + s * 10 + n,
                            user_name: "pgx".into(),
                            passwd: "node-s3cret".into(),
                            master_priority: 0,
                            member_state: if n == 0 {
                                MemberState::Source
                            } else {
                                MemberState::Replica
                            },
                            status: NodeStatus::Active,
                            innodb_buffer_pool_mb: 128,
                        },
                    )
                    .await?;
                }
                shard_ids.push(shard.id);
            }
            let comp = repo::comps::insert(
                tx,
                &NewCompNode {
                    id: 1,
                    db_cluster_id: c.id,
                    name: "comp1".into(),
                    hostaddr: "127.0.0.1".into(),
                    port: 47001,
                    user_name: "abc".into(),
                    passwd: "comp-s3cret".into(),
                    status: NodeStatus::Active,
                    max_conns: 100,
                },
            )
            .await?;
            Ok(Topology {
                cluster_id: c.id,
                shard_ids,
                comp_node_id: comp.id,
            })
        })
        .await
        .expect("seed topology")
}
