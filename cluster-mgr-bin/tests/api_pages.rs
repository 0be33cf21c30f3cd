//! Paginated lists through the daemon's real app: `?limit=&after=` with the next cursor in
//! `X-Next-Cursor` and `Link rel="next"`. Walking every page gives exactly the full list, in
//! order, on both backends (failovers too, past the largest page); a `limit` out of 1..=1000
//! or an unknown key is a 400. Pages the daemon keeps between changes of the store are never
//! older than the store, whoever changed it.

mod common;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use actix_web::test;
use cluster_mgr::http::app;
use common::*;
use kunlun_meta::model::NewJob;
use kunlun_meta::store::repo::failovers::{self, FailoverRow};
use serde_json::{json, Value};

/// Machines registered for the walk (loopback addresses, never probed).
const MACHINES: usize = 250;

/// GET `uri`: the JSON array and the `X-Next-Cursor` / `Link` headers.
async fn page<S, B>(svc: &S, uri: &str) -> (Vec<Value>, Option<String>, Option<String>)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(svc, test::TestRequest::get().uri(uri).to_request()).await;
    assert_eq!(res.status().as_u16(), 200, "GET {uri}");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    };
    let (next, link) = (header("x-next-cursor"), header("link"));
    let v: Value = test::read_body_json(res).await;
    (v.as_array().cloned().expect("an array"), next, link)
}

/// Every page of `path` by `limit`, following the cursor; checks each `Link` names the same
/// cursor. Bounded by the number of rows expected.
async fn walk<S, B>(svc: &S, path: &str, limit: usize, expect: usize) -> Vec<Value>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let mut all = Vec::new();
    let mut uri = format!("{path}?limit={limit}");
    for _ in 0..=expect / limit + 1 {
        let (rows, next, link) = page(svc, &uri).await;
        assert!(rows.len() <= limit, "{uri}: {} rows", rows.len());
        all.extend(rows);
        match next {
            None => {
                assert!(link.is_none(), "{uri}: Link without a cursor");
                return all;
            }
            Some(after) => {
                let link = link.expect("Link with the cursor");
                assert_eq!(
                    link,
                    format!("<{path}?limit={limit}&after={after}>; rel=\"next\""),
                    "{uri}"
                );
                uri = format!("{path}?limit={limit}&after={after}");
            }
        }
    }
    panic!("{path}: more pages than {expect} rows can fill");
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().filter_map(|r| r["id"].as_i64()).collect()
}

