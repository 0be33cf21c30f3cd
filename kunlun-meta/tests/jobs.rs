//! Jobs on both backends: create, list (newest first, filters, limit), update, claim, and
//! eight concurrent claimers of one job of which exactly one wins.

mod common;

use common::TestStore;
use kunlun_meta::api::JobQuery;
use kunlun_meta::model::{JobStatus, NewJob};
use kunlun_meta::Error;
use serde_json::json;

fn job(t: &str) -> NewJob {
    NewJob {
        job_type: t.into(),
        job_info: json!({"job_type": t, "paras": {"x": "'; --"}}),
        user_name: Some("admin".into()),
    }
}

async fn lifecycle(t: &TestStore) {
    let s = &t.store;
    let a = s.create_job(&job("create_cluster")).await.unwrap();
    let b = s.create_job(&job("add_shards")).await.unwrap();
    assert_eq!(a.status, JobStatus::NotStarted);
    assert_eq!(
        a.job_info,
        Some(json!({"job_type": "create_cluster", "paras": {"x": "'; --"}}))
    );
    assert!(a.when_started.is_some() && a.when_ended.is_none());

    let all = s.list_jobs(&JobQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![b.id, a.id],
        "newest first"
    );
    let only = s
        .list_jobs(&JobQuery {
            job_type: Some("add_shards".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    let one = s
        .list_jobs(&JobQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);

    // Claims go oldest first and respect the type filter.
    let c = s
        .claim_next_job(&["add_shards"])
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(c.id, b.id);
    assert_eq!(c.status, JobStatus::Ongoing);
    assert!(s.claim_next_job(&["add_shards"]).await.unwrap().is_none());
    let c2 = s.claim_next_job(&[]).await.unwrap().expect("a job");
    assert_eq!(c2.id, a.id);
    assert!(s.claim_next_job(&[]).await.unwrap().is_none());

    let memo = json!({"step": 2, "msg": "installing 'shard_1'"});
    let u = s
        .update_job(a.id, JobStatus::Ongoing, Some(&memo))
        .await
        .unwrap();
    assert_eq!(u.memo, Some(memo.clone()));
    assert!(u.when_ended.is_none());
    // An update that changes nothing still finds the job (MySQL counts matched rows).
    let same = s
        .update_job(a.id, JobStatus::Ongoing, Some(&memo))
        .await
        .unwrap();
    assert_eq!(same, u);
    let done = s.update_job(a.id, JobStatus::Done, None).await.unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(done.memo, Some(memo), "memo kept when not given");
    assert!(done.when_ended.is_some());
    let ongoing = s
        .list_jobs(&JobQuery {
            status: Some(JobStatus::Ongoing),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ongoing.iter().map(|j| j.id).collect::<Vec<_>>(), vec![b.id]);

    assert!(matches!(
        s.get_job(999_999).await,
        Err(Error::NotFound { what: "job", .. })
    ));
    assert!(matches!(
        s.update_job(999_999, JobStatus::Failed, None).await,
        Err(Error::NotFound { .. })
    ));
}

async fn one_claimer_wins(t: &TestStore) {
    let s = &t.store;
    let j = s.create_job(&job("delete_cluster")).await.unwrap();
    let claims = futures::future::join_all((0..8).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.claim_next_job(&["delete_cluster"]).await })
    }))
    .await;
    let winners: Vec<i64> = claims
        .into_iter()
        .map(|r| r.expect("task").expect("claim"))
        .filter_map(|j| j.map(|j| j.id))
        .collect();
    assert_eq!(winners, vec![j.id], "exactly one claimer gets the job");
    assert_eq!(s.get_job(j.id).await.unwrap().status, JobStatus::Ongoing);
}

async fn many_jobs_many_claimers(t: &TestStore) {
    let s = &t.store;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(s.create_job(&job("expand")).await.unwrap().id);
    }
    let claims = futures::future::join_all((0..8).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.claim_next_job(&["expand"]).await })
    }))
    .await;
    let mut won: Vec<i64> = claims
        .into_iter()
        .filter_map(|r| r.expect("task").expect("claim"))
        .map(|j| j.id)
        .collect();
    won.sort_unstable();
    // Every job handed out once: losers of a compare-and-swap move on to the next job.
    assert_eq!(won, ids);
    let left = s
        .list_jobs(&JobQuery {
            status: Some(JobStatus::NotStarted),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.is_empty());
}

/// A progress write lands only while the job is `ongoing`.
async fn memo_only_while_ongoing(t: &TestStore) {
    let s = &t.store;
    let j = s.create_job(&job("create_cluster")).await.unwrap();
    assert!(
        !s.update_ongoing_memo(j.id, &json!({"steps": 1}))
            .await
            .unwrap(),
        "not started yet"
    );
    s.update_job(j.id, JobStatus::Ongoing, None).await.unwrap();
    assert!(s
        .update_ongoing_memo(j.id, &json!({"steps": 2}))
        .await
        .unwrap());
    assert_eq!(
        s.get_job(j.id).await.unwrap().memo,
        Some(json!({"steps": 2}))
    );
    s.update_job(
        j.id,
        JobStatus::Failed,
        Some(&json!({"stage": "rolled_back"})),
    )
    .await
    .unwrap();
    assert!(!s
        .update_ongoing_memo(j.id, &json!({"steps": 3}))
        .await
        .unwrap());
    let after = s.get_job(j.id).await.unwrap();
    assert_eq!(
        after.status,
        JobStatus::Failed,
        "a late write never revives a job"
    );
    assert_eq!(after.memo, Some(json!({"stage": "rolled_back"})));
}

both_backends! {
    job_memo_only_while_ongoing => memo_only_while_ongoing;
    job_lifecycle => lifecycle;
    job_single_winner => one_claimer_wins;
    job_many_claimers => many_jobs_many_claimers;
}
