//! TLS to the databases against real servers with certificates made here (rcgen): a MariaDB
//! metadata store that only accepts TLS (`require_secure_transport=ON`) and a PostgreSQL compute
//! node that only accepts its logins over TLS (`hostssl` in pg_hba).
//!
//! What a user relies on: `verify` with the right CA works and encrypts; with the wrong CA it
//! fails naming TLS; with TLS off it fails (the server refuses), it never falls back silently.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kunlun_core::catalog::{push_cluster, read_catalog, CatalogOptions};
use kunlun_meta::model::{HaMode, NewCluster, NewCompNode, NodeStatus};
use kunlun_meta::store::{repo, Store, StoreConfig};
use kunlun_meta::{TlsMode, TlsSettings};
use kunlun_tests::{MariaDb, MariaDbOptions, Postgres};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA and a server certificate it signed for 127.0.0.1, as PEM files in `dir`.
fn make_pki(dir: &Path, name: &str) -> Result<Pki> {
    make_pki_for(dir, name, "127.0.0.1")
}
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a server certificate it signed for `san` (an IP address or DNS name).
fn make_pki_for(dir: &Path, name: &str, san: &str) -> Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![san.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, san);
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-server.pem")),
        key: dir.join(format!("{name}-server.key")),
    };
    std::fs::write(&pki.ca, ca_cert.pem())?;
    std::fs::write(&pki.cert, cert.pem())?;
    std::fs::write(&pki.key, key.serialize_pem())?;
    Ok(pki)
}

