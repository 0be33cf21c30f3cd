//! Store futures dropped part-way on a current-thread runtime (what an actix worker is, when a
//! client goes away mid-request): no panic, no connection left half-used in the pool, and the
//! store keeps answering with what committed.
//!
//! diesel-async's default SQLite wrapper waits for an abandoned statement with
//! `block_in_place`, which panics on such a runtime; see `store::conn::Detached`.

mod common;

use std::time::Duration;

use common::TestStore;
use kunlun_meta::model::*;
use kunlun_meta::store::repo::machines;

/// How many futures are dropped; each at a different moment.
const ROUNDS: u32 = 300;

fn new_machine(i: u32) -> NewMachine {
    NewMachine {
        hostaddr: format!("127.0.3.{}", i % 250 + 1),
        machine_type: if i < 250 {
            MachineType::Storage
        } else {
            MachineType::Computer
        },
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

/// Reads and writes cut short after 0..~2 ms: some before a connection is handed out, some with
/// a statement running on the blocking pool, some inside an open transaction.
async fn drop_part_way(ts: &TestStore) {
    let store = &ts.store;
    let mut committed = 0usize;
    for i in 0..ROUNDS {
        let cut = Duration::from_micros(u64::from(i * 37 % 2_000));
        let read = tokio::time::timeout(cut, store.list_machines()).await;
        if let Ok(r) = read {
            r.expect("a read that finished succeeds");
        }
        let m = new_machine(i);
        let write = tokio::time::timeout(
            cut,
            store.tx(async |tx| {
                machines::insert(tx, &m).await?;
                // A second statement, so some drops land between two statements of one
                // transaction.
                machines::list(tx).await
            }),
        )
        .await;
        if let Ok(r) = write {
            r.expect("a write that finished succeeds");
            committed += 1;
        }
    }
    // Every connection the dropped futures held is either back in the pool, clean, or gone;
    // the store answers, and every write that reported a commit is there. (An abandoned write
    // still holding SQLite's write lock delays the next writer at most by busy_timeout.)
    let all = store
        .list_machines()
        .await
        .expect("the store still answers");
    // A write dropped while its COMMIT ran may have committed without saying so: at least
    // the reported ones, at most one per round.
    assert!(
        all.len() >= committed && all.len() <= ROUNDS as usize,
        "{} machines stored, {committed} commits reported",
        all.len()
    );
    // The pool is not exhausted by leaked connections: more reads at once than it holds.
    let reads = (0..16).map(|_| store.list_machines());
    for r in futures::future::join_all(reads).await {
        r.expect("concurrent reads after the drops");
    }
    println!("dropped {ROUNDS} reads/writes part-way; {committed} writes committed");
}

#[test]
fn sqlite_futures_dropped_on_a_current_thread_runtime_do_not_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ts = TestStore::sqlite().await;
        drop_part_way(&ts).await;
    });
}

#[test]
fn mysql_futures_dropped_on_a_current_thread_runtime_do_not_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ts = TestStore::mysql().await;
        drop_part_way(&ts).await;
    });
}
