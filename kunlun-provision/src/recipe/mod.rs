//! Install recipes: how one database instance is laid out, configured, initialised, started,
//! given its system users, stopped and removed on a machine, all through the SSH executor.
//!
//! Invariants:
//! - every step is idempotent (it checks, then acts), so a job that died after any step can
//!   run that step again, and uninstall can run on a half-installed instance;
//! - an instance owns exactly one directory, [`InstanceSpec::base_dir`], and everything it
//!   writes (data, logs, socket, pid file) is under it; uninstall removes only that directory,
//!   and only after checking it looks like an instance directory (see [`validate_base_dir`]);
//! - servers are started detached (`setsid`, no inherited descriptors) so they outlive the
//!   SSH connection, and are stopped by the PID in their own pid file;
//! - passwords never appear on a command line, in a file or in an error: SQL that carries
//!   them goes on the SSH session's stdin into a shell variable and is piped to the client by
//!   the shell's builtin `printf`;
//! - an install is one SSH session per instance (programs check, then every step), since
//!   each session costs a login shell on the machine.
//!
//! A new server kind (MySQL 8 or kunlun-storage from a tarball) is another [`Recipe`]
//! implementation; the engine only sees the trait.

mod kill;
mod mariadb;
mod postgres;
pub mod reseed;
mod state;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use kill::{kill_instance, Killed};
pub use mariadb::{
    grant_option as storage_grant_option, grants_sql as storage_grants_sql, storage_privileges,
    MariaDbRecipe, PGX_PRIVILEGES, SYSTEM_SCHEMAS_SQL,
};
pub use postgres::PostgresRecipe;
pub use reseed::Reseed;
pub use state::{
    instance_states, log_tail, states_script, InstanceState, Process, StateCheck, MAX_LOG_TAIL,
};

use crate::error::{Error, Result};
use crate::placement::InstanceKind;
use crate::ssh::{ExecInput, SshExecutor, SshTarget, EVENT};

/// One install or uninstall step, in the order a recipe runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Per-instance directories.
    MakeDirs,
    /// Initialise the data directory (bootstrap system tables).
    Initialise,
    /// Write the generated server configuration.
    WriteConfig,
    /// Start the server detached.
    Start,
    /// Wait until it answers.
    WaitReady,
    /// Create or update the system users.
    CreateUsers,
    /// Stop the server by its pid file.
    Stop,
    /// Remove the instance directory.
    RemoveDirs,
    /// Storage: persist semi-sync on as a primary (master side enabled, wait point
    /// `AFTER_SYNC`) in the instance's configuration file, so a restart keeps it.
    SemiSyncOn,
    /// Storage: persist semi-sync off as a primary in the instance's configuration file.
    SemiSyncOff,
}

impl Step {
    /// Stable name, used in job memos and progress output.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::MakeDirs => "make_dirs",
            Step::Initialise => "initialise",
            Step::WriteConfig => "write_config",
            Step::Start => "start",
            Step::WaitReady => "wait_ready",
            Step::CreateUsers => "create_users",
            Step::Stop => "stop",
            Step::RemoveDirs => "remove_dirs",
            Step::SemiSyncOn => "semi_sync_on",
            Step::SemiSyncOff => "semi_sync_off",
        }
    }

    /// The step of a name from [`Step::as_str`].
    pub fn parse(name: &str) -> Option<Step> {
        INSTALL_STEPS
            .iter()
            .chain(&[
                Step::Stop,
                Step::RemoveDirs,
                Step::SemiSyncOn,
                Step::SemiSyncOff,
            ])
            .copied()
            .find(|s| s.as_str() == name)
    }
}

/// The install steps of the server recipes, in order.
pub const INSTALL_STEPS: &[Step] = &[
    Step::MakeDirs,
    Step::Initialise,
    Step::WriteConfig,
    Step::Start,
    Step::WaitReady,
    Step::CreateUsers,
];

