//! `kunlunctl machine ...` end to end: the real `kunlunctl` binary against the real
//! `cluster-mgr` daemon on a free loopback port with a temp SQLite file.
//!
//! Asserts what a user sees: tables, the JSON scripts parse, exit codes and messages, and that
//! what was stored is still there after the daemon restarts on the same file.

use kunlun_tests::cli::ctl;
use kunlun_tests::daemon::Daemon;
use serde_json::Value;

const KEY: &str = "/root/.ssh/id_ed25519";

fn add_args<'a>(host: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "machine",
        "add",
        "--host",
        host,
        "--type",
        "storage",
        "--ssh-key",
        KEY,
        "--data-dir",
        "/data/kl",
        // No sshd behind these addresses (the probe is tested in machines_register.rs).
        "--no-probe",
    ];
    a.extend_from_slice(extra);
    a
}

/// Column start of `needle` in `line` (tables are aligned, so every row's cell starts where its
/// header does).
fn col(line: &str, needle: &str) -> usize {
    line.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {line:?}"))
}

#[test]
fn machine_add_list_show_update_rm_with_tables_and_json() {
    let dir = kunlun_tests::cli::workdir();
    let daemon = Daemon::start(dir.path(), &dir.path().join("meta.sqlite3")).unwrap();
    let url = daemon.url();

    let empty = ctl(&url, &["machine", "list"]).ok();
    assert!(empty.stdout.contains("no machines registered"), "{empty:?}");
    assert_eq!(
        ctl(&url, &["--json", "machine", "list"]).ok().json(),
        Value::Array(vec![])
    );

    // Human output of `add`.
    let added = ctl(
        &url,
        &add_args("127.0.0.2", &["--ssh-port", "2222", "--rack", "rack-1"]),
    )
    .ok();
    assert!(added.stdout.starts_with("registered machine "), "{added:?}");
    assert!(added.stdout.contains("127.0.0.2"), "{added:?}");

    // `--json` of `add`: the API's Machine with the defaults filled in.
    let m2 = ctl(
        &url,
        &[
            "--json",
            "machine",
            "add",
            "--host",
            "localhost",
            "--type",
            "computer",
            "--ssh-key",
            KEY,
            "--data-dir",
            "/data/a",
            "--data-dir",
            "/data/b",
            "--ssh-user",
            "kunlun",
            "--mem-mb",
            "8192",
            "--cores",
            "4",
            "--no-probe",
        ],
    )
    .ok()
    .json();
    // Stored in canonical form: the address `localhost` resolves to.
    assert_eq!(m2["hostaddr"], "127.0.0.1");
    assert_eq!(m2["machine_type"], "computer");
    assert_eq!(m2["data_dirs"], serde_json::json!(["/data/a", "/data/b"]));
    assert_eq!(m2["port_range"], "47000-48000");
    assert_eq!(m2["ssh"]["port"], 22);
    assert_eq!(m2["ssh"]["user"], "kunlun");
    assert_eq!(m2["ssh"]["key_path"], KEY);
    assert_eq!(m2["total_mem_mb"], 8192);
    assert_eq!(m2["total_cpu_cores"], 4);
    let id2 = m2["id"].as_i64().expect("numeric id");

    // Table of `list`: a header and one aligned row per machine.
    let list = ctl(&url, &["machine", "list"]).ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    let header = lines[0];
    assert!(header.starts_with("ID"), "{header}");
    let (host_col, type_col, ports_col) = (
        col(header, "HOST"),
        col(header, "TYPE"),
        col(header, "PORTS"),
    );
    let row1 = lines
        .iter()
        .find(|l| l.contains("127.0.0.2"))
        .expect("row of 127.0.0.2");
    let row2 = lines
        .iter()
        .find(|l| l.contains("127.0.0.1"))
        .expect("row of localhost (127.0.0.1)");
    assert_eq!(col(row1, "127.0.0.2"), host_col, "{}", list.stdout);
    assert_eq!(col(row2, "127.0.0.1"), host_col, "{}", list.stdout);
    assert_eq!(col(row1, "storage"), type_col, "{}", list.stdout);
    assert_eq!(col(row2, "computer"), type_col, "{}", list.stdout);
    assert_eq!(col(row1, "57000-58000"), ports_col, "{}", list.stdout);
    assert!(
        row1.contains("root@:2222") && row1.contains("rack-1"),
        "{row1}"
    );

    let all = ctl(&url, &["--json", "machine", "list"]).ok().json();
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 2);
    let m1 = all
        .iter()
        .find(|m| m["hostaddr"] == "127.0.0.2")
        .expect("127.0.0.2 listed");
    let id1 = m1["id"].as_i64().expect("numeric id");
    assert_eq!(m1["rack_id"], "rack-1");
    assert_eq!(m1["ssh"]["port"], 2222);

    // `show`, both ways.
    let show = ctl(&url, &["machine", "show", &id1.to_string()]).ok();
    assert!(
        show.stdout.contains("host:") && show.stdout.contains("127.0.0.2"),
        "{show:?}"
    );
    assert!(show.stdout.contains(KEY), "{show:?}");
    assert_eq!(
        &ctl(&url, &["--json", "machine", "show", &id1.to_string()])
            .ok()
            .json(),
        m1
    );

    // `update` changes only what is named.
    let upd = ctl(
        &url,
        &[
            "--json",
            "machine",
            "update",
            &id1.to_string(),
            "--rack",
            "rack-9",
            "--cores",
            "16",
            "--port-range",
            "50000-50100",
        ],
    )
    .ok()
    .json();
    assert_eq!(upd["rack_id"], "rack-9");
    assert_eq!(upd["total_cpu_cores"], 16);
    assert_eq!(upd["port_range"], "50000-50100");
    assert_eq!(upd["ssh"]["port"], 2222, "untouched field changed: {upd}");
    let shown = ctl(&url, &["--json", "machine", "show", &id1.to_string()])
        .ok()
        .json();
    assert_eq!(shown, upd);
    let human = ctl(
        &url,
        &["machine", "update", &id1.to_string(), "--rack", "rack-8"],
    )
    .ok();
    assert!(
        human.stdout.starts_with(&format!("updated machine {id1}")),
        "{human:?}"
    );
    assert!(human.stdout.contains("not probed"), "{human:?}");
    // A change of SSH access is probed first (machines_update.rs covers it against real
    // sshds); the key file is checked before connecting and this one does not exist (in the
    // keys dir or at all), so it is refused and nothing changes.
    let refused = ctl(
        &url,
        &["machine", "update", &id1.to_string(), "--ssh-user", "ops"],
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("(ssh_key_rejected)"), "{refused:?}");
    let after = ctl(&url, &["--json", "machine", "show", &id1.to_string()])
        .ok()
        .json();
    assert_eq!(after["ssh"]["user"], shown["ssh"]["user"], "{after}");
    assert_eq!(after["rack_id"], "rack-8", "{after}");

    // `rm`, then it is gone.
    let rm = ctl(&url, &["machine", "rm", &id2.to_string()]).ok();
    assert_eq!(rm.stdout.trim(), format!("removed machine {id2}"));
    let gone = ctl(&url, &["machine", "show", &id2.to_string()]);
    assert_eq!(gone.code, 1, "{gone:?}");
    let left = ctl(&url, &["--json", "machine", "list"]).ok().json();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["id"], id1);
}

