//! The web console in a real headless Chromium (WebDriver), against the real daemon creating
//! real instances over the test sshd: log in, create a 1x3+1 cluster from the form and watch
//! its job finish, see the topology, switch the shard over and see the record's timeline, and
//! keep a viewer read-only (no buttons; the API refuses a forged change; a change without the
//! CSRF token is refused). Screenshots of each page go to
//! `target/tmp/console-screenshots/` (`CARGO_TARGET_TMPDIR`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, Locator};
use kunlun_tests::browser::Browser;
use kunlun_tests::daemon::http;
use kunlun_tests::daemon_cluster::{DaemonCluster, Shape};
use serde_json::{json, Value};

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 131);
/// Bound of the cluster's creation (about a minute here).
const CREATE_LIMIT: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_secs(30);

struct Tokens {
    admin: String,
    operator: String,
    viewer: String,
}

fn token(c: &DaemonCluster, bearer: Option<&str>, name: &str, role: &str) -> String {
    let client = http(SHORT);
    let mut rq = client
        .post(c.daemon.url_for("/v1/tokens"))
        .json(&json!({"name": name, "role": role}));
    if let Some(b) = bearer {
        rq = rq.bearer_auth(b);
    }
    let r = rq.send().expect("POST /v1/tokens");
    assert_eq!(r.status().as_u16(), 201, "token {name}");
    let v: Value = r.json().expect("json");
    v["token"].as_str().expect("the secret").to_string()
}

#[test]
fn the_console_creates_a_cluster_switches_over_and_keeps_a_viewer_read_only() {
    let c = DaemonCluster::fleet(
        IP,
        Shape {
            shards: 1,
            nodes: 3,
            comps: 1,
        },
        // The XA page's branch waits for its coordinator's decision all through the test.
        &["global_txn_commit_log_wait_max_sec = 3600"],
    );
    // The first token is made in open mode; the others need it.
    let admin = token(&c, None, "console-admin", "admin");
    let tokens = Tokens {
        operator: token(&c, Some(&admin), "alice", "operator"),
        viewer: token(&c, Some(&admin), "val", "viewer"),
        admin,
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let b = Browser::start(&shots, 1366, 900).await.expect("browser");
        let res = scenario(&c, &tokens, &b).await;
        if let Err(e) = &res {
            let _ = b.shot("failure").await;
            let page = b.client.source().await.unwrap_or_default();
            b.close().await;
            panic!(
                "{e:#}\npage:\n{}\ndaemon log:\n{}",
                tail(&page, 6000),
                c.daemon.log_tail()
            );
        }
        b.close().await;
    });
    eprintln!("screenshots in {}", shots.display());
}

fn tail(s: &str, n: usize) -> &str {
    let i = s.len().saturating_sub(n);
    let i = (i..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    &s[i..]
}

async fn path(cl: &Client) -> anyhow::Result<String> {
    let u = cl.current_url().await?;
    Ok(match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    })
}