async fn pages(ts: TestStore) {
    let svc = test::init_service(app(state(&ts.store))).await;
    for i in 0..MACHINES {
        let body = json!({"hostaddr": format!("127.0.1.{}", i + 1), "machine_type": "storage",
            "ssh_key_path": "/k", "data_dirs": ["/d"], "probe": false});
        let (st, m) = call(&svc, Method::POST, "/v1/machines", Some(&body.to_string())).await;
        assert_eq!(st.as_u16(), 201, "{m}");
    }
    let (full, next, _) = page(&svc, "/v1/machines?limit=1000").await;
    assert_eq!(full.len(), MACHINES);
    assert_eq!(next, None, "everything fits one page of 1000");
    let walked = walk(&svc, "/v1/machines", 40, MACHINES).await;
    assert_eq!(walked, full, "the pages of 40 are the full list, in order");
    let mut sorted = ids(&full);
    sorted.sort_unstable();
    assert_eq!(ids(&full), sorted, "machines by id ascending");
    // The default page is 100; a page of exactly the rows left has no cursor.
    let (first, next, _) = page(&svc, "/v1/machines").await;
    assert_eq!(first.len(), 100);
    assert_eq!(next, Some(ids(&first)[99].to_string()));
    let (rest, next, _) = page(
        &svc,
        &format!("/v1/machines?limit=50&after={}", ids(&full)[199]),
    )
    .await;
    assert_eq!(rest.len(), 50);
    assert_eq!(next, None);

    // Jobs: newest first, the cursor goes to older ones.
    for i in 0..23 {
        let j = NewJob {
            job_type: "page_test".into(),
            job_info: json!({"i": i}),
            user_name: None,
        };
        ts.store.create_job(&j).await.expect("create job");
    }
    let (all_jobs, _, _) = page(&svc, "/v1/jobs?job_type=page_test&limit=1000").await;
    assert_eq!(all_jobs.len(), 23);
    let mut jobs = Vec::new();
    let mut uri = "/v1/jobs?job_type=page_test&limit=7".to_string();
    for _ in 0..5 {
        let (rows, next, _) = page(&svc, &uri).await;
        jobs.extend(rows);
        match next {
            Some(after) => uri = format!("/v1/jobs?job_type=page_test&limit=7&after={after}"),
            None => break,
        }
    }
    assert_eq!(jobs, all_jobs, "the job pages are the full list");
    let mut desc = ids(&jobs);
    desc.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids(&jobs), desc, "jobs newest first");

    // Clusters and failovers: empty lists have no cursor.
    assert_eq!(
        page(&svc, "/v1/clusters?limit=5").await,
        (vec![], None, None)
    );
    assert_eq!(
        page(&svc, "/v1/failovers?limit=5").await,
        (vec![], None, None)
    );

    // Failovers: more records than the largest page; every one is reached by the cursor,
    // newest first, also when filtered by shard.
    failover_pages(&ts, &svc).await;

    for path in ["/v1/machines", "/v1/clusters", "/v1/jobs", "/v1/failovers"] {
        for q in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=x",
            "after=x",
            "colour=red",
        ] {
            assert_error(
                &call(&svc, Method::GET, &format!("{path}?{q}"), None).await,
                400,
                "invalid_field",
            );
        }
    }
}

/// Records stored for the failover walk: more than one page of the largest size.
const FAILOVERS: usize = 1_010;

async fn failover_pages<S, B>(ts: &TestStore, svc: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    // Every tenth on shard 2, the rest on shard 1; one transaction.
    ts.store
        .tx(async |tx| {
            for i in 0..FAILOVERS {
                let row = FailoverRow {
                    id: 0,
                    cluster_id: 1,
                    shard_id: if i % 10 == 0 { 2 } else { 1 },
                    kind: "automatic".into(),
                    started_at: chrono::Utc::now().naive_utc(),
                    old_primary: 10,
                    new_primary: Some(11),
                    outcome: "promoted".into(),
                    proven_lossless: 1,
                    possible_loss: None,
                    reason: None,
                    fence: None,
                    phases: "[]".into(),
                    old_primary_fate: None,
                    total_ms: 100,
                };
                failovers::insert(tx, &row).await?;
            }
            Ok(())
        })
        .await
        .expect("store the failover records");
    let all = walk(svc, "/v1/failovers", 1000, FAILOVERS).await;
    assert_eq!(all.len(), FAILOVERS, "the oldest records are reachable too");
    assert_eq!(ids(&all).len(), FAILOVERS, "every record has its id");
    let mut desc = ids(&all);
    desc.sort_unstable_by(|a, b| b.cmp(a));
    desc.dedup();
    assert_eq!(ids(&all), desc, "failovers newest first, each once");
    assert_eq!(walk(svc, "/v1/failovers", 37, FAILOVERS).await, all);

    let mut of_two = Vec::new();
    let mut uri = "/v1/failovers?shard_id=2&limit=30".to_string();
    for _ in 0..=FAILOVERS / 10 / 30 + 1 {
        let (rows, next, _) = page(svc, &uri).await;
        of_two.extend(rows);
        match next {
            Some(after) => uri = format!("/v1/failovers?shard_id=2&limit=30&after={after}"),
            None => break,
        }
    }
    let expect: Vec<Value> = all.iter().filter(|r| r["shard_id"] == 2).cloned().collect();
    assert_eq!(expect.len(), FAILOVERS.div_ceil(10));
    assert_eq!(of_two, expect, "shard 2's pages are its records, in order");
    // A page that ends exactly at the last record has no cursor.
    let exact = format!("/v1/failovers?shard_id=2&limit={}", expect.len());
    assert_eq!(page(svc, &exact).await, (expect, None, None));
}

