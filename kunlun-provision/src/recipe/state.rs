//! Whether instances' servers run, asked of every instance of one machine in one SSH command
//! (the instance keeper's check), and the tail of a server's own log. The recipe names its
//! server's pid file, the command-line argument that identifies the instance's server and its
//! log ([`Recipe::server_identity`], [`Recipe::error_log`]); this module builds the snippets,
//! runs them and reads the fixed token lines back ([`InstanceState`]).
//!
//! Invariants: a process counts as the instance's server only when the instance's own pid file
//! names it, it is not a zombie, and its command line carries the identifying argument (after a
//! crash or a reboot the pid may belong to anything); the one change the check makes is to
//! remove such a stale pid file, and only while nothing listens on the instance's port, so the
//! start step that follows does not take the recycled pid for the running server. Reports are
//! token lines, never free text; every call has a deadline and its output is bounded.

use std::time::Duration;

use super::{proc_net_listen_pattern, sh_quote, InstanceSpec, Recipe};
use crate::error::{Error, Result};
use crate::ssh::{SshExecutor, SshTarget};

/// Prefix of one instance's report line.
const STATE_MARK: &str = "kunlun-state:";

/// Most bytes of a log tail (a few KB: enough for the last start attempt's errors).
pub const MAX_LOG_TAIL: usize = 16 * 1024;

/// What the instance's pid file says about its server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The pid file names a live process that is the instance's server.
    Alive,
    /// The pid file names no live process (a crash or `kill -9` leaves it behind).
    Dead,
    /// The pid file names a live process that is not the instance's server (a pid reused
    /// after a reboot); the check removed the file when the port was closed.
    Stale,
    /// No pid file (a clean stop removes it; a server killed before writing it).
    NoPidFile,
}

/// One instance as the check found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceState {
    pub process: Process,
    /// Something listens on the instance's address and port.
    pub listening: bool,
}

impl InstanceState {
    /// The server is down: no live server process behind its pid file, and its port closed.
    /// A live process with a closed port is starting (or recovering); an open port without
    /// our process is someone else's: neither is down.
    pub fn down(&self) -> bool {
        self.process != Process::Alive && !self.listening
    }

    /// The server runs and listens.
    pub fn up(&self) -> bool {
        self.process == Process::Alive && self.listening
    }

    /// The report lines of a batch (`kunlun-state: <index> <alive|dead|stale|nopid>
    /// <open|closed>`), by index; an index with no (or a garbled) line is `None`.
    pub fn parse_all(stdout: &str, count: usize) -> Vec<Option<InstanceState>> {
        let mut out = vec![None; count];
        for line in stdout.lines() {
            let Some(rest) = line.trim().strip_prefix(STATE_MARK) else {
                continue;
            };
            let w: Vec<&str> = rest.split_whitespace().collect();
            let [i, p, l] = w[..] else { continue };
            let Some(i) = i.parse::<usize>().ok().filter(|i| *i < count) else {
                continue;
            };
            let process = match p {
                "alive" => Process::Alive,
                "dead" => Process::Dead,
                "stale" => Process::Stale,
                "nopid" => Process::NoPidFile,
                _ => continue,
            };
            let listening = match l {
                "open" => true,
                "closed" => false,
                _ => continue,
            };
            out[i] = Some(InstanceState { process, listening });
        }
        out
    }
}

/// How to check one instance: what [`instance_states`] needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCheck {
    /// Address and port the server listens on.
    pub bind_address: String,
    pub port: u16,
    /// The server's pid file.
    pub pid_file: String,
    /// One argument of the server's command line that names this instance (its
    /// `--defaults-file=…`, its data dir).
    pub ident: String,
}

impl StateCheck {
    /// The check of `spec`'s instance by `recipe`; `None` when the recipe cannot say.
    pub fn of(recipe: &dyn Recipe, spec: &InstanceSpec) -> Option<StateCheck> {
        let (pid_file, ident) = recipe.server_identity(spec)?;
        Some(StateCheck {
            bind_address: spec.bind_address.clone(),
            port: spec.port,
            pid_file,
            ident,
        })
    }

    /// The snippet printing instance `index`'s report line (pure; run by the unit test).
    fn snippet(&self, index: usize) -> String {
        format!(
            r#"(pf={pf}; id={id}; p=nopid; l=closed
if [ -f "$pf" ]; then
  p=dead; pid=$(head -n1 "$pf" 2>/dev/null | tr -dc 0-9)
  if [ -n "$pid" ] && [ -d /proc/$pid ] && ! grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null; then
    if tr '\0' '\n' < /proc/$pid/cmdline 2>/dev/null | grep -qxF -- "$id"; then p=alive; else p=stale; fi
  fi
fi
if awk 'NR>1 && $4=="0A" {{print $2}}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -qxE {pat}; then l=open; fi
if [ "$p" = stale ] && [ "$l" = closed ]; then rm -f "$pf" 2>/dev/null; fi
echo "{STATE_MARK} {index} $p $l")"#,
            pf = sh_quote(&self.pid_file),
            id = sh_quote(&self.ident),
            pat = sh_quote(&proc_net_listen_pattern(&self.bind_address, self.port)),
        )
    }
}

/// The one script checking every instance of `checks` (pure).
pub fn states_script(checks: &[StateCheck]) -> String {
    let mut s = String::new();
    for (i, c) in checks.iter().enumerate() {
        s.push_str(&c.snippet(i));
        s.push('\n');
    }
    s.push_str("exit 0");
    s
}

