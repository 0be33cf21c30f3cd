//! `PATCH /v1/machines/{id}` (and `kunlunctl machine update`) through the real daemon against
//! real private sshds on loopback: a change of data dirs or SSH access is probed with the new
//! values like a registration; a refusal answers 422 with the registration's code
//! (`data_dir_unusable`, `machine_unreachable`, `ssh_auth_failed`) and changes nothing (read
//! back); a good change refreshes the stored probe facts; a rack-only change, or one repeating
//! the stored values, does not reach the machine (works with its sshd stopped); an unprobed
//! change (`"probe": false`) drops the facts.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kunlun_tests::{free_port, generate_key_pair, Sshd};
use serde_json::{json, Value};

struct Api {
    http: reqwest::blocking::Client,
    url: String,
}

impl Api {
    fn new(url: String) -> Api {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        Api { http, url }
    }

    fn send(&self, r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
        let resp = r.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, body)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body))
    }

    fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.patch(format!("{}{path}", self.url)).json(body))
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(self.http.get(format!("{}{path}", self.url)));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// Asserts a 422 refusal with `code` naming `says`.
fn assert_refused(got: (u16, Value), code: &str, says: &str) {
    let (status, body) = got;
    assert_eq!(status, 422, "{code}: {body}");
    assert_eq!(body["code"], code, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "{code}: {body}");
    assert!(msg.contains("nothing was stored"), "{body}");
}

