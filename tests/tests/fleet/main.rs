//! Machines (registration, probes, SSH keys), the SSH executor, database TLS and the harness
//! itself.
//!
//! One test binary per area (they all link the whole workspace); each module is one former
//! test file, so `cargo test --test fleet MODULE::` runs that file's tests.

mod db_tls;
mod harness_servers;
mod machines_keys;
mod machines_register;
mod machines_update;
mod ssh_exec;
