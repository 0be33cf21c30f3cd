//! The one error type of `kunlun-core`: variants name what a caller (the HTTP layer, an
//! embedding app) can act on; the daemon maps each to one HTTP status in one place.

/// Errors of the engine and its facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed or fails validation; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The change conflicts with what is stored (duplicate, in use, busy).
    #[error("{0}")]
    Conflict(String),
    /// The metadata store (or another dependency) cannot be reached now; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// The manager is shutting down and takes no new work.
    #[error("cluster manager is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected state; details are in the message and the log.
    #[error("internal error: {0}")]
    Internal(String),
    /// Registering a machine was refused by its SSH probe (nothing was stored); `kind` says
    /// what the operator has to fix, the message names the host and the details.
    #[error("{message}")]
    MachineRefused { kind: ProbeFailure, message: String },
}

/// Why a machine's registration probe refused it; each has a stable API code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeFailure {
    /// No TCP connection or SSH handshake within the deadline.
    Unreachable,
    /// The SSH server rejected the user and key (or the key file is unusable).
    AuthFailed,
    /// The host key differs from the one recorded in the manager's `known_hosts`.
    HostKeyMismatch,
    /// Strict host key checking and no key recorded for the host.
    HostKeyUnknown,
    /// `ssh_key_path` is not an acceptable key file (outside `ssh_keys_dir`, not a regular
    /// file, not 0600 or not the daemon's, too large).
    KeyRejected,
    /// `hostaddr` is a name that does not resolve.
    Unresolvable,
    /// A server binary of the machine type's recipe is missing.
    MissingBinaries,
    /// A data dir is not a writable directory and cannot be created.
    DataDir,
    /// Not Linux, unreadable CPU or memory, or the probe command failed.
    Unsuitable,
    /// This manager has no SSH settings to probe with (embedded without a provisioner).
    NotConfigured,
}

impl ProbeFailure {
    /// The stable snake_case code of the API error.
    pub fn code(self) -> &'static str {
        match self {
            ProbeFailure::Unreachable => "machine_unreachable",
            ProbeFailure::AuthFailed => "ssh_auth_failed",
            ProbeFailure::HostKeyMismatch => "host_key_mismatch",
            ProbeFailure::HostKeyUnknown => "host_key_unknown",
            ProbeFailure::KeyRejected => "ssh_key_rejected",
            ProbeFailure::Unresolvable => "host_unresolvable",
            ProbeFailure::MissingBinaries => "missing_binaries",
            ProbeFailure::DataDir => "data_dir_unusable",
            ProbeFailure::Unsuitable => "machine_unsuitable",
            ProbeFailure::NotConfigured => "probe_unavailable",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kunlun_meta::Error> for Error {
    fn from(e: kunlun_meta::Error) -> Self {
        use kunlun_meta::Error as M;
        match e {
            M::Invalid(m) => Error::Invalid(m),
            M::NotFound { what, id } => Error::NotFound { what, id },
            M::Conflict(m) => Error::Conflict(m),
            e @ M::Unavailable(_) => Error::Unavailable(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_errors_keep_their_meaning() {
        assert!(matches!(
            Error::from(kunlun_meta::Error::Invalid("x".into())),
            Error::Invalid(_)
        ));
        assert!(matches!(
            Error::from(kunlun_meta::Error::not_found("machine", 7)),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            Error::from(kunlun_meta::Error::Conflict("dup".into())),
            Error::Conflict(_)
        ));
        let e = Error::from(kunlun_meta::Error::Unavailable("down".into()));
        assert!(matches!(e, Error::Unavailable(_)));
        assert_eq!(e.to_string(), "metadata store unavailable: down");
        assert!(matches!(
            Error::from(kunlun_meta::Error::Database("bug".into())),
            Error::Internal(_)
        ));
    }
}
