//! `add_comps` and `delete_comp` found `ongoing` at start-up (the manager died mid-job), with a
//! SQLite store and a real private sshd on 127.0.0.53: an `add_comps` whose memo says
//! `planned` is rolled back (its half-made instance dir removed, its port reservation
//! released, no row); a `delete_comp` whose compute node is already gone ends `done`.

use std::net::Ipv4Addr;

use kunlun_core::jobs::kinds::{CompsMemo, ADD_COMPS, DELETE_COMP};
use kunlun_core::jobs::plan_comps::plan_add_comps;
use kunlun_meta::api::AddComps;
use kunlun_meta::model::{HaMode, JobStatus, MachineType, NewCluster, NewJob};
use kunlun_meta::store::repo::{clusters, machines};
use kunlun_provision::placement::PortSets;
use kunlun_tests::world::ProvisionWorld;
use serde_json::json;

const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);

#[tokio::test]
async fn interrupted_add_comps_rolls_back_and_delete_comp_of_a_gone_node_is_done() {
    let w = ProvisionWorld::builder(IP)
        .storage_machine(false)
        .build()
        .await;
    let store = &w.store;
    let m = w.machine(MachineType::Computer).clone();
    let cluster = store
        .tx(async |tx| {
            clusters::insert(
                tx,
                &NewCluster {
                    name: "rc1".into(),
                    nick_name: None,
                    owner: None,
                    business: None,
                    ha_mode: HaMode::Rbr,
                    memo: None,
                },
            )
            .await
        })
        .await
        .expect("cluster");

    // What a manager that died right after reserving would have left: the plan in the memo,
    // the port installing, a half-made instance dir.
    let req = AddComps {
        comps: 1,
        computer_hosts: vec![],
    };
    let plan =
        plan_add_comps(&req, &cluster, &[], std::slice::from_ref(&m), "pw".into()).expect("plan");
    let port = plan.comps[0].slot.port;
    let sets = PortSets::of(&m).reserve(&[port]).expect("reserve");
    store
        .tx(async |tx| machines::set_ports(tx, &m, &sets.used, &sets.installing).await)
        .await
        .expect("ports");
    let half = std::path::PathBuf::from(&plan.comps[0].base_dir);
    std::fs::create_dir_all(half.join("data")).expect("half-made dir");
    let job = store
        .create_job(&NewJob {
            job_type: ADD_COMPS.into(),
            job_info: json!({"comps": 1, "computer_hosts": [], "cluster_id": cluster.id, "name": "rc1"}),
            user_name: None,
        })
        .await
        .expect("job");
    let memo = CompsMemo {
        stage: "planned".into(),
        cluster_id: Some(cluster.id),
        plan: Some(plan.clone()),
        ..CompsMemo::default()
    };
    store
        .update_job(
            job.id,
            JobStatus::Ongoing,
            Some(&serde_json::to_value(&memo).expect("memo")),
        )
        .await
        .expect("ongoing");
    // A delete_comp whose compute node was already removed before the manager died.
    let del = store
        .create_job(&NewJob {
            job_type: DELETE_COMP.into(),
            job_info: json!({"comp_id": 424242, "cluster_id": cluster.id, "name": "rc1"}),
            user_name: None,
        })
        .await
        .expect("job");
    store
        .update_job(del.id, JobStatus::Ongoing, None)
        .await
        .expect("ongoing");

    let runner = &w.runner;
    assert_eq!(runner.recover().await.expect("recover"), 2);

    let j = store.get_job(job.id).await.expect("job");
    let memo: CompsMemo =
        serde_json::from_value(j.memo.clone().expect("memo")).expect("memo shape");
    assert_eq!(j.status, JobStatus::Failed, "{memo:?}");
    assert_eq!(memo.stage, "rolled_back", "{memo:?}");
    assert!(
        memo.error.as_deref().unwrap_or("").contains("restarted"),
        "{memo:?}"
    );
    assert!(!half.exists(), "half-made instance dir removed");
    let m = store.get_machine(m.id).await.expect("machine");
    assert!(
        m.installing_ports.is_empty() && m.used_ports.is_empty(),
        "{m:?}"
    );
    assert!(store
        .list_comp_nodes(Some(cluster.id))
        .await
        .expect("comps")
        .is_empty());

    let d = store.get_job(del.id).await.expect("job");
    assert_eq!(d.status, JobStatus::Done, "{:?}", d.memo);
}
