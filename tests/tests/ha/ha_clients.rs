//! HA chaos under the clients a real cluster has: while a shard's primary is killed (-9),
//! hung (SIGSTOP, fenced over SSH), cut off (network namespace) or switched over, three
//! writers run: the compute nodes' `pgx` login (least privilege, autocommit and XA) on the
//! primary metadata names, an application user, and a stale-route `pgx` writer on every
//! other node. After every step the invariant of `kunlun_tests::ha::invariant` must hold: one
//! writable node and it is metadata's primary, no errant GTID on a node in service, every
//! acknowledged write everywhere, replication running. A last scenario does the same on a
//! cluster made by the real install path, with the cluster's own `pgx` password.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kunlun_core::fleet::Provisioner;
use kunlun_core::ha::{FailoverRecord, HaConfig, HaShared, Outcome};
use kunlun_meta::model::NodeStatus;
use kunlun_meta::Store;
use kunlun_tests::ha::clients::{pgx_user_sql, tables_sql, PgxWriter, StaleWriter};
use kunlun_tests::ha::clients::{PGX_TABLE, STALE_TABLE};
use kunlun_tests::ha::invariant::{self, errant_gtids, Acked, Login, Report};
use kunlun_tests::ha::netns::Netns;
use kunlun_tests::ha::{test_ha_config, EnvOptions, HaEnv, Writer, LIMIT};
use kunlun_tests::world::ProvisionWorld;
use kunlun_tests::Sshd;

const PGX_PASSWORD: &str = "pgx-chaos";

fn pgx_login(password: &str) -> Login {
    Login {
        user: "pgx".into(),
        password: password.into(),
    }
}

/// The three writers of a scenario.
pub struct Clients {
    app: Writer,
    pgx: PgxWriter,
    stale: StaleWriter,
    store: Store,
    shard_id: i64,
    admin: Login,
}

impl Clients {
    /// Starts the writers and waits until the two routed ones have reached the primary.
    pub async fn start(store: &Store, shard_id: i64, pgx: Login, admin: Login) -> Clients {
        let c = Clients {
            app: Writer::start(store.clone(), shard_id),
            pgx: PgxWriter::start(store.clone(), shard_id, pgx.clone()),
            stale: StaleWriter::start(store.clone(), shard_id, pgx),
            store: store.clone(),
            shard_id,
            admin,
        };
        c.more(30).await;
        c
    }

    /// Waits for `n` more acknowledged writes of each routed writer.
    pub async fn more(&self, n: usize) {
        self.app.wait_more(n).await.expect("app writes go on");
        self.pgx.wait_more(n).await.expect("pgx writes go on");
    }

    fn acked(&self, app: Vec<i64>, pgx: Vec<i64>) -> Vec<Acked> {
        vec![
            Acked {
                writer: "app writer".into(),
                table: "ha.w".into(),
                ids: app,
            },
            Acked {
                writer: "pgx writer".into(),
                table: PGX_TABLE.into(),
                ids: pgx,
            },
            Acked {
                writer: "stale-route pgx writes a node accepted".into(),
                table: STALE_TABLE.into(),
                ids: self.stale.tally().accepted_ids(),
            },
        ]
    }

    /// The invariant after chaos step `step`; prints the report; panics naming what broke.
    pub async fn check(&self, step: &str, cannot_follow: &[i64]) -> Report {
        let acked = self.acked(self.app.acked(), self.pgx.acked());
        let t = Instant::now();
        let r = invariant::check_with(
            &self.store,
            self.shard_id,
            &self.admin,
            &acked,
            cannot_follow,
        )
        .await;
        let (n, xa, errs) = self.pgx.counts();
        eprintln!(
            "[{step}] pgx writer: {n} acknowledged ({xa} by XA), {errs} failed attempts; \
             stale-route writer: {:?}",
            self.stale.tally()
        );
        match r {
            Ok(r) => {
                eprintln!("[{step}] checked in {:?}: {r}", t.elapsed());
                r
            }
            Err(e) => panic!("[{step}] invariant broken: {e:#}"),
        }
    }

