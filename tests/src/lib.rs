//! End-to-end tests of the Kunlun cluster manager and the harness they share.
//!
//! The harness ([`harness`]) starts real MariaDB, PostgreSQL and sshd servers on loopback,
//! one directory and port per instance, so tests can run in parallel. The fixtures above it
//! are shared here too, so a scenario starts at its story: [`world`] (a private sshd, store,
//! machines, provisioner, job runner and manager), [`daemon`] (one real `cluster-mgr`),
//! [`cli`] (the real binaries), [`ha`] (a semi-sync shard under the HA monitor) and [`xa`]
//! (shards with a 2PC coordinator).

pub mod bench;
pub mod browser;
pub mod cli;
pub mod daemon;
pub mod daemon_cluster;
pub mod emit;
pub mod fake_mysql;
pub mod ha;
pub mod harness;
pub mod meta_shard;
pub mod rows;
pub mod tmpfs;
pub mod world;
pub mod xa;

pub use harness::{
    bin_path, free_port, free_port_block, generate_key_pair, pid_running, KeyPair, MariaDb,
    MariaDbOptions, Postgres, ReplicaSet, ReplicaSetOptions, Sshd,
};
