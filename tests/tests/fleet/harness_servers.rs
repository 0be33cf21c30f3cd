//! Self-tests of the real-server harness: MariaDB replication and crash restart, PostgreSQL,
//! several sshds at once, and the sweep of a crashed run's leftovers.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use kunlun_tests::harness::{harness_root, sweep_leftovers};
use kunlun_tests::{MariaDb, Postgres, ReplicaSet, Sshd};

#[test]
fn replica_set_replicates_a_row() {
    let rs = ReplicaSet::start(2).expect("replica set");
    let p = rs.primary();
    p.sql("CREATE DATABASE t; CREATE TABLE t.a (id INT PRIMARY KEY, v TEXT); INSERT INTO t.a VALUES (1, 'one')")
        .expect("write on primary");
    rs.wait_replicated(Duration::from_secs(30))
        .expect("replicated");
    for r in rs.replicas() {
        assert_eq!(
            r.value("SELECT v FROM t.a WHERE id = 1")
                .expect("read replica")
                .as_deref(),
            Some("one")
        );
        assert_eq!(
            r.value("SELECT @@read_only").expect("read_only").as_deref(),
            Some("1")
        );
    }
    let ids: std::collections::HashSet<u32> = rs.nodes().map(MariaDb::server_id).collect();
    assert_eq!(ids.len(), 3, "server ids are unique");
}

#[test]
fn semi_sync_replica_set_acknowledges_commits() {
    let rs = ReplicaSet::start_semi_sync(1).expect("semi-sync replica set");
    let p = rs.primary();
    p.sql("CREATE DATABASE s; CREATE TABLE s.a (id INT PRIMARY KEY); INSERT INTO s.a VALUES (1)")
        .expect("write");
    let status = p
        .rows("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_yes_tx'")
        .expect("status");
    let yes: u64 = status[0][1].parse().expect("a number");
    assert!(
        yes >= 1,
        "commits were acknowledged by the replica: {status:?}"
    );
    assert_eq!(
        p.value("SELECT @@rpl_semi_sync_master_wait_point")
            .expect("var")
            .as_deref(),
        Some("AFTER_SYNC")
    );
}

#[test]
fn mariadb_survives_kill9_and_restarts_on_same_datadir() {
    let db = MariaDb::start().expect("mariadb");
    let port = db.port();
    db.sql("CREATE DATABASE k; CREATE TABLE k.a (id INT PRIMARY KEY); INSERT INTO k.a VALUES (7)")
        .expect("write");
    let gtid = db.value("SELECT @@gtid_binlog_pos").expect("gtid");
    db.kill9().expect("kill -9");
    assert!(!db.is_running());
    assert!(
        db.sql("SELECT 1").is_err(),
        "a killed server does not answer"
    );
    db.restart().expect("restart after kill -9");
    assert_eq!(db.port(), port);
    assert_eq!(
        db.value("SELECT id FROM k.a").expect("read").as_deref(),
        Some("7")
    );
    assert_eq!(db.value("SELECT @@gtid_binlog_pos").expect("gtid"), gtid);
    db.stop().expect("clean stop");
    assert!(!db.is_running());
    db.restart().expect("restart after clean stop");
    assert_eq!(
        db.value("SELECT id FROM k.a").expect("read").as_deref(),
        Some("7")
    );
}

#[test]
fn mariadb_pause_and_resume() {
    let db = MariaDb::start().expect("mariadb");
    db.pause().expect("SIGSTOP");
    let pid = db.pid().expect("a paused server still has its process");
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let state = state[state.rfind(')').expect("stat format") + 2..]
        .chars()
        .next();
    assert_eq!(state, Some('T'), "the server is stopped");
    db.resume().expect("SIGCONT");
    assert_eq!(db.value("SELECT 1").expect("answers").as_deref(), Some("1"));
}

#[test]
fn postgres_answers() {
    let pg = Postgres::start().expect("postgres");
    assert_eq!(pg.sql("SELECT 40 + 2").expect("query").trim(), "42");
    pg.sql("CREATE SCHEMA kunlun_sys; CREATE TABLE kunlun_sys.t (id int)")
        .expect("ddl");
    pg.restart().expect("restart");
    assert_eq!(
        pg.sql("SELECT count(*) FROM kunlun_sys.t")
            .expect("query")
            .trim(),
        "0"
    );
}

#[test]
fn two_sshds_on_separate_addresses() {
    let servers = Sshd::start_many(2).expect("two sshds");
    assert_eq!(servers[0].host(), "127.0.0.2");
    assert_eq!(servers[1].host(), "127.0.0.3");
    for s in &servers {
        let out = s
            .ssh_command("echo $SSH_CONNECTION")
            .output()
            .expect("run ssh");
        assert!(
            out.status.success(),
            "ssh to {}: {}",
            s.addr(),
            String::from_utf8_lossy(&out.stderr)
        );
        let conn = String::from_utf8_lossy(&out.stdout);
        // "<client ip> <client port> <server ip> <server port>"
        let fields: Vec<&str> = conn.split_whitespace().collect();
        assert_eq!(fields[2], s.host());
        assert_eq!(fields[3], s.port().to_string());
    }
}

#[test]
fn sweep_kills_and_removes_leftovers_of_a_dead_run() {
    // An owner directory whose process cannot exist (pid above the kernel's maximum).
    let dead = harness_root().join("999999999-1");
    let inst = dead.join("1-fake");
    let log = inst.join("server.log");
    // A "server" whose command line names its directory, like mariadbd's --datadir. It is
    // started before the directory exists and follows the name (`tail -F`), so a sweep run
    // meanwhile by a parallel test (which kills before it removes) cannot leave it running,
    // nor make it exit by itself.
    let mut child = Command::new("tail")
        .arg("-F")
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn leftover");
    if let Err(e) = std::fs::create_dir_all(&inst) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("mkdir {}: {e}", inst.display());
    }
    // A parallel sweep may already have removed it again, normally killing the child first.
    // Seen once in CI: the directory gone and the child still running; so the wait is
    // bounded, and while the child runs the directory is made again and swept again.
    let _ = std::fs::write(&log, "");
    sweep_leftovers();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the leftover was not killed by the sweep within 30 s");
        }
        if !inst.exists() {
            let _ = std::fs::create_dir_all(&inst);
            let _ = std::fs::write(&log, "");
        }
        sweep_leftovers();
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status.signal(), Some(9), "the leftover was killed");
    assert!(!dead.exists(), "the leftover directory was removed");
}