/// What a system user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// The manager (`clustmgr`): on storage nodes every privilege but `FILE` (it must write
    /// while `read_only` is on to promote, and repairs the others' grants); on compute nodes a
    /// superuser (it owns the catalog that holds the storage logins).
    Admin,
    /// Replication only (storage nodes).
    Replication,
    /// What applications get: on storage nodes the compute nodes' login (`pgx`: DML, DDL,
    /// XA, reading positions; nothing that passes `read_only` or reaches files); on compute
    /// nodes the login handed to users (`abc`: `CREATEDB`, not a superuser).
    Application,
}

/// A system user of an instance. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbUser {
    pub name: String,
    pub password: String,
    pub role: UserRole,
}

impl fmt::Debug for DbUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// Everything a recipe needs to install one instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceSpec {
    /// Address the server listens on (the machine's `hostaddr`).
    pub bind_address: String,
    /// Base port of the instance's block.
    pub port: u16,
    /// The instance's own directory, e.g. `<data_dir>/kunlun/storage_57001`.
    pub base_dir: String,
    /// MySQL `server_id` (ignored by compute recipes).
    pub server_id: u32,
    /// InnoDB buffer pool / PostgreSQL shared buffers, in MB.
    pub buffer_mb: u32,
    pub max_connections: u32,
    /// Storage: semi-sync replication settings on (the shard has replicas).
    pub semi_sync: bool,
    /// Users to create (idempotently; an existing user gets the password reset).
    pub users: Vec<DbUser>,
}

impl InstanceSpec {
    /// The conventional instance directory under a machine data dir.
    pub fn base_dir_for(data_dir: &str, kind: InstanceKind, port: u16) -> String {
        let kind = match kind {
            InstanceKind::Storage => "storage",
            InstanceKind::Compute => "compute",
        };
        format!("{}/kunlun/{kind}_{port}", data_dir.trim_end_matches('/'))
    }
}

/// Refuses a base dir that is not an absolute, `..`-free path of the form
/// `…/kunlun/<kind>_<port>`, so that `rm -rf` can never hit anything else.
pub fn validate_base_dir(dir: &str) -> Result<()> {
    let ok = dir.starts_with('/')
        && !dir.split('/').any(|c| c == ".." || c == ".")
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c))
        && {
            let mut parts = dir.rsplit('/');
            let last = parts.next().unwrap_or("");
            let parent = parts.next().unwrap_or("");
            parent == "kunlun"
                && (last.starts_with("storage_") || last.starts_with("compute_"))
                && last
                    .split_once('_')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        };
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "instance dir {dir:?} must be an absolute path ending in kunlun/<storage|compute>_<port>"
        )))
    }
}

/// Called with each recipe step as it begins on the machine (progress reporting).
pub type OnStep = Arc<dyn Fn(Step) + Send + Sync>;

/// How to install, run and remove one kind of server.
///
/// Steps are shell scripts ([`Recipe::step_script`]); consecutive ones run in one SSH
/// session, each in its own subshell, because every session costs a login shell on the
/// machine (a heavy `~/.bashrc` makes that the bulk of an install). A step that needs a
/// secret reads it from `"$KUNLUN_SECRET"`, which the session sets from its stdin
/// ([`Recipe::step_secret`]): never on a command line, never in a file. A recipe with a step
/// that cannot be a script (an upload, say) overrides [`Recipe::run_step`].
#[async_trait::async_trait]
pub trait Recipe: Send + Sync {
    /// Short name (`mariadb`, `postgres`), recorded in job memos.
    fn name(&self) -> &'static str;

    /// Storage or compute.
    fn kind(&self) -> InstanceKind;

    /// Absolute paths of the programs this recipe needs on the machine (the probe checks them).
    fn required_binaries(&self) -> Vec<String>;

    /// Install steps, in order.
    fn install_steps(&self) -> &'static [Step];

    /// The shell script of a step, if it is one.
    fn step_script(&self, spec: &InstanceSpec, step: Step) -> Option<String>;

    /// A compute recipe: the script that writes the (running) instance's schema, every
    /// database and the roles without their passwords, to stdout (a backup's `comp.sql`);
    /// `None` when the recipe has none.
    fn schema_dump_script(&self, _spec: &InstanceSpec) -> Option<String> {
        None
    }