/// Checks every instance of `checks` on one machine in one SSH command within `deadline`;
/// the result is in the order of `checks`, `None` for one the script did not report on.
pub async fn instance_states(
    ex: &SshExecutor,
    target: &SshTarget,
    checks: &[StateCheck],
    deadline: Duration,
) -> Result<Vec<Option<InstanceState>>> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let script = states_script(checks);
    let out = ex
        .exec(target, &format!("sh -c {}", sh_quote(&script)), deadline)
        .await?;
    let out = out.checked()?;
    Ok(InstanceState::parse_all(&out.stdout_str(), checks.len()))
}

/// The last `max_bytes` (at most [`MAX_LOG_TAIL`]) of `recipe`'s log of `spec`'s instance,
/// read within `deadline`; empty when the log does not exist.
pub async fn log_tail(
    recipe: &dyn Recipe,
    ex: &SshExecutor,
    target: &SshTarget,
    spec: &InstanceSpec,
    max_bytes: usize,
    deadline: Duration,
) -> Result<String> {
    let Some(log) = recipe.error_log(spec) else {
        return Err(Error::Invalid(format!(
            "the {} recipe names no server log",
            recipe.name()
        )));
    };
    let n = max_bytes.clamp(1, MAX_LOG_TAIL);
    let cmd = format!("tail -c {n} {} 2>/dev/null; exit 0", sh_quote(&log));
    let out = ex
        .exec(target, &format!("sh -c {}", sh_quote(&cmd)), deadline)
        .await?
        .checked()?;
    let text = out.stdout_str();
    // `tail -c` may cut a UTF-8 sequence; the lossy read replaced it. Bound again anyway.
    let start = text.len().saturating_sub(n);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    Ok(text[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_by_index() {
        let out = "noise\nkunlun-state: 1 alive open\nkunlun-state: 0 dead closed\n\
                   kunlun-state: 2 stale closed\nkunlun-state: 3 nopid open\n\
                   kunlun-state: 9 alive open\nkunlun-state: 4 what open\n";
        let got = InstanceState::parse_all(out, 5);
        let st = |process, listening| Some(InstanceState { process, listening });
        assert_eq!(got[0], st(Process::Dead, false));
        assert_eq!(got[1], st(Process::Alive, true));
        assert_eq!(got[2], st(Process::Stale, false));
        assert_eq!(got[3], st(Process::NoPidFile, true));
        assert_eq!(got[4], None, "garbled");
        assert!(got[0].unwrap().down() && got[2].unwrap().down());
        assert!(
            !got[3].unwrap().down(),
            "a port open without our process is not down"
        );
        assert!(got[1].unwrap().up());
        let starting = InstanceState {
            process: Process::Alive,
            listening: false,
        };
        assert!(!starting.down() && !starting.up(), "starting: neither");
    }

    #[test]
    fn the_script_tells_the_server_from_a_recycled_pid_and_a_crash() {
        let dir = std::env::temp_dir().join(format!("kl_state_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pf = dir.join("server.pid");
        let pf_s = pf.display().to_string();
        let ident = format!("--defaults-file={}/my.cnf", dir.display());
        // A port nothing listens on (bound then dropped) on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let check = StateCheck {
            bind_address: "127.0.0.1".into(),
            port,
            pid_file: pf_s.clone(),
            ident: ident.clone(),
        };
        let run = |checks: &[StateCheck]| {
            let out = std::process::Command::new("sh")
                .args(["-c", &states_script(checks)])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            InstanceState::parse_all(&String::from_utf8_lossy(&out.stdout), checks.len())
        };
        let spawn = |arg: &str| {
            std::process::Command::new("sh")
                .args(["-c", "sleep 20; :", "sh", arg])
                .spawn()
                .unwrap()
        };
        let closed = |process| InstanceState {
            process,
            listening: false,
        };
        assert_eq!(
            run(std::slice::from_ref(&check)),
            vec![Some(closed(Process::NoPidFile))]
        );

        // The instance's own server (its command line names the instance): alive.
        let mut own = spawn(&ident);
        std::fs::write(&pf, format!("{}\n", own.id())).unwrap();
        assert_eq!(
            run(std::slice::from_ref(&check)),
            vec![Some(closed(Process::Alive))]
        );
        // Killed: its pid file stays behind, naming no process.
        own.kill().unwrap();
        own.wait().unwrap();
        assert_eq!(
            run(std::slice::from_ref(&check)),
            vec![Some(closed(Process::Dead))]
        );
        assert!(pf.exists(), "a dead pid's file is left to the start step");

        // A recycled pid (someone else's process): stale, and its file removed.
        let mut stranger = spawn("--defaults-file=/elsewhere/my.cnf");
        std::fs::write(&pf, format!("{}\n", stranger.id())).unwrap();
        // A second instance in the same batch, with a listener on its port: reported apart.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = StateCheck {
            port: listener.local_addr().unwrap().port(),
            pid_file: dir.join("none.pid").display().to_string(),
            ..check.clone()
        };
        let got = run(&[check.clone(), other]);
        assert_eq!(got[0], Some(closed(Process::Stale)));
        assert_eq!(
            got[1],
            Some(InstanceState {
                process: Process::NoPidFile,
                listening: true
            })
        );
        assert!(!pf.exists(), "the stale pid file is removed");
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "the stranger is untouched"
        );
        stranger.kill().unwrap();
        stranger.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