#[test]
fn api_errors_exit_1_with_the_code_and_a_hint() {
    let dir = kunlun_tests::cli::workdir();
    let daemon = Daemon::start(dir.path(), &dir.path().join("meta.sqlite3")).unwrap();
    let url = daemon.url();

    for args in [
        &["machine", "show", "987654"][..],
        &["machine", "rm", "987654"],
        &["machine", "update", "987654", "--rack", "r"],
    ] {
        let r = ctl(&url, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.starts_with("error: ") && r.stderr.contains("(not_found)"),
            "{r:?}"
        );
        assert!(
            r.stderr.contains("hint: ") && r.stderr.contains("kunlunctl machine list"),
            "{r:?}"
        );
        assert!(r.stdout.is_empty(), "{r:?}");
    }

    ctl(&url, &add_args("127.0.0.3", &[])).ok();
    let dup = ctl(&url, &add_args("127.0.0.3", &[]));
    assert_eq!(dup.code, 1, "{dup:?}");
    assert!(
        dup.stderr.contains("(conflict)") && dup.stderr.contains("hint: "),
        "{dup:?}"
    );
    let all = ctl(&url, &["--json", "machine", "list"]).ok().json();
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(1),
        "duplicate stored: {all}"
    );

    // Unknown cluster and job ids take the same path.
    for args in [
        &["cluster", "show", "987654"][..],
        &["job", "show", "987654"],
    ] {
        let r = ctl(&url, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.contains("(not_found)"), "{r:?}");
    }
    // The read-only nouns list fine on an empty store.
    assert_eq!(
        ctl(&url, &["--json", "cluster", "list"]).ok().json(),
        Value::Array(vec![])
    );
    assert!(ctl(
        &url,
        &["--json", "job", "list", "--status", "done", "--limit", "5"]
    )
    .ok()
    .json()
    .is_array());
    assert!(ctl(&url, &["cluster", "list"])
        .ok()
        .stdout
        .contains("no clusters"));
}

