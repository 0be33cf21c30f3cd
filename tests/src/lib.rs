//! End-to-end tests of the Kunlun cluster manager and the harness they share.
//!
//! The harness ([`harness`]) starts real MariaDB, PostgreSQL and sshd servers on loopback,
//! one directory and port per instance, so tests can run in parallel.

pub mod harness;

pub use harness::{
    bin_path, free_port, free_port_block, generate_key_pair, KeyPair, MariaDb, MariaDbOptions,
    Postgres, ReplicaSet, ReplicaSetOptions, Sshd,
};