    /// Stops the writers, then checks with everything they had acknowledged.
    pub async fn finish(self, step: &str, cannot_follow: &[i64]) -> Report {
        let Clients {
            app,
            pgx,
            stale,
            store,
            shard_id,
            admin,
        } = self;
        let (app, pgx) = (app.finish().await, pgx.finish().await);
        let tally = stale.finish().await;
        eprintln!("[{step}] stale-route writer, final: {tally:?}");
        assert!(
            tally.refused_read_only > 0,
            "the stale-route writer never met a read-only node: {tally:?}"
        );
        // A deposed primary that could not be fenced (cut off, no SSH) takes writes again
        // when it comes back, until the next round fences it; past the semi-sync timeout it
        // acknowledges them alone. Such writes are lost with it: they must be on a node kept
        // out of service (read-only, errant, named in the failover's fate), never on a node
        // in service. Every other write a node accepted must be on the primary.
        let status: std::collections::HashMap<i64, NodeStatus> = store
            .list_shard_nodes(Some(shard_id))
            .await
            .expect("nodes")
            .into_iter()
            .map(|n| (n.id, n.status))
            .collect();
        let (in_service, kept_out): (Vec<NodeWrite>, Vec<NodeWrite>) = tally
            .accepted
            .iter()
            .copied()
            .partition(|(node, _)| status.get(node) == Some(&NodeStatus::Active));
        let in_service: Vec<i64> = in_service.into_iter().map(|(_, id)| id).collect();
        if !kept_out.is_empty() {
            eprintln!(
                "[{step}] {} stale-route writes were taken by a deposed, unfenced primary now \
                 kept out of service (lost with it, reported as its errant transactions): {:?}",
                kept_out.len(),
                kept_out
            );
        }
        let acked = vec![
            Acked {
                writer: "app writer".into(),
                table: "ha.w".into(),
                ids: app,
            },
            Acked {
                writer: "pgx writer".into(),
                table: PGX_TABLE.into(),
                ids: pgx,
            },
            Acked {
                writer: "stale-route pgx writes a node accepted".into(),
                table: STALE_TABLE.into(),
                ids: in_service,
            },
        ];
        match invariant::check_with(&store, shard_id, &admin, &acked, cannot_follow).await {
            Ok(r) => {
                eprintln!("[{step}] final: {r}");
                r
            }
            Err(e) => panic!("[{step}] invariant broken: {e:#}"),
        }
    }
}

/// A write a node accepted: `(node id, row id)`.
type NodeWrite = (i64, i64);

/// Creates `pgx` (least privilege) and the writers' tables on the harness primary.
async fn setup_clients(env: &Arc<HaEnv>) {
    let e = env.clone();
    tokio::task::spawn_blocking(move || {
        e.set.primary().sql(&format!(
            "{}{}",
            pgx_user_sql("pgx", PGX_PASSWORD),
            tables_sql()
        ))?;
        e.set.wait_replicated(LIMIT)
    })
    .await
    .expect("join")
    .expect("pgx user and tables");
}

