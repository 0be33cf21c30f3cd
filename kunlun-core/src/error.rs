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