#[test]
fn bad_fields_are_refused_locally_with_the_field_named_and_nothing_stored() {
    let dir = kunlun_tests::cli::workdir();
    let daemon = Daemon::start(dir.path(), &dir.path().join("meta.sqlite3")).unwrap();
    let url = daemon.url();

    for (args, field) in [
        (
            add_args("10.0.0.1'; DROP TABLE server_nodes; --", &[]),
            "hostaddr",
        ),
        (add_args("127.0.0.4", &["--rack", "rack;1"]), "rack_id"),
        (
            add_args("127.0.0.4", &["--port-range", "60000-50000"]),
            "port_range",
        ),
        (
            add_args("127.0.0.4", &["--data-dir", "relative/dir"]),
            "data_dirs",
        ),
        (add_args("127.0.0.4", &["--mem-mb", "-5"]), "total_mem_mb"),
    ] {
        let r = ctl(&url, &args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(field) && r.stderr.contains("(invalid_field)"),
            "{field}: {r:?}"
        );
    }
    let all = ctl(&url, &["--json", "machine", "list"]).ok().json();
    assert_eq!(
        all,
        Value::Array(vec![]),
        "a refused request stored something"
    );

    // Refused before any request: the same answer with no daemon at all (exit 1, not 3).
    let nowhere = format!("http://127.0.0.1:{}", kunlun_tests::cli::free_port());
    let r = ctl(&nowhere, &add_args("bad host", &[]));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("hostaddr"), "{r:?}");
}

#[test]
fn machines_survive_a_daemon_restart_on_the_same_sqlite_file() {
    let dir = kunlun_tests::cli::workdir();
    let sqlite = dir.path().join("meta.sqlite3");
    let mut first = Daemon::start(dir.path(), &sqlite).unwrap();
    let added = ctl(
        &first.url(),
        &["--json"]
            .iter()
            .chain(&add_args("127.0.0.5", &["--cores", "2"]))
            .copied()
            .collect::<Vec<_>>(),
    )
    .ok()
    .json();
    let id = added["id"].as_i64().expect("numeric id").to_string();
    assert!(
        first.stop(),
        "cluster-mgr did not stop on SIGTERM:\n{}",
        first.log_tail()
    );
    let old_url = first.url();
    drop(first);
    assert_eq!(
        ctl(&old_url, &["machine", "list"]).code,
        3,
        "the first daemon still answers"
    );

    let second = Daemon::start(dir.path(), &sqlite).unwrap();
    let shown = ctl(&second.url(), &["--json", "machine", "show", &id])
        .ok()
        .json();
    assert_eq!(shown, added, "the machine changed across the restart");
    let table = ctl(&second.url(), &["machine", "list"]).ok();
    assert!(table.stdout.contains("127.0.0.5"), "{table:?}");
}
