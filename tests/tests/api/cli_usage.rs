//! `kunlunctl` exit codes that need no running daemon: 2 for usage errors (clap), 3 when the
//! daemon cannot be reached, 0 for `--help`, which documents the exit codes and the env var.

use std::process::Command;

use kunlun_tests::cli::{bin, ctl, free_port, run};

#[test]
fn usage_errors_exit_2() {
    let server = format!("http://127.0.0.1:{}", free_port());
    for args in [
        &["machine", "add", "--bogus"][..],
        &["machine", "show", "not-a-number"],
        &[
            "machine",
            "add",
            "--host",
            "h",
            "--type",
            "gpu",
            "--ssh-key",
            "/k",
            "--data-dir",
            "/d",
        ],
        &[
            "machine",
            "add",
            "--host",
            "h",
            "--type",
            "storage",
            "--ssh-key",
            "/k",
        ],
        &["machine", "update", "1"],
        &["machine"],
        &["frobnicate"],
        &["job", "list", "--status", "running"],
    ] {
        let r = ctl(&server, args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        // clap's own message: `error: ...`, or the noun's usage when the verb is missing.
        assert!(
            r.stderr.contains("error:") || r.stderr.contains("Usage: kunlunctl"),
            "{args:?}: {r:?}"
        );
    }
    let r = run({
        let mut c = Command::new(bin("kunlunctl"));
        // https is spoken now (tests/tests/cli_tls.rs); other schemes are usage errors.
        c.args(["--server", "ftp://127.0.0.1:1", "machine", "list"]);
        c
    });
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("only http:// and https://"), "{r:?}");
}

#[test]
fn unreachable_daemon_exits_3_naming_the_url_and_how_to_start_it() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["machine", "list"][..],
        &["cluster", "show", "1"],
        &["job", "list"],
    ] {
        let r = ctl(&url, args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        assert!(r.stderr.contains(&url), "{r:?}");
        assert!(
            r.stderr.contains("cluster-mgr") && r.stderr.contains("--server"),
            "{r:?}"
        );
        assert!(r.stderr.contains("KUNLUNCTL_SERVER"), "{r:?}");
        assert!(r.stdout.is_empty(), "{r:?}");
    }

    // The same server taken from the environment variable instead of the flag.
    let r = run({
        let mut c = Command::new(bin("kunlunctl"));
        c.args(["machine", "list"]).env("KUNLUNCTL_SERVER", &url);
        c
    });
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains(&url),
        "KUNLUNCTL_SERVER was not used: {r:?}"
    );
}

#[test]
fn help_lists_exit_codes_and_the_environment_variable() {
    let r = run({
        let mut c = Command::new(bin("kunlunctl"));
        c.arg("--help").env_remove("KUNLUNCTL_SERVER");
        c
    });
    assert_eq!(r.code, 0, "{r:?}");
    for needle in [
        "Exit codes:",
        "KUNLUNCTL_SERVER",
        "machine",
        "cluster",
        "job",
        "--json",
        "--server",
        "--timeout",
    ] {
        assert!(
            r.stdout.contains(needle),
            "{needle:?} missing from --help:\n{}",
            r.stdout
        );
    }
    for code in [
        "0  success",
        "1  the daemon refused",
        "2  usage error",
        "3  the daemon could not be reached",
    ] {
        assert!(
            r.stdout.contains(code),
            "{code:?} missing from --help:\n{}",
            r.stdout
        );
    }
    let r = run({
        let mut c = Command::new(bin("kunlunctl"));
        c.args(["machine", "add", "--help"]);
        c
    });
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("--data-dir") && r.stdout.contains("--ssh-key"),
        "{r:?}"
    );
}

#[test]
fn kunlunctl_links_no_database_driver_nor_ssh() {
    // design.md §2: the CLI links kunlun-meta's types only (no `store` feature).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "kunlunctl",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("kunlun-meta"), "{tree}");
    for forbidden in [
        "diesel",
        "ssh2",
        "mysql_async",
        "mysqlclient-sys",
        "libsqlite3-sys",
        "openssl",
    ] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{forbidden} "))),
            "kunlunctl depends on {forbidden}:\n{tree}"
        );
    }
}