async fn wait_path(
    cl: &Client,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let start = std::time::Instant::now();
    loop {
        let p = path(cl).await?;
        if pred(&p) {
            return Ok(p);
        }
        anyhow::ensure!(start.elapsed() < limit, "still at {p} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn login(b: &Browser, base: &str, secret: &str) -> anyhow::Result<()> {
    b.client.goto(&format!("{base}/ui/login")).await?;
    let t = b.client.find(Locator::Id("token")).await?;
    t.clear().await?;
    t.send_keys(secret).await?;
    b.client.find(Locator::Id("login")).await?.click().await?;
    Ok(())
}

/// The same from the keyboard only: the token field has the focus when the page opens, and
/// Enter submits.
async fn login_by_keyboard(b: &Browser, base: &str, secret: &str) -> anyhow::Result<()> {
    b.client.goto(&format!("{base}/ui/login")).await?;
    let focused = b
        .client
        .execute("return document.activeElement.id;", vec![])
        .await?;
    anyhow::ensure!(focused == json!("token"), "focus on {focused}");
    b.client
        .active_element()
        .await?
        .send_keys(&format!("{secret}\u{E007}"))
        .await?;
    Ok(())
}

/// A script's answer in the page (WebDriver's executeAsyncScript: the last argument is the
/// callback).
async fn page_fetch(cl: &Client, js: &str) -> anyhow::Result<Value> {
    Ok(cl.execute_async(js, vec![]).await?)
}

/// Inputs and selects of the page without a label (should be none).
async fn unlabelled(cl: &Client) -> anyhow::Result<i64> {
    let v = cl
        .execute(
            "return Array.from(document.querySelectorAll('input:not([type=hidden]), select'))\
             .filter(e => !e.labels || e.labels.length === 0).length;",
            vec![],
        )
        .await?;
    Ok(v.as_i64().unwrap_or(-1))
}

/// Accepts the action's confirmation, then follows the job's page until the job ends; its
/// final status.
async fn confirm_and_follow_job(b: &Browser) -> anyhow::Result<String> {
    b.client.accept_alert().await?;
    wait_path(&b.client, SHORT, |p| p.starts_with("/ui/jobs/")).await?;
    b.wait_text("#job-status", CREATE_LIMIT, |s| {
        s == "done" || s == "failed"
    })
    .await
}

/// `GET url` with a bearer token, as JSON.
async fn get_json(api: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    Ok(api.get(url).bearer_auth(token).send().await?.json().await?)
}

async fn count(cl: &Client, css: &str) -> anyhow::Result<usize> {
    Ok(cl.find_all(Locator::Css(css)).await?.len())
}

async fn scenario(c: &DaemonCluster, t: &Tokens, b: &Browser) -> anyhow::Result<()> {
    let base = c.base.as_str();
    let cl = &b.client;
    let api = reqwest::Client::builder().timeout(SHORT).build()?;

    // No session: any page leads to the login page; a wrong token is refused there.
    cl.goto(&format!("{base}/ui/jobs")).await?;
    let p = wait_path(cl, SHORT, |p| p.starts_with("/ui/login")).await?;
    assert!(p.contains("next=/ui/jobs"), "{p}");
    login(b, base, "kl_not-a-token").await?;
    let e = b
        .wait_text("#login-error", SHORT, |t| !t.is_empty())
        .await?;
    assert!(e.contains("unknown or revoked"), "{e}");
    b.shot("00-login").await?;

    // The operator logs in (from the keyboard) and creates the cluster from the form.
    login_by_keyboard(b, base, &t.operator).await?;
    wait_path(cl, SHORT, |p| p == "/ui/").await?;
    let who = b.wait_text("#who", SHORT, |t| !t.is_empty()).await?;
    assert_eq!(who, "alice (operator)");
    b.shot("01-overview-empty").await?;
    cl.find(Locator::Id("new-cluster")).await?.click().await?;
    wait_path(cl, SHORT, |p| p == "/ui/clusters/new").await?;
    assert_eq!(unlabelled(cl).await?, 0, "every control has a label");
    // A bad name: the API's own message, shown in the form, and nothing created.
    cl.find(Locator::Id("c-name"))
        .await?
        .send_keys("bad name!")
        .await?;
    cl.find(Locator::Id("c-innodb"))
        .await?
        .send_keys("32")
        .await?;
    cl.find(Locator::Id("c-maxconn"))
        .await?
        .send_keys("100")
        .await?;
    cl.find(Locator::Id("create")).await?.click().await?;
    cl.accept_alert().await?;
    let err = b
        .wait_text("form.api .api-error", SHORT, |t| !t.is_empty())
        .await?;
    assert!(err.starts_with("invalid") && err.contains("name"), "{err}");
    b.shot("02-create-refused").await?;
    let clusters: Value = get_json(&api, &format!("{base}/v1/clusters"), &t.operator).await?;
    assert_eq!(clusters, json!([]), "a refused form creates nothing");
    let name = cl.find(Locator::Id("c-name")).await?;
    name.clear().await?;
    name.send_keys("web1").await?;
    cl.find(Locator::Id("create")).await?.click().await?;
    cl.accept_alert().await?;
    let job_path = wait_path(cl, SHORT, |p| p.starts_with("/ui/jobs/")).await?;
    // The job's page follows its steps live until it ends.
    let status = b
        .wait_text("#job-status", CREATE_LIMIT, |s| {
            s == "done" || s == "failed"
        })
        .await?;
    b.shot("03-create-job").await?;
    assert_eq!(status, "done", "the create_cluster job at {job_path}");
    let steps = count(cl, "#steps tbody tr[data-status=done]").await?;
    assert!(steps >= 3, "the job's steps are listed ({steps})");
    assert_eq!(count(cl, "#steps tbody tr[data-status=failed]").await?, 0);

    // The topology: one shard of 3 nodes, one primary, two replicas replicating, all up.
    let clusters: Value = get_json(&api, &format!("{base}/v1/clusters"), &t.operator).await?;
    let cid = clusters[0]["id"].as_i64().expect("the new cluster");
    assert_eq!(clusters[0]["name"], "web1");
    cl.goto(&format!("{base}/ui/clusters/{cid}")).await?;
    let text = b
        .wait_text("section.shard", Duration::from_secs(60), |s| {
            // Replicas are read-only from their creation, not only once HA has fenced them.
            s.contains("primary")
                && s.contains("writable")
                && s.matches("read-only").count() == 2
                && s.matches("Yes").count() >= 4
        })
        .await?;
    assert_eq!(count(cl, "tr[data-role=primary]").await?, 1, "{text}");
    // Read-only from their setup: HA never had to fence a writable replica.
    let ha: Value = get_json(&api, &format!("{base}/v1/ha"), &t.operator).await?;
    let fenced: Vec<&Value> = ha["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| {
                    e["what"]
                        .as_str()
                        .is_some_and(|w| w.contains("writable non-primary"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(fenced.is_empty(), "{fenced:?}");
    assert_eq!(count(cl, "tr[data-role=replica]").await?, 2, "{text}");
    assert_eq!(count(cl, "#comp-nodes tbody tr").await?, 1);
    assert_eq!(unlabelled(cl).await?, 0, "every control has a label");
    let old_primary = cl
        .find(Locator::Css("tr[data-role=primary]"))
        .await?
        .attr("data-node")
        .await?
        .expect("node id");
    b.shot("04-cluster").await?;

    // Switch over from the shard's button: the new record with its timeline.
    let shard_id = c_shard(&api, base, &t.operator, cid).await?;
    b.click_css(&format!(
        "#shard-{shard_id} button[data-api-path='/v1/shards/{shard_id}/switchover']:not([data-api-body])"
    ))
    .await?;
    cl.accept_alert().await?;
    let fpath = wait_path(cl, Duration::from_secs(120), |p| {
        p.starts_with("/ui/failovers/")
    })
    .await?;
    let rec_text = b
        .wait_text("article.failover", SHORT, |s| s.contains("promoted"))
        .await?;
    assert!(rec_text.contains("switchover of shard"), "{rec_text}");
    let fid: u64 = fpath.trim_start_matches("/ui/failovers/").parse()?;
    let rec: Value = get_json(&api, &format!("{base}/v1/failovers/{fid}"), &t.operator).await?;
    assert_eq!(rec["kind"], "switchover");
    assert_eq!(rec["outcome"], "promoted");
    assert_eq!(rec["old_primary"].to_string(), old_primary);
    let phases = rec["phases"].as_array().map_or(0, Vec::len);
    assert!(phases >= 2, "{rec}");
    assert_eq!(count(cl, ".timeline .seg").await?, phases);
    // Every bar drawn, wider for a longer phase.
    let widths = cl
        .execute(
            "return Array.from(document.querySelectorAll('.timeline .seg'))\
             .map(e => e.getBoundingClientRect().width);",
            vec![],
        )
        .await?;
    let widths: Vec<f64> = widths
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    assert!(widths.iter().all(|w| *w > 2.0), "{widths:?}");
    b.shot("05-failover").await?;
    // The cluster page shows the new primary.
    let new_primary = rec["new_primary"].to_string();
    cl.goto(&format!("{base}/ui/clusters/{cid}")).await?;
    b.wait_text("tr[data-role=primary] td", SHORT, |s| s == new_primary)
        .await?;
    cl.goto(&format!("{base}/ui/failovers")).await?;
    b.wait_text("article.failover", SHORT, |s| s.contains("switchover"))
        .await?;
    b.shot("06-failovers").await?;

    // A change with the session cookie but without the CSRF token is refused, from the page
    // itself and from outside; nothing is done.
    let st = page_fetch(
        cl,
        &format!(
            "const done = arguments[arguments.length - 1];\
             fetch('/v1/shards/{shard_id}/no_switch', {{method: 'POST', credentials: 'same-origin',\
             headers: {{'Content-Type': 'application/json'}}, body: '{{\"seconds\": 60}}'}})\
             .then(r => r.json().then(j => done([r.status, j.code])));"
        ),
    )
    .await?;
    assert_eq!(st, json!([403, "csrf_token_missing"]));
    let cookie = cl.get_named_cookie("kl_session").await?;
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let sid = cookie.value().to_string();
    for header in [None, Some("0".repeat(64))] {
        let mut rq = api
            .post(format!("{base}/v1/shards/{shard_id}/switchover"))
            .header("Cookie", format!("kl_session={sid}"));
        if let Some(h) = &header {
            rq = rq.header("X-CSRF-Token", h);
        }
        let r = rq.send().await?;
        assert_eq!(r.status().as_u16(), 403, "{header:?}");
        let v: Value = r.json().await?;
        assert_eq!(v["code"], "csrf_token_missing", "{header:?}");
    }
    let after: Value = get_json(&api, &format!("{base}/v1/failovers"), &t.operator).await?;
    assert_eq!(
        after.as_array().map(Vec::len),
        Some(1),
        "no second switchover"
    );

    // An XA branch left prepared by a coordinator that went away, with no decision logged yet
    // (the coordinator's wait is an hour here): the XA page shows it, and a rollback by hand
    // is refused with the API's reason; the branch stays prepared.
    let d: Value = get_json(&api, &format!("{base}/v1/clusters/{cid}"), &t.operator).await?;
    let primary_port = d["shards"][0]["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == rec["new_primary"]))
        .and_then(|n| n["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .expect("the new primary's port");
    let pwd = c.manager_pwd_of(cid).await;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let xid = format!("1-{ts}-7");
    {
        use mysql_async::prelude::Queryable;
        let mut conn = c.conn(&pwd, primary_port).await;
        conn.query_drop(
            "CREATE DATABASE IF NOT EXISTS console_t; \
             CREATE TABLE IF NOT EXISTS console_t.a (id INT PRIMARY KEY)",
        )
        .await?;
        conn.query_drop(format!(
            "XA START '{xid}'; INSERT INTO console_t.a VALUES (1); XA END '{xid}'; XA PREPARE '{xid}'"
        ))
        .await?;
        conn.disconnect().await?;
    }
    cl.goto(&format!("{base}/ui/xa")).await?;
    let row = b
        .wait_text(".xa-branches tbody tr", SHORT, |s| s.contains(&xid))
        .await?;
    assert!(row.contains("none logged"), "{row}");
    // Typing holds the page's refresh (the form is being edited).
    b.type_css(".xa-branches input[name=reason]", "console test")
        .await?;
    b.click_css(".xa-branches select[name=action] option[value=rollback]")
        .await?;
    b.click_css(".xa-branches button[type=submit]").await?;
    cl.accept_alert().await?;
    let refused = b
        .wait_text(".xa-branches .api-error", SHORT, |s| !s.is_empty())
        .await?;
    assert!(refused.starts_with("conflict"), "{refused}");
    b.shot("06b-xa").await?;
    {
        use mysql_async::prelude::Queryable;
        let mut conn = c.conn(&pwd, primary_port).await;
        let prepared: Vec<(i64, i64, i64, String)> = conn.query("XA RECOVER").await?;
        assert!(
            prepared.iter().any(|r| r.3 == xid),
            "the branch is still prepared: {prepared:?}"
        );
        conn.query_drop(format!("XA ROLLBACK '{xid}'")).await?;
        conn.disconnect().await?;
    }

    // The other pages, for the record.
    for (page, shot) in [
        ("/ui/", "09-overview"),
        ("/ui/jobs", "10-jobs"),
        ("/ui/machines", "11-machines"),
    ] {
        cl.goto(&format!("{base}{page}")).await?;
        b.wait_text("#live", SHORT, |s| !s.is_empty()).await?;
        assert_eq!(count(cl, "#live .error").await?, 0, "{page}");
        b.shot(shot).await?;
    }

    // A replica added from the shard's button, its job followed, then removed from its row.
    let cluster_page = format!("{base}/ui/clusters/{cid}");
    cl.goto(&cluster_page).await?;
    b.click_css(&format!(
        "#shard-{shard_id} button[data-api-path='/v1/clusters/{cid}/shards/{shard_id}/nodes']"
    ))
    .await?;
    assert_eq!(confirm_and_follow_job(b).await?, "done", "add_nodes");
    cl.goto(&cluster_page).await?;
    b.wait_text("section.shard", SHORT, |s| {
        s.matches("read-only").count() == 3 && s.matches("Yes").count() >= 6
    })
    .await?;
    let replicas = cl
        .execute(
            "return Array.from(document.querySelectorAll('tr[data-role=replica]'))\
             .map(e => Number(e.dataset.node));",
            vec![],
        )
        .await?;
    let added = replicas
        .as_array()
        .and_then(|a| a.iter().filter_map(Value::as_i64).max())
        .expect("replicas");
    b.click_css(&format!(
        "tr[data-node='{added}'] button[data-api-method=DELETE]"
    ))
    .await?;
    assert_eq!(confirm_and_follow_job(b).await?, "done", "delete_node");
    cl.goto(&cluster_page).await?;
    b.wait_text("section.shard", SHORT, |s| {
        s.matches("read-only").count() == 2
    })
    .await?;
    assert_eq!(count(cl, &format!("tr[data-node='{added}']")).await?, 0);

    // A phone's width: no sideways scrolling of the page, tables scroll in their box.
    cl.set_window_size(390, 844).await?;
    cl.goto(&format!("{base}/ui/clusters/{cid}")).await?;
    b.wait_text("section.shard", SHORT, |s| s.contains("primary"))
        .await?;
    // Elements reaching past the viewport, outside the boxes that scroll on their own.
    let wide = cl
        .execute(
            "return Array.from(document.querySelectorAll('body *'))\
             .filter(e => !e.closest('.table-wrap, pre') && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)\
             .map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))\
             .concat(document.documentElement.scrollWidth > document.documentElement.clientWidth + 1 ? ['page ' + document.documentElement.scrollWidth] : []);",
            vec![],
        )
        .await?;
    assert_eq!(wide, json!([]), "the page fits a phone's width");
    b.shot("07-cluster-phone").await?;
    cl.set_window_size(1366, 900).await?;

    // Log out; a viewer sees no action, and the API refuses one forged with a valid CSRF
    // token.
    cl.goto(&format!("{base}/ui/")).await?;
    cl.find(Locator::Css("form.who button"))
        .await?
        .click()
        .await?;
    wait_path(cl, SHORT, |p| p.starts_with("/ui/login")).await?;
    login(b, base, &t.viewer).await?;
    wait_path(cl, SHORT, |p| p == "/ui/").await?;
    assert_eq!(count(cl, "#new-cluster").await?, 0);
    cl.goto(&format!("{base}/ui/clusters/{cid}")).await?;
    b.wait_text("section.shard", SHORT, |s| s.contains("primary"))
        .await?;
    assert_eq!(count(cl, "button[data-api-method]").await?, 0);
    assert_eq!(count(cl, "form.api").await?, 0);
    b.shot("08-cluster-viewer").await?;
    let st = page_fetch(
        cl,
        &format!(
            "const done = arguments[arguments.length - 1];\
             const csrf = document.querySelector('meta[name=\"csrf-token\"]').content;\
             fetch('/v1/shards/{shard_id}/switchover', {{method: 'POST', credentials: 'same-origin',\
             headers: {{'X-CSRF-Token': csrf}}}})\
             .then(r => r.json().then(j => done([r.status, j.code])));"
        ),
    )
    .await?;
    assert_eq!(st, json!([403, "forbidden"]));

    // Revoking the viewer's token ends its session at once.
    let r = api
        .delete(format!("{base}/v1/tokens/val"))
        .bearer_auth(&t.admin)
        .send()
        .await?;
    assert!(r.status().is_success(), "{}", r.status());
    cl.goto(&format!("{base}/ui/failovers")).await?;
    wait_path(cl, SHORT, |p| p.starts_with("/ui/login")).await?;
    Ok(())
}

async fn c_shard(api: &reqwest::Client, base: &str, token: &str, cid: i64) -> anyhow::Result<i64> {
    let d: Value = get_json(api, &format!("{base}/v1/clusters/{cid}"), token).await?;
    d["shards"][0]["shard"]["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no shard in {d}"))
}
