//! The `cluster-mgr` daemon as a library: configuration ([`config`]), logging, the HTTP API
//! ([`http`]) and the server's start-up and shutdown ([`run`]). `main.rs` only parses flags,
//! loads the config, starts logging and calls [`run`].

pub mod bootstrap;
pub mod config;
pub mod emit;
pub mod files;
pub mod http;
pub mod logging;
mod retention;
mod server;
pub mod tls;
pub mod ui;

pub use server::{core_config, run, serve, store_config};
