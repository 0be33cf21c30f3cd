//! `cluster-mgr`: flags → config → logging → [`cluster_mgr::run`]. Exit codes: 0 after a clean
//! stop (SIGTERM/SIGINT), 1 when the daemon fails, 2 for a bad command line or config file
//! (including a non-loopback bind without `auth = tokens` or without TLS, and TLS files that
//! cannot be used: an unreadable or group/other-readable key, a key not matching the
//! certificate; all refused before listening).
//! `cluster-mgr token create --name N --role R --config FILE` prints a new API token instead.

use std::process::ExitCode;

use clap::Parser;
use cluster_mgr::config::{Args, Config};

fn main() -> ExitCode {
    // Before anything is created: the store, its WAL, the log and known_hosts hold secrets.
    cluster_mgr::files::restrict_umask();
    raise_open_files();
    let args = Args::parse();
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cluster-mgr: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(cmd) = &args.command {
        return match cluster_mgr::bootstrap::run(&config, cmd) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cluster-mgr: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let tls = match cluster_mgr::tls::load_for(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cluster-mgr: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cluster_mgr::logging::init(&config) {
        eprintln!("cluster-mgr: {e:#}");
        return ExitCode::FAILURE;
    }
    for w in &config.warnings {
        tracing::warn!("config: {w}");
    }
    match cluster_mgr::run(config, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cluster-mgr: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit of open files to the hard one: the HA monitor keeps a probe session
/// to every storage node it watches and a watch session to every primary, so a large fleet
/// needs more than the usual soft limit of 1,024.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
