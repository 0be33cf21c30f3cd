//! Backup storages (#16) against real sshds on loopback addresses.
//!
//! Library (127.0.0.121): a storage registered through the manager (machine registered, the
//! directory created 0700) and opened by name with `backup::registry::open`, as the backup job
//! does; a few MB put from a source command and read back: the storage-side SHA-256 equals a
//! local `sha256sum`, the file is 0600, `checksum` agrees, `get` streams the same bytes, small
//! files round-trip and `get_bytes` refuses more than asked; a source that fails half-way
//! leaves neither the file nor a `.part-` file; on a 2 MB tmpfs a 5 MB put fails with "no space
//! left on <host>:<dir>" and leaves nothing; `remove` removes; the storage's machine cannot be
//! deleted while the storage is registered.
//!
//! Daemon (127.0.0.122, plus 127.0.0.123 stopped): `POST /v1/backup_storages`, the CLI's
//! `backup-storage add|list|show|rm`, the refusals (malformed body, unknown field, unknown
//! host, bad path, taken name, unreachable machine: nothing stored), `show` with free space,
//! and the Emit types with the original's codes (HDFS refused with 70203, SSH_DIR created,
//! 70201 for a taken name, 70202 for an unknown one, `get_backup_storage` listing ours).

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kunlun_core::backup::registry;
use kunlun_core::backup::store::Endpoint;
use kunlun_core::fleet::Provisioner;
use kunlun_core::{ClusterManager, CoreConfig, Error};
use kunlun_meta::api::{AddBackupStorage, RegisterMachine};
use kunlun_meta::model::MachineType;
use kunlun_meta::{Store, StoreConfig};
use kunlun_tests::cli::{ctl, workdir};
use kunlun_tests::daemon::Daemon;
use kunlun_tests::emit::Emit;
use kunlun_tests::tmpfs::Tmpfs;
use kunlun_tests::Sshd;
use serde_json::{json, Value};

const LIB_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 121);
const DAEMON_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 122);
const GONE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 123);
const T: Duration = Duration::from_secs(60);

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

fn random_file(path: &Path, bytes: usize) {
    use std::io::Read;
    let mut data = Vec::with_capacity(bytes);
    std::fs::File::open("/dev/urandom")
        .expect("/dev/urandom")
        .take(bytes as u64)
        .read_to_end(&mut data)
        .expect("random bytes");
    std::fs::write(path, data).expect("write random file");
}

