//! Listing in-doubt XA branches and resolving one by hand, against real MariaDB shards: what
//! is listed, which manual actions are refused (they would contradict the commit log), and
//! the audit record each resolution leaves.

use kunlun_core::xa::{list_in_doubt, resolve_by_hand, AUDIT_JOB_TYPE};
use kunlun_meta::api::{JobQuery, XaAction, XaResolveRequest};
use kunlun_meta::model::{JobStatus, TxnCmd};
use kunlun_tests::xa::{new_xid, Txn2pc, XaEnv, ACCOUNTS};

fn req(action: XaAction, reason: &str) -> XaResolveRequest {
    XaResolveRequest {
        action,
        reason: reason.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_branches_are_listed_and_resolved_by_hand_with_an_audit_record() {
    let env = XaEnv::start(2).await.expect("env");
    let mut meta = env.meta_conn().await.unwrap();
    // A transfer with its commit logged, and one without a decision; both detached.
    let mut t = Txn2pc::begin(&env, new_xid(3), &[0, 1]).await.unwrap();
    t.add(0, 0, -10).await.unwrap();
    t.add(1, ACCOUNTS, 10).await.unwrap();
    t.prepare().await.unwrap();
    assert!(t.log_commit(&mut meta).await.unwrap());
    let logged = t.xid;
    t.kill(&env).await.unwrap();
    let mut u = Txn2pc::begin(&env, new_xid(3), &[0, 1]).await.unwrap();
    u.add(0, 1, -10).await.unwrap();
    u.add(1, ACCOUNTS + 1, 10).await.unwrap();
    u.prepare().await.unwrap();
    let undecided = u.xid;
    u.kill(&env).await.unwrap();
    env.shards[0]
        .sql("XA START 'foreign'; UPDATE bank.accounts SET balance = balance WHERE id = 5; XA END 'foreign'; XA PREPARE 'foreign'")
        .unwrap();

    let list = list_in_doubt(&env.store, &env.cluster, &env.cfg)
        .await
        .expect("list");
    assert_eq!(list.shards.len(), 2);
    for s in &list.shards {
        assert!(s.error.is_none(), "{s:?}");
        let mut xs: Vec<_> = s
            .branches
            .iter()
            .map(|b| (b.xid.clone(), b.decision))
            .collect();
        xs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = vec![
            (logged.to_string(), Some(TxnCmd::Commit)),
            (undecided.to_string(), None),
        ];
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(xs, want);
    }
    assert_eq!(list.shards[0].foreign, 1);

    let c = &env.cluster;
    let s = &env.store;
    let cfg = &env.cfg;
    let code = |e: kunlun_core::Error| match e {
        kunlun_core::Error::Conflict(_) => "conflict",
        kunlun_core::Error::NotFound { .. } => "not_found",
        kunlun_core::Error::Invalid(_) => "invalid",
        _ => "other",
    };
    // Refused: a commit nobody logged; a rollback of a logged commit; a bad reason or xid;
    // an xid nobody knows.
    let r = resolve_by_hand(
        s,
        c,
        &undecided.to_string(),
        &req(XaAction::Commit, "ops"),
        None,
        cfg,
    )
    .await;
    assert_eq!(r.map_err(code).err(), Some("conflict"));
    let r = resolve_by_hand(
        s,
        c,
        &logged.to_string(),
        &req(XaAction::Rollback, "ops"),
        None,
        cfg,
    )
    .await;
    assert_eq!(r.map_err(code).err(), Some("conflict"));
    let r = resolve_by_hand(
        s,
        c,
        &logged.to_string(),
        &req(XaAction::Commit, " "),
        None,
        cfg,
    )
    .await;
    assert_eq!(r.map_err(code).err(), Some("invalid"));
    let r = resolve_by_hand(s, c, "foreign", &req(XaAction::Rollback, "ops"), None, cfg).await;
    assert_eq!(r.map_err(code).err(), Some("invalid"));
    let r = resolve_by_hand(
        s,
        c,
        "9-1600000000-1",
        &req(XaAction::Rollback, "ops"),
        None,
        cfg,
    )
    .await;
    assert_eq!(r.map_err(code).err(), Some("not_found"));

    // Allowed: the logged commit, and (past the deadline) the rollback of the undecided one.
    let done = resolve_by_hand(
        s,
        c,
        &logged.to_string(),
        &req(XaAction::Commit, "INC-42 stuck branch"),
        Some("alice"),
        cfg,
    )
    .await
    .expect("commit by hand");
    assert_eq!(done.decision, TxnCmd::Commit);
    assert_eq!(done.ended_on, env.shard_ids);
    env.wait_past_deadline(undecided).await.unwrap();
    let done2 = resolve_by_hand(
        s,
        c,
        &undecided.to_string(),
        &req(XaAction::Rollback, "INC-43"),
        None,
        cfg,
    )
    .await
    .expect("rollback by hand");
    assert_eq!(done2.decision, TxnCmd::Abort);
    assert_eq!(env.decision(undecided).await.unwrap(), Some(TxnCmd::Abort));
    assert!(env.has_transfer(0, logged).unwrap() && env.has_transfer(1, logged).unwrap());
    assert!(!env.has_transfer(0, undecided).unwrap() && !env.has_transfer(1, undecided).unwrap());
    assert_eq!(env.prepared(0).unwrap(), vec!["foreign".to_string()]);
    assert!(env.prepared(1).unwrap().is_empty());

    // The audit trail holds both, with who and why.
    let jobs = s
        .list_jobs(&JobQuery {
            job_type: Some(AUDIT_JOB_TYPE.into()),
            ..JobQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    let j = jobs
        .iter()
        .find(|j| j.id == done.audit_job_id)
        .expect("audit row");
    assert_eq!(j.status, JobStatus::Done);
    assert_eq!(j.user_name.as_deref(), Some("alice"));
    let info = j.job_info.as_ref().expect("job_info");
    assert_eq!(info["reason"], "INC-42 stuck branch");
    assert_eq!(info["xid"], logged.to_string());
    env.rollback_leftovers().unwrap();
}