    /// A compute recipe: the script that loads what [`Recipe::schema_dump_script`] wrote (on
    /// its stdin) into the running instance (a restore). What exists already (the system roles
    /// and databases a fresh instance has) is kept; any other error fails the script, naming
    /// the statements that failed. `None` when the recipe has none.
    fn schema_load_script(&self, _spec: &InstanceSpec) -> Option<String> {
        None
    }

    /// The secret a script step reads from `"$KUNLUN_SECRET"` (e.g. SQL with passwords).
    fn step_secret(&self, _spec: &InstanceSpec, _step: Step) -> Result<Option<String>> {
        Ok(None)
    }

    /// Runs one step (install or uninstall), checking before acting.
    async fn run_step(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
        step: Step,
    ) -> Result<()> {
        if self.step_script(spec, step).is_none() {
            return Err(Error::Invalid(format!(
                "the {} recipe has no step {}",
                self.name(),
                step.as_str()
            )));
        }
        run_sessions(self, ex, target, spec, &[step], false, None).await
    }

    /// How a failed session of script steps is reported (e.g. with the server's error log).
    fn batch_error(&self, _spec: &InstanceSpec, e: Error) -> Error {
        e
    }

    /// Runs `steps` in order; consecutive script steps share one SSH session, stopping at the
    /// first that fails. `on_step` hears each step as it begins.
    async fn run_steps(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
        steps: &[Step],
        on_step: Option<OnStep>,
    ) -> Result<()> {
        run_sessions(self, ex, target, spec, steps, false, on_step).await
    }

    /// A shell script that kills the server of the instance on `port` at once (a fence, not
    /// a clean stop), looking for its instance directory in `base_dirs` in order, and prints
    /// one report line for [`Killed::parse`]. `None` when the recipe cannot (see
    /// [`kill_instance`]).
    fn kill_script(&self, _base_dirs: &[String], _port: u16) -> Option<String> {
        None
    }

    /// The instance's server pid file and one argument of its command line that names this
    /// instance, for [`instance_states`]; `None` when the recipe cannot say.
    fn server_identity(&self, _spec: &InstanceSpec) -> Option<(String, String)> {
        None
    }

    /// The server's own log, whose tail says why it would not start ([`log_tail`]).
    fn error_log(&self, _spec: &InstanceSpec) -> Option<String> {
        None
    }

    /// The scripts that reseed an installed instance in place from another instance's data (a
    /// replica rebuild); `None` when this recipe cannot.
    fn reseed(&self) -> Option<&dyn Reseed> {
        None
    }

    /// Whether the instance's server process is alive (per its pid file).
    async fn is_running(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
    ) -> Result<bool>;

    /// Runs every install step in order; each is idempotent, so rerunning after a partial
    /// install (a job resumed after a crash) is safe.
    async fn install(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
    ) -> Result<()> {
        self.install_with(ex, target, spec, None).await
    }

    /// [`install`](Recipe::install) reporting each step to `on_step`. Before anything is
    /// written, in the same session, the machine is checked for the recipe's programs: a
    /// missing one fails with [`Error::Refused`] naming it, and nothing was changed.
    async fn install_with(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
        on_step: Option<OnStep>,
    ) -> Result<()> {
        validate_base_dir(&spec.base_dir)?;
        run_sessions(self, ex, target, spec, self.install_steps(), true, on_step).await
    }

    /// Stops the server and removes its directory; fine on a half-installed or absent instance.
    async fn uninstall(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
    ) -> Result<()> {
        validate_base_dir(&spec.base_dir)?;
        self.run_steps(ex, target, spec, &[Step::Stop, Step::RemoveDirs], None)
            .await
    }
}

/// Exit status of a session whose programs check failed.
const MISSING_EXIT: i32 = 97;
/// Prefix of the stderr line naming the missing programs.
const MISSING_MARK: &str = "kunlun-missing:";

