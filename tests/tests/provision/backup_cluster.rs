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
//! the backup). A second storage on 127.0.0.94 whose sshd is then stopped: a backup to it fails
//! cleanly (the job failed, the backup `failed` with the reason, no file anywhere), and Emit
//! refuses to choose between two storages.

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
    let c = DaemonCluster::start(
        IP,
        "bk1",
        Shape {
            shards: 2,
            nodes: 2,
            comps: 1,
        },
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
    names.retain(|n| !n.ends_with(".mbstream"));
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
    let stream = std::fs::File::open(store_dir.join(part["backup_addr"].as_str().expect("rel")))
        .expect("the snapshot");
    let mut x = Command::new("mbstream");
    x.arg("-x").arg("-C").arg(&extracted).stdin(stream);
    sh(x, "mbstream -x");
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
    ctl(&c.base, &["backup", "rm", &by_emit.to_string()]).ok();

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
