//! `kunlunctl`: parses the command line (clap exits 2 on a usage error) and hands over to the
//! library, whose result is the process exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kunlunctl::cli::Cli::parse();
    std::process::ExitCode::from(kunlunctl::run(cli))
}