#[actix_web::test]
async fn pages_on_sqlite() {
    pages(sqlite_store().await).await;
}

#[actix_web::test]
async fn pages_on_mysql() {
    pages(mysql_store().await).await;
}

/// The daemon keeps list answers while the store's change counter reads the same: a change
/// through another handle on the file (as another daemon or the CLI would make, with
/// connections of their own) shows at the next request, for a changed row, a new row and a
/// new job.
#[actix_web::test]
async fn kept_pages_are_never_older_than_the_store() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    for i in 0..3 {
        let body = json!({"hostaddr": format!("127.0.2.{}", i + 1), "machine_type": "storage",
            "ssh_key_path": "/k", "data_dirs": ["/d"], "probe": false});
        let (st, m) = call(&svc, Method::POST, "/v1/machines", Some(&body.to_string())).await;
        assert_eq!(st.as_u16(), 201, "{m}");
    }
    let other = kunlun_meta::Store::open(&ts.config)
        .await
        .expect("a second handle");
    let first = page(&svc, "/v1/machines?limit=2").await;
    assert_eq!(first.0.len(), 2);
    assert!(first.1.is_some());
    assert_eq!(page(&svc, "/v1/machines?limit=2").await, first, "unchanged");

    // A changed row on the kept page.
    let id = first.0[0]["id"].as_i64().expect("id");
    let patch = kunlun_meta::model::MachinePatch {
        rack_id: Some("rack-9".into()),
        ..Default::default()
    };
    other.update_machine(id, &patch).await.expect("update");
    let (rows, _, _) = page(&svc, "/v1/machines?limit=2").await;
    assert_eq!(rows[0]["rack_id"], "rack-9", "{}", rows[0]);

    // A new row on the last page, which had no cursor.
    let (last, next, _) = page(&svc, &format!("/v1/machines?limit=2&after={id}")).await;
    assert_eq!((last.len(), next), (2, None));
    let (all, _, _) = page(&svc, "/v1/machines").await;
    let m = ts.store.get_machine(id).await.expect("machine");
    let new = kunlun_meta::model::NewMachine {
        hostaddr: "127.0.2.9".into(),
        machine_type: m.machine_type,
        rack_id: None,
        data_dirs: m.data_dirs.clone(),
        port_range: m.port_range.clone(),
        total_mem_mb: None,
        total_cpu_cores: None,
        ssh: m.ssh.clone(),
    };
    other.insert_machine(&new).await.expect("insert");
    let (last, next, _) = page(&svc, &format!("/v1/machines?limit=2&after={id}")).await;
    assert_eq!(last.len(), 2);
    assert!(next.is_some(), "a third row follows now");
    assert_eq!(page(&svc, "/v1/machines").await.0.len(), all.len() + 1);

    // A job created elsewhere.
    let (jobs, _, _) = page(&svc, "/v1/jobs").await;
    let j = NewJob {
        job_type: "kept_page_test".into(),
        job_info: json!({}),
        user_name: None,
    };
    other.create_job(&j).await.expect("create job");
    let (after, _, _) = page(&svc, "/v1/jobs").await;
    assert_eq!(after.len(), jobs.len() + 1, "{after:?}");
}

#[actix_web::test]
async fn the_openapi_document_describes_the_cursor() {
    let ts = sqlite_store().await;
    let svc = test::init_service(app(state(&ts.store))).await;
    let (st, doc) = call(&svc, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(st.as_u16(), 200);
    for path in ["/v1/machines", "/v1/clusters", "/v1/jobs", "/v1/failovers"] {
        let get = &doc["paths"][path]["get"];
        let params: Vec<&str> = get["parameters"]
            .as_array()
            .map(|p| p.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            params.contains(&"limit") && params.contains(&"after"),
            "{path}: {params:?}"
        );
        assert!(
            get["responses"]["200"]["headers"]["X-Next-Cursor"].is_object(),
            "{path}: {}",
            get["responses"]["200"]
        );
    }
}
