//! The one error type of `kunlun-provision`.
//!
//! Invariant: each variant names something a caller can act on (retry later, fix the key,
//! fix `known_hosts`, raise the deadline, rebuild the node); transport failures and a remote
//! command's own failure are never mixed up: a non-zero exit is data (`Output`) until the
//! caller asks for `Output::checked`, which yields [`Error::RemoteFailed`].

use std::path::PathBuf;
use std::time::Duration;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong reaching or using a machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No TCP connection (refused, no route, connect deadline passed) or no SSH handshake.
    #[error("{host}: unreachable: {reason}")]
    Unreachable { host: String, reason: String },

    /// The server rejected our credentials (or the key file could not be used).
    #[error("{host}: authentication as {user} failed: {reason}")]
    AuthFailed {
        host: String,
        user: String,
        reason: String,
    },

    /// The server's host key differs from the one recorded in `known_hosts`: either the host
    /// was reinstalled or someone is in the middle. Nothing was sent to it.
    #[error(
        "{host}: HOST KEY MISMATCH: the server offered {offered} ({key_type}), which differs \
         from the key recorded for it in {}; if the machine was reinstalled, remove its line \
         there and connect once with accept-new",
        known_hosts.display()
    )]
    HostKeyMismatch {
        host: String,
        key_type: String,
        /// OpenSSH-style fingerprint of the offered key (`SHA256:…`).
        offered: String,
        known_hosts: PathBuf,
    },

    /// Strict checking and no key recorded for the host.
    #[error(
        "{host}: host key {offered} ({key_type}) is not in {}; add it or connect with \
         accept-new to record it",
        known_hosts.display()
    )]
    HostKeyUnknown {
        host: String,
        key_type: String,
        offered: String,
        known_hosts: PathBuf,
    },

    /// A pinned host key fingerprint (given at registration) differs from the one the server
    /// offered. Nothing was sent to it and nothing was recorded.
    #[error("{host}: the server offered host key {offered} ({key_type}), not the pinned {pinned}")]
    HostKeyPinMismatch {
        host: String,
        key_type: String,
        offered: String,
        pinned: String,
    },

    /// The private key file cannot be used (see `ssh::keyfile`); nothing was sent anywhere.
    #[error("{path}: not an acceptable key file: {reason}")]
    KeyFile { path: String, reason: String },

    /// The deadline passed; for a command, it was killed on the remote host.
    #[error("{host}: {what} timed out after {after:?}")]
    Timeout {
        host: String,
        what: String,
        after: Duration,
    },

    /// The connection broke while in use (server gone, network dropped, protocol error).
    #[error("{host}: disconnected: {reason}")]
    Disconnected { host: String, reason: String },

    /// A remote command exited non-zero (or died of a signal), from [`crate::ssh::Output::checked`].
    #[error("{host}: `{command}` failed with {status}: {stderr_tail}")]
    RemoteFailed {
        host: String,
        command: String,
        /// `exit 3` or `signal KILL`.
        status: String,
        /// The last lines of its stderr (at most a few KB).
        stderr_tail: String,
    },

    /// A remote file operation failed (no such file, permission denied, …).
    #[error("{host}: {op} {path}: {reason}")]
    RemoteFile {
        host: String,
        op: &'static str,
        path: String,
        reason: String,
    },

    /// A local problem: unreadable file to upload, unwritable `known_hosts`, bad target.
    #[error("{0}")]
    Local(String),

    /// The request itself is wrong (unknown host in a host list, nothing to place, bad
    /// `port_range`); retrying the same request cannot succeed.
    #[error("invalid: {0}")]
    Invalid(String),

    /// The candidate machines have no room (ports, running machines) for the request.
    #[error("no capacity: {0}")]
    NoCapacity(String),

    /// Something already holds what was asked for (a port, a data dir).
    #[error("conflict: {0}")]
    Conflict(String),

    /// The machine answered but cannot host instances: a missing server binary, no data dir,
    /// an unsupported OS. Nothing was changed on it.
    #[error("{host}: refused: {reason}")]
    Refused { host: String, reason: String },

    /// An installed instance did not come up (or go down) in time; the message says what was
    /// seen (e.g. the tail of its error log).
    #[error("{host}: instance on port {port}: {reason}")]
    Instance {
        host: String,
        port: u16,
        reason: String,
    },

    /// Something else already listens on the instance's port (found before starting the
    /// server, or from the server's own "Address already in use" when it exited at start).
    /// Nothing was started on it.
    #[error("{host}: instance on port {port}: port_in_use: {reason}")]
    PortInUse {
        host: String,
        port: u16,
        reason: String,
    },
}

impl Error {
    /// True for errors where trying again later may succeed (the host or network may come
    /// back); false for ones that need a person (keys, host key, a failing command).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Timeout { .. } | Error::Disconnected { .. }
        )
    }
}
