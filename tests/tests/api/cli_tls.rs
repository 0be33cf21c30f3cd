//! The API over TLS, driven as an operator would: a throwaway CA and a server certificate for
//! `localhost`/`127.0.0.1` made with the `openssl` command, the real daemon serving https with
//! `auth = tokens`, the first token from `cluster-mgr token create`, and the real `kunlunctl`
//! with `--ca` adding a machine, listing, making and listing tokens and reading the audit trail.
//! Also: a `kunlunctl` that does not trust the CA fails with a TLS error and changes nothing;
//! plain HTTP to the TLS port gets no HTTP answer; a token is never sent over plain http to a
//! host that is not loopback; the start-up refusals (key readable by others, key not matching
//! the certificate, a non-loopback bind without TLS) exit 2 before listening, and the explicit
//! plain-HTTP override starts (inside a private network namespace, so only loopback exists);
//! with `http_tls_client_ca` a client without a certificate is refused.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kunlun_tests::cli::{bin, free_port, run, workdir, Ctl};
use kunlun_tests::daemon::Daemon;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A daemon process, stopped by its PID (SIGTERM, then SIGKILL) on drop.
struct Proc(Option<Child>);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `openssl ARGS` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// The files of a throwaway PKI, all in one folder.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    /// A key of its own, not the server certificate's.
    stray_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for `localhost`, `mgr.test` and `127.0.0.1`, a client certificate, a second
