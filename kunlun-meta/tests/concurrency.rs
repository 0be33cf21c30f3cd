//! Concurrent read-modify-writes of the jobs on both backends: many transactions at once
//! reserving, committing and releasing ports of one machine and reserving compute-node ids,
//! through the repository functions the jobs use. None may fail on a concurrency conflict, no
//! port or id may be handed out twice, and the end state is the union of what each committed.
//! Two transactions locking two machines in opposite order deadlock on MySQL; the store runs
//! the victim again and both commit.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestStore;
use kunlun_meta::model::*;
use kunlun_meta::store::repo::{clusters, comps, machines};
use kunlun_meta::store::{BackendKind, Store};
use kunlun_meta::Error;
use tokio::task::JoinSet;

/// Transactions run at once; more than the MySQL test pool (8), so some also wait for a
/// connection.
const WORKERS: u16 = 12;

/// Time between a transaction's read and its write, wide enough for the others to interleave.
const RACE_WINDOW: Duration = Duration::from_millis(5);

fn new_machine(host: &str) -> NewMachine {
    NewMachine {
        hostaddr: host.to_string(),
        machine_type: MachineType::Storage,
        rack_id: None,
        data_dirs: vec!["/data/kl".into()],
        port_range: "40000-60000".into(),
        total_mem_mb: Some(8192),
        total_cpu_cores: Some(4),
        ssh: SshAccess {
            port: 22,
            user: "kunlun".into(),
            key_path: "/root/.ssh/id_ed25519".into(),
        },
    }
}

/// What a job step does to a machine's port sets (as `PortSets` in kunlun-core).
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Installing += ports; a port already used or installing is refused.
    Reserve,
    /// Installing -= ports, used += ports.
    Commit,
    /// Used -= ports, installing -= ports.
    Release,
}

/// The new (used, installing) lists of `m` after `op` on `ports`.
fn apply(m: &Machine, op: Op, ports: &[u16]) -> kunlun_meta::Result<(Vec<u16>, Vec<u16>)> {
    let (mut used, mut inst) = (m.used_ports.clone(), m.installing_ports.clone());
    match op {
        Op::Reserve => {
            if let Some(p) = ports.iter().find(|p| used.contains(p) || inst.contains(p)) {
                return Err(Error::Conflict(format!("port {p} is taken")));
            }
            inst.extend_from_slice(ports);
        }
        Op::Commit => {
            inst.retain(|p| !ports.contains(p));
            used.extend_from_slice(ports);
        }
        Op::Release => {
            used.retain(|p| !ports.contains(p));
            inst.retain(|p| !ports.contains(p));
        }
    }
    Ok((used, inst))
}

/// Read the machine, wait, write the changed port sets: the jobs' `update_ports` step.
async fn step(
    tx: &mut kunlun_meta::store::Tx,
    id: i64,
    op: Op,
    ports: &[u16],
) -> kunlun_meta::Result<()> {
    let m = machines::get(tx, id).await?;
    tokio::time::sleep(RACE_WINDOW).await;
    let (used, inst) = apply(&m, op, ports)?;
    machines::set_ports(tx, &m, &used, &inst).await?;
    Ok(())
}

/// The ports worker `i` works on.
fn ports_of(i: u16) -> Vec<u16> {
    vec![41000 + 2 * i, 41001 + 2 * i]
}

