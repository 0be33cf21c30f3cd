//! The real `cluster-mgr` daemon and `kunlunctl` binaries: HTTP API, CLI, TLS, security,
//! leader failover.
//!
//! One test binary per area (they all link the whole workspace); each module is one former
//! test file, so `cargo test --test api MODULE::` runs that file's tests.

mod api_fuzz;
mod api_load;
mod api_strict;
mod cli_machines;
mod cli_security;
mod cli_tls;
mod cli_usage;
mod console_browser;
mod daemon_e2e;
mod leader_deposed;
mod leader_failover;

/// Held by the tests of this binary that load the whole machine (the 1,000-client load, the
/// schemathesis fuzz) and by those that time a leader's hand-over: they share one process and
/// would otherwise run side by side on two cores, so a timing could be measured beside a load.
pub(crate) fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
