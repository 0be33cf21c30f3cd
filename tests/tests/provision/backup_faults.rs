//! Backups under faults, and `backup verify`, on real servers through the real daemon.
//!
//! On 127.0.0.97: a cluster of 2 shards x 2 nodes + 1 compute node, rows on each shard, binlog
//! archiving every 2 s. A first backup is taken and verified: each shard's snapshot starts in a
//! scratch server and every table's checksum is the one recorded at the cut. A second backup
//! is started and shard 1's primary is killed (-9) while it runs: HA fails the shard over (to
//! the replica the backup holds, whose replication HA starts again); the backup either ends
//! `done` (it got its snapshot first) or `failed` saying why, and a failed one leaves no file
//! on the storage; which one happened is printed. Binlog archiving follows the new primary:
//! writes made on it are archived, the shard's source in the archive is the new primary, no
//! gap, and the archived files of the shard follow each other with no hole in the GTID
//! sequence (each file starts where the one before ended, the first at or before the
//! snapshot). Last, a byte of the first backup's snapshot is changed on the storage: `backup
//! verify` fails and names the damaged file.
//!
//! Between the two: a backup onto a storage whose disk is full (a tmpfs half the size of a
//! snapshot) fails saying so, is recorded `failed`, leaves nothing on the storage, and the
//! replicas it held at the cut replicate again.
//!
//! At the end, archive pruning: a third backup is taken and the older ones removed; the archive
//! then starts at the third, the archived files its snapshots hold are gone from the storage
//! and every file the index still names is there.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use kunlun_tests::cli::ctl;
use kunlun_tests::daemon::http;
use kunlun_tests::daemon_cluster::{DaemonCluster, Shape};
use kunlun_tests::tmpfs::Tmpfs;
use kunlun_tests::world::{kill9, pid_in};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 97);

/// `domain -> seq` of a GTID position or list (`0-1-5,1-2-7`); the highest per domain.
fn seqs(pos: &str) -> std::collections::BTreeMap<u64, u64> {
    let mut out = std::collections::BTreeMap::new();
    for g in pos.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let p: Vec<u64> = g
            .split('-')
            .map(|x| x.parse().expect("a GTID number"))
            .collect();
        let e = out.entry(p[0]).or_insert(0);
        *e = (*e).max(p[2]);
    }
    out
}

/// `a` has everything `b` has (per domain).
fn contains(a: &str, b: &str) -> bool {
    let a = seqs(a);
    seqs(b)
        .iter()
        .all(|(d, s)| a.get(d).copied().unwrap_or(0) >= *s)
}

fn job(c: &DaemonCluster, id: i64) -> Value {
    ctl(&c.base, &["--json", "job", "show", &id.to_string()])
        .ok()
        .json()
}

