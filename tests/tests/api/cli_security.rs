//! Security of the real daemon and CLI: start-up refuses a non-loopback bind without
//! `auth = tokens` (exit 2, never listening); the first admin token is made with
//! `cluster-mgr token create`; `kunlunctl` authenticates from `$KUNLUNCTL_TOKEN`, a 0600 token
//! file or the default one, refuses a 0644 file, never prints the token, and explains 401/403;
//! a foreign `Host` is refused; the audit trail records who changed what; and the store, its
//! WAL, the log and `known_hosts` cannot be read by another OS user (`nobody`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kunlun_tests::cli::{bin, free_port, run, workdir, Ctl};
use kunlun_tests::daemon::Daemon;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn write_cnf(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let data = dir.join("data");
    let cnf = dir.join("cluster_mgr.cnf");
    std::fs::write(
        &cnf,
        format!(
            "brpc_http_port = {port}\nsqlite_path = {d}/meta.sqlite3\n\
             cluster_mgr_tmp_data_path = {d}\nlog_file = {d}/cluster-mgr.log\n\
             machine_check_interval = 0\n{extra}",
            d = data.display()
        ),
    )
    .unwrap();
    cnf
}

/// Starts the daemon on `cnf` (its dir the daemon's) and waits until `/healthz` answers;
/// SIGTERM, then SIGKILL, when dropped.
fn start(cnf: &Path, port: u16) -> Daemon {
    let dir = cnf.parent().expect("the cnf's dir");
    Daemon::command(dir, port)
        .config(cnf)
        .term_on_drop()
        .start()
        .expect("cluster-mgr answers /healthz")
}

/// `kunlunctl --server URL ARGS` with a private HOME and the given token environment.
fn ctl_as(server: &str, home: &Path, token_env: Option<&str>, args: &[&str]) -> Ctl {
    let mut cmd = Command::new(bin("kunlunctl"));
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("KUNLUNCTL_SERVER")
        .env_remove("KUNLUNCTL_TOKEN")
        .env("HOME", home);
    if let Some(t) = token_env {
        cmd.env("KUNLUNCTL_TOKEN", t);
    }
    run(cmd)
}

#[test]
fn a_non_loopback_bind_without_tokens_exits_2_before_listening() {
    let dir = workdir();
    let port = free_port();
    let cnf = write_cnf(dir.path(), port, "http_bind_address = 0.0.0.0\n");
    let mut child = Command::new(bin("cluster-mgr"))
        .arg("--config")
        .arg(&cnf)
        .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cluster-mgr did not exit on a refused config");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("auth = tokens"), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port}"
    );
    assert!(
        !dir.path().join("data/meta.sqlite3").exists(),
        "store created"
    );
}

