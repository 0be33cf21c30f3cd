//! A cluster created by the real daemon: an sshd on a loopback address, a `cluster-mgr` with
//! its metadata in SQLite, that address registered as a storage and a computer machine, and a
//! cluster made by `kunlunctl cluster create --wait`. Servers it installed are stopped (by
//! their pid files) when it is dropped, before its work dir goes.
//!
//! The set-up `provision_rebuild`'s daemon scenario does inline, for the scenarios that start
//! from "a cluster the daemon created".

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use kunlun_core::accounts::MANAGER_USER;
use kunlun_meta::store::repo::secrets;
use kunlun_meta::{Store, StoreConfig};
use serde_json::{json, Value};

use crate::cli::{ctl, workdir};
use crate::daemon::{http, Daemon};
use crate::world::{chmod_755, kill_leftovers};
use crate::{free_port_block, Sshd};

/// Kills the servers under its dir when dropped (see [`kill_leftovers`]): a test that makes
/// clusters holds one for their data dir, declared after the dir and before the daemon, so a
/// failed test leaves no server behind.
pub struct Leftovers(pub PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        kill_leftovers(&self.0);
    }
}

/// A shard's id and its nodes as `(id, port, member_state)`.
pub type ShardNodes = (i64, Vec<(i64, u16, String)>);

/// The shape of the cluster to create.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub shards: u32,
    pub nodes: u32,
    pub comps: u32,
}

/// See the module doc. Fields drop in order: the daemon, the servers, the sshd, the dir.
pub struct DaemonCluster {
    pub daemon: Daemon,
    servers: Leftovers,
    pub sshd: Sshd,
    /// `http://127.0.0.1:PORT` of the daemon.
    pub base: String,
    pub ip: Ipv4Addr,
    /// Where the instances live (the machines' data dir).
    pub data: PathBuf,
    pub sqlite: PathBuf,
    pub cluster_id: i64,
    /// `kunlunctl --json cluster show` of the new cluster.
    pub detail: Value,
    pub wd: tempfile::TempDir,
}

impl DaemonCluster {
    /// Starts everything and creates cluster `name` of `shape` (panics on any failure, with
    /// the daemon's log).
    pub fn start(ip: Ipv4Addr, name: &str, shape: Shape) -> DaemonCluster {
        Self::start_with(ip, name, shape, &[])
    }

    /// The sshd and the daemon, with `ip` registered as a storage and a computer machine with
    /// ports for a cluster of `shape`, but no cluster yet (`cluster_id` 0, `detail` null).
    pub fn fleet(ip: Ipv4Addr, shape: Shape, extra_cnf: &[&str]) -> DaemonCluster {
        let sshd = Sshd::start_on(ip).expect("sshd");
        let wd = workdir();
        chmod_755(wd.path());
        let data = wd.path().join("instances");
        std::fs::create_dir(&data).expect("data dir");
        chmod_755(&data);
        let servers = Leftovers(data.clone());
        let sqlite = wd.path().join("meta.db");
        let daemon = Daemon::start_with(wd.path(), &sqlite, extra_cnf).expect("daemon");
        let base = daemon.url();
        let ports = 20 * (shape.shards * shape.nodes + shape.comps) as u16 + 1;
        for ty in ["storage", "computer"] {
            let port = free_port_block(IpAddr::V4(ip), ports);
            let (st, v) = daemon.post(
                &http(Duration::from_secs(30)),
                "/v1/machines",
                &json!({
                    "hostaddr": ip.to_string(), "machine_type": ty,
                    "ssh_port": sshd.port(), "ssh_user": sshd.user(),
                    "ssh_key_path": sshd.user_key().private.display().to_string(),
                    "data_dirs": [data.display().to_string()],
                    "port_range": format!("{}-{}", port, port + ports - 1),
                }),
            );
            assert_eq!(st, 201, "{v}");
        }
        DaemonCluster {
            daemon,
            servers,
            sshd,
            base,
            ip,
            data,
            sqlite,
            cluster_id: 0,
            detail: Value::Null,
            wd,
        }
    }