/// Shell snippet: exit [`MISSING_EXIT`] naming every missing (non-executable) program.
fn programs_check(progs: &[String]) -> String {
    let list: Vec<String> = progs.iter().map(|p| sh_quote(p)).collect();
    format!(
        "m=''; for p in {}; do [ -x \"$p\" ] || m=\"$m $p\"; done
if [ -n \"$m\" ]; then echo \"{MISSING_MARK}$m\" >&2; exit {MISSING_EXIT}; fi\n",
        list.join(" ")
    )
}

/// Exit status of a session that found the instance's port taken by another process.
const PORT_IN_USE_EXIT: i32 = 96;
/// Prefix of the stderr line saying which address and port were taken.
const PORT_IN_USE_MARK: &str = "kunlun-port-in-use:";

/// The `local_address` column values of `/proc/net/tcp{,6}` (an ERE alternation) under which
/// a listener takes `addr:port` from a server binding `addr`: the address itself, its
/// IPv4-mapped IPv6 form, and the wildcards. The kernel prints each 32-bit word of an address
/// in the host's byte order (little-endian on the hosts we manage: x86-64, arm64). A host
/// name (not an address) matches a listener on any address.
fn proc_net_listen_pattern(addr: &str, port: u16) -> String {
    fn words(octets: &[u8]) -> String {
        octets
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    }
    let p = format!("{port:04X}");
    let any4 = words(&[0; 4]);
    let any6 = words(&[0; 16]);
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let mapped = words(&v4.to_ipv6_mapped().octets());
            format!("({}|{any4}|{mapped}|{any6}):{p}", words(&v4.octets()))
        }
        Ok(std::net::IpAddr::V6(v6)) => format!("({}|{any6}):{p}", words(&v6.octets())),
        Err(_) => format!("[0-9A-F]+:{p}"),
    }
}

/// Shell snippet, run just before a server is started: exits [`PORT_IN_USE_EXIT`] when
/// another process listens on the instance's address and port, so a taken port fails the
/// instance at once rather than after the readiness wait. (The instance's own server is
/// ruled out by the caller: the start step returns early when it already runs.)
pub(crate) fn port_free_check(spec: &InstanceSpec) -> String {
    format!(
        r#"if awk 'NR>1 && $4=="0A" {{print $2}}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -qxE {pat}; then
  echo {msg} >&2; exit {PORT_IN_USE_EXIT}
fi"#,
        pat = sh_quote(&proc_net_listen_pattern(&spec.bind_address, spec.port)),
        msg = sh_quote(&format!(
            "{PORT_IN_USE_MARK} another process already listens on {}:{} (choose another port \
             range for the machine, or stop that process)",
            spec.bind_address, spec.port
        )),
    )
}

/// Where the start step writes the pid of the process it launched, for the readiness wait.
pub(crate) fn start_pid_file(base: &str) -> String {
    format!("{}/kunlun-start.pid", base.trim_end_matches('/'))
}

/// Shell snippet for the start step, after launching the server with `&`: records its pid.
pub(crate) fn record_start_pid(base: &str) -> String {
    format!("echo $! > {}", sh_quote(&start_pid_file(base)))
}

/// Shell snippet opening a readiness wait: reads the launched pid into `$sp` (empty when the
/// start step found the server already running) and clears `$died`.
pub(crate) fn wait_prologue(base: &str) -> String {
    format!(
        "died=0; sp=$(head -n1 {} 2>/dev/null | tr -dc 0-9)",
        sh_quote(&start_pid_file(base))
    )
}

/// Shell snippet for inside a readiness loop: breaks with `died=1` as soon as the launched
/// process is gone (or a zombie) and no process matches `server_pattern` (`pgrep -f`), so a
/// server that exits during start is reported within a poll, not after the whole wait.
pub(crate) fn exited_during_start(server_pattern: &str) -> String {
    format!(
        r#"if [ -n "$sp" ] && {{ [ ! -e /proc/$sp ] || grep -q '^State:[[:space:]]*Z' /proc/$sp/status 2>/dev/null; }} && ! pgrep -f -- {pat} >/dev/null; then died=1; break; fi"#,
        pat = sh_quote(server_pattern)
    )
}

