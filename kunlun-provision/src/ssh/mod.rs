//! SSH executor: run commands, upload and read files on machines over SSH (libssh2 through
//! `ssh2`), with pooled connections and a deadline on every call.
//!
//! Invariants:
//! - every call has a deadline covering waiting for a pooled connection, connecting and the
//!   work itself; a command past its deadline is killed on the remote host (its whole process
//!   group) and the caller gets [`crate::Error::Timeout`];
//! - the host key is checked against a `known_hosts` file before authenticating; only
//!   [`HostKeyPolicy::AcceptNew`] or a matching pinned fingerprint ([`SshTarget::host_key_pin`])
//!   records an unknown key, and a changed key is always an error;
//! - the private key is read by us ([`keyfile`]: regular file, owner, mode 0600, size cap,
//!   optionally confined to a keys directory, never a blocking open) and passed to libssh2 as
//!   bytes, before any connection is made;
//! - the async caller waits at most the call's deadline plus a short grace for the blocking
//!   worker, even if libssh2 overruns its own timeouts;
//! - blocking libssh2 calls run on tokio's blocking pool (or the executor's keepalive thread),
//!   never on async worker threads;
//! - a remote non-zero exit is data ([`Output`]), not an error, until [`Output::checked`].

mod conn;
mod exec;
mod hostkey;
pub mod keyfile;
mod output;
mod pipe;
mod pool;
mod transfer;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use exec::{ExecInput, OnEvent, EVENT};
pub use output::Output;
pub use pipe::{Piped, QUEUE_BYTES};
pub use pool::SshExecutor;

/// What to do with the server's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HostKeyPolicy {
    /// The key must already be in `known_hosts` (the default).
    #[default]
    Strict,
    /// First contact: an unknown host's key is appended to `known_hosts`; a known host with a
    /// different key is still a mismatch (like OpenSSH's `StrictHostKeyChecking=accept-new`).
    AcceptNew,
}

/// How to log in.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SshAuth {
    /// Private key file (OpenSSH or PEM format).
    pub private_key: Option<PathBuf>,
    /// Passphrase of the private key.
    pub passphrase: Option<String>,
    /// Password, tried when there is no key or the key is refused.
    pub password: Option<String>,
    /// When set, `private_key` must resolve to a file under this directory
    /// (see [`keyfile::read_private_key`]).
    pub key_dir: Option<PathBuf>,
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("SshAuth")
            .field("private_key", &self.private_key)
            .field("passphrase", &redact(&self.passphrase))
            .field("password", &redact(&self.password))
            .field("key_dir", &self.key_dir)
            .finish()
    }
}

impl SshAuth {
    /// Key authentication with an unencrypted key file.
    pub fn key(private_key: impl Into<PathBuf>) -> SshAuth {
        SshAuth {
            private_key: Some(private_key.into()),
            passphrase: None,
            password: None,
            key_dir: None,
        }
    }

    /// Password authentication only.
    pub fn password(password: impl Into<String>) -> SshAuth {
        SshAuth {
            private_key: None,
            passphrase: None,
            password: Some(password.into()),
            key_dir: None,
        }
    }
}

/// A machine to reach: address, login and how to trust it. Connections are pooled per
/// distinct target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    /// Host name or IP address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Credentials.
    pub auth: SshAuth,
    /// The `known_hosts` file (OpenSSH format) the host key is checked against.
    pub known_hosts: PathBuf,
    /// Whether an unknown host key may be recorded.
    pub host_key_policy: HostKeyPolicy,
    /// A fingerprint (`SHA256:<base64>`, as `ssh-keygen -lf` prints it) the server's host key
    /// must have; an unknown host whose key matches it is recorded in `known_hosts` whatever
    /// the policy, and any other key is refused ([`crate::Error::HostKeyPinMismatch`]).
    pub host_key_pin: Option<String>,
}

impl SshTarget {
    /// A target with key auth and strict host key checking.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        private_key: impl Into<PathBuf>,
        known_hosts: impl Into<PathBuf>,
    ) -> SshTarget {
        SshTarget {
            host: host.into(),
            port,
            user: user.into(),
            auth: SshAuth::key(private_key),
            known_hosts: known_hosts.into(),
            host_key_policy: HostKeyPolicy::Strict,
            host_key_pin: None,
        }
    }

    /// `host:port`, used in every error.
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Tuning of an [`SshExecutor`].
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Upper bound for TCP connect + handshake + authentication (also bounded by the call's
    /// own deadline).
    pub connect_timeout: Duration,
    /// Connections per target; more concurrent calls wait for a free one (within their
    /// deadline).
    pub max_connections_per_host: usize,
    /// Idle pooled connections get an SSH keepalive this often, which also finds dead ones.
    pub keepalive_interval: Duration,
    /// Idle pooled connections older than this are closed.
    pub idle_timeout: Duration,
    /// How long killing a timed-out remote command may take.
    pub kill_timeout: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            connect_timeout: Duration::from_secs(10),
            max_connections_per_host: 8,
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
            kill_timeout: Duration::from_secs(5),
        }
    }
}
