//! Opening stores: seed discovery, an unreachable store, descriptions without passwords,
//! SQLite file creation, and recovery after the server dropped every pooled connection.

mod common;

use std::time::Duration;

use common::{mysql_server, random_db_name, TestStore};
use kunlun_meta::store::{BackendKind, SeedOutcome, Store, StoreConfig};
use kunlun_meta::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_seed_is_skipped_with_its_reason() {
    let (seed, user, pass) = mysql_server();
    let db = random_db_name();
    let mut cfg = StoreConfig::mysql(vec!["127.0.0.1:1".into(), seed.clone()], &user, &pass, &db);
    cfg.connect_timeout = Duration::from_secs(5);
    let store = Store::open(&cfg).await.expect("open via the second seed");
    let guard = DropDb(db.clone());
    let report = store
        .seed_report()
        .expect("mysql stores have a seed report")
        .clone();
    assert_eq!(report.chosen, seed);
    assert_eq!(report.attempts.len(), 2);
    assert_eq!(report.attempts[0].seed, "127.0.0.1:1");
    assert!(
        matches!(report.attempts[0].outcome, SeedOutcome::Unreachable(ref why) if !why.is_empty())
    );
    assert_eq!(report.attempts[1].outcome, SeedOutcome::Chosen);
    assert!(
        report
            .to_string()
            .contains("127.0.0.1:1 skipped: unreachable"),
        "{report}"
    );
    assert_eq!(store.kind(), BackendKind::Mysql);
    assert_eq!(store.kind().as_str(), "mysql");
    assert_eq!(store.describe(), format!("mysql://{user}@{seed}/{db}"));
    store.ping().await.unwrap();
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_seed_is_unavailable_with_every_reason() {
    let mut cfg = StoreConfig::mysql(
        vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
        "root",
        "pw-secret",
        "kl_x",
    );
    cfg.connect_timeout = Duration::from_secs(2);
    let e = Store::open(&cfg).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(
        msg.contains("127.0.0.1:1") && msg.contains("127.0.0.1:2"),
        "{msg}"
    );
    assert!(!msg.contains("pw-secret"), "{msg}");
}

#[test]
fn debug_redacts_passwords() {
    let cfg = StoreConfig::mysql(
        vec!["10.0.0.1:3306".into()],
        "meta",
        "top-secret-pw",
        "kunlun_metadata_db",
    );
    let s = format!("{cfg:?} {:?}", cfg.backend);
    assert!(!s.contains("top-secret-pw"), "{s}");
    assert!(s.contains("10.0.0.1:3306") && s.contains("meta"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_creates_its_folder_and_describes_the_absolute_path() {
    let t = TestStore::sqlite().await;
    let path = t.sqlite_path();
    assert!(path.exists(), "{} created", path.display());
    assert_eq!(t.store.kind(), BackendKind::Sqlite);
    let d = t.store.describe();
    assert!(
        d.starts_with("sqlite:/") && d.ends_with("/meta/kunlun_metadata.db"),
        "{d}"
    );
    assert!(t.store.seed_report().is_none());
    t.store.ping().await.unwrap();
    // Opening again runs no migration twice and sees the same schema.
    let again = t.reopen().await;
    assert_eq!(
        again.tables().await.unwrap(),
        t.store.tables().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_after_the_server_dropped_its_connections() {
    let t = TestStore::mysql().await;
    let s = &t.store;
    // Fill the pool with a few live connections.
    for r in futures::future::join_all((0..4).map(|_| s.list_machines())).await {
        r.unwrap();
    }
    let db = match &t.cfg.backend {
        kunlun_meta::store::BackendConfig::Mysql { database, .. } => database.clone(),
        _ => unreachable!(),
    };
    kill_connections_of(&db).await;
    // Every pooled connection is dead now; the store must hand out fresh ones by itself.
    for _ in 0..6 {
        s.list_machines()
            .await
            .expect("fresh connection after the outage");
    }
    s.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_use_is_unavailable_and_the_next_one_works() {
    let t = TestStore::mysql().await;
    let db = match &t.cfg.backend {
        kunlun_meta::store::BackendConfig::Mysql { database, .. } => database.clone(),
        _ => unreachable!(),
    };
    let r = t
        .store
        .autocommit(async |tx| {
            kunlun_meta::store::repo::machines::list(tx).await?;
            kill_connections_of(&db).await;
            kunlun_meta::store::repo::machines::list(tx).await
        })
        .await;
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    t.store.list_machines().await.expect("a fresh connection");
}

/// Kills every server connection that uses database `db`.
async fn kill_connections_of(db: &str) {
    use mysql_async::prelude::Queryable;
    let (seed, user, pass) = mysql_server();
    let (host, port) = seed.rsplit_once(':').unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port.parse().unwrap())
        .user(Some(user))
        .pass(if pass.is_empty() { None } else { Some(pass) });
    let mut admin = mysql_async::Conn::new(opts).await.unwrap();
    let ids: Vec<u64> = admin
        .exec(
            "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
            (db,),
        )
        .await
        .unwrap();
    assert!(!ids.is_empty(), "the store holds connections to {db}");
    for id in ids {
        let _ = admin.query_drop(format!("KILL CONNECTION {id}")).await;
    }
    admin.disconnect().await.unwrap();
}

/// Drops a MySQL database at the end of a test that opened its own store.
struct DropDb(String);

impl Drop for DropDb {
    fn drop(&mut self) {
        let db = self.0.clone();
        let (seed, user, pass) = mysql_server();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use mysql_async::prelude::Queryable;
                let (host, port) = seed.rsplit_once(':').unwrap();
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(host)
                    .tcp_port(port.parse().unwrap())
                    .user(Some(user))
                    .pass(if pass.is_empty() { None } else { Some(pass) });
                if let Ok(mut c) = mysql_async::Conn::new(opts).await {
                    let _ = c
                        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                        .await;
                    let _ = c.disconnect().await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_opening_a_fresh_database_together_all_succeed() {
    let (seed, user, pass) = mysql_server();
    let db = random_db_name();
    let _guard = DropDb(db.clone());
    let cfg = StoreConfig::mysql(vec![seed], &user, &pass, &db);
    let opened = futures::future::join_all((0..3).map(|_| Store::open(&cfg))).await;
    for r in opened {
        let s = r.expect("every concurrent open succeeds");
        s.list_machines().await.unwrap();
    }
}
