//! Test harness that starts real servers (MariaDB, PostgreSQL, sshd) on loopback for the
//! integration tests.
//!
//! Invariant: every server a harness value starts lives in its own directory under
//! [`harness_root`]`/<owner pid>-<owner start time>/` and is stopped by PID when the value is
//! dropped; a run that crashed before dropping leaves directories whose owner is dead, and the
//! first harness call of any later process kills the recorded PIDs of those directories and
//! removes them. Nothing here skips a test: a server that cannot be started is an error with
//! the reason and the server's log tail.

mod binaries;
mod mariadb;
mod postgres;
mod process;
mod replica_set;
mod sshd;
mod workdir;

pub use binaries::bin_path;
pub use mariadb::{MariaDb, MariaDbOptions};
pub use postgres::Postgres;
pub use process::{free_port, free_port_block, pid_running};
pub use replica_set::{ReplicaSet, ReplicaSetOptions};
pub use sshd::{generate_key_pair, KeyPair, Sshd};
pub use workdir::{harness_root, sweep_leftovers, InstanceDir};