/// Shell snippet closing a failed readiness wait: the reason (exited at start, with "Address
/// already in use" turned into [`PORT_IN_USE_EXIT`]; or never answered) and the tail of
/// `log_file` on stderr.
pub(crate) fn start_failed(what: &str, spec: &InstanceSpec, log_file: &str) -> String {
    let log = sh_quote(log_file);
    format!(
        r#"if [ "$died" = 1 ]; then
  if tail -n 50 {log} 2>/dev/null | grep -qi 'address already in use'; then
    echo {msg} >&2; tail -n 5 {log} >&2 2>/dev/null; exit {PORT_IN_USE_EXIT}
  fi
  echo '{what} exited during start; log:' >&2
else
  echo '{what} did not answer; log:' >&2
fi
tail -n 20 {log} >&2 2>/dev/null
exit 1"#,
        msg = sh_quote(&format!(
            "{PORT_IN_USE_MARK} {what} could not bind {}:{} (Address already in use)",
            spec.bind_address, spec.port
        )),
    )
}

/// The [`Error::PortInUse`] of a session that found the port taken, from its stderr.
fn port_in_use(host: &str, spec: &InstanceSpec, stderr: &str) -> Option<Error> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(PORT_IN_USE_MARK))?;
    Some(Error::PortInUse {
        host: host.to_string(),
        port: spec.port,
        reason: line.trim().to_string(),
    })
}

/// The [`Error::Refused`] of a failed programs check, from the session's stderr.
fn missing_programs<R: Recipe + ?Sized>(recipe: &R, host: &str, stderr: &str) -> Option<Error> {
    let line = stderr.lines().find_map(|l| l.strip_prefix(MISSING_MARK))?;
    let missing: Vec<&str> = line.split_whitespace().collect();
    Some(Error::Refused {
        host: host.to_string(),
        reason: format!(
            "the {} recipe needs {} but the machine has no such program (install the server \
             package or fix the recipe's paths)",
            recipe.name(),
            missing.join(", ")
        ),
    })
}

/// Runs `steps` of `recipe`: each run of consecutive script steps (at most one of them with a
/// secret) is one SSH session, each step in its own subshell, stopping at the first that
/// fails; other steps go to [`Recipe::run_step`]. With `check`, the first session checks the
/// recipe's programs before anything else.
async fn run_sessions<R: Recipe + ?Sized>(
    recipe: &R,
    ex: &SshExecutor,
    target: &SshTarget,
    spec: &InstanceSpec,
    steps: &[Step],
    mut check: bool,
    on_step: Option<OnStep>,
) -> Result<()> {
    let mut i = 0;
    while i < steps.len() {
        let mut parts = Vec::new();
        let mut names = Vec::new();
        let mut secret: Option<String> = None;
        while let Some(&step) = steps.get(i) {
            let Some(script) = recipe.step_script(spec, step) else {
                break;
            };
            let sec = recipe.step_secret(spec, step)?;
            if sec.is_some() && secret.is_some() {
                break;
            }
            secret = secret.or(sec);
            parts.push(format!(
                "printf '{EVENT}step %s\\n' {name} >&2\n(\n{script}\n) || exit $?",
                name = step.as_str()
            ));
            names.push(step.as_str());
            i += 1;
        }
        if parts.is_empty() {
            if check {
                check = false;
                run_session(recipe, ex, target, spec, "", None, true, None, &["check"]).await?;
            }
            if let Some(cb) = &on_step {
                cb(steps[i]);
            }
            recipe.run_step(ex, target, spec, steps[i]).await?;
            i += 1;
            continue;
        }
        let body = parts.join("\n");
        run_session(
            recipe,
            ex,
            target,
            spec,
            &body,
            secret,
            std::mem::take(&mut check),
            on_step.clone(),
            &names,
        )
        .await?;
    }
    Ok(())
}

