//! Provisioning for the Kunlun cluster manager: the SSH executor that reaches machines
//! (and, later, install recipes, machine probe and placement built on it).
//!
//! Invariant: nothing in this crate blocks an async worker thread; every remote call has a
//! deadline; failures come back as [`Error`] variants a caller can act on.

mod error;
pub mod placement;
pub mod probe;
pub mod recipe;
pub mod ssh;

pub use error::{Error, Result};
pub use ssh::{
    ExecInput, HostKeyPolicy, Output, Piped, SshAuth, SshExecutor, SshOptions, SshTarget,
};