#[test]
fn tokens_from_env_and_files_roles_host_check_audit_and_file_modes() {
    let dir = workdir();
    // Others may traverse the test's folder, so file and folder modes are what protects.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Left wide by an "older version": narrowed at start.
    for f in ["known_hosts", "cluster-mgr.log"] {
        std::fs::write(data.join(f), "old\n").unwrap();
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let port = free_port();
    let cnf = write_cnf(dir.path(), port, "");
    let server = format!("http://127.0.0.1:{port}");

    let _daemon = start(&cnf, port);
    // Open mode (loopback, no token yet).
    ctl_as(&server, &home, None, &["machine", "list"]).ok();

    // The first admin token, on the "manager host", straight on the store.
    let out = Command::new(bin("cluster-mgr"))
        .args([
            "token", "create", "--name", "root", "--role", "admin", "--config",
        ])
        .arg(&cnf)
        .output()
        .expect("token create");
    assert!(out.status.success(), "{out:?}");
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(admin.starts_with("kl_"), "{admin}");

    // No token any more: 401 with a hint.
    let r = ctl_as(&server, &home, None, &["machine", "list"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("unauthorized") && r.stderr.contains("KUNLUNCTL_TOKEN"),
        "{r:#?}"
    );

    // From the environment.
    let r = ctl_as(&server, &home, Some(&admin), &["machine", "list"]).ok();
    assert!(!r.stdout.contains(&admin) && !r.stderr.contains(&admin));

    // An operator token made through the API; its secret printed once.
    let r = ctl_as(
        &server,
        &home,
        Some(&admin),
        &[
            "--json", "token", "create", "--name", "ops", "--role", "operator",
        ],
    )
    .ok();
    let ops = r.json()["token"].as_str().expect("secret").to_string();

    // From a 0600 file; a 0644 file is refused before any request.
    let file = dir.path().join("ops.token");
    std::fs::write(&file, format!("{ops}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = file.to_str().unwrap();
    ctl_as(
        &server,
        &home,
        None,
        &["--token-file", f, "cluster", "list"],
    )
    .ok();
    // Operator is below admin: 403 with a hint.
    let r = ctl_as(
        &server,
        &home,
        None,
        &[
            "--token-file",
            f,
            "machine",
            "add",
            "--host",
            "10.7.7.7",
            "--type",
            "storage",
            "--ssh-key",
            "/root/.ssh/id_ed25519",
            "--data-dir",
            "/data/kl",
            "--no-probe",
        ],
    );
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("forbidden") && r.stderr.contains("role"),
        "{r:#?}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = ctl_as(
        &server,
        &home,
        None,
        &["--token-file", f, "cluster", "list"],
    );
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("insecure_token_file") && r.stderr.contains("chmod 600"),
        "{r:#?}"
    );
    assert!(!r.stderr.contains(&ops));

    // The default file ~/.config/kunlunctl/token.
    let cfg = home.join(".config/kunlunctl");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("token"), &admin).unwrap();
    std::fs::set_permissions(cfg.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    ctl_as(
        &server,
        &home,
        None,
        &[
            "machine",
            "add",
            "--host",
            "10.7.7.8",
            "--type",
            "storage",
            "--ssh-key",
            "/root/.ssh/id_ed25519",
            "--data-dir",
            "/data/kl",
            "--no-probe",
        ],
    )
    .ok();
    let r = ctl_as(&server, &home, None, &["token", "rm", "ops"]).ok();
    assert!(r.stdout.contains("revoked"));
    let r = ctl_as(&server, &home, Some(&ops), &["cluster", "list"]);
    assert_eq!(r.code, 1, "revoked: {r:#?}");
    let r = ctl_as(&server, &home, None, &["token", "list"]).ok();
    assert!(r.stdout.contains("root") && r.stdout.contains("ops"));
    assert!(!r.stdout.contains(&admin[3..]) && !r.stdout.contains(&ops[3..]));

    // The audit trail: who, what, outcome.
    let r = ctl_as(&server, &home, None, &["--json", "audit", "--limit", "100"]).ok();
    let audit = r.json();
    let entries = audit.as_array().expect("audit list");
    let has = |tok: &str, method: &str, path: &str, status: i64| {
        entries.iter().any(|e| {
            e["token_name"] == tok
                && e["method"] == method
                && e["path"] == path
                && e["status"] == status
        })
    };
    assert!(has("root", "POST", "/v1/tokens", 201), "{audit}");
    assert!(has("ops", "POST", "/v1/machines", 403), "{audit}");
    assert!(has("root", "POST", "/v1/machines", 201), "{audit}");
    assert!(has("root", "DELETE", "/v1/tokens/ops", 204), "{audit}");

    // DNS rebinding: a foreign Host is refused.
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(format!("{server}/v1/machines"))
        .header("host", "evil.example")
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);

    // Files: 0600 (the folder, made 0755 before the daemon ran, is left as it was: it may be
    // shared); `nobody` reads none of them.
    assert_eq!(mode(&data), 0o755);
    for f in [
        "meta.sqlite3",
        "meta.sqlite3-wal",
        "meta.sqlite3-shm",
        "cluster-mgr.log",
        "known_hosts",
    ] {
        let p = data.join(f);
        assert_eq!(mode(&p), 0o600, "{f}");
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "cat"])
            .arg(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runuser");
        assert!(!out.success(), "nobody can read {f}");
    }
}

#[test]
fn a_body_sent_too_slowly_is_cut_off_with_a_clear_error() {
    use std::io::{Read, Write};
    let dir = workdir();
    let port = free_port();
    let cnf = write_cnf(dir.path(), port, "http_client_timeout_secs = 2\n");
    let _daemon = start(&cnf, port);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // Head complete, then 10 of the 1000 body bytes announced, then nothing.
    let head = format!(
        "POST /v1/clusters HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":\"c"
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                    break;
                }
            }
            // A signal to this test process (another test's child exiting) interrupts the
            // read; it is not the daemon's answer.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("no answer to a stalled body: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    println!("stalled body answered after {:?}", started.elapsed());
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("not received within"), "{text}");
    // A folder the daemon created itself is its own: 0700.
    assert_eq!(mode(&dir.path().join("data")), 0o700);
}