    /// [`DaemonCluster::start`] with extra `cluster_mgr.cnf` lines (`key = value`) for the
    /// daemon, e.g. a short `binlog_archive_interval`.
    pub fn start_with(ip: Ipv4Addr, name: &str, shape: Shape, extra_cnf: &[&str]) -> DaemonCluster {
        let mut dc = Self::fleet(ip, shape, extra_cnf);
        let (base, daemon) = (dc.base.clone(), &dc.daemon);
        let (s, n, c) = (
            shape.shards.to_string(),
            shape.nodes.to_string(),
            shape.comps.to_string(),
        );
        let out = ctl(
            &base,
            &[
                "cluster",
                "create",
                name,
                "--shards",
                &s,
                "--nodes",
                &n,
                "--comps",
                &c,
                "--innodb-size-mb",
                "32",
                "--max-connections",
                "100",
                "--wait",
                "--wait-timeout",
                "600",
            ],
        );
        assert_eq!(out.code, 0, "{out:#?}\ndaemon log:\n{}", daemon.log_tail());
        let list = ctl(&base, &["--json", "cluster", "list"]).ok().json();
        let cluster_id = list
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name))
            .and_then(|c| c["id"].as_i64())
            .expect("the cluster's id");
        let detail = ctl(
            &base,
            &["--json", "cluster", "show", &cluster_id.to_string()],
        )
        .ok()
        .json();
        dc.cluster_id = cluster_id;
        dc.detail = detail;
        dc
    }

    /// The cluster's manager password (from the daemon's store).
    pub async fn manager_pwd(&self) -> String {
        self.manager_pwd_of(self.cluster_id).await
    }

    /// The manager password of cluster `cid` of this daemon.
    pub async fn manager_pwd_of(&self, cid: i64) -> String {
        let store = Store::open(&StoreConfig::sqlite(&self.sqlite))
            .await
            .expect("the daemon's store");
        store
            .read(async |tx| secrets::get(tx, cid).await)
            .await
            .expect("secrets")
            .manager_pwd
    }

    /// A connection as the manager user to the storage node on `port` (bounded).
    pub async fn conn(&self, pwd: &str, port: u16) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.ip.to_string())
            .tcp_port(port)
            .user(Some(MANAGER_USER))
            .pass(Some(pwd.to_string()))
            .prefer_socket(false);
        tokio::time::timeout(Duration::from_secs(10), mysql_async::Conn::new(opts))
            .await
            .expect("connect within 10 s")
            .expect("connect")
    }

    /// Each shard's id and its nodes (`id`, `port`, `member_state`) from [`Self::detail`].
    pub fn shards(&self) -> Vec<ShardNodes> {
        self.detail["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|s| {
                let nodes = s["nodes"]
                    .as_array()
                    .expect("nodes")
                    .iter()
                    .map(|n| {
                        (
                            n["id"].as_i64().expect("node id"),
                            n["port"].as_u64().expect("port") as u16,
                            n["member_state"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                (s["shard"]["id"].as_i64().expect("shard id"), nodes)
            })
            .collect()
    }

    /// Kills the daemon (SIGKILL: a crash, as far as it can tell) and starts a new one on the
    /// same store and work dir with `extra_cnf`; `base` follows it (a new port).
    pub fn restart_daemon(&mut self, extra_cnf: &[&str]) {
        self.daemon.kill9();
        self.daemon = Daemon::start_with(self.wd.path(), &self.sqlite, extra_cnf).expect("daemon");
        self.base = self.daemon.url();
    }

    /// The daemon's log tail, for failure messages.
    pub fn log(&self) -> String {
        self.daemon.log_tail()
    }

    /// The dir the servers it installed live under.
    pub fn servers_dir(&self) -> &std::path::Path {
        &self.servers.0
    }
}