/// Runs `op` for every worker at once, each in its own transaction; panics listing failures.
async fn all_at_once(s: &Store, id: i64, op: Op) {
    let mut set = JoinSet::new();
    for i in 0..WORKERS {
        let s = s.clone();
        set.spawn(async move {
            let ports = ports_of(i);
            let r = s.tx(async |tx| step(tx, id, op, &ports).await).await;
            (i, r)
        });
    }
    let mut failed = Vec::new();
    while let Some(j) = set.join_next().await {
        let (i, r) = j.expect("worker task");
        if let Err(e) = r {
            failed.push(format!("worker {i}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{op:?} failed: {failed:#?}");
}

/// Asserts the machine's used and installing ports, each without duplicates.
async fn assert_ports(s: &Store, id: i64, used: &BTreeSet<u16>, inst: &BTreeSet<u16>) {
    let m = s.get_machine(id).await.unwrap();
    let (u, i): (BTreeSet<u16>, BTreeSet<u16>) = (
        m.used_ports.iter().copied().collect(),
        m.installing_ports.iter().copied().collect(),
    );
    assert_eq!(
        u.len(),
        m.used_ports.len(),
        "duplicate used port: {:?}",
        m.used_ports
    );
    assert_eq!(
        i.len(),
        m.installing_ports.len(),
        "duplicate installing port: {:?}",
        m.installing_ports
    );
    assert_eq!((&u, &i), (used, inst));
}

async fn ports_reserved_committed_released_at_once(t: &TestStore) {
    let s = &t.store;
    let m = s.insert_machine(&new_machine("127.0.0.20")).await.unwrap();
    let all: BTreeSet<u16> = (0..WORKERS).flat_map(ports_of).collect();
    let none = BTreeSet::new();

    all_at_once(s, m.id, Op::Reserve).await;
    assert_ports(s, m.id, &none, &all).await;

    all_at_once(s, m.id, Op::Commit).await;
    assert_ports(s, m.id, &all, &none).await;

    all_at_once(s, m.id, Op::Release).await;
    assert_ports(s, m.id, &none, &none).await;

    // The compare-and-swap still guards a writer working from a copy read elsewhere: `m` (no
    // ports) matches what is stored once, then is stale.
    s.tx(async |tx| machines::set_ports(tx, &m, &[42000], &[]).await)
        .await
        .unwrap();
    let stale = s
        .tx(async |tx| machines::set_ports(tx, &m, &[42001], &[]).await)
        .await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    assert_ports(s, m.id, &BTreeSet::from([42000]), &none).await;
}

async fn compute_ids_reserved_at_once(t: &TestStore) {
    let s = &t.store;
    let m = s.insert_machine(&new_machine("127.0.0.21")).await.unwrap();
    let c = s
        .tx(async |tx| {
            clusters::insert(
                tx,
                &NewCluster {
                    name: "conc1".into(),
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
        .unwrap();

    // Each worker records 1..=3 compute nodes with fresh ids and takes their ports, in one
    // transaction, as a job's record-topology step.
    let mut set = JoinSet::new();
    for i in 0..WORKERS {
        let (s, cid, mid) = (s.clone(), c.id, m.id);
        let n = i64::from(i % 3 + 1);
        set.spawn(async move {
            let r = s
                .tx(async |tx| {
                    let ids: Vec<i64> = comps::reserve_ids(tx, n).await?.collect();
                    tokio::time::sleep(RACE_WINDOW).await;
                    let ports: Vec<u16> = ids.iter().map(|id| 50000 + *id as u16).collect();
                    for (id, port) in ids.iter().zip(&ports) {
                        comps::insert(
                            tx,
                            &NewCompNode {
                                id: *id,
                                db_cluster_id: cid,
                                name: format!("comp{id}"),
                                hostaddr: "127.0.0.21".into(),
                                port: *port,
                                user_name: "abc".into(),
                                passwd: "abc".into(),
                                status: NodeStatus::Active,
                                max_conns: 100,
                            },
                        )
                        .await?;
                    }
                    step(tx, mid, Op::Reserve, &ports).await?;
                    step(tx, mid, Op::Commit, &ports).await?;
                    Ok(ids)
                })
                .await;
            (i, n, r)
        });
    }
    let (mut ids, mut failed) = (Vec::new(), Vec::new());
    while let Some(j) = set.join_next().await {
        match j.expect("worker task") {
            (_, n, Ok(got)) => {
                assert_eq!(got.len() as i64, n, "{got:?}");
                ids.extend(got);
            }
            (i, _, Err(e)) => failed.push(format!("worker {i}: {e}")),
        }
    }
    assert!(failed.is_empty(), "reservations failed: {failed:#?}");
    let expected: usize = (0..WORKERS).map(|i| usize::from(i % 3 + 1)).sum();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        (ids.len(), unique.len()),
        (expected, expected),
        "an id was handed out twice: {ids:?}"
    );

    let stored: BTreeSet<i64> = s
        .list_comp_nodes(Some(c.id))
        .await
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(stored, unique);
    let ports: BTreeSet<u16> = unique.iter().map(|id| 50000 + *id as u16).collect();
    assert_ports(s, m.id, &ports, &BTreeSet::new()).await;

    // A later block lies above every id handed out.
    let next = s
        .tx(async |tx| comps::reserve_ids(tx, 2).await)
        .await
        .unwrap();
    assert!(
        *next.start() > *unique.last().unwrap(),
        "{next:?} after {unique:?}"
    );
    assert_eq!(next.count(), 2);
}

async fn bad_reservation_sizes_are_refused(t: &TestStore) {
    let s = &t.store;
    for n in [0, -1, comps::MAX_RESERVE + 1, i64::MAX] {
        let e = s
            .tx(async |tx| comps::reserve_ids(tx, n).await)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref msg) if msg.contains("compute node ids")),
            "{n}: {e:?}"
        );
    }
    // Nothing was reserved by the refused calls.
    let first = s
        .tx(async |tx| comps::reserve_ids(tx, 1).await)
        .await
        .unwrap();
    assert_eq!(first, 1..=1);
}

async fn deadlocked_transaction_runs_again(t: &TestStore) {
    let s = &t.store;
    let a = s
        .insert_machine(&new_machine("127.0.0.22"))
        .await
        .unwrap()
        .id;
    let b = s
        .insert_machine(&new_machine("127.0.0.23"))
        .await
        .unwrap()
        .id;
    let runs = Arc::new(AtomicU32::new(0));
    let mut set = JoinSet::new();
    // One transaction reads (and on MySQL locks) a then b, the other b then a.
    for (first, second, port) in [(a, b, 43000u16), (b, a, 43001)] {
        let (s, runs) = (s.clone(), runs.clone());
        set.spawn(async move {
            s.tx(async |tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let m1 = machines::get(tx, first).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let m2 = machines::get(tx, second).await?;
                for m in [m1, m2] {
                    let (used, inst) = apply(&m, Op::Reserve, &[port])?;
                    machines::set_ports(tx, &m, &used, &inst).await?;
                }
                Ok(())
            })
            .await
        });
    }
    while let Some(j) = set.join_next().await {
        j.expect("worker task").expect("both transactions commit");
    }
    let runs = runs.load(Ordering::SeqCst);
    match s.kind() {
        // The deadlock victim ran again.
        BackendKind::Mysql => assert!(runs >= 3, "ran {runs} times"),
        // Serial write transactions: no deadlock.
        BackendKind::Sqlite => assert_eq!(runs, 2),
    }
    let both = BTreeSet::from([43000, 43001]);
    assert_ports(s, a, &BTreeSet::new(), &both).await;
    assert_ports(s, b, &BTreeSet::new(), &both).await;
}

both_backends! {
    ports_at_once => ports_reserved_committed_released_at_once;
    comp_ids_at_once => compute_ids_reserved_at_once;
    bad_reservation_sizes => bad_reservation_sizes_are_refused;
    deadlock_retried => deadlocked_transaction_runs_again;
}