/// Waits until the failover record `id` names the old primary's fate after its return.
async fn wait_fate(shared: &HaShared, id: u64) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let fate = shared
            .failover(id)
            .and_then(|r| r.old_primary_fate)
            .unwrap_or_default();
        if fate.starts_with("rejoined") || fate.starts_with("kept out") {
            return fate;
        }
        assert!(
            Instant::now() < deadline,
            "old primary's fate not decided: {fate:?}; events {:?}",
            shared.events()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_record(step: &str, rec: &FailoverRecord, since: Instant) {
    eprintln!(
        "[{step}] {:?} {:?} -> {:?} after {:?}: {:?}, reason {:?}, fence {:?}, phases {:?}",
        rec.kind,
        rec.old_primary,
        rec.new_primary,
        since.elapsed(),
        rec.outcome,
        rec.reason,
        rec.fence,
        rec.phases
            .iter()
            .map(|p| (p.name.as_str(), p.ms))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_checker_finds_an_errant_gtid_below_the_primary_sequence() {
    // A replica (server 3) committed 0-3-11 alone; the primary moved on to 0-2-40.
    let e = errant_gtids("0-1-10,0-3-11", "0-3-11", "0-1-10,0-2-40", "0-2-40").unwrap();
    assert_eq!(e, vec!["0-3-11".to_string()]);
    // A lagging replica holds nothing errant.
    let e = errant_gtids("0-1-10", "0-1-10", "0-1-10,0-2-40", "0-2-40").unwrap();
    assert!(e.is_empty(), "{e:?}");
    // A domain the primary never had.
    let e = errant_gtids("0-1-10,5-3-1", "0-1-10,5-3-1", "0-1-10", "0-1-10").unwrap();
    assert_eq!(e, vec!["5-3-1".to_string()]);
}

/// kill -9 of the primary, its return, then a planned switchover, on one replica set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_switchover_with_pgx_app_and_stale_writers() {
    let t0 = Instant::now();
    let env = Arc::new(HaEnv::start(EnvOptions::default()).await.expect("env"));
    setup_clients(&env).await;
    let shard = env.shard_id;
    let c = Clients::start(&env.store, shard, pgx_login(PGX_PASSWORD), Login::root()).await;
    c.check("before", &[]).await;

    let old = env.node_ids[0];
    env.set.primary().kill9().expect("kill -9");
    let killed = Instant::now();
    let rec = env.wait_promoted(0).await.expect("failover");
    print_record("kill -9", &rec, killed);
    c.more(20).await;
    c.check("kill -9, old primary down", &[]).await;

    let e2 = env.clone();
    tokio::task::spawn_blocking(move || e2.server(old).restart())
        .await
        .expect("join")
        .expect("restart the old primary");
    let fate = wait_fate(env.ha.shared(), rec.id).await;
    eprintln!("[kill -9] old primary: {fate}");
    c.more(20).await;
    c.check("kill -9, old primary back", &[]).await;

    let s0 = Instant::now();
    let sw = env
        .ha
        .switchover(shard, None)
        .await
        .expect("planned switchover");
    print_record("switchover", &sw, s0);
    assert_eq!(sw.outcome, Outcome::Promoted, "switchover: {sw:?}");
    c.more(20).await;
    c.finish("switchover", &[]).await;
    env.stop().await;
    eprintln!("kill -9 then switchover: {:?}", t0.elapsed());
}

/// A hung primary (SIGSTOP): the fence kills it over SSH; it comes back and is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_the_primary_with_pgx_app_and_stale_writers() {
    let t0 = Instant::now();
    let ip = Ipv4Addr::new(127, 0, 0, 14);
    let sshd = tokio::task::spawn_blocking(move || Sshd::start_on(ip))
        .await
        .expect("join")
        .expect("sshd");
    let prov = Arc::new(Provisioner::with_system_servers(sshd.known_hosts()));
    let env = Arc::new(
        HaEnv::start(EnvOptions {
            ha: HaConfig {
                ssh: Some(prov),
                ..test_ha_config()
            },
            primary_bind: Some(ip.to_string()),
            ..EnvOptions::default()
        })
        .await
        .expect("env"),
    );
    let old = env.node_ids[0];
    let srv = env.server(old);
    // The instance directory the fence looks in: <data_dir>/kunlun/storage_<port>/run/mysqld.pid.
    let data_dir = sshd.dir().join("data");
    let run = data_dir.join(format!("kunlun/storage_{}/run", srv.port()));
    std::fs::create_dir_all(&run).expect("run dir");
    let pid_file = srv.datadir().parent().expect("parent").join("mysqld.pid");
    std::os::unix::fs::symlink(&pid_file, run.join("mysqld.pid")).expect("pid link");
    env.store
        .insert_machine(&sshd.storage_machine(ip, &data_dir))
        .await
        .expect("machine registered");
    setup_clients(&env).await;
    let c = Clients::start(
        &env.store,
        env.shard_id,
        pgx_login(PGX_PASSWORD),
        Login::root(),
    )
    .await;

    srv.pause().expect("SIGSTOP");
    let stopped = Instant::now();
    let rec = env.wait_promoted(0).await.expect("failover");
    print_record("SIGSTOP", &rec, stopped);
    let fence = rec.fence.clone().unwrap_or_default();
    assert!(fence.contains("over ssh"), "fenced over SSH: {rec:?}");
    c.more(20).await;
    c.check("SIGSTOP, old primary fenced", &[]).await;

    let e2 = env.clone();
    tokio::task::spawn_blocking(move || {
        // SIGCONT in case the fence did not kill it, then a fresh start.
        let _ = e2.server(old).resume();
        e2.server(old).restart()
    })
    .await
    .expect("join")
    .expect("old primary restarted");
    let fate = wait_fate(env.ha.shared(), rec.id).await;
    eprintln!("[SIGSTOP] old primary: {fate}");
    c.more(20).await;
    c.finish("SIGSTOP, old primary back", &[]).await;
    env.stop().await;
    drop(sshd);
    eprintln!("SIGSTOP scenario: {:?}", t0.elapsed());
}

/// The primary cut off by a network namespace, then the link restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_cut_of_the_primary_with_pgx_app_and_stale_writers() {
    let t0 = Instant::now();
    let ns = Netns::create().expect("network namespace (needs root and iproute2)");
    let env = Arc::new(
        HaEnv::start(EnvOptions {
            primary_netns: Some((ns.name.clone(), ns.ns_ip.clone())),
            ..EnvOptions::default()
        })
        .await
        .expect("env"),
    );
    setup_clients(&env).await;
    let old = env.node_ids[0];
    let c = Clients::start(
        &env.store,
        env.shard_id,
        pgx_login(PGX_PASSWORD),
        Login::root(),
    )
    .await;

    ns.cut().expect("cut the link");
    let cut = Instant::now();
    let rec = env.wait_promoted(0).await.expect("failover");
    print_record("netns cut", &rec, cut);
    c.more(20).await;
    c.check("netns cut, old primary unreachable", &[]).await;

    ns.restore().expect("restore the link");
    let fate = wait_fate(env.ha.shared(), rec.id).await;
    eprintln!("[netns] old primary: {fate}");
    c.more(20).await;
    // Inside its namespace the old primary cannot reach the replicas' 127.0.0.1: it is
    // checked for read-only and errant GTIDs, not for replication.
    c.finish("netns, link back", &[old]).await;
    env.stop().await;
    drop(env);
    drop(ns);
    eprintln!("netns scenario: {:?}", t0.elapsed());
}

