//! Install recipes against a real private sshd on 127.0.0.54 (which logs in on this very
//! host): one MariaDB storage instance and one PostgreSQL compute instance are installed
//! (twice, to prove the steps idempotent), answer as their system users over TCP after the
//! SSH connections are gone, and are uninstalled without leaving a process or a directory.
//! Also: a port already taken by another process is a clear instance error, and the failed
//! install is cleaned up by uninstall; a server that exits during start is reported as such
//! (not after the whole readiness wait) with its log.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::{
    random_password, DbUser, InstanceSpec, MariaDbRecipe, PostgresRecipe, Recipe, UserRole,
};
use kunlun_provision::{Error, SshExecutor, SshTarget};
use kunlun_tests::{free_port, Sshd};
use mysql_async::prelude::Queryable;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 54);

fn target(sshd: &Sshd) -> SshTarget {
    SshTarget::new(
        sshd.host(),
        sshd.port(),
        sshd.user(),
        &sshd.user_key().private,
        sshd.known_hosts(),
    )
}

/// A data dir the `postgres` user can traverse; on drop, kills whatever a failed test left
/// running from it (by the pid files) before the directory goes.
struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    fn new() -> DataDir {
        let dir = tempfile::Builder::new()
            .prefix("kunlun-provision-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        DataDir { dir }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        for pid_file in pid_files(self.dir.path()) {
            if let Ok(text) = std::fs::read_to_string(&pid_file) {
                if let Some(pid) = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

fn pid_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(kunlun) = std::fs::read_dir(root.join("kunlun")) else {
        return out;
    };
    for e in kunlun.flatten() {
        out.push(e.path().join("run/mysqld.pid"));
        out.push(e.path().join("data/postmaster.pid"));
    }
    out
}

fn spec(data_dir: &str, kind: InstanceKind, port: u16, users: Vec<DbUser>) -> InstanceSpec {
    InstanceSpec {
        bind_address: IP.to_string(),
        port,
        base_dir: InstanceSpec::base_dir_for(data_dir, kind, port),
        server_id: u32::from(port),
        buffer_mb: 32,
        max_connections: 50,
        semi_sync: true,
        users,
    }
}

fn user(name: &str, role: UserRole) -> DbUser {
    DbUser {
        name: name.into(),
        password: random_password(),
        role,
    }
}

async fn mysql(port: u16, u: &DbUser) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(IP.to_string())
        .tcp_port(port)
        .user(Some(u.name.clone()))
        .pass(Some(u.password.clone()));
    mysql_async::Conn::new(opts).await
}

fn psql(port: u16, u: &DbUser, sql: &str) -> std::process::Output {
    Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-At", "-h", &IP.to_string(), "-p", &port.to_string()])
        .args(["-U", &u.name, "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", &u.password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("run psql")
}

#[tokio::test]
async fn install_mariadb_and_postgres_then_uninstall_leaves_nothing() {
    let sshd = Sshd::start_on(IP).expect("start a private sshd on 127.0.0.54");
    let t = target(&sshd);
    let data = DataDir::new();
    let maria = MariaDbRecipe::default();
    let pg = PostgresRecipe::default();

    let sn_port = free_port(IpAddr::V4(IP));
    let cn_port = free_port(IpAddr::V4(IP));
    let mgr = user("clustmgr", UserRole::Admin);
    let repl = user("repl", UserRole::Replication);
    let sn = spec(
        data.path(),
        InstanceKind::Storage,
        sn_port,
        vec![mgr.clone(), repl.clone()],
    );
    let owner = user("abc", UserRole::Admin);
    let cn = spec(
        data.path(),
        InstanceKind::Compute,
        cn_port,
        vec![owner.clone()],
    );

    {
        let ex = SshExecutor::default();
        let (a, b) = tokio::join!(maria.install(&ex, &t, &sn), pg.install(&ex, &t, &cn));
        a.expect("install MariaDB");
        b.expect("install PostgreSQL");
        // Every step again: idempotent, nothing restarted or re-initialised.
        maria
            .install(&ex, &t, &sn)
            .await
            .expect("MariaDB install is idempotent");
        pg.install(&ex, &t, &cn)
            .await
            .expect("PostgreSQL install is idempotent");
        assert!(maria.is_running(&ex, &t, &sn).await.expect("ask"));
        assert!(pg.is_running(&ex, &t, &cn).await.expect("ask"));
    } // executor and its SSH connections gone: the servers must outlive them

    let mut c = mysql(sn_port, &mgr)
        .await
        .expect("manager user logs in over TCP");
    let row: Option<(u32, u8, String, String)> = c
        .query_first(
            "SELECT @@server_id, @@log_bin, @@gtid_strict_mode, @@rpl_semi_sync_master_wait_point",
        )
        .await
        .expect("query");
    let (server_id, log_bin, strict, wait_point) = row.expect("one row");
    assert_eq!(server_id, u32::from(sn_port));
    assert_eq!(log_bin, 1);
    assert_eq!(strict, "1");
    assert_eq!(wait_point, "AFTER_SYNC");
    let gtid: Option<String> = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("gtid");
    assert_eq!(
        gtid.as_deref(),
        Some(""),
        "user creation is kept out of the binlog"
    );
    c.disconnect().await.expect("disconnect");
    let r = mysql(sn_port, &repl)
        .await
        .expect("replication user logs in");
    r.disconnect().await.expect("disconnect");
    let wrong = DbUser {
        password: "wrong".into(),
        ..mgr.clone()
    };
    assert!(
        mysql(sn_port, &wrong).await.is_err(),
        "passwords are checked"
    );

    // The passwords went on the SSH session's stdin: no file of either instance holds one.
    for pw in [&mgr.password, &repl.password, &owner.password] {
        let found = std::process::Command::new("grep")
            .args(["-rlaF", "--", pw.as_str()])
            .arg(data.path())
            .output()
            .expect("grep");
        assert!(
            found.stdout.is_empty(),
            "a password is in {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }

    let out = psql(cn_port, &owner, "select current_user");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "abc");

    let ex = SshExecutor::default();
    maria
        .uninstall(&ex, &t, &sn)
        .await
        .expect("uninstall MariaDB");
    pg.uninstall(&ex, &t, &cn)
        .await
        .expect("uninstall PostgreSQL");
    maria
        .uninstall(&ex, &t, &sn)
        .await
        .expect("uninstall is idempotent");
    pg.uninstall(&ex, &t, &cn)
        .await
        .expect("uninstall is idempotent");
    assert!(!maria.is_running(&ex, &t, &sn).await.expect("ask"));
    assert!(!pg.is_running(&ex, &t, &cn).await.expect("ask"));
    assert!(!Path::new(&sn.base_dir).exists(), "storage dir removed");
    assert!(!Path::new(&cn.base_dir).exists(), "compute dir removed");
    assert!(
        !Path::new(data.path()).join("kunlun").exists(),
        "the empty kunlun dir is removed too"
    );
    for port in [sn_port, cn_port] {
        assert!(
            TcpListener::bind((IP, port)).is_ok(),
            "port {port} is free again"
        );
    }
    for pattern in [
        format!("[-]-defaults-file={}/my.cnf", sn.base_dir),
        format!("[p]ostgres -D {}/data", cn.base_dir),
    ] {
        let found = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .expect("pgrep");
        assert!(
            found.stdout.is_empty(),
            "no process left matching {pattern}"
        );
    }
}

#[tokio::test]
async fn a_port_taken_by_another_process_is_a_clear_error_and_cleans_up() {
    let sshd = Sshd::start_on(IP).expect("start a private sshd on 127.0.0.54");
    let t = target(&sshd);
    let data = DataDir::new();
    let port = free_port(IpAddr::V4(IP));
    let squatter = TcpListener::bind((IP, port)).expect("take the port");
    let sn = spec(
        data.path(),
        InstanceKind::Storage,
        port,
        vec![user("clustmgr", UserRole::Admin)],
    );
    let maria = MariaDbRecipe::default();
    let ex = SshExecutor::default();
    let started = Instant::now();
    let err = maria
        .install(&ex, &t, &sn)
        .await
        .expect_err("the port is taken");
    eprintln!("port taken: failed after {:?}: {err}", started.elapsed());
    match &err {
        Error::PortInUse {
            port: p, reason, ..
        } => {
            assert_eq!(*p, port);
            assert!(
                reason.contains(&format!("{IP}:{port}")),
                "the reason names the address and port: {reason}"
            );
        }
        other => panic!("expected port_in_use, got {other}"),
    }
    assert!(err.to_string().contains("port_in_use"), "{err}");
    maria
        .uninstall(&ex, &t, &sn)
        .await
        .expect("uninstall after failure");
    assert!(!Path::new(&sn.base_dir).exists());
    drop(squatter);
}

#[tokio::test]
async fn a_server_that_exits_during_start_is_reported_at_once_with_its_log() {
    let sshd = Sshd::start_on(IP).expect("start a private sshd on 127.0.0.54");
    let t = target(&sshd);
    let data = DataDir::new();
    let port = free_port(IpAddr::V4(IP));
    // 4 TB of shared buffers: postgres cannot map them and exits right after starting.
    let mut cn = spec(
        data.path(),
        InstanceKind::Compute,
        port,
        vec![user("clustmgr", UserRole::Admin)],
    );
    cn.buffer_mb = 4_000_000;
    let pg = PostgresRecipe::default();
    let ex = SshExecutor::default();
    let started = Instant::now();
    let err = pg
        .install(&ex, &t, &cn)
        .await
        .expect_err("postgres cannot start");
    eprintln!(
        "exited at start: failed after {:?}: {err}",
        started.elapsed()
    );
    match &err {
        Error::Instance {
            port: p, reason, ..
        } => {
            assert_eq!(*p, port);
            assert!(
                reason.contains("postgres exited during start"),
                "seen as an exit, not as a server that never answered: {reason}"
            );
            assert!(
                reason.contains("shared memory") || reason.contains("FATAL"),
                "the reason carries the server's log: {reason}"
            );
        }
        other => panic!("expected an instance error, got {other}"),
    }
    pg.uninstall(&ex, &t, &cn)
        .await
        .expect("uninstall after failure");
    assert!(!Path::new(&cn.base_dir).exists());
}
