//! Cluster backups (`backup_cluster`) on real servers, through the real daemon and `kunlunctl`.
//!
//! On 127.0.0.93: a cluster of 2 shards x 2 nodes + 1 compute node created by the daemon, rows
//! written on each shard; a backup storage (a directory on that machine over SSH) registered
//! over REST; `kunlunctl backup create --wait`: the job is done, the catalogue holds a `done`
//! backup with a part per shard and one for the compute node, each file on the storage with
//! the size and SHA-256 the catalogue records, every shard's snapshot taken from its replica
//! (not the primary) at a GTID. One shard's snapshot is extracted and prepared here
//! (`mbstream -x`, `mariadb-backup --prepare`) and a scratch `mariadbd` started on it: the rows
//! written before the backup are all there. `kunlunctl backup rm` removes the files and the
//! rows. The Emit `manual_backup_cluster` backs up onto the only storage (`get_status` names
//! the backup). A backup schedule (`kunlunctl backup schedule`, the daemon's scheduler every
//! 2 s) whose window opens a few seconds later, keeping one backup: a backup is taken in the
//! window and the older one removed (rows and files); the Emit
//! `update_cluster_coldback_time_period` moves the window (the schedule and the shards'
//! `coldbackup_period` show it). A second storage on 127.0.0.94 whose sshd is then stopped: a
//! backup to it fails cleanly (the job failed, the backup `failed` with the reason, no file
//! anywhere), and Emit refuses to choose between two storages.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kunlun_tests::cli::ctl;
use kunlun_tests::daemon::http;
use kunlun_tests::daemon_cluster::{DaemonCluster, Shape};
use kunlun_tests::emit::Emit;
use kunlun_tests::{free_port_block, MariaDb, MariaDbOptions, Sshd};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 93);
const UNREACHABLE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 94);
/// Rows written on each shard before the backup.
const ROWS: i64 = 3000;