fn wait_final(c: &DaemonCluster, id: i64, limit: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let j = job(c, id);
        if j["status"] == "done" || j["status"] == "failed" {
            return j;
        }
        assert!(
            t0.elapsed() < limit,
            "job {id} still {} after {limit:?}\ndaemon log:\n{}",
            j["status"],
            c.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The daemon's log lines that contain any of `words`.
fn daemon_lines(c: &DaemonCluster, words: &[&str]) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(c.wd.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for l in text.lines().filter(|l| words.iter().any(|w| l.contains(w))) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// `kunlunctl --json backup create bf1 --storage <storage> <flags>`.
fn backup_create(c: &DaemonCluster, storage: &str, flags: &[&str]) -> kunlun_tests::cli::Ctl {
    let mut args = vec!["--json", "backup", "create", "bf1", "--storage", storage];
    args.extend_from_slice(flags);
    ctl(&c.base, &args)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn a_backup_survives_or_fails_cleanly_across_a_failover_archiving_follows_and_verify_catches_damage(
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let c = DaemonCluster::start_with(
        IP,
        "bf1",
        Shape {
            shards: 2,
            nodes: 2,
            comps: 1,
        },
        &["binlog_archive_interval = 2"],
    );
    let shards = c.shards();
    let pwd = rt.block_on(c.manager_pwd());
    let primary_of = |nodes: &Vec<(i64, u16, String)>| {
        nodes
            .iter()
            .find(|n| n.2 == "source")
            .map(|n| n.1)
            .expect("a primary")
    };
    rt.block_on(async {
        for (sid, nodes) in &shards {
            let mut p = c.conn(&pwd, primary_of(nodes)).await;
            p.query_drop(format!(
                "CREATE DATABASE bf; CREATE TABLE bf.t (id BIGINT PRIMARY KEY, v VARCHAR(64)); \
                 INSERT INTO bf.t SELECT seq, MD5(seq) FROM bf.seq_1_to_300; \
                 CREATE TABLE bf.u (id BIGINT PRIMARY KEY, shard BIGINT); \
                 INSERT INTO bf.u VALUES (1, {sid})"
            ))
            .await
            .expect("rows");
        }
    });
    let store_dir = c.wd.path().join("backups");
    let (st, v) = c.daemon.post(
        &http(Duration::from_secs(60)),
        "/v1/backup_storages",
        &json!({"name": "bf_local", "kind": "ssh_dir", "hostaddr": IP.to_string(),
                "path": store_dir.display().to_string()}),
    );
    assert_eq!(st, 201, "{v}\n{}", c.log());

    // The first backup, verified.
    let out = backup_create(&c, "bf_local", &["--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let b1 = out.json()["memo"]["backup_id"].as_i64().expect("backup id");
    let out = ctl(
        &c.base,
        &["--json", "backup", "verify", &b1.to_string(), "--wait"],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let v = out.json();
    assert_eq!(v["memo"]["verified"], true, "{v}");
    assert_eq!(v["memo"]["files_ok"], true, "{v}");
    let verified = v["memo"]["shards"].as_array().expect("shards").clone();
    assert_eq!(verified.len(), 2, "{v}");
    for s in &verified {
        assert_eq!(s["started"], true, "{s}");
        // bf.t and bf.u at least (the seq engine's tables are not base tables).
        assert!(s["recorded"].as_u64() >= Some(2), "{s}");
        assert_eq!(s["matched"], s["recorded"], "{s}");
    }
    let scratch: Vec<String> = files_under(&c.data)
        .into_iter()
        .filter(|f| f.contains("/verify-"))
        .collect();
    assert!(scratch.is_empty(), "scratch files left: {scratch:?}");

    // A full disk: a storage on a tmpfs half the size of the smallest snapshot of the first
    // backup. The backup fails saying so, its row is `failed`, no file is left on the storage
    // (not even a partial one), and the replicas it held at the cut replicate again.
    let smallest = files_under(&store_dir.join(format!("cluster_{}/backup_{b1}", c.cluster_id)))
        .iter()
        .filter(|f| f.ends_with(".mbstream.zst"))
        .map(|f| std::fs::metadata(f).expect("snapshot").len())
        .min()
        .expect("snapshots of the first backup");
    let full = Tmpfs::mount(&c.wd.path().join("full"), (smallest / 2048).max(64))
        .unwrap_or_else(|e| panic!("the full-disk case needs a size-capped tmpfs: {e}"));
    let (st, v) = c.daemon.post(
        &http(Duration::from_secs(60)),
        "/v1/backup_storages",
        &json!({"name": "bf_full", "kind": "ssh_dir", "hostaddr": IP.to_string(),
                "path": full.path().display().to_string()}),
    );
    assert_eq!(st, 201, "{v}\n{}", c.log());
    let out = backup_create(&c, "bf_full", &["--wait"]);
    assert_ne!(out.code, 0, "a backup onto a full disk fails: {out:#?}");
    let j = out.json();
    assert_eq!(j["status"], "failed", "{j}");
    let why = j["memo"]["error"].to_string();
    eprintln!("backup onto a full disk: {why}");
    assert!(why.contains("no space left"), "says the disk is full: {j}");
    let bf = j["memo"]["backup_id"].as_i64().expect("the backup's id");
    let bk = ctl(&c.base, &["--json", "backup", "show", &bf.to_string()])
        .ok()
        .json();
    assert_eq!(bk["status"], "failed", "{bk}");
    assert_eq!(
        files_under(full.path()),
        Vec::<String>::new(),
        "a failed backup leaves nothing on the storage"
    );
    rt.block_on(async {
        for (_, nodes) in &shards {
            for n in nodes.iter().filter(|n| n.2 != "source") {
                let mut r = c.conn(&pwd, n.1).await;
                let t0 = Instant::now();
                loop {
                    let row: Option<mysql_async::Row> =
                        r.query_first("SHOW SLAVE STATUS").await.expect("status");
                    let running = row.is_some_and(|row| {
                        let col = |k: &str| row.get::<String, _>(k).unwrap_or_default();
                        col("Slave_IO_Running") == "Yes" && col("Slave_SQL_Running") == "Yes"
                    });
                    if running {
                        break;
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(60),
                        "replica {} replicates again after the failed backup\n{}",
                        n.1,
                        c.log()
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    });
    // The failed record is removed like any backup, then its storage.
    let out = ctl(&c.base, &["--json", "backup", "rm", &bf.to_string()]);
    assert_eq!(out.code, 0, "{out:#?}");
    let out = ctl(&c.base, &["--json", "backup-storage", "rm", "bf_full"]);
    assert_eq!(out.code, 0, "{out:#?}");
    drop(full);

    // A second backup while shard 1's primary is killed.
    let (sid, nodes) = &shards[0];
    let old = primary_of(nodes);
    let replica = nodes
        .iter()
        .find(|n| n.2 != "source")
        .map(|n| n.1)
        .expect("a replica");
    let out = backup_create(&c, "bf_local", &[]);
    assert_eq!(out.code, 0, "{out:#?}");
    let j2 = out.json()["job_id"].as_i64().expect("job id");
    // Killed once the backup holds its sources at the cut (or when it already ended).
    let t0 = Instant::now();
    loop {
        let j = job(&c, j2);
        let cut_done = j["memo"]["steps"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "consistent cut" && s["status"] == "done")
        });
        if cut_done || j["status"] == "done" || j["status"] == "failed" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid_file = c.data.join(format!("kunlun/storage_{old}/run/mysqld.pid"));
    let pid = pid_in(&pid_file).expect("the primary's pid");
    kill9(pid);
    let killed_at = std::time::SystemTime::now();
    let j = wait_final(&c, j2, Duration::from_secs(600));
    let b2 = j["memo"]["backup_id"].as_i64();
    eprintln!(
        "backup during the failover: {} ({})",
        j["status"],
        j["memo"]["error"].as_str().unwrap_or("no error")
    );
    if j["status"] == "failed" {
        let err = j["memo"]["error"].to_string();
        assert!(
            !err.is_empty() && err != "null",
            "a failed backup says why: {j}"
        );
        if let Some(b2) = b2 {
            let dir = store_dir.join(format!("cluster_{}/backup_{b2}", c.cluster_id));
            assert!(
                files_under(&dir).is_empty(),
                "a failed backup leaves no file: {:?}",
                files_under(&dir)
            );
            let bk = ctl(&c.base, &["--json", "backup", "show", &b2.to_string()])
                .ok()
                .json();
            assert_eq!(bk["status"], "failed", "{bk}");
        }
    } else {
        assert_eq!(j["status"], "done", "{j}");
    }

    // HA promoted the replica; writes on it are archived from it, with no gap.
    let t0 = Instant::now();
    let new_primary = loop {
        let d = ctl(
            &c.base,
            &["--json", "cluster", "show", &c.cluster_id.to_string()],
        )
        .ok()
        .json();
        let p = d["shards"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["shard"]["id"] == *sid))
            .and_then(|s| s["nodes"].as_array())
            .and_then(|n| n.iter().find(|n| n["member_state"] == "source"))
            .and_then(|n| n["port"].as_u64())
            .map(|p| p as u16);
        if let Some(p) = p.filter(|p| *p != old) {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no failover of shard {sid}\ndaemon log:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(new_primary, replica);
    let written = rt.block_on(async {
        let mut p = c.conn(&pwd, new_primary).await;
        for i in 0..20 {
            p.query_drop(format!("INSERT INTO bf.u VALUES ({}, {sid})", 1000 + i))
                .await
                .expect("a write on the new primary");
        }
        p.query_first::<String, _>("SELECT @@gtid_binlog_pos")
            .await
            .expect("pos")
            .expect("a position")
    });
    let written_at = std::time::SystemTime::now();
    let t0 = Instant::now();
    let archive = loop {
        let (st, a) = c.daemon.get(
            &http(Duration::from_secs(30)),
            &format!("/v1/backups/{b1}/archive"),
        );
        assert_eq!(st, 200, "{a}");
        let s = a["shards"]
            .as_array()
            .and_then(|v| v.iter().find(|s| s["shard_id"] == *sid))
            .cloned()
            .unwrap_or_default();
        let covered = s["covered_until"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp());
        let after = written_at
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        if s["source"] == format!("{IP}:{new_primary}")
            && covered.is_some_and(|c| c > after)
            && contains(s["end_gtid"].as_str().unwrap_or_default(), &written)
        {
            break a;
        }
        assert!(
            s["gap"].is_null(),
            "no gap in the archive of shard {sid}: {a}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the archive does not follow the new primary: {a}\ndaemon log (archiving, \
             failover, warnings):\n{}",
            daemon_lines(&c, &["archiv", "failover", "WARN", "ERROR", "promot"])
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "archive after the failover ({:?} after the kill): {archive}",
        killed_at.elapsed().unwrap_or_default()
    );
    for s in archive["shards"].as_array().expect("shards") {
        assert!(s["gap"].is_null(), "{s}");
    }
    // GTID continuity of the archived files, from the snapshot on.
    let index: Value = serde_json::from_slice(
        &std::fs::read(store_dir.join(format!("cluster_{}/binlog/index.json", c.cluster_id)))
            .expect("the archive index"),
    )
    .expect("index JSON");
    let log = &index["shards"][sid.to_string()];
    let files = log["files"].as_array().expect("files");
    assert!(!files.is_empty(), "{log}");
    let mut end = log["start_gtid"].as_str().expect("start").to_string();
    let mut sources = std::collections::BTreeSet::new();
    for f in files {
        let (s, e) = (
            f["start"].as_str().expect("start"),
            f["end"].as_str().expect("end"),
        );
        assert!(
            contains(&end, s),
            "file {} starts at {s}, after the archive reached {end}: a hole",
            f["rel"]
        );
        assert!(contains(e, s), "{f}");
        end = e.to_string();
        sources.insert(f["source"].as_str().unwrap_or_default().to_string());
        let on_disk = store_dir.join(f["rel"].as_str().expect("rel"));
        assert_eq!(
            std::fs::metadata(&on_disk).map(|m| m.len()).ok(),
            f["bytes"].as_u64(),
            "{}",
            on_disk.display()
        );
    }
    assert!(
        contains(&end, &written),
        "the archive reaches {written}: {end}"
    );
    assert!(
        sources.contains(&format!("{IP}:{new_primary}")),
        "files of the new primary are archived: {sources:?}"
    );

    // Damage on the storage: verify fails and names the file.
    let snap = store_dir.join(format!("cluster_{}/backup_{b1}", c.cluster_id));
    let victim = files_under(&snap)
        .into_iter()
        .find(|f| f.ends_with(".mbstream.zst"))
        .expect("a shard snapshot file");
    let mut bytes = std::fs::read(&victim).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&victim, &bytes).expect("write");
    let out = ctl(
        &c.base,
        &["--json", "backup", "verify", &b1.to_string(), "--wait"],
    );
    assert_ne!(out.code, 0, "a damaged backup does not verify: {out:#?}");
    let text = format!("{out:?}");
    assert!(text.contains("damaged"), "{text}");

    // Pruning: a newer backup, then the older ones removed: the archive starts at the newer
    // one, and the archived files its snapshots already hold are gone from the storage.
    let out = backup_create(&c, "bf_local", &["--allow-primary", "--wait"]);
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let b3 = out.json()["memo"]["backup_id"].as_i64().expect("backup id");
    let index_path = store_dir.join(format!("cluster_{}/binlog/index.json", c.cluster_id));
    let read_index = || -> Value {
        serde_json::from_slice(&std::fs::read(&index_path).expect("the archive index"))
            .expect("index JSON")
    };
    let rels = |i: &Value| -> Vec<String> {
        let mut out: Vec<String> = i["shards"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|s| s["files"].as_array().cloned().unwrap_or_default())
            .chain(
                i["commit_log"]["segments"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            )
            .filter_map(|f| f["rel"].as_str().map(str::to_string))
            .collect();
        out.sort();
        out
    };
    let before = rels(&read_index());
    for old in std::iter::once(b1).chain(b2) {
        let out = ctl(&c.base, &["--json", "backup", "rm", &old.to_string()]);
        assert_eq!(out.code, 0, "{out:#?}");
    }
    let t0 = Instant::now();
    // The index is written first, then the pruned files are removed.
    let pruned = loop {
        let i = read_index();
        let kept = rels(&i);
        let on_disk = before
            .iter()
            .filter(|r| !kept.contains(r))
            .any(|r| store_dir.join(r).exists());
        if i["from_backup"] == b3 && !on_disk {
            break i;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the archive still starts at backup {} (or pruned files are still there)\n{}",
            i["from_backup"],
            daemon_lines(&c, &["archiv", "WARN", "ERROR"])
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let kept = rels(&pruned);
    let gone: Vec<&String> = before.iter().filter(|r| !kept.contains(r)).collect();
    eprintln!(
        "pruned to backup {b3}: {} of {} files removed",
        gone.len(),
        before.len()
    );
    assert!(
        !gone.is_empty(),
        "the files written before backup {b3} are pruned: {pruned}"
    );
    for r in &gone {
        assert!(
            !store_dir.join(r).exists(),
            "{r} was pruned but is still there"
        );
    }
    for r in &kept {
        assert!(
            store_dir.join(r).exists(),
            "{r} is in the index but not on the storage"
        );
    }
    let (st, a) = c.daemon.get(
        &http(Duration::from_secs(30)),
        &format!("/v1/backups/{b3}/archive"),
    );
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        a["shards"].as_array().map(Vec::len),
        Some(2),
        "the archive continues backup {b3}: {a}"
    );
}