/// unrelated CA and a stray key; EC P-256, valid two days.
fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [("ca", "kunlun-test-ca"), ("other-ca", "someone-else-ca")] {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    let leaf = |name: &str, cn: &str, ext: &str, serial: &str| {
        let (key, csr, crt, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extf), ext).unwrap();
        let subj = format!("/CN={cn}");
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-extfile",
                &extf,
                "-out",
                &crt,
            ],
        );
    };
    leaf(
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,DNS:mgr.test,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        "2",
    );
    leaf(
        "client",
        "ops-laptop",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
        "3",
    );
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "stray.key",
        "-out",
        "stray.csr",
        "-subj",
        "/CN=stray",
    ]);
    openssl(dir, &args);
    for k in ["server.key", "client.key", "stray.key"] {
        std::fs::set_permissions(dir.join(k), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Pki {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        stray_key: dir.join("stray.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
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

fn tls_lines(pki: &Pki) -> String {
    format!(
        "http_tls_cert = {}\nhttp_tls_key = {}\n",
        pki.server_cert.display(),
        pki.server_key.display()
    )
}

/// Starts the daemon on `cnf` and waits until `https://127.0.0.1:PORT/healthz` answers 200 to a
/// client trusting only `ca` (presenting `identity` when given).
fn start_https(cnf: &Path, port: u16, ca: &Path, identity: Option<(&Path, &Path)>) -> Daemon {
    let mut b = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(2));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(key).unwrap();
        pem.extend(std::fs::read(cert).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    let dir = cnf.parent().expect("the cnf's dir");
    Daemon::command(dir, port)
        .config(cnf)
        .https(b.build().unwrap())
        .term_on_drop()
        .start()
        .expect("cluster-mgr answers https /healthz")
}

/// Runs the daemon on `cnf`, which it must refuse: returns its stderr after checking it exited
/// 2, that nothing listens on `port` and that no store was created.
fn refused(dir: &Path, cnf: &Path, port: u16) -> String {
    let mut child = Command::new(bin("cluster-mgr"))
        .arg("--config")
        .arg(cnf)
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
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port}"
    );
    assert!(
        !dir.join("data/meta.sqlite3").exists(),
        "store created: {err}"
    );
    err
}

/// `cluster-mgr token create --name N --role admin --config CNF`: the new token.
fn bootstrap_token(cnf: &Path, name: &str) -> String {
    let out = Command::new(bin("cluster-mgr"))
        .args([
            "token", "create", "--name", name, "--role", "admin", "--config",
        ])
        .arg(cnf)
        .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
        .output()
        .expect("token create");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `kunlunctl ARGS` with a private HOME, no KUNLUNCTL_* from the caller, and `token` in
/// `$KUNLUNCTL_TOKEN` when given.
fn ctl(home: &Path, token: Option<&str>, args: &[&str]) -> Ctl {
    let mut cmd = Command::new(bin("kunlunctl"));
    cmd.args(args).env("HOME", home);
    for v in [
        "KUNLUNCTL_SERVER",
        "KUNLUNCTL_TOKEN",
        "KUNLUNCTL_CA",
        "KUNLUNCTL_CLIENT_CERT",
        "KUNLUNCTL_CLIENT_KEY",
    ] {
        cmd.env_remove(v);
    }
    if let Some(t) = token {
        cmd.env("KUNLUNCTL_TOKEN", t);
    }
    run(cmd)
}

fn machine_add(host: &str) -> Vec<&str> {
    vec![
        "machine",
        "add",
        "--host",
        host,
        "--type",
        "storage",
        "--ssh-key",
        "/root/.ssh/id_ed25519",
        "--data-dir",
        "/data/kl",
        "--no-probe",
    ]
}

/// Hostaddrs of `machine list --json`.
fn hosts(list: &Ctl) -> Vec<String> {
    list.json()
        .as_array()
        .expect("machine list")
        .iter()
        .filter_map(|m| m["hostaddr"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn kunlunctl_end_to_end_over_https_with_a_token() {
    let dir = workdir();
    let pki = pki(&dir.path().join("pki"));
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let port = free_port();
    let cnf = write_cnf(
        dir.path(),
        port,
        &format!("auth = tokens\n{}", tls_lines(&pki)),
    );
    let _daemon = start_https(&cnf, port, &pki.ca, None);
    let root = bootstrap_token(&cnf, "root");
    let server = format!("https://127.0.0.1:{port}");
    let ca = pki.ca.to_str().unwrap();
    let pre = ["--server", server.as_str(), "--ca", ca];
    let with_ca = |args: &[&'static str]| [&pre[..], args].concat();

    // The whole round trip over https.
    ctl(
        &home,
        Some(&root),
        &[&pre[..], &machine_add("10.9.0.1")].concat(),
    )
    .ok();
    let list = ctl(&home, Some(&root), &with_ca(&["--json", "machine", "list"])).ok();
    assert_eq!(hosts(&list), ["10.9.0.1"], "{list:#?}");
    let made = ctl(
        &home,
        Some(&root),
        &with_ca(&[
            "--json", "token", "create", "--name", "ops", "--role", "operator",
        ]),
    )
    .ok();
    let ops = made.json()["token"].as_str().expect("secret").to_string();
    let tokens = ctl(&home, Some(&root), &with_ca(&["token", "list"])).ok();
    assert!(
        tokens.stdout.contains("root") && tokens.stdout.contains("ops"),
        "{tokens:#?}"
    );
    // The CA from the environment, the name the certificate is for (and the Host check knows).
    let mut cmd = Command::new(bin("kunlunctl"));
    cmd.args([
        "--server",
        &format!("https://localhost:{port}"),
        "cluster",
        "list",
    ])
    .env("HOME", &home)
    .env_remove("KUNLUNCTL_SERVER")
    .env("KUNLUNCTL_CA", ca)
    .env("KUNLUNCTL_TOKEN", &ops);
    run(cmd).ok();

    // The Host check knows the certificate's names: `mgr.test` (in no default) is let in, a
    // foreign name is not (421), over the same TLS connection setup.
    let https = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for (host, status) in [
        (format!("mgr.test:{port}"), 200),
        ("evil.example".into(), 421),
    ] {
        let r = https
            .get(format!("{server}/v1/machines"))
            .header("host", &host)
            .bearer_auth(&root)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "Host: {host}");
    }

    // Not trusting the CA: the system's roots do not know it, nor does another CA; a TLS error
    // naming what to do, exit 3, and the machine is not added.
    let r = ctl(
        &home,
        Some(&root),
        &[&["--server", server.as_str()][..], &machine_add("10.9.0.2")].concat(),
    );
    assert_eq!(r.code, 3, "{r:#?}");
    assert!(
        r.stderr.contains("TLS") && r.stderr.contains("--ca") && r.stderr.contains("certificate"),
        "{r:#?}"
    );
    let other = pki.other_ca.to_str().unwrap();
    let r = ctl(
        &home,
        Some(&root),
        &[
            &["--server", server.as_str(), "--ca", other][..],
            &machine_add("10.9.0.3"),
        ]
        .concat(),
    );
    assert_eq!(r.code, 3, "{r:#?}");
    assert!(r.stderr.contains("TLS"), "{r:#?}");

    // Plain http to the TLS port: kunlunctl gets no answer it can use, a raw request no HTTP.
    let r = ctl(
        &home,
        Some(&root),
        &[
            &["--server", &format!("http://127.0.0.1:{port}")][..],
            &machine_add("10.9.0.4"),
        ]
        .concat(),
    );
    assert_eq!(r.code, 3, "{r:#?}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&answer)
    );

    // A token is not sent in clear to a host that is not loopback (TEST-NET-1: never reached).
    let r = ctl(
        &home,
        Some(&root),
        &["--server", "http://192.0.2.1:8010", "machine", "list"],
    );
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("insecure_transport") && r.stderr.contains("https://"),
        "{r:#?}"
    );

    // Nothing but the first machine was added; the audit trail has what went through.
    let list = ctl(&home, Some(&root), &with_ca(&["--json", "machine", "list"])).ok();
    assert_eq!(hosts(&list), ["10.9.0.1"], "{list:#?}");
    let audit = ctl(
        &home,
        Some(&root),
        &with_ca(&["--json", "audit", "--limit", "100"]),
    )
    .ok()
    .json();
    let entries = audit.as_array().expect("audit list");
    let count = |method: &str, path: &str| {
        entries
            .iter()
            .filter(|e| e["token_name"] == "root" && e["method"] == method && e["path"] == path)
            .count()
    };
    assert_eq!(count("POST", "/v1/machines"), 1, "{audit}");
    assert_eq!(count("POST", "/v1/tokens"), 1, "{audit}");
    assert!(!audit.to_string().contains(&root), "token in the audit");
}

#[test]
fn tls_start_up_refusals_exit_2_and_the_plaintext_override_starts() {
    let dir = workdir();
    let pki = pki(&dir.path().join("pki"));
    let port = free_port();

    // A key others can read.
    let wide = dir.path().join("pki/wide.key");
    std::fs::copy(&pki.server_key, &wide).unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cnf = write_cnf(
        dir.path(),
        port,
        &format!(
            "http_tls_cert = {}\nhttp_tls_key = {}\n",
            pki.server_cert.display(),
            wide.display()
        ),
    );
    let err = refused(dir.path(), &cnf, port);
    assert!(
        err.contains("http_tls_key") && err.contains("0644") && err.contains("chmod 600"),
        "{err}"
    );

    // A key of another certificate.
    let cnf = write_cnf(
        dir.path(),
        port,
        &format!(
            "http_tls_cert = {}\nhttp_tls_key = {}\n",
            pki.server_cert.display(),
            pki.stray_key.display()
        ),
    );
    let err = refused(dir.path(), &cnf, port);
    assert!(
        err.contains("http_tls_key") && err.contains("does not belong"),
        "{err}"
    );

    // A certificate file that is no certificate; a missing key file.
    let cnf = write_cnf(
        dir.path(),
        port,
        &format!(
            "http_tls_cert = {}\nhttp_tls_key = {}\n",
            pki.server_key.display(),
            pki.server_key.display()
        ),
    );
    let err = refused(dir.path(), &cnf, port);
    assert!(err.contains("http_tls_cert"), "{err}");
    let cnf = write_cnf(
        dir.path(),
        port,
        &format!(
            "http_tls_cert = {}\nhttp_tls_key = {}/nope.key\n",
            pki.server_cert.display(),
            dir.path().display()
        ),
    );
    let err = refused(dir.path(), &cnf, port);
    assert!(
        err.contains("nope.key") && err.contains("cannot open"),
        "{err}"
    );

    // Only one of the pair.
    let cnf = write_cnf(
        dir.path(),
        port,
        &format!("http_tls_cert = {}\n", pki.server_cert.display()),
    );
    let err = refused(dir.path(), &cnf, port);
    assert!(err.contains("set both or neither"), "{err}");

    // Off loopback with tokens but without TLS.
    let cnf = write_cnf(
        dir.path(),
        port,
        "http_bind_address = 0.0.0.0\nauth = tokens\n",
    );
    let err = refused(dir.path(), &cnf, port);
    assert!(
        err.contains("http_tls_cert")
            && err.contains("http_tls_key")
            && err.contains("http_allow_plaintext = true"),
        "{err}"
    );

    // The explicit override starts, in a network namespace of its own where loopback is the
    // only interface, so the 0.0.0.0 bind is reachable from nowhere else.
    let cnf = write_cnf(
        dir.path(),
        port,
        "http_bind_address = 0.0.0.0\nauth = tokens\nhttp_allow_plaintext = true\n",
    );
    let token = bootstrap_token(&cnf, "root");
    let child = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" --config \"$1\"",
        ])
        .arg(bin("cluster-mgr"))
        .arg(&cnf)
        .env_remove("KUNLUN_CLUSTER_MGR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare");
    let mut daemon = Proc(Some(child));
    let netns = format!("--net=/proc/{}/ns/net", daemon.pid());
    let deadline = Instant::now() + Duration::from_secs(60);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    loop {
        if let Some(Ok(Some(st))) = daemon.0.as_mut().map(Child::try_wait) {
            daemon.0 = None;
            panic!("cluster-mgr with http_allow_plaintext exited with {st}");
        }
        let mut cmd = Command::new("nsenter");
        cmd.arg(&netns)
            .arg("--")
            .arg(bin("kunlunctl"))
            .args([
                "--server",
                &format!("http://127.0.0.1:{port}"),
                "--json",
                "leader",
            ])
            .env("HOME", &home)
            .env_remove("KUNLUNCTL_SERVER")
            .env("KUNLUNCTL_TOKEN", &token);
        let r = run(cmd);
        if r.code == 0 {
            assert!(r.json().is_object(), "{r:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the plain-HTTP override did not serve: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the namespaced daemon is reachable from the test's network"
    );
}

#[test]
fn with_a_client_ca_a_client_without_a_certificate_is_refused() {
    let dir = workdir();
    let pki = pki(&dir.path().join("pki"));
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let port = free_port();
    let cnf = write_cnf(
        dir.path(),
        port,
        &format!(
            "{}http_tls_client_ca = {}\n",
            tls_lines(&pki),
            pki.ca.display()
        ),
    );
    let _daemon = start_https(
        &cnf,
        port,
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    let server = format!("https://127.0.0.1:{port}");
    let ca = pki.ca.to_str().unwrap();
    let (cert, key) = (
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );

    // Without a certificate: refused in the handshake, nothing added.
    let r = ctl(
        &home,
        None,
        &[
            &["--server", server.as_str(), "--ca", ca][..],
            &machine_add("10.9.1.1"),
        ]
        .concat(),
    );
    assert_eq!(r.code, 3, "{r:#?}");
    assert!(
        r.stderr.contains("TLS") && r.stderr.contains("--client-cert"),
        "{r:#?}"
    );

    // With one: served.
    let ok = |args: &[&str]| {
        let mut v = vec![
            "--server",
            server.as_str(),
            "--ca",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
        ];
        v.extend_from_slice(args);
        ctl(&home, None, &v)
    };
    ok(&machine_add("10.9.1.2")).ok();
    let list = ok(&["--json", "machine", "list"]).ok();
    assert_eq!(hosts(&list), ["10.9.1.2"], "{list:#?}");

    // A client key others can read is not used.
    std::fs::set_permissions(&pki.client_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = ok(&["machine", "list"]);
    assert_eq!(r.code, 1, "{r:#?}");
    assert!(
        r.stderr.contains("insecure_key_file") && r.stderr.contains("chmod 600"),
        "{r:#?}"
    );
}