/// A cluster made by the real install path (`create_cluster` over a private sshd), the pgx
/// writers using the cluster's own `pgx` password: the writers as a compute node writes.
/// Until `pgx` loses `READ_ONLY ADMIN` (grants fix), the stale-route writer's inserts land on
/// the read-only replicas and the invariant check names those errant GTIDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_cluster_kill9_with_the_clusters_own_pgx_login() {
    let t0 = Instant::now();
    let w = ProvisionWorld::builder(Ipv4Addr::new(127, 0, 0, 19))
        .build()
        .await;
    provisioned::scenario(&w).await;
    w.term.shutdown(Duration::from_secs(5)).await;
    eprintln!("provisioned scenario: {:?}", t0.elapsed());
}

mod provisioned {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use kunlun_core::accounts::MANAGER_USER;
    use kunlun_core::ha::{FailoverRecord, Outcome};
    use kunlun_core::jobs::accept_create_cluster;
    use kunlun_core::jobs::accept_delete_cluster;
    use kunlun_core::Term;
    use kunlun_meta::api::CreateCluster;
    use kunlun_meta::model::{HaMode, JobStatus, MemberState};
    use kunlun_meta::store::repo::secrets;
    use kunlun_tests::world::{kill9, pid_in, ProvisionWorld};

    use super::{pgx_login, print_record, Clients};
    use kunlun_tests::ha::clients::tables_sql;
    use kunlun_tests::ha::invariant::Login;
    use kunlun_tests::ha::{test_ha_config, LIMIT};