#[test]
fn an_update_is_probed_like_a_registration() {
    let ip = Ipv4Addr::new(127, 0, 0, 46);
    let a = Sshd::start_on(ip).expect("sshd a");
    let b = Sshd::start_on(ip).expect("sshd b (same host, another port and key)");
    let wd = kunlun_tests::cli::workdir();
    let daemon =
        kunlun_tests::daemon::Daemon::start(wd.path(), &wd.path().join("meta.db")).expect("daemon");
    let api = Api::new(daemon.url());
    let dir1 = wd.path().join("d1").display().to_string();
    std::fs::create_dir(&dir1).expect("d1");
    let dir2 = wd.path().join("d2/new").display().to_string();

    let (status, added) = api.post(
        "/v1/machines",
        &json!({
            "hostaddr": a.host(),
            "machine_type": "storage",
            "ssh_port": a.port(),
            "ssh_user": a.user(),
            "ssh_key_path": a.user_key().private.display().to_string(),
            "data_dirs": [dir1],
        }),
    );
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_i64().expect("id");
    let path = format!("/v1/machines/{id}");
    let facts = &added["probe"];
    assert!(
        facts["os"].is_string()
            && facts["kernel"]
                .as_str()
                .is_some_and(|k| k.starts_with("Linux")),
        "{added}"
    );
    assert_eq!(facts["data_dirs"][0]["path"], dir1.as_str(), "{added}");
    assert_eq!(facts["data_dirs"][0]["exists"], true, "{added}");
    assert!(
        facts["data_dirs"][0]["free_mb"]
            .as_u64()
            .is_some_and(|mb| mb > 0),
        "{added}"
    );
    assert_eq!(api.get(&path), added, "GET shows what POST stored");
    let listed = api.get("/v1/machines");
    assert_eq!(
        listed,
        json!([added.clone()]),
        "the list carries the facts too"
    );

    // A data dir under a regular file: refused, nothing changed.
    let file = wd.path().join("plain-file");
    std::fs::write(&file, "x").expect("file");
    let bad = file.join("data").display().to_string();
    assert_refused(
        api.patch(&path, &json!({"data_dirs": [bad], "rack_id": "r-bad"})),
        "data_dir_unusable",
        &bad,
    );
    assert_eq!(
        api.get(&path),
        added,
        "a refused update changed the machine"
    );

    // A port nothing listens on: refused, nothing changed.
    let closed = free_port(IpAddr::V4(ip));
    assert_refused(
        api.patch(&path, &json!({"ssh_port": closed})),
        "machine_unreachable",
        &format!("{}:{closed}", a.host()),
    );
    assert_eq!(api.get(&path), added);

    // A key the machine does not accept: refused, nothing changed.
    // Under the harness root, which the harness daemon's ssh_keys_dir is.
    let stranger = generate_key_pair(a.dir(), "stranger").expect("key");
    assert_refused(
        api.patch(
            &path,
            &json!({"ssh_key_path": stranger.private.display().to_string()}),
        ),
        "ssh_auth_failed",
        &a.host(),
    );
    assert_eq!(api.get(&path), added);

    // Bad input is refused before any probe, naming the field.
    let (status, body) = api.patch(&path, &json!({"data_dirs": ["relative/dir"]}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, body) = api.patch(&path, &json!({"probe": false}));
    assert_eq!(status, 400, "probe alone changes nothing: {body}");
    assert_eq!(api.get(&path), added);

    // Moved to sshd b (port and key) with a new data dir: probed, stored, facts refreshed.
    let (status, moved) = api.patch(
        &path,
        &json!({
            "ssh_port": b.port(),
            "ssh_key_path": b.user_key().private.display().to_string(),
            "data_dirs": [dir2],
        }),
    );
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["ssh"]["port"], b.port(), "{moved}");
    assert_eq!(moved["data_dirs"], json!([dir2]), "{moved}");
    let refreshed = &moved["probe"];
    assert_eq!(
        refreshed["data_dirs"].as_array().map(Vec::len),
        Some(1),
        "{moved}"
    );
    assert_eq!(refreshed["data_dirs"][0]["path"], dir2.as_str(), "{moved}");
    assert_eq!(refreshed["data_dirs"][0]["exists"], false, "{moved}");
    assert!(
        refreshed["probed_at"].as_str() > facts["probed_at"].as_str(),
        "facts not refreshed: {facts} -> {refreshed}"
    );
    assert!(
        !std::path::Path::new(&dir2).exists(),
        "probing creates nothing"
    );
    assert_eq!(api.get(&path), moved);

    // With the machine's sshd stopped, a rack change (or one repeating the stored SSH
    // values) is stored without reaching it, and the facts stay.
    b.stop().expect("stop sshd b");
    let (status, racked) = api.patch(
        &path,
        &json!({"rack_id": "rack-7", "port_range": "57100-57200", "ssh_port": b.port()}),
    );
    assert_eq!(status, 200, "{racked}");
    assert_eq!(racked["rack_id"], "rack-7");
    assert_eq!(racked["port_range"], "57100-57200");
    assert_eq!(racked["probe"], moved["probe"], "facts kept");
    // But a data dir change is probed, and fails while the machine is down.
    assert_refused(
        api.patch(&path, &json!({"data_dirs": [dir1]})),
        "machine_unreachable",
        &b.host(),
    );
    assert_eq!(api.get(&path), racked);

    // The escape hatch: stored unchecked, and the facts, no longer true, are dropped.
    let (status, unchecked) = api.patch(&path, &json!({"data_dirs": [dir1], "probe": false}));
    assert_eq!(status, 200, "{unchecked}");
    assert_eq!(unchecked["data_dirs"], json!([dir1]));
    assert!(
        unchecked.get("probe").is_some_and(Value::is_null),
        "{unchecked}"
    );
    assert_eq!(api.get(&path), unchecked);

    // `kunlunctl machine update` shows the same refusal and `show` says "not probed".
    let ids = id.to_string();
    let r = kunlun_tests::cli::ctl(
        &api.url,
        &["machine", "update", &ids, "--ssh-port", &closed.to_string()],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("(machine_unreachable)"), "{r:?}");
    let show = kunlun_tests::cli::ctl(&api.url, &["machine", "show", &ids]).ok();
    assert!(show.stdout.contains("not probed"), "{show:?}");
    assert!(show.stdout.contains("rack:             rack-7"), "{show:?}");
    // `--no-probe` stores the same change unchecked.
    let closed_s = closed.to_string();
    let args = [
        "machine",
        "update",
        &ids,
        "--ssh-port",
        &closed_s,
        "--no-probe",
    ];
    let r = kunlun_tests::cli::ctl(&api.url, &args).ok();
    assert!(r.stdout.contains("not probed"), "{r:?}");
    assert_eq!(api.get(&path)["ssh"]["port"], json!(closed));
    let b_port = b.port().to_string();
    let args = [
        "machine",
        "update",
        &ids,
        "--ssh-port",
        &b_port,
        "--no-probe",
    ];
    kunlun_tests::cli::ctl(&api.url, &args).ok();

    // Back on b, probed again through kunlunctl: facts return.
    b.restart().expect("restart sshd b");
    let ok =
        kunlun_tests::cli::ctl(&api.url, &["machine", "update", &ids, "--data-dir", &dir2]).ok();
    assert!(
        ok.stdout.starts_with(&format!("updated machine {id}")),
        "{ok:?}"
    );
    assert!(ok.stdout.contains("probed at:"), "{ok:?}");
    assert!(
        ok.stdout.contains(&format!("data dir:         {dir2} ")),
        "{ok:?}"
    );
    let last = api.get(&path);
    assert_eq!(
        last["probe"]["data_dirs"][0]["path"],
        dir2.as_str(),
        "{last}"
    );
    drop(daemon);
}
