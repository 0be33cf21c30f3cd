//! Machine CRUD on both backends: conflicts, unknown ids, hostile strings stored verbatim,
//! delete refused while ports are in use, data kept across a restart; probe facts stored,
//! replaced, dropped and removed with their machine.

mod common;

use common::TestStore;
use kunlun_meta::model::{
    MachineInfo, MachinePatch, MachineProbe, MachineType, NewMachine, NodeStats, ProbedDir,
    SshAccess,
};
use kunlun_meta::store::repo::machines as repo;
use kunlun_meta::Error;

fn new_machine(host: &str, t: MachineType) -> NewMachine {
    NewMachine {
        hostaddr: host.to_string(),
        machine_type: t,
        rack_id: Some("rack-1".into()),
        data_dirs: vec!["/data/kl1".into(), "/data/kl2".into()],
        port_range: "57000-58000".into(),
        total_mem_mb: Some(8192),
        total_cpu_cores: Some(4),
        ssh: SshAccess {
            port: 2222,
            user: "kunlun".into(),
            key_path: "/root/.ssh/id_ed25519".into(),
        },
    }
}

async fn crud(t: &TestStore) {
    let s = &t.store;
    let a = s
        .insert_machine(&new_machine("127.0.0.2", MachineType::Storage))
        .await
        .unwrap();
    assert_eq!(a.hostaddr, "127.0.0.2");
    assert_eq!(a.data_dirs, vec!["/data/kl1", "/data/kl2"]);
    assert_eq!(a.ssh.port, 2222);
    assert_eq!(a.node_stats, NodeStats::Running);
    assert!(a.used_ports.is_empty());

    // Same host as a computer machine is a different row (one row per (hostaddr, type)).
    let b = s
        .insert_machine(&new_machine("127.0.0.2", MachineType::Computer))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(b.data_dirs, vec!["/data/kl1", "/data/kl2"]);

    let dup = s
        .insert_machine(&new_machine("127.0.0.2", MachineType::Storage))
        .await
        .unwrap_err();
    assert!(
        matches!(dup, Error::Conflict(ref m) if m.contains("127.0.0.2")),
        "{dup:?}"
    );

    let all = s.list_machines().await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![a.id, b.id]
    );
    assert_eq!(s.get_machine(a.id).await.unwrap(), a);

    let p = MachinePatch {
        data_dirs: Some(vec!["/data/new".into()]),
        ssh_port: Some(22),
        node_stats: Some(NodeStats::Dead),
        ..MachinePatch::default()
    };
    let u = s.update_machine(a.id, &p).await.unwrap();
    assert_eq!(u.data_dirs, vec!["/data/new"]);
    assert_eq!(u.ssh.port, 22);
    assert_eq!(u.ssh.user, "kunlun");
    assert_eq!(u.node_stats, NodeStats::Dead);
    assert_eq!(u.rack_id.as_deref(), Some("rack-1"));

    s.delete_machine(b.id).await.unwrap();
    assert!(matches!(
        s.get_machine(b.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(s.list_machines().await.unwrap().len(), 1);
}

async fn unknown_ids(t: &TestStore) {
    let s = &t.store;
    for r in [
        s.get_machine(424242).await.map(|_| ()),
        s.update_machine(
            424242,
            &MachinePatch {
                rack_id: Some("x".into()),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
        s.delete_machine(424242).await,
    ] {
        match r {
            Err(Error::NotFound { what, id }) => {
                assert_eq!(what, "machine");
                assert_eq!(id, "424242");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

async fn hostile_strings_are_stored_verbatim(t: &TestStore) {
    let s = &t.store;
    let mut m = new_machine("127.0.0.3", MachineType::Storage);
    m.rack_id = Some("r'1\"; DROP TABLE server_nodes; -- \\ 机架ü".into());
    m.ssh.user = "o'brien; SELECT * FROM kl_machine_ssh; --".into();
    m.ssh.key_path = "/home/ünï/.ssh/k'ey".into();
    let got = s.insert_machine(&m).await.unwrap();
    assert_eq!(got.rack_id, m.rack_id);
    assert_eq!(got.ssh.user, m.ssh.user);
    assert_eq!(got.ssh.key_path, m.ssh.key_path);
    let again = s.get_machine(got.id).await.unwrap();
    assert_eq!(again, got);
    assert_eq!(
        s.list_machines().await.unwrap().len(),
        1,
        "the tables are intact"
    );

    let p = MachinePatch {
        rack_id: Some("'); DELETE FROM server_nodes; --".into()),
        ..Default::default()
    };
    let u = s.update_machine(got.id, &p).await.unwrap();
    assert_eq!(
        u.rack_id.as_deref(),
        Some("'); DELETE FROM server_nodes; --")
    );
    assert_eq!(s.list_machines().await.unwrap().len(), 1);
}

async fn delete_refused_while_ports_are_used(t: &TestStore) {
    let s = &t.store;
    let m = s
        .insert_machine(&new_machine("127.0.0.4", MachineType::Storage))
        .await
        .unwrap();
    let m2 = s
        .tx(async |tx| kunlun_meta::store::repo::machines::set_ports(tx, &m, &[], &[57000]).await)
        .await
        .unwrap();
    assert_eq!(m2.installing_ports, vec![57000]);
    // A writer working from the stale copy loses the compare-and-swap.
    let stale = s
        .tx(async |tx| kunlun_meta::store::repo::machines::set_ports(tx, &m, &[57010], &[]).await)
        .await;
    assert!(matches!(stale, Err(Error::Conflict(_))), "{stale:?}");
    let e = s.delete_machine(m.id).await.unwrap_err();
    assert!(
        matches!(e, Error::Conflict(ref msg) if msg.contains("57000")),
        "{e:?}"
    );
    s.tx(async |tx| kunlun_meta::store::repo::machines::set_ports(tx, &m2, &[], &[]).await)
        .await
        .unwrap();
    s.delete_machine(m.id).await.unwrap();
}

async fn data_survives_a_restart(t: &TestStore) {
    let m = t
        .store
        .insert_machine(&new_machine("127.0.0.5", MachineType::Computer))
        .await
        .unwrap();
    let reopened = t.reopen().await;
    assert_eq!(reopened.get_machine(m.id).await.unwrap(), m);
    assert_eq!(reopened.describe(), t.store.describe());
}

fn probe_facts(os: &str, free: u64) -> MachineProbe {
    MachineProbe {
        os: os.into(),
        kernel: "Linux 6.1.0".into(),
        data_dirs: vec![
            ProbedDir {
                path: "/data/kl1".into(),
                free_mb: Some(free),
                exists: true,
            },
            ProbedDir {
                path: "/data/it's \"new\" 机".into(),
                free_mb: Some(free / 2),
                exists: false,
            },
        ],
        // Nanoseconds: the store keeps microseconds on both backends.
        probed_at: chrono::DateTime::from_timestamp(1_796_000_000, 123_456_789)
            .unwrap()
            .naive_utc(),
    }
}

async fn probe_facts_go_with_the_machine(t: &TestStore) {
    let s = &t.store;
    let a = s
        .insert_machine(&new_machine("127.0.0.6", MachineType::Storage))
        .await
        .unwrap();
    let b = s
        .insert_machine(&new_machine("127.0.0.7", MachineType::Storage))
        .await
        .unwrap();
    let info = |id: i64| s.read(async move |tx| repo::get_info(tx, id).await);
    assert_eq!(info(a.id).await.unwrap().probe, None, "unprobed: no facts");

    let first = probe_facts("debian 12", 4096);
    let (aid, f) = (a.id, &first);
    s.tx(async |tx| repo::set_probe(tx, aid, Some(f)).await)
        .await
        .unwrap();
    let got = info(a.id).await.unwrap();
    assert_eq!(got.machine, a);
    let mut expected = first.clone();
    expected.probed_at = chrono::DateTime::from_timestamp(1_796_000_000, 123_456_000)
        .unwrap()
        .naive_utc();
    assert_eq!(got.probe.as_ref(), Some(&expected));

    // Replaced, not added to; the list pairs each machine with its own facts.
    let second = probe_facts("ubuntu 24.04", 100);
    let f = &second;
    s.tx(async |tx| repo::set_probe(tx, aid, Some(f)).await)
        .await
        .unwrap();
    let all = s.read(async |tx| repo::list_info(tx).await).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0].probe.as_ref().map(|p| p.os.as_str()),
        Some("ubuntu 24.04")
    );
    assert_eq!(
        all[0].probe.as_ref().map(|p| p.data_dirs[1].free_mb),
        Some(Some(50))
    );
    assert_eq!(
        all[1],
        MachineInfo {
            machine: b.clone(),
            probe: None
        }
    );

    // Facts of an unknown machine are refused; `None` drops them.
    let bad = s
        .tx(async |tx| repo::set_probe(tx, 424242, Some(f)).await)
        .await;
    assert!(matches!(bad, Err(Error::NotFound { .. })), "{bad:?}");
    s.tx(async |tx| repo::set_probe(tx, aid, None).await)
        .await
        .unwrap();
    assert_eq!(info(a.id).await.unwrap().probe, None);

    // Deleting the machine deletes its facts.
    s.tx(async |tx| repo::set_probe(tx, aid, Some(f)).await)
        .await
        .unwrap();
    s.delete_machine(a.id).await.unwrap();
    let left = s
        .read(async |tx| repo::get_probe(tx, aid).await)
        .await
        .unwrap();
    assert_eq!(left, None, "probe row outlived its machine");
    assert!(matches!(info(a.id).await, Err(Error::NotFound { .. })));
    let reopened = t.reopen().await;
    let kept = reopened
        .read(async |tx| repo::list_info(tx).await)
        .await
        .unwrap();
    assert_eq!(
        kept,
        vec![MachineInfo {
            machine: b,
            probe: None
        }]
    );
}

both_backends! {
    machine_probe_facts => probe_facts_go_with_the_machine;
    machine_crud => crud;
    machine_unknown_ids => unknown_ids;
    machine_hostile_strings => hostile_strings_are_stored_verbatim;
    machine_delete_with_ports => delete_refused_while_ports_are_used;
    machine_restart => data_survives_a_restart;
}