    async fn wait_promoted(mgr: &Term, shard_id: i64) -> FailoverRecord {
        let deadline = Instant::now() + LIMIT;
        loop {
            let recs = mgr
                .failovers_page(Some(shard_id), None, 1000)
                .await
                .expect("failovers");
            if let Some(r) = recs.iter().find(|r| r.outcome == Outcome::Promoted) {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "no promotion: {recs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn scenario(w: &ProvisionWorld) {
        let (store, runner, mgr) = (&w.store, &w.runner, &w.term);
        let req = CreateCluster {
            name: "hachaos".into(),
            nick_name: None,
            ha_mode: HaMode::Rbr,
            shards: 1,
            nodes: 3,
            comps: 1,
            innodb_size_mb: Some(32),
            max_connections: Some(100),
            storage_hosts: vec![],
            computer_hosts: vec![],
        };
        let t0 = Instant::now();
        let job = accept_create_cluster(store, &req).await.expect("accepted");
        let job = w.run_job(job.id).await;
        assert_eq!(job.status, JobStatus::Done, "{:?}", job.memo);
        eprintln!("create_cluster took {:?}", t0.elapsed());
        let cid = store
            .get_cluster_by_name("hachaos")
            .await
            .expect("cluster")
            .id;
        let secret = store
            .read(async |tx| secrets::get(tx, cid).await)
            .await
            .expect("the cluster's system passwords");
        let admin = Login {
            user: MANAGER_USER.into(),
            password: secret.manager_pwd.clone(),
        };
        let shard = store.list_shards(Some(cid)).await.expect("shards")[0].clone();
        let nodes = store.list_shard_nodes(Some(shard.id)).await.expect("nodes");
        let old = nodes
            .iter()
            .find(|n| n.member_state == MemberState::Source)
            .expect("a primary")
            .clone();
        // As root over the instance's socket, as the recipe does grants (the manager's login
        // has no GRANT OPTION once the grants fix lands).
        let sock = w
            .data
            .join(format!("kunlun/storage_{}/run/mysqld.sock", old.port));
        let sql = format!(
            "CREATE DATABASE ha; CREATE TABLE ha.w (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
             CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT SELECT, INSERT ON ha.* TO app@'%'; \
             {}",
            tables_sql()
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("mariadb")
                .arg("-S")
                .arg(&sock)
                .args(["-uroot", "--connect-timeout=10", "-e", &sql])
                .output()
        })
        .await
        .expect("join")
        .expect("mariadb client");
        assert!(
            out.status.success(),
            "tables and app user: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let mut cfg = test_ha_config();
        cfg.ssh = Some(Arc::new(runner.provisioner.clone()));
        mgr.start_ha(cfg);
        let deadline = Instant::now() + LIMIT;
        while mgr.ha_status().map(|s| s.stats.rounds).unwrap_or(0) < 4 {
            assert!(Instant::now() < deadline, "the HA monitor never ran");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = Clients::start(store, shard.id, pgx_login(&secret.pgx_pwd), admin).await;
        c.check("provisioned, before the kill", &[]).await;

        let pid_file = w
            .data
            .join(format!("kunlun/storage_{}/run/mysqld.pid", old.port));
        kill9(pid_in(&pid_file).expect("the primary's pid"));
        let killed = Instant::now();
        let rec = wait_promoted(mgr, shard.id).await;
        print_record("provisioned kill -9", &rec, killed);
        c.more(20).await;
        c.check("provisioned, after kill -9", &[]).await;
        c.finish("provisioned", &[]).await;

        mgr.shutdown(Duration::from_secs(5)).await;
        let del = accept_delete_cluster(store, cid).await.expect("accepted");
        let j = w.run_job(del.id).await;
        assert_eq!(j.status, JobStatus::Done, "{:?}", j.memo);
    }
}