/// One SSH session running `body`, the steps `names` (after the programs check when
/// `check`), with `secret` as `$KUNLUN_SECRET`; its `step` event lines go to `on_step`.
#[allow(clippy::too_many_arguments)]
async fn run_session<R: Recipe + ?Sized>(
    recipe: &R,
    ex: &SshExecutor,
    target: &SshTarget,
    spec: &InstanceSpec,
    body: &str,
    secret: Option<String>,
    check: bool,
    on_step: Option<OnStep>,
    names: &[&str],
) -> Result<()> {
    let mut script = String::new();
    if secret.is_some() {
        script.push_str("KUNLUN_SECRET=$(cat)\n");
    }
    if check {
        script.push_str(&programs_check(&recipe.required_binaries()));
    }
    script.push_str(body);
    let on_event = on_step.map(|cb| {
        Arc::new(move |text: &str| {
            if let Some(step) = text.strip_prefix("step ").and_then(Step::parse) {
                cb(step);
            }
        }) as crate::ssh::OnEvent
    });
    let input = ExecInput {
        stdin: secret.map(String::into_bytes),
        on_event,
    };
    let cmd = format!("sh -c {}", sh_quote(&script));
    // Each step keeps its own deadline: the session gets one per step it runs.
    let steps = names.len().max(1) as u32;
    let mut out = ex
        .exec_with(target, &cmd, input, STEP_TIMEOUT * steps)
        .await?;
    if out.status == Some(MISSING_EXIT) {
        if let Some(e) = missing_programs(recipe, &out.host, &out.stderr_str()) {
            return Err(e);
        }
    }
    if out.status == Some(PORT_IN_USE_EXIT) {
        if let Some(e) = port_in_use(&out.host, spec, &out.stderr_str()) {
            return Err(e);
        }
    }
    // Errors name the steps, not the whole script.
    out.command = format!("{} {}", recipe.name(), names.join(", "));
    out.checked()
        .map(|_| ())
        .map_err(|e| recipe.batch_error(spec, e))
}

/// Deadline of one recipe step (initialise and start on a busy host can take a while); a
/// session running several steps gets one per step.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// Single-quotes `s` for a POSIX shell (used by recipes and the probe).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Shell condition: the process `$pid` lives. A zombie does not: a server killed but not yet
/// reaped (its parent after `setsid` is init, which may take its time) still answers
/// `kill -0`, and taking it for the running server made a start step skip the launch.
const PID_LIVES: &str = r#"kill -0 "$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' /proc/$pid/status 2>/dev/null"#;

/// Shell snippet: stop the process whose pid is in `$1` (a pid file) with `sig`, wait up to
/// 60 s for it to go, then SIGKILL; succeeds when no such process is left.
pub(crate) fn stop_by_pid_file(pid_file: &str, sig: &str) -> String {
    format!(
        r#"pf={pf}
if [ -f "$pf" ]; then
  pid=$(head -n1 "$pf" | tr -dc 0-9)
  if [ -n "$pid" ] && {PID_LIVES}; then
    kill -{sig} "$pid" 2>/dev/null
    i=0
    while {PID_LIVES} && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    if {PID_LIVES}; then kill -KILL "$pid"; sleep 0.5; fi
  fi
  rm -f "$pf"
fi"#,
        pf = sh_quote(pid_file)
    )
}

/// Shell script removing an instance directory (and `kunlun/` when it was the last one);
/// `None` for a directory that [`validate_base_dir`] refuses.
pub(crate) fn remove_dirs_script(base: &str) -> Option<String> {
    validate_base_dir(base).ok()?;
    Some(format!(
        "rm -rf {b} && (rmdir \"$(dirname {b})\" 2>/dev/null; exit 0)",
        b = sh_quote(base)
    ))
}

/// Shell snippet: exit 0 if the pid in `pid_file` is a live process (not a zombie), 1
/// otherwise.
pub(crate) fn alive_by_pid_file(pid_file: &str) -> String {
    format!(
        r#"pf={pf}; [ -f "$pf" ] && pid=$(head -n1 "$pf" | tr -dc 0-9) && [ -n "$pid" ] && {PID_LIVES}"#,
        pf = sh_quote(pid_file)
    )
}

/// Checks a user name and password are safe to put in a quoted SQL literal.
pub(crate) fn check_user(u: &DbUser) -> Result<()> {
    let name_ok = !u.name.is_empty()
        && u.name.len() <= 32
        && u.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    let pwd_ok = !u.password.is_empty() && !u.password.contains(['\'', '\\', '\0']);
    if name_ok && pwd_ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "system user {:?}: names are [A-Za-z0-9_]{{1,32}}, passwords non-empty without quotes or backslashes",
            u.name
        )))
    }
}

