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
//! - passwords never appear on a command line or in an error: SQL that carries them is
//!   uploaded as a mode-0600 file, run, and deleted.
//!
//! A new server kind (MySQL 8 or kunlun-storage from a tarball) is another [`Recipe`]
//! implementation; the engine only sees the trait.

mod mariadb;
mod postgres;

use std::fmt;
use std::time::Duration;

pub use mariadb::MariaDbRecipe;
pub use postgres::PostgresRecipe;

use crate::error::{Error, Result};
use crate::placement::InstanceKind;
use crate::ssh::{SshExecutor, SshTarget};

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
        }
    }
}

/// What a system user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// Everything (the manager, compute-to-storage, the compute node's owner).
    Admin,
    /// Replication only (storage nodes).
    Replication,
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

/// How to install, run and remove one kind of server.
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

    /// Runs one step (install or uninstall), checking before acting.
    async fn run_step(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
        step: Step,
    ) -> Result<()>;

    /// The shell script of a step that is only a script (no upload, no secret), if it is one.
    /// Consecutive script steps run in one SSH session ([`Recipe::run_steps`]): each session
    /// costs a login shell on the machine.
    fn step_script(&self, _spec: &InstanceSpec, _step: Step) -> Option<String> {
        None
    }

    /// How a failed batch of script steps is reported (e.g. with the server's error log).
    fn batch_error(&self, _spec: &InstanceSpec, e: Error) -> Error {
        e
    }

    /// Runs `steps` in order; consecutive script steps share one SSH session, each in its
    /// own subshell, stopping at the first that fails.
    async fn run_steps(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
        steps: &[Step],
    ) -> Result<()> {
        let mut i = 0;
        while i < steps.len() {
            let mut scripts = Vec::new();
            while let Some(s) = steps.get(i).and_then(|&st| self.step_script(spec, st)) {
                scripts.push(s);
                i += 1;
            }
            match scripts.len() {
                0 => {
                    self.run_step(ex, target, spec, steps[i]).await?;
                    i += 1;
                }
                1 => self.run_step(ex, target, spec, steps[i - 1]).await?,
                _ => {
                    let joined: Vec<String> = scripts
                        .iter()
                        .map(|s| format!("(\n{s}\n) || exit $?"))
                        .collect();
                    run(ex, target, &joined.join("\n"))
                        .await
                        .map_err(|e| self.batch_error(spec, e))?;
                }
            }
        }
        Ok(())
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
        validate_base_dir(&spec.base_dir)?;
        self.run_steps(ex, target, spec, self.install_steps()).await
    }

    /// Stops the server and removes its directory; fine on a half-installed or absent instance.
    async fn uninstall(
        &self,
        ex: &SshExecutor,
        target: &SshTarget,
        spec: &InstanceSpec,
    ) -> Result<()> {
        validate_base_dir(&spec.base_dir)?;
        self.run_step(ex, target, spec, Step::Stop).await?;
        self.run_step(ex, target, spec, Step::RemoveDirs).await
    }
}

/// Deadline of one recipe step (initialise and start on a busy host can take a while).
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// Single-quotes `s` for a POSIX shell (used by recipes and the probe).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `script` with `sh -c` and turns a non-zero exit into an error.
pub(crate) async fn run(ex: &SshExecutor, target: &SshTarget, script: &str) -> Result<String> {
    let cmd = format!("sh -c {}", sh_quote(script));
    let out = ex.exec(target, &cmd, STEP_TIMEOUT).await?.checked()?;
    Ok(out.stdout_str())
}

/// Shell snippet: stop the process whose pid is in `$1` (a pid file) with `sig`, wait up to
/// 60 s for it to go, then SIGKILL; succeeds when no such process is left.
pub(crate) fn stop_by_pid_file(pid_file: &str, sig: &str) -> String {
    format!(
        r#"pf={pf}
if [ -f "$pf" ]; then
  pid=$(head -n1 "$pf" | tr -dc 0-9)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -{sig} "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; sleep 0.5; fi
  fi
  rm -f "$pf"
fi"#,
        pf = sh_quote(pid_file)
    )
}

/// Shell snippet: exit 0 if the pid in `pid_file` is a live process, 1 otherwise.
pub(crate) fn alive_by_pid_file(pid_file: &str) -> String {
    format!(
        r#"pf={pf}; [ -f "$pf" ] && pid=$(head -n1 "$pf" | tr -dc 0-9) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null"#,
        pf = sh_quote(pid_file)
    )
}

/// Uploads `sql` (which may hold passwords) as a 0600 file in `dir`, runs `runner` with the
/// file's path substituted for `{file}`, and deletes the file whatever happened.
pub(crate) async fn run_secret_sql(
    ex: &SshExecutor,
    target: &SshTarget,
    dir: &str,
    sql: &str,
    runner: &str,
) -> Result<()> {
    let file = format!("{dir}/.users.sql");
    ex.upload(target, sql.as_bytes().to_vec(), &file, 0o600, STEP_TIMEOUT)
        .await?;
    // Run and remove in one session (each SSH session costs a login shell on the machine);
    // a second removal is tried only when that session may not have run at all.
    let f = sh_quote(&file);
    let cmd = format!(
        "{}; rc=$?; rm -f {f}; exit $rc",
        runner.replace("{file}", &f)
    );
    let result = run(ex, target, &cmd).await;
    if matches!(&result, Err(e) if !matches!(e, Error::RemoteFailed { .. })) {
        let _ = run(ex, target, &format!("rm -f {f}")).await;
    }
    result.map(|_| ())
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