/// Names in `dir` (none when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn register_request(sshd: &Sshd, data_dir: &Path) -> RegisterMachine {
    RegisterMachine {
        hostaddr: sshd.host(),
        machine_type: MachineType::Storage,
        ssh_port: Some(sshd.port()),
        ssh_user: Some(sshd.user().to_string()),
        ssh_key_path: sshd.user_key().private.display().to_string(),
        data_dirs: vec![data_dir.display().to_string()],
        port_range: None,
        rack_id: None,
        total_mem_mb: None,
        total_cpu_cores: None,
        probe: false,
        ssh_host_key: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_dir_storage_keeps_whole_files_only() {
    let sshd = Sshd::start_on(LIB_IP).expect("sshd");
    let wd = workdir();
    let dir = wd.path();
    let store = Store::open(&StoreConfig::sqlite(dir.join("meta.db")))
        .await
        .expect("store");
    let m = ClusterManager::new(CoreConfig::default(), store.clone());
    m.set_provisioner(Provisioner::with_system_servers(dir.join("known_hosts")));
    let data = dir.join("data");
    std::fs::create_dir(&data).expect("data dir");
    m.register_machine(&register_request(&sshd, &data))
        .await
        .expect("machine");
    let root = dir.join("backups/main");
    let add = |name: &str, path: &Path| AddBackupStorage {
        name: name.into(),
        kind: "ssh_dir".into(),
        hostaddr: sshd.host(),
        path: path.display().to_string(),
    };
    let info = m
        .add_backup_storage(&add("main", &root))
        .await
        .expect("storage");
    assert!(info.free_bytes.unwrap_or(0) > 0, "{info:?}");
    assert_eq!(mode(&root), 0o700, "the root is created 0700");
    assert_eq!(
        info.storage.conn_str,
        format!("sshdir://{}{}", sshd.host(), root.display())
    );

    let fleet = m.probe_provisioner().expect("provisioner").clone();
    let (row, st) = registry::open(&store, &fleet, "main").await.expect("open");
    assert_eq!(row.path, root.display().to_string());
    assert_eq!(
        registry::backups_using(&store, row.id)
            .await
            .expect("count"),
        0
    );
    let machine = store.get_machine(row.machine_id).await.expect("machine");
    let here = fleet.target(&machine);
    let source = |cmd: String| Endpoint {
        target: here.clone(),
        command: cmd,
    };

    // A few MB, hashed on the storage side as they arrive.
    let src = dir.join("src.bin");
    random_file(&src, 3 * 1024 * 1024 + 17);
    let stored = st
        .put(
            &source(format!("cat {}", src.display())),
            "c1/b1/shard_1.mbs",
            Some(50 << 20),
            T,
        )
        .await
        .expect("put");
    assert_eq!(stored.bytes, 3 * 1024 * 1024 + 17);
    assert_eq!(stored.sha256, sha256_of(&src), "storage-side SHA-256");
    let file = root.join("c1/b1/shard_1.mbs");
    assert_eq!(mode(&file), 0o600, "backup files are 0600");
    assert_eq!(mode(&root.join("c1/b1")), 0o700, "backup dirs are 0700");
    assert_eq!(
        names(&root.join("c1/b1")),
        vec!["shard_1.mbs"],
        "no temporary file left"
    );
    assert_eq!(
        st.checksum("c1/b1/shard_1.mbs", T).await.expect("checksum"),
        stored
    );
    let back = dir.join("back.bin");
    let n = st
        .get(
            "c1/b1/shard_1.mbs",
            &source(format!("cat > {}", back.display())),
            T,
        )
        .await
        .expect("get")
        .bytes;
    assert_eq!(n, stored.bytes);
    assert_eq!(
        sha256_of(&back),
        stored.sha256,
        "get streams the same bytes"
    );

    // Small files.
    let manifest = br#"{"backup": 1}"#;
    let s = st
        .put_bytes("c1/b1/manifest.json", manifest, T)
        .await
        .expect("put_bytes");
    assert_eq!(s.bytes, manifest.len() as u64);
    assert_eq!(
        st.get_bytes("c1/b1/manifest.json", 1024, T)
            .await
            .expect("get_bytes"),
        manifest
    );
    let too_big = st.get_bytes("c1/b1/manifest.json", 4, T).await;
    assert!(matches!(too_big, Err(Error::Invalid(_))), "{too_big:?}");
    let missing = st.get_bytes("c1/b1/nothing.json", 1024, T).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    assert!(
        st.put_bytes("../escape", b"x", T).await.is_err(),
        "relative paths only"
    );

    // A source that fails half-way: nothing under the name, no temporary file.
    let failing = source("head -c 2000000 /dev/urandom; sleep 0.3; exit 7".into());
    let e = st
        .put(&failing, "c1/b2/shard_1.mbs", None, T)
        .await
        .expect_err("failed source");
    eprintln!("failed source: {e}");
    assert!(e.to_string().contains("exit 7"), "{e}");
    assert_eq!(
        names(&root.join("c1/b2")),
        Vec::<String>::new(),
        "nothing left"
    );

    // A full disk: a 2 MB tmpfs, a 5 MB put.
    let small = dir.join("small");
    match Tmpfs::mount(&small, 2048) {
        Ok(_unmount) => {
            m.add_backup_storage(&add("small", &small))
                .await
                .expect("small storage");
            let (_, tiny) = registry::open(&store, &fleet, "small").await.expect("open");
            let big = source("head -c 5242880 /dev/zero".into());
            let e = tiny
                .put(&big, "c1/b1/shard_1.mbs", None, T)
                .await
                .expect_err("no space");
            let msg = e.to_string();
            eprintln!("full disk: {msg}");
            assert!(
                msg.contains(&format!(
                    "no space left on {}:{}",
                    sshd.host(),
                    small.display()
                )),
                "{msg}"
            );
            assert_eq!(
                names(&small.join("c1/b1")),
                Vec::<String>::new(),
                "nothing left"
            );
        }
        // The tests run as root (the harness's sshd logs in as root): a tmpfs can be mounted.
        Err(e) => panic!("the full-disk case needs a size-capped tmpfs, and mount failed: {e}"),
    }

    st.remove("c1", T).await.expect("remove");
    assert!(!root.join("c1").exists(), "removed");
    st.remove("c1", T)
        .await
        .expect("removing the absent is fine");

    // An unreachable storage's machine: the check fails with the reason, nothing stored.
    sshd.stop().expect("stop sshd");
    let e = m
        .add_backup_storage(&add("late", &dir.join("late")))
        .await
        .expect_err("unreachable");
    assert!(matches!(e, Error::MachineRefused { .. }), "{e:?}");
    let all = m.list_backup_storages().await.expect("list");
    assert_eq!(
        all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["main", "small"]
    );
    let shown = m.backup_storage("main").await.expect("show");
    assert!(
        shown.free_bytes.is_none() && shown.unreachable.is_some(),
        "{shown:?}"
    );
    let e = m
        .delete_machine(row.machine_id)
        .await
        .expect_err("holds storages");
    assert!(
        matches!(&e, Error::Conflict(msg) if msg.contains("main")),
        "{e:?}"
    );
}

fn http() -> reqwest::blocking::Client {
    kunlun_tests::daemon::http(Duration::from_secs(60))
}

fn post_raw(d: &Daemon, body: &str) -> (u16, Value) {
    let r = http()
        .post(d.url_for("/v1/backup_storages"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("POST");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn register_machine(d: &Daemon, sshd: &Sshd, data: &Path) {
    let (st, v) = d.post(
        &http(),
        "/v1/machines",
        &json!({
            "hostaddr": sshd.host(), "machine_type": "computer",
            "ssh_port": sshd.port(), "ssh_user": sshd.user(),
            "ssh_key_path": sshd.user_key().private.display().to_string(),
            "data_dirs": [data.display().to_string()], "probe": false,
        }),
    );
    assert_eq!(st, 201, "{v}");
}

fn storage_names(d: &Daemon) -> Vec<String> {
    let (st, v) = d.get(&http(), "/v1/backup_storages");
    assert_eq!(st, 200, "{v}");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn storages_are_registered_shown_and_removed_over_rest_the_cli_and_emit() {
    let sshd = Sshd::start_on(DAEMON_IP).expect("sshd");
    let gone = Sshd::start_on(GONE_IP).expect("sshd to stop");
    let wd = workdir();
    let dir = wd.path();
    let data = dir.join("data");
    std::fs::create_dir(&data).expect("data dir");
    let t0 = std::time::Instant::now();
    let mark = |what: &str| eprintln!("{:>6.1} s  {what}", t0.elapsed().as_secs_f64());
    let d = Daemon::start(dir, &dir.join("meta.db")).expect("daemon");
    mark("daemon up");
    let base = d.url();
    register_machine(&d, &sshd, &data);
    register_machine(&d, &gone, &data);
    let path = |name: &str| dir.join(name).display().to_string();
    let body = |name: &str, host: &str, p: &str| json!({"name": name, "kind": "ssh_dir", "hostaddr": host, "path": p});

    let (st, v) = d.post(
        &http(),
        "/v1/backup_storages",
        &body("rest1", &sshd.host(), &path("s1")),
    );
    assert_eq!(st, 201, "{v}");
    assert!(v["free_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["kind"], "ssh_dir");
    assert_eq!(mode(&dir.join("s1")), 0o700);

    mark("Refusals: nothing stored by any");
    // Refusals: nothing stored by any.
    for (raw, want) in [
        ("{not json", 400),
        (r#"["rest2","ssh_dir"]"#, 400),
        (
            &*json!({"name": "rest2", "kind": "ssh_dir", "hostaddr": sshd.host(),
                     "path": path("s2"), "extra": 1})
            .to_string(),
            400,
        ),
        (&*body("rest2", "127.0.0.250", &path("s2")).to_string(), 400),
        (
            &*body("rest2", &sshd.host(), "/tmp/../etc").to_string(),
            400,
        ),
        (
            &*body("rest2", &sshd.host(), "relative/dir").to_string(),
            400,
        ),
        (
            &*body("bad name", &sshd.host(), &path("s2")).to_string(),
            400,
        ),
        (
            &*body(
                "rest2",
                &sshd.host(),
                &format!("{}; touch /tmp/x", path("s2")),
            )
            .to_string(),
            400,
        ),
        (&*body("rest1", &sshd.host(), &path("s2")).to_string(), 409),
    ] {
        let (st, v) = post_raw(&d, raw);
        assert_eq!(st, want, "{raw}: {v}");
        assert!(v["code"].is_string(), "{v}");
    }
    assert!(
        !dir.join("s2").exists(),
        "no refused request touched the machine"
    );
    mark("stop the second sshd");
    gone.stop().expect("stop the second sshd");
    let (st, v) = d.post(
        &http(),
        "/v1/backup_storages",
        &body("rest3", &gone.host(), &path("s3")),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("machine_unreachable")),
        "{v}"
    );
    assert_eq!(storage_names(&d), vec!["rest1"], "nothing half-registered");

    mark("The CLI");
    // The CLI.
    let out = ctl(
        &base,
        &[
            "backup-storage",
            "add",
            "cli1",
            "--host",
            &sshd.host(),
            "--path",
            &path("c1"),
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("registered backup storage cli1"),
        "{out:?}"
    );
    let listed = ctl(&base, &["--json", "backup-storage", "list"])
        .ok()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let shown = ctl(&base, &["--json", "backup-storage", "show", "cli1"])
        .ok()
        .json();
    assert!(shown["free_bytes"].as_u64().unwrap_or(0) > 0, "{shown}");
    assert_eq!(shown["path"], path("c1"));
    let table = ctl(&base, &["backup-storage", "list"]).ok();
    assert!(
        table.stdout.contains("cli1") && table.stdout.contains("rest1"),
        "{table:?}"
    );
    let bad = ctl(
        &base,
        &[
            "backup-storage",
            "add",
            "x",
            "--host",
            &sshd.host(),
            "--path",
            "rel",
        ],
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    ctl(&base, &["backup-storage", "rm", "cli1"]).ok();
    let missing = ctl(&base, &["backup-storage", "show", "cli1"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("not_found"), "{missing:?}");

    mark("Emit");
    // Emit.
    let emit = Emit::new(&base);
    let lim = Duration::from_secs(60);
    let (code, info) = emit.run_failed(
        "create_backup_storage",
        json!({"name": "hd", "stype": "HDFS", "hostaddr": "10.0.0.1", "port": "9000"}),
        lim,
    );
    assert_eq!(code, "70203", "{info}");
    assert!(
        info.contains("HDFS is not supported") && info.contains("SSH_DIR"),
        "{info}"
    );
    let ours =
        json!({"name": "em1", "stype": "SSH_DIR", "hostaddr": sshd.host(), "path": path("e1")});
    emit.run_done("create_backup_storage", ours.clone(), lim);
    let (code, info) = emit.run_failed("create_backup_storage", ours, lim);
    assert_eq!(code, "70201", "{info}");
    let a = emit.call("get_backup_storage", json!({}));
    assert_eq!(
        (a.s("status"), a.s("error_code")),
        ("done", "0"),
        "{}",
        a.text
    );
    let list = &a.body["attachment"]["list_backup_storage"];
    assert_eq!(
        list,
        &json!([
            {"name": "rest1", "stype": "SSH_DIR", "hostaddr": sshd.host(),
             "port": sshd.port().to_string(), "path": path("s1")},
            {"name": "em1", "stype": "SSH_DIR", "hostaddr": sshd.host(),
             "port": sshd.port().to_string(), "path": path("e1")},
        ]),
        "{}",
        a.text
    );
    let (code, info) = emit.run_failed("delete_backup_storage", json!({"name": "nosuch"}), lim);
    assert_eq!(code, "70202", "{info}");
    emit.run_done("delete_backup_storage", json!({"name": "em1"}), lim);

    mark("REST delete");
    // REST delete.
    let r = http()
        .delete(d.url_for("/v1/backup_storages/rest1"))
        .send()
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 204);
    let (st, _) = d.get(&http(), "/v1/backup_storages/rest1");
    assert_eq!(st, 404);
    assert_eq!(storage_names(&d), Vec::<String>::new());
    assert!(
        dir.join("s1").exists(),
        "removing a storage keeps its files"
    );
}
