//! Killing an instance's server at once, as a fence: the recipe knows its server's files
//! ([`Recipe::kill_script`]), this module runs the script and reads its one-line report.
//!
//! Invariant: only the process that the instance's own pid file names, and whose command line
//! shows it is that instance's server, is signalled (after a crash the pid file is stale and its
//! pid may belong to anything); the script's report is a fixed token line, parsed into
//! [`Killed`], never free text.

use std::time::Duration;

use super::{sh_quote, Recipe};
use crate::error::{Error, Result};
use crate::ssh::{SshExecutor, SshTarget};

/// Prefix of the kill script's report line.
pub(crate) const KILL_MARK: &str = "kunlun-kill:";

/// What an immediate kill of an instance's server did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Killed {
    /// The server ran and was sent `SIGKILL`.
    Stopped { pid: u32 },
    /// A pid file was found but its process is not the server: it is not running.
    NotRunning,
    /// No candidate directory holds a pid file of the instance.
    NoPidFile,
    /// The server ran but the signal failed.
    KillFailed { pid: u32 },
}

impl Killed {
    /// The server is known not to run any more (killed now, or not running).
    pub fn stopped(&self) -> bool {
        matches!(self, Killed::Stopped { .. } | Killed::NotRunning)
    }

    /// Reads the script's report line (`kunlun-kill: killed 42`, `… stale`, `… nopid`,
    /// `… failed 42`) out of its output.
    pub fn parse(stdout: &str) -> Option<Killed> {
        let line = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(KILL_MARK))?;
        let mut w = line.split_whitespace();
        let pid = |w: Option<&str>| w.and_then(|p| p.parse::<u32>().ok());
        match w.next()? {
            "killed" => Some(Killed::Stopped {
                pid: pid(w.next())?,
            }),
            "failed" => Some(Killed::KillFailed {
                pid: pid(w.next())?,
            }),
            "stale" => Some(Killed::NotRunning),
            "nopid" => Some(Killed::NoPidFile),
            _ => None,
        }
    }
}

/// Runs `recipe`'s kill script for the instance on `port` whose directory is one of
/// `base_dirs` (tried in order), within `deadline`. A recipe without one is refused.
pub async fn kill_instance(
    recipe: &dyn Recipe,
    ex: &SshExecutor,
    target: &SshTarget,
    base_dirs: &[String],
    port: u16,
    deadline: Duration,
) -> Result<Killed> {
    let Some(script) = recipe.kill_script(base_dirs, port) else {
        return Err(Error::Invalid(format!(
            "the {} recipe cannot kill its server",
            recipe.name()
        )));
    };
    let out = ex
        .exec(target, &format!("sh -c {}", sh_quote(&script)), deadline)
        .await?;
    match Killed::parse(&out.stdout_str()) {
        Some(k) => Ok(k),
        // No report: the script did not run to its end (a shell error); say what it printed.
        None => out.checked().and_then(|out| {
            Err(Error::Invalid(format!(
                "the kill script on {} gave no report: {}",
                out.host,
                out.stdout_str().trim()
            )))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_into_what_happened() {
        assert_eq!(
            Killed::parse("kunlun-kill: killed 4242\n"),
            Some(Killed::Stopped { pid: 4242 })
        );
        assert_eq!(
            Killed::parse("noise\nkunlun-kill: stale\n"),
            Some(Killed::NotRunning)
        );
        assert_eq!(Killed::parse("kunlun-kill: nopid"), Some(Killed::NoPidFile));
        assert_eq!(
            Killed::parse("kunlun-kill: failed 7"),
            Some(Killed::KillFailed { pid: 7 })
        );
        assert_eq!(Killed::parse("kunlun-kill: killed x"), None);
        assert_eq!(Killed::parse("process stopped"), None);
        assert!(Killed::Stopped { pid: 1 }.stopped() && Killed::NotRunning.stopped());
        assert!(!Killed::NoPidFile.stopped() && !Killed::KillFailed { pid: 1 }.stopped());
    }
}
