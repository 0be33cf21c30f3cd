//! SSH key files, host keys and host addresses at machine registration, through the real
//! daemon and real private sshds on loopback:
//! - `ssh_key_path` naming `/dev/kmsg`, a FIFO, a 0644 file, a key outside `ssh_keys_dir` or a
//!   symlink escaping it is a 422 `ssh_key_rejected` (the HTTP client's deadline bounds the
//!   wait: a blocking open would never answer), nothing is stored, the daemon keeps answering,
//!   and the liveness check of the other machines goes on, also when a registered machine's
//!   key is replaced by a FIFO on disk;
//! - with `ssh_host_key_policy = strict` an unknown host is refused naming the offered
//!   fingerprint, a wrong pin is refused, the right pin registers it (also through
//!   `kunlunctl machine add --ssh-host-key`) and records it in `known_hosts`;
//! - seven spellings of one address register once (the rest 409), a name that does not
//!   resolve is a 422.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kunlun_tests::cli::ctl;
use kunlun_tests::daemon::Daemon;
use kunlun_tests::Sshd;
use serde_json::{json, Value};

/// The probe's deadline (20 s) plus room: a request that hangs fails the test here.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("client")
}

/// `(status, body)` of a JSON request.
fn send(
    c: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = c.request(method, url);
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r
        .send()
        .expect("the daemon answers within the client's deadline");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn post(c: &reqwest::blocking::Client, d: &Daemon, body: &Value) -> (u16, Value) {
    send(
        c,
        reqwest::Method::POST,
        &format!("{}/v1/machines", d.url()),
        Some(body),
    )
}

fn machines(c: &reqwest::blocking::Client, d: &Daemon) -> Vec<Value> {
    let (st, list) = send(
        c,
        reqwest::Method::GET,
        &format!("{}/v1/machines", d.url()),
        None,
    );
    assert_eq!(st, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

fn register(sshd: &Sshd, key: &Path, data: &Path, probe: bool) -> Value {
    json!({
        "hostaddr": sshd.host(),
        "machine_type": "storage",
        "ssh_port": sshd.port(),
        "ssh_user": sshd.user(),
        "ssh_key_path": key.display().to_string(),
        "data_dirs": [data.display().to_string()],
        "probe": probe,
    })
}

/// A 0700 keys dir in `wd` with a 0600 copy of `sshd`'s user key named `name`.
fn keys_dir_with(wd: &Path, sshd: &Sshd, name: &str) -> (PathBuf, PathBuf) {
    let dir = wd.join("keys");
    std::fs::create_dir_all(&dir).expect("keys dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let key = dir.join(name);
    std::fs::copy(&sshd.user_key().private, &key).expect("copy key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (dir, key)
}

/// Waits (bounded) until machine `id` has `node_stats == state`.
fn wait_state(c: &reqwest::blocking::Client, d: &Daemon, id: i64, state: &str) {
    let limit = Instant::now() + Duration::from_secs(90);
    loop {
        let (st, m) = send(
            c,
            reqwest::Method::GET,
            &format!("{}/v1/machines/{id}", d.url()),
            None,
        );
        assert_eq!(st, 200, "{m}");
        if m["node_stats"] == state {
            return;
        }
        assert!(
            Instant::now() < limit,
            "machine {id} never became {state}: {m}\n{}",
            d.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

#[test]
fn unacceptable_key_files_are_a_422_and_block_nothing() {
    let a = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 41)).expect("sshd a");
    let b = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 42)).expect("sshd b");
    let wd = kunlun_tests::cli::workdir();
    let (keys, key_a) = keys_dir_with(wd.path(), &a, "id_a");
    let key_b = keys.join("id_b");
    std::fs::copy(&b.user_key().private, &key_b).expect("copy key b");
    std::fs::set_permissions(&key_b, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let keys_line = format!("ssh_keys_dir = {}", keys.display());
    let d = Daemon::start_with(
        wd.path(),
        &wd.path().join("meta.db"),
        &[&keys_line, "machine_check_interval = 0.5"],
    )
    .expect("daemon");
    let c = http();
    let data = wd.path().join("data");

    // Every kind of unusable key file: same code, nothing stored, nothing hangs.
    let fifo = keys.join("fifo");
    mkfifo(&fifo);
    let wide = keys.join("wide");
    std::fs::copy(&key_a, &wide).expect("copy");
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let escape = keys.join("escape");
    std::os::unix::fs::symlink(&a.user_key().private, &escape).expect("symlink");
    let outside = a.user_key().private.clone();
    for bad in [
        PathBuf::from("/dev/kmsg"),
        fifo.clone(),
        wide,
        outside,
        escape,
        keys.join("missing"),
    ] {
        let (st, body) = post(&c, &d, &register(&a, &bad, &data, true));
        assert_eq!(
            (st, body["code"].as_str()),
            (422, Some("ssh_key_rejected")),
            "{}: {body}",
            bad.display()
        );
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("not an acceptable key file") && msg.contains("ssh_keys_dir"),
            "{msg}"
        );
    }
    assert!(machines(&c, &d).is_empty(), "a refusal stores nothing");

    // A machine whose key is a FIFO, stored unprobed: its liveness check must not hold up
    // the others.
    let (st, stuck) = post(
        &c,
        &d,
        &json!({"hostaddr": "127.0.0.43", "machine_type": "storage", "ssh_port": a.port(),
                "ssh_key_path": fifo.display().to_string(), "data_dirs": ["/d"], "probe": false}),
    );
    assert_eq!(st, 201, "{stuck}");
    // Both good machines stored unprobed (dead): the liveness check must reach them.
    let (st, ma) = post(&c, &d, &register(&a, &key_a, &data, false));
    assert_eq!(st, 201, "{ma}");
    let (st, mb) = post(&c, &d, &register(&b, &key_b, &data, true));
    assert_eq!(st, 201, "{mb}");
    let (ida, idb) = (ma["id"].as_i64().unwrap(), mb["id"].as_i64().unwrap());
    wait_state(&c, &d, ida, "running");
    wait_state(&c, &d, idb, "running");

    // A PATCH to a bad key is refused the same way and changes nothing.
    let (st, body) = send(
        &c,
        reqwest::Method::PATCH,
        &format!("{}/v1/machines/{ida}", d.url()),
        Some(&json!({"ssh_key_path": "/dev/kmsg"})),
    );
    assert_eq!(
        (st, body["code"].as_str()),
        (422, Some("ssh_key_rejected")),
        "{body}"
    );

    // b's key replaced by a FIFO on disk after registration: b goes dead, a stays running
    // (its checks keep completing), and the daemon keeps answering.
    mkfifo(&key_b);
    wait_state(&c, &d, idb, "dead");
    let (st, ma_now) = send(
        &c,
        reqwest::Method::GET,
        &format!("{}/v1/machines/{ida}", d.url()),
        None,
    );
    assert_eq!(
        (st, &ma_now["node_stats"]),
        (200, &json!("running")),
        "{ma_now}"
    );
    assert_eq!(
        ma_now["ssh"]["key_path"],
        json!(key_a.display().to_string())
    );
    // The stuck one was deleted: later rounds go on (a's key restored elsewhere is noticed).
    let (st, _) = send(
        &c,
        reqwest::Method::DELETE,
        &format!("{}/v1/machines/{}", d.url(), stuck["id"]),
        None,
    );
    assert_eq!(st, 204);
    std::fs::remove_file(&key_b).expect("rm fifo");
    std::fs::copy(&b.user_key().private, &key_b).expect("copy key b");
    std::fs::set_permissions(&key_b, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    wait_state(&c, &d, idb, "running");
    let (st, h) = send(
        &c,
        reqwest::Method::GET,
        &format!("{}/healthz", d.url()),
        None,
    );
    assert_eq!(st, 200, "{h}");
}

/// `SHA256:...` of a public key file, as `ssh-keygen -lf` prints it.
fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .expect("ssh-keygen");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

#[test]
fn strict_host_keys_need_a_pin_and_a_wrong_pin_is_refused() {
    let a = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 44)).expect("sshd a");
    let b = Sshd::start_on(Ipv4Addr::new(127, 0, 0, 45)).expect("sshd b");
    let wd = kunlun_tests::cli::workdir();
    let (keys, key_a) = keys_dir_with(wd.path(), &a, "id_a");
    let key_b = keys.join("id_b");
    std::fs::copy(&b.user_key().private, &key_b).expect("copy key b");
    std::fs::set_permissions(&key_b, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let keys_line = format!("ssh_keys_dir = {}", keys.display());
    let d = Daemon::start_with(
        wd.path(),
        &wd.path().join("meta.db"),
        &[&keys_line, "ssh_host_key_policy = strict"],
    )
    .expect("daemon");
    let c = http();
    let data = wd.path().join("data");
    let fp_a = fingerprint(&a.host_key().public);
    let fp_b = fingerprint(&b.host_key().public);
    assert_ne!(fp_a, fp_b);

    // Unknown, no pin: refused, naming the offered fingerprint.
    let (st, body) = post(&c, &d, &register(&a, &key_a, &data, true));
    assert_eq!(
        (st, body["code"].as_str()),
        (422, Some("host_key_unknown")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or_default().contains(&fp_a),
        "{body} should name {fp_a}"
    );
    // Another host's fingerprint as the pin: refused.
    let mut req = register(&a, &key_a, &data, true);
    req["ssh_host_key"] = json!(fp_b);
    let (st, body) = post(&c, &d, &req);
    assert_eq!(
        (st, body["code"].as_str()),
        (422, Some("host_key_mismatch")),
        "{body}"
    );
    assert!(machines(&c, &d).is_empty());
    // A malformed pin is a 400.
    req["ssh_host_key"] = json!("SHA256:nope");
    let (st, body) = post(&c, &d, &req);
    assert_eq!(st, 400, "{body}");
    // The right pin: registered, and the key recorded for later connections.
    req["ssh_host_key"] = json!(fp_a);
    let (st, body) = post(&c, &d, &req);
    assert_eq!(st, 201, "{body}");
    let known = std::fs::read_to_string(wd.path().join("data/known_hosts")).expect("known_hosts");
    assert!(
        known.contains(&format!("[{}]:{}", a.host(), a.port())),
        "{known}"
    );

    // kunlunctl: the same refusal, then the flag.
    let url = d.url();
    let key_b_s = key_b.display().to_string();
    let port_b = b.port().to_string();
    let data_s = data.display().to_string();
    let base = vec![
        "machine",
        "add",
        "--host",
        "127.0.0.45",
        "--type",
        "storage",
        "--ssh-key",
        key_b_s.as_str(),
        "--ssh-port",
        port_b.as_str(),
        "--data-dir",
        data_s.as_str(),
    ];
    let mut pinned = base.clone();
    pinned.extend(["--ssh-host-key", fp_b.as_str()]);
    let r = ctl(&url, &base);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("(host_key_unknown)") && r.stderr.contains(&fp_b),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("--ssh-host-key"),
        "the hint names the flag: {r:?}"
    );
    ctl(&url, &pinned).ok();
    assert_eq!(machines(&c, &d).len(), 2);
}

#[test]
fn one_address_spelled_seven_ways_registers_once() {
    let wd = kunlun_tests::cli::workdir();
    let d = Daemon::start_with(
        wd.path(),
        &wd.path().join("meta.db"),
        &["machine_check_interval = 0"],
    )
    .expect("daemon");
    let c = http();
    let req = |host: &str, ty: &str| {
        json!({"hostaddr": host, "machine_type": ty, "ssh_key_path": "/k",
               "data_dirs": ["/d"], "probe": false})
    };
    let (st, first) = post(&c, &d, &req("127.0.0.1", "storage"));
    assert_eq!(st, 201, "{first}");
    for other in [
        "127.1",
        "2130706433",
        "::ffff:127.0.0.1",
        "0x7f.1",
        "0177.0.0.1",
        "localhost",
        "127.0.0.01",
    ] {
        let (st, body) = post(&c, &d, &req(other, "storage"));
        assert_eq!(
            (st, body["code"].as_str()),
            (409, Some("conflict")),
            "{other}: {body}"
        );
    }
    let list = machines(&c, &d);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["hostaddr"], "127.0.0.1");
    // A computer machine may share the host (the store's key is host and type).
    let (st, comp) = post(&c, &d, &req("127.1", "computer"));
    assert_eq!(
        (st, &comp["hostaddr"]),
        (201, &json!("127.0.0.1")),
        "{comp}"
    );
    // IPv6 is stored compressed.
    let (st, v6) = post(&c, &d, &req("0:0:0:0:0:0:0:1", "storage"));
    assert_eq!((st, &v6["hostaddr"]), (201, &json!("::1")), "{v6}");
    // A name that does not resolve.
    let (st, body) = post(&c, &d, &req("no-such-host.invalid", "storage"));
    assert_eq!(
        (st, body["code"].as_str()),
        (422, Some("host_unresolvable")),
        "{body}"
    );
}
