//! The one error type of `kunlun-meta`: each variant names what a caller can act on.

/// Errors of the metadata model and store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input failed validation; the message says which field and why.
    #[error("{0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The change conflicts with what is stored (duplicate, in use, busy).
    #[error("{0}")]
    Conflict(String),
    /// A deadline passed, so the change was refused (e.g. a 2PC decision logged too late).
    #[error("{0}")]
    Expired(String),
    /// The metadata store cannot be reached right now; retrying later may work.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// Migrations could not be applied.
    #[error("metadata migration failed: {0}")]
    Migration(String),
    /// A write of a leader's term after the term ended (its lease is held by another manager,
    /// at another epoch, or expired): nothing was written.
    #[error("{0}")]
    Deposed(String),
    /// Any other database error (a bug or a schema mismatch).
    #[error("metadata store error: {0}")]
    Database(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

/// A state string that is not one of the enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} '{value}': expected one of {}", allowed.join(", "))]
pub struct ParseEnumError {
    pub kind: &'static str,
    pub value: String,
    pub allowed: &'static [&'static str],
}

impl From<ParseEnumError> for Error {
    fn from(e: ParseEnumError) -> Self {
        Error::Invalid(e.to_string())
    }
}