/// A random password of 24 characters from `[A-Za-z0-9]`.
pub fn random_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_server_not_yet_reaped_is_not_alive() {
        let dir = std::env::temp_dir().join(format!("kl_alive_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pf = dir.join("server.pid");
        let script = alive_by_pid_file(pf.to_str().unwrap());
        let alive = || {
            std::process::Command::new("sh")
                .args(["-c", &script])
                .status()
                .unwrap()
                .success()
        };
        assert!(!alive(), "no pid file");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&pf, format!("{}\n", child.id())).unwrap();
        assert!(alive());
        // Killed but not waited for: a zombie until reaped.
        child.kill().unwrap();
        let status = format!("/proc/{}/status", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&status)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the child became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(), "a zombie is not the running server");
        child.wait().unwrap();
        assert!(!alive(), "reaped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn base_dirs_are_checked_before_anything_is_removed() {
        let d = InstanceSpec::base_dir_for("/data/", InstanceKind::Storage, 57001);
        assert_eq!(d, "/data/kunlun/storage_57001");
        validate_base_dir(&d).unwrap();
        validate_base_dir("/x/kunlun/compute_47001").unwrap();
        for bad in [
            "/",
            "",
            "data/kunlun/storage_1",
            "/data/kunlun/../storage_1",
            "/data/storage_1",
            "/data/kunlun/storage_x",
            "/data/kunlun/other_1",
            "/data/kunlun/storage_1 ; rm -rf /",
        ] {
            assert!(validate_base_dir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn step_names_round_trip() {
        for s in INSTALL_STEPS.iter().chain(&[Step::Stop, Step::RemoveDirs]) {
            assert_eq!(Step::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Step::parse("drop_everything"), None);
    }

    #[test]
    fn listen_patterns_match_the_proc_net_spellings() {
        // 127.0.0.1:57001 as /proc/net/tcp prints it on a little-endian host.
        let p = proc_net_listen_pattern("127.0.0.1", 57001);
        assert_eq!(
            p,
            "(0100007F|00000000|0000000000000000FFFF00000100007F|00000000000000000000000000000000):DEA9"
        );
        let p6 = proc_net_listen_pattern("::1", 5432);
        assert_eq!(
            p6,
            "(00000000000000000000000001000000|00000000000000000000000000000000):1538"
        );
        assert_eq!(proc_net_listen_pattern("db1.example", 80), "[0-9A-F]+:0050");
    }

    #[test]
    fn a_port_in_use_line_becomes_its_error() {
        let spec = InstanceSpec {
            bind_address: "127.0.0.9".into(),
            port: 57001,
            base_dir: "/d/kunlun/storage_57001".into(),
            server_id: 1,
            buffer_mb: 64,
            max_connections: 10,
            semi_sync: false,
            users: vec![],
        };
        let err = port_in_use(
            "h",
            &spec,
            "noise\nkunlun-port-in-use: another process already listens on 127.0.0.9:57001\n",
        )
        .expect("a marker line");
        assert!(matches!(err, Error::PortInUse { port: 57001, .. }));
        assert!(err.to_string().contains("port_in_use"), "{err}");
        assert!(port_in_use("h", &spec, "mariadbd did not answer").is_none());
        let script = port_free_check(&spec);
        assert!(script.contains("exit 96"), "{script}");
        assert!(start_failed("mariadbd", &spec, "/l/error.log").contains("already in use"));
    }

    #[test]
    fn quoting_and_user_checks() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        let ok = DbUser {
            name: "clustmgr".into(),
            password: random_password(),
            role: UserRole::Admin,
        };
        check_user(&ok).unwrap();
        assert_eq!(ok.password.len(), 24);
        assert_ne!(ok.password, random_password());
        assert!(!format!("{ok:?}").contains(&ok.password));
        let mut bad = ok.clone();
        bad.password = "x'; DROP".into();
        assert!(check_user(&bad).is_err());
        bad = ok;
        bad.name = "a b".into();
        assert!(check_user(&bad).is_err());
    }
}