/// Runs `cmd`, panicking with its output unless it exits 0.
fn sh(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(p: &Path) -> String {
    let mut c = Command::new("sha256sum");
    c.arg(p);
    sh(c, "sha256sum")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Every file under `dir` (relative paths), none when it does not exist.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Registers the backup storage `name`: `path` on the machine at `host`, over REST.
fn add_storage(c: &DaemonCluster, name: &str, host: &str, path: &Path) {
    let (st, v) = c.daemon.post(
        &http(Duration::from_secs(60)),
        "/v1/backup_storages",
        &json!({"name": name, "kind": "ssh_dir", "hostaddr": host,
                "path": path.display().to_string()}),
    );
    assert_eq!(st, 201, "storage {name}: {v}\n{}", c.log());
}

/// `HH:MM:SS-HH:MM:SS` (UTC) from `from` seconds after the epoch, `len` seconds long.
fn window(from: i64, len: i64) -> String {
    let t = |s: i64| {
        let d = s.rem_euclid(86_400);
        format!("{:02}:{:02}:{:02}", d / 3600, d / 60 % 60, d % 60)
    };
    format!("{}-{}", t(from), t(from + len))
}

/// The cluster's backups, newest first, as `GET /v1/backups?cluster_id=` lists them.
fn backups_of(c: &DaemonCluster) -> Vec<Value> {
    let (st, v) = c.daemon.get(
        &http(Duration::from_secs(30)),
        &format!("/v1/backups?cluster_id={}", c.cluster_id),
    );
    assert_eq!(st, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

/// The newest backup of the cluster, with its parts.
fn newest_backup(c: &DaemonCluster) -> Value {
    let list = ctl(
        &c.base,
        &[
            "--json",
            "backup",
            "list",
            "--cluster",
            &c.cluster_id.to_string(),
        ],
    )
    .ok()
    .json();
    let id = list[0]["id"].as_i64().expect("a backup");
    ctl(&c.base, &["--json", "backup", "show", &id.to_string()])
        .ok()
        .json()
}

#[test]
fn a_cluster_is_backed_up_from_its_replicas_restorable_and_removed_and_an_unreachable_storage_fails_cleanly(
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The scheduler every 2 s; no binlog archiving (its own test's subject): its files next
    // to the backups would outlive them on the storage this test checks is left empty.
    let c = DaemonCluster::start_with(
        IP,
        "bk1",
        Shape {
            shards: 2,
            nodes: 2,
            comps: 1,
        },
        &[
            "backup_schedule_interval = 2",
            "binlog_archive_interval = 0",
        ],
    );
    let shards = c.shards();
    assert_eq!(shards.len(), 2);
    let pwd = rt.block_on(c.manager_pwd());
    // Rows on each shard (its id in every row), and every replica holding them.
    rt.block_on(async {
        for (sid, nodes) in &shards {
            let primary = nodes.iter().find(|n| n.2 == "source").expect("a primary");
            let mut p = c.conn(&pwd, primary.1).await;
            p.query_drop(format!(
                "CREATE DATABASE bk; CREATE TABLE bk.t (id BIGINT PRIMARY KEY, shard BIGINT, \
                 v VARCHAR(100)); INSERT INTO bk.t SELECT seq, {sid}, MD5(seq) \
                 FROM bk.seq_1_to_{ROWS}"
            ))
            .await
            .expect("rows");
            let pos: String = p
                .query_first("SELECT @@gtid_binlog_pos")
                .await
                .expect("gtid")
                .unwrap_or_default();
            for r in nodes.iter().filter(|n| n.2 != "source") {
                let mut rc = c.conn(&pwd, r.1).await;
                let w: Option<String> = rc
                    .query_first(format!(
                        "SELECT CAST(MASTER_GTID_WAIT('{pos}', 60) AS CHAR)"
                    ))
                    .await
                    .expect("wait");
                assert_eq!(w.as_deref(), Some("0"), "replica {} reaches {pos}", r.1);
            }
        }
    });
    let store_dir = c.wd.path().join("backups");
    add_storage(&c, "bk_local", &IP.to_string(), &store_dir);

    // The backup, over the CLI.
    let out = ctl(
        &c.base,
        &[
            "backup",
            "create",
            "bk1",
            "--storage",
            "bk_local",
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", c.log());
    let bk = newest_backup(&c);
    assert_eq!(bk["status"], "done", "{bk}");
    let job = c
        .daemon
        .get(
            &http(Duration::from_secs(30)),
            &format!("/v1/jobs/{}", bk["job_id"]),
        )
        .1;
    assert_eq!(job["status"], "done", "{job}");
    let parts = bk["parts"].as_array().expect("parts").clone();
    assert_eq!(parts.len(), 3, "two shards and a compute node: {bk}");
    let mut total = 0u64;
    for (sid, nodes) in &shards {
        let p = parts
            .iter()
            .find(|p| p["backup_type"] == "storage" && p["shard_id"] == *sid)
            .unwrap_or_else(|| panic!("a part of shard {sid}: {bk}"));
        assert_eq!(p["status"], "done", "{p}");
        let m = &p["memo"]["part"];
        let source = m["source_node_id"].as_i64().expect("source node");
        let node = nodes
            .iter()
            .find(|n| n.0 == source)
            .expect("a node of the shard");
        assert_eq!(
            node.2, "replica",
            "shard {sid} was read from its replica: {p}"
        );
        let gtid = m["gtid"].as_str().expect("gtid");
        assert!(!gtid.is_empty(), "the snapshot's GTID: {p}");
        total += m["bytes"].as_u64().expect("bytes");
    }
    let comp = parts
        .iter()
        .find(|p| p["backup_type"] == "compute")
        .expect("the compute part");
    assert_eq!(comp["status"], "done", "{comp}");
    // Every file as the catalogue says.
    for p in &parts {
        let m = &p["memo"]["part"];
        let f = store_dir.join(p["backup_addr"].as_str().expect("rel"));
        let len = std::fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .len();
        assert_eq!(Some(len), m["bytes"].as_u64(), "size of {}", f.display());
        assert_eq!(
            Some(sha256(&f).as_str()),
            m["sha256"].as_str(),
            "SHA-256 of {}",
            f.display()
        );
    }
    let dir = store_dir.join(format!("cluster_{}/backup_{}", c.cluster_id, bk["id"]));
    let mut names = files_under(&dir);
    names.retain(|n| !n.ends_with(".mbstream.zst"));
    assert_eq!(
        names,
        [
            "commit_log.jsonl",
            "comp.sql",
            "ddl_ops_log.jsonl",
            "manifest.json",
            "meta.json"
        ],
        "the files of {}",
        dir.display()
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(
        manifest["files"].as_array().map(Vec::len),
        Some(6),
        "{manifest}"
    );
    assert!(bk["bytes"].as_u64().expect("bytes") > total, "{bk}");
    let schema = std::fs::read_to_string(dir.join("comp.sql")).expect("comp.sql");
    assert!(
        schema.contains("PostgreSQL database"),
        "a pg_dumpall: {schema:.300}"
    );

    // A shard's snapshot is a consistent copy: prepared and started, it holds every row.
    let (sid, _) = &shards[0];
    let part = parts
        .iter()
        .find(|p| p["shard_id"] == *sid)
        .expect("the part");
    let extracted = c.wd.path().join("restored");
    std::fs::create_dir(&extracted).expect("dir");
    // Stored compressed: zstd's frame, smaller than the data it holds.
    let snapshot = store_dir.join(part["backup_addr"].as_str().expect("rel"));
    let head = std::fs::read(&snapshot).expect("the snapshot");
    assert_eq!(
        head.get(..4),
        Some(&[0x28, 0xb5, 0x2f, 0xfd][..]),
        "a zstd frame"
    );
    let entry = manifest["files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["shard_id"] == *sid))
        .expect("the snapshot in the manifest");
    assert_eq!(entry["compression"], "zstd", "{entry}");
    let data_kb = entry["data_kb"].as_u64().expect("data_kb");
    assert!(
        (head.len() as u64) < data_kb * 1024,
        "{} bytes for {data_kb} KB",
        head.len()
    );
    let mut x = Command::new("bash");
    x.arg("-c")
        .arg("set -o pipefail; zstd -d -c -q -- \"$1\" | mbstream -x -C \"$2\"")
        .arg("unzstd")
        .arg(&snapshot)
        .arg(&extracted);
    sh(x, "zstd -d | mbstream -x");
    let mut prep = Command::new("mariadb-backup");
    prep.arg("--prepare")
        .arg(format!("--target-dir={}", extracted.display()));
    sh(prep, "mariadb-backup --prepare");
    let scratch = MariaDb::start_with(MariaDbOptions {
        datadir_from: Some(extracted.clone()),
        extra_args: vec!["--skip-grant-tables".into(), "--skip-slave-start".into()],
        ..MariaDbOptions::default()
    })
    .expect("a scratch server on the restored data");
    let got = scratch
        .sql("SELECT COUNT(*), COUNT(DISTINCT id), MIN(shard), MAX(shard) FROM bk.t")
        .expect("the rows");
    assert_eq!(
        got.trim(),
        format!("{ROWS}\t{ROWS}\t{sid}\t{sid}"),
        "the restored shard holds every row written before the backup"
    );
    scratch.stop().expect("scratch stopped");

    // Removal: files and rows.
    let id = bk["id"].as_i64().expect("id").to_string();
    ctl(&c.base, &["backup", "rm", &id]).ok();
    assert!(files_under(&dir).is_empty(), "{:?}", files_under(&dir));
    let gone = ctl(&c.base, &["backup", "show", &id]);
    assert_eq!(gone.code, 1, "{gone:#?}");
    let list = ctl(
        &c.base,
        &[
            "--json",
            "backup",
            "list",
            "--cluster",
            &c.cluster_id.to_string(),
        ],
    )
    .ok()
    .json();
    assert_eq!(list, json!([]), "no backup left");

    // The Emit API's `manual_backup_cluster`: the only storage; `get_status` follows it.
    let emit = Emit::new(&c.base);
    let cid = c.cluster_id.to_string();
    let a = emit.run_done(
        "manual_backup_cluster",
        json!({ "cluster_id": cid }),
        Duration::from_secs(600),
    );
    let by_emit = a.body["attachment"]["backup_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("get_status names the backup: {}", a.text));
    let shown = ctl(&c.base, &["--json", "backup", "show", &by_emit.to_string()])
        .ok()
        .json();
    assert_eq!(shown["status"], "done", "{shown}");

    // A schedule whose window opens in 3 s (after that backup started), keeping one backup.
    let scheduling = std::time::Instant::now();
    let now = chrono::Utc::now().timestamp();
    let w1 = window(now + 3, 600);
    let bad = ctl(
        &c.base,
        &[
            "backup",
            "schedule",
            "bk1",
            "--storage",
            "bk_local",
            "--window",
            "24:00:00-01:00:00",
        ],
    );
    assert_ne!(bad.code, 0, "a bad window is refused: {bad:#?}");
    let unknown = ctl(
        &c.base,
        &[
            "backup",
            "schedule",
            "bk1",
            "--storage",
            "nowhere",
            "--window",
            &w1,
        ],
    );
    assert_ne!(
        unknown.code, 0,
        "an unknown storage is refused: {unknown:#?}"
    );
    let sched_path = format!("/v1/clusters/{}/backup_schedule", c.cluster_id);
    let (st, _) = c.daemon.get(&http(Duration::from_secs(30)), &sched_path);
    assert_eq!(st, 404, "no schedule stored by the refused requests");
    let set = ctl(
        &c.base,
        &[
            "--json",
            "backup",
            "schedule",
            "bk1",
            "--storage",
            "bk_local",
            "--window",
            &w1,
            "--keep-count",
            "1",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        (
            &set["window"],
            &set["keep_count"],
            &set["storage"],
            &set["enabled"]
        ),
        (&json!(w1), &json!(1), &json!("bk_local"), &json!(true)),
        "{set}"
    );
    // The scheduler takes a backup in the window, then keeps only it.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let scheduled = loop {
        let list = backups_of(&c);
        let newer = list
            .iter()
            .find(|b| b["id"].as_i64().is_some_and(|id| id > by_emit))
            .cloned();
        if let Some(b) = newer.filter(|b| b["status"] != "ongoing") {
            assert_eq!(
                b["status"],
                "done",
                "the scheduled backup: {b}\n{}",
                c.log()
            );
            if list.len() == 1 {
                break b;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled backup, or the older one kept: {list:?}\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let job = c
        .daemon
        .get(
            &http(Duration::from_secs(30)),
            &format!("/v1/jobs/{}", scheduled["job_id"]),
        )
        .1;
    assert_eq!(
        (&job["status"], &job["job_type"]),
        (&json!("done"), &json!("backup_cluster")),
        "{job}"
    );
    let old_dir = store_dir.join(format!("cluster_{}/backup_{by_emit}", c.cluster_id));
    assert!(
        !old_dir.exists(),
        "retention removed the older backup's files: {:?}",
        files_under(&old_dir)
    );
    let new_dir = store_dir.join(format!(
        "cluster_{}/backup_{}",
        c.cluster_id, scheduled["id"]
    ));
    assert!(
        files_under(&new_dir).contains(&"manifest.json".to_string()),
        "the scheduled backup is on the storage"
    );

    // The Emit API moves the window (a time now is not in); its storage and retention stay.
    let w2 = window(now + 7200, 3600);
    emit.run_done(
        "update_cluster_coldback_time_period",
        json!({ "cluster_id": cid, "time_period_str": w2 }),
        Duration::from_secs(60),
    );
    let (st, shown) = c.daemon.get(&http(Duration::from_secs(30)), &sched_path);
    assert_eq!(st, 200, "{shown}");
    assert_eq!(
        (&shown["window"], &shown["keep_count"], &shown["storage"]),
        (&json!(w2), &json!(1), &json!("bk_local")),
        "{shown}"
    );
    let detail = ctl(&c.base, &["--json", "cluster", "show", &cid])
        .ok()
        .json();
    for s in detail["shards"].as_array().expect("shards") {
        assert_eq!(s["shard"]["coldbackup_period"], json!(w2), "{s}");
    }
    // Removed: the backups stay, and are removed by hand.
    ctl(&c.base, &["backup", "schedule", "bk1", "--off"]).ok();
    let (st, _) = c.daemon.get(&http(Duration::from_secs(30)), &sched_path);
    assert_eq!(st, 404);
    ctl(&c.base, &["backup", "rm", &scheduled["id"].to_string()]).ok();
    eprintln!(
        "backup schedule: scheduled backup, retention and the Emit window in {:.1} s",
        scheduling.elapsed().as_secs_f64()
    );

    // A storage whose machine stops answering: the backup fails, nothing is kept.
    let far = Sshd::start_on(UNREACHABLE_IP).expect("sshd on 127.0.0.94");
    std::fs::create_dir(c.wd.path().join("far")).expect("its data dir");
    let p = free_port_block(IpAddr::V4(UNREACHABLE_IP), 11);
    let (st, v) = c.daemon.post(
        &http(Duration::from_secs(30)),
        "/v1/machines",
        &json!({
            "hostaddr": UNREACHABLE_IP.to_string(), "machine_type": "computer",
            "ssh_port": far.port(), "ssh_user": far.user(),
            "ssh_key_path": far.user_key().private.display().to_string(),
            "data_dirs": [c.wd.path().join("far").display().to_string()],
            "port_range": format!("{p}-{}", p + 10),
        }),
    );
    assert_eq!(st, 201, "{v}");
    let far_dir = c.wd.path().join("far-backups");
    add_storage(&c, "bk_far", &UNREACHABLE_IP.to_string(), &far_dir);
    far.stop().expect("the storage machine's sshd stopped");
    let out = ctl(
        &c.base,
        &[
            "backup",
            "create",
            "bk1",
            "--storage",
            "bk_far",
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    assert_eq!(out.code, 1, "the job failed: {out:#?}");
    // Two storages now: the Emit request must name one.
    let (code, info) = emit.run_failed(
        "manual_backup_cluster",
        json!({ "cluster_id": cid }),
        Duration::from_secs(60),
    );
    assert_eq!(code, "70005", "{info}");
    assert!(info.contains("storage_name"), "{info}");
    let failed = newest_backup(&c);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert!(
        failed["parts"]
            .as_array()
            .is_none_or(|p| p.iter().all(|p| p["status"] != "done")),
        "no part stays done: {failed}"
    );
    assert!(
        files_under(&far_dir).is_empty(),
        "{:?}",
        files_under(&far_dir)
    );
    assert!(
        files_under(&store_dir.join(format!("cluster_{}", c.cluster_id))).is_empty(),
        "nothing on the first storage either"
    );
}
