//! The metadata of the Kunlun cluster manager: domain types, API types, validation and (behind
//! the default `store` feature) the diesel store with its SQLite and MySQL backends.
//!
//! Without `store` this crate has no database dependency, so `kunlunctl` links only the types.

pub mod api;
pub mod auth;
pub mod error;
pub mod model;
#[cfg(feature = "store")]
pub mod store;
pub mod tls;
pub mod utc;
pub mod validate;

pub use error::{Error, Result};
#[cfg(feature = "store")]
pub use store::{BackendConfig, BackendKind, SeedReport, Store, StoreConfig};
pub use tls::{TlsMode, TlsSettings};