fn mysql_store(db: &MariaDb, tls: TlsSettings) -> StoreConfig {
    StoreConfig {
        tls,
        ..StoreConfig::mysql(
            vec![format!("127.0.0.1:{}", db.port())],
            "root",
            "",
            "kunlun_tls_meta",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_store_verifies_the_ca_and_never_falls_back_to_plaintext() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = make_pki(dir.path(), "meta")?;
    let other = make_pki(dir.path(), "other")?;
    let args = vec![
        format!("--ssl-cert={}", pki.cert.display()),
        format!("--ssl-key={}", pki.key.display()),
        format!("--ssl-ca={}", pki.ca.display()),
        "--require-secure-transport=ON".to_string(),
    ];
    let db = tokio::task::spawn_blocking(move || {
        MariaDb::start_with(MariaDbOptions {
            extra_args: args,
            ..MariaDbOptions::default()
        })
    })
    .await??;

    // verify + the right CA: opens (migrations ran over TLS) and answers.
    let store = Store::open(&mysql_store(&db, TlsSettings::verify(&pki.ca)))
        .await
        .context("meta_tls = verify with the server's CA")?;
    assert!(store.encrypted());
    store.ping().await?;
    drop(store);

    // verify + a CA that did not sign the server's certificate: refused, naming TLS.
    let e = Store::open(&mysql_store(&db, TlsSettings::verify(&other.ca)))
        .await
        .expect_err("a certificate from another CA must be refused")
        .to_string();
    assert!(
        e.contains("TLS handshake failed") && e.contains("meta_tls = verify"),
        "{e}"
    );

    // TLS off: the server refuses plaintext and the open fails (no silent success).
    let e = Store::open(&mysql_store(&db, TlsSettings::off()))
        .await
        .expect_err("plaintext must be refused by this server")
        .to_string();
    // MariaDB 10.11 answers a plaintext login under require_secure_transport with "access
    // denied" (the same account gets in over TLS just above and below).
    assert!(
        e.contains("insecure transport") || e.contains("Access denied"),
        "{e}"
    );

    // prefer: the server offers TLS, so the connections are encrypted (not verified).
    let store = Store::open(&mysql_store(&db, TlsSettings::default())).await?;
    assert!(store.encrypted());
    store.ping().await?;
    Ok(())
}

/// A PostgreSQL serving TLS with `pki`'s certificate, where role `abc` (password `pw`) may log
/// in over TCP only with TLS.
fn start_tls_pg(pki: &Pki) -> Result<Postgres> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let pg = Postgres::start()?;
    let data = pg.datadir();
    let owner = std::fs::metadata(&data)?;
    for (src, name) in [(&pki.cert, "server.crt"), (&pki.key, "server.key")] {
        let dst = data.join(name);
        std::fs::copy(src, &dst)?;
        std::os::unix::fs::chown(&dst, Some(owner.uid()), Some(owner.gid()))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))?;
    }
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba)?;
    std::fs::write(
        &hba,
        format!(
            "hostssl all abc 127.0.0.1/32 scram-sha-256\n\
             hostnossl all abc 127.0.0.1/32 reject\n{old}"
        ),
    )?;
    pg.sql("CREATE ROLE abc LOGIN SUPERUSER PASSWORD 'pw'")?;
    pg.sql("ALTER SYSTEM SET ssl = on")?;
    pg.sql("SELECT pg_reload_conf()")?;
    let mut on = String::new();
    for _ in 0..50 {
        on = pg.sql("SHOW ssl")?;
        if on.trim() == "on" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::ensure!(on.trim() == "on", "ssl did not turn on: {on}");
    Ok(pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_push_uses_tls_with_the_configured_ca_and_is_refused_in_plaintext() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = make_pki(dir.path(), "comp")?;
    let other = make_pki(dir.path(), "other")?;
    let pg = {
        let pki = Pki {
            ca: pki.ca.clone(),
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        };
        tokio::task::spawn_blocking(move || start_tls_pg(&pki)).await??
    };

    // The manager's configured TLS for compute nodes travels with the store.
    let store = Store::open(&StoreConfig {
        cluster_tls: TlsSettings::verify(&pki.ca),
        ..StoreConfig::sqlite(dir.path().join("meta.db"))
    })
    .await?;
    let port = pg.port();
    let (cluster_id, comp) = store
        .tx(async |tx| {
            let cluster = repo::clusters::insert(
                tx,
                &NewCluster {
                    name: "tls_c".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::NoRep,
                    memo: None,
                },
            )
            .await?;
            let mut ids = repo::comps::reserve_ids(tx, 1).await?;
            let id = ids.next().expect("one id reserved");
            let comp = repo::comps::insert(
                tx,
                &NewCompNode {
                    id,
                    db_cluster_id: cluster.id,
                    name: "comp_tls".into(),
                    hostaddr: "127.0.0.1".into(),
                    port,
                    user_name: "abc".into(),
                    passwd: "pw".into(),
                    status: NodeStatus::Active,
                    max_conns: 100,
                },
            )
            .await?;
            Ok((cluster.id, comp))
        })
        .await?;

    // verify against the CA that signed the server's certificate: pushed and read back.
    let opts = CatalogOptions::for_store(&store);
    assert_eq!(opts.tls.mode(), TlsMode::Verify);
    let report = push_cluster(&store, cluster_id, &opts).await?;
    assert!(report.all_ok(), "{report}");
    let rows = read_catalog(&store, &comp, &opts).await?;
    assert_eq!(rows.cluster_meta.len(), 1, "{rows:?}");
    let ssl_sessions = pg.sql("SELECT count(*) FROM pg_stat_ssl WHERE ssl")?;
    assert!(ssl_sessions.trim().parse::<u32>()? >= 1, "{ssl_sessions}");

    // require (no certificate check) also encrypts, so it gets in.
    let require = CatalogOptions {
        tls: TlsSettings::new(TlsMode::Require, None)?,
        ..opts.clone()
    };
    assert!(push_cluster(&store, cluster_id, &require).await?.all_ok());

    // Another CA: the handshake fails and the report says so.
    let wrong = CatalogOptions {
        tls: TlsSettings::verify(&other.ca),
        ..opts.clone()
    };
    let report = push_cluster(&store, cluster_id, &wrong).await?;
    let e = report.comps[0].error.clone().unwrap_or_default();
    assert!(
        !report.all_ok() && e.contains("catalog_tls = verify"),
        "{report}"
    );
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // Plaintext: pg_hba refuses it; the push fails rather than sending passwords in clear.
    let off = CatalogOptions {
        tls: TlsSettings::off(),
        ..opts.clone()
    };
    let report = push_cluster(&store, cluster_id, &off).await?;
    let e = report.comps[0].error.clone().unwrap_or_default();
    assert!(!report.all_ok() && e.contains("no encryption"), "{report}");

    // verify checks the name too: a certificate from the trusted CA but for another address
    // (127.0.0.2) is refused when connecting to 127.0.0.1. The server reloads it on SIGHUP.
    let renamed = make_pki_for(dir.path(), "renamed", "127.0.0.2")?;
    std::fs::write(
        pg.datadir().join("server.crt"),
        std::fs::read(&renamed.cert)?,
    )?;
    std::fs::write(
        pg.datadir().join("server.key"),
        std::fs::read(&renamed.key)?,
    )?;
    pg.sql("SELECT pg_reload_conf()")?;
    let trusting = CatalogOptions {
        tls: TlsSettings::verify(&renamed.ca),
        ..opts.clone()
    };
    let mut e = String::new();
    // The reload is asynchronous: wait (bounded) until the new certificate is served.
    for _ in 0..50 {
        let report = push_cluster(&store, cluster_id, &trusting).await?;
        e = report.comps[0].error.clone().unwrap_or_default();
        if e.to_lowercase().contains("not valid for name") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(e.to_lowercase().contains("not valid for name"), "{e}");
    Ok(())
}
