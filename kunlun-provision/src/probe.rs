//! Machine probe: one SSH command gathers CPU cores, memory, OS, free space of each data dir
//! and which server binaries exist; a pure check turns missing pieces into a refusal.
//!
//! Invariant: probing changes nothing on the machine (read-only commands only), and a machine
//! is accepted only when every data dir is a writable directory (or can be created under a
//! writable one) and every required binary is executable, so an install never fails later
//! for a reason the probe could have seen.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::recipe::sh_quote;
use crate::ssh::{SshExecutor, SshTarget};

/// Deadline of the probe command (connect included).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the probe saw on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MachineFacts {
    pub cpu_cores: u32,
    pub mem_mb: u64,
    /// `ID VERSION_ID` from `/etc/os-release`, e.g. `debian 12`.
    pub os: String,
    /// `uname -sr`, e.g. `Linux 6.1.0`.
    pub kernel: String,
    pub dirs: Vec<DirFacts>,
    /// Required binaries that are present and executable.
    pub binaries: Vec<String>,
    /// Required binaries that are missing or not executable.
    pub missing_binaries: Vec<String>,
    /// `(missing path, where a program of the same name was found instead)`: on `PATH` or
    /// under `/usr/lib/postgresql/*/bin`, so the refusal can say what to configure.
    #[serde(default)]
    pub found_elsewhere: Vec<(String, String)>,
}

/// A data dir as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirFacts {
    pub path: String,
    /// Free space in MB (of the dir, or of the existing parent it would be created in);
    /// `None` when it is not a writable directory and cannot be created as one.
    pub free_mb: Option<u64>,
    /// The dir exists already (else the install creates it).
    #[serde(default)]
    pub exists: bool,
}

/// Why a probed machine cannot host instances, by what the operator has to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// A server binary the recipe needs is missing or not executable.
    MissingBinaries,
    /// A data dir is not a writable directory and cannot be created as one.
    DataDir,
    /// Not Linux, or CPU and memory could not be read.
    Unsupported,
}

/// The probe script (read-only). Output: `key=value` lines.
///
/// A data dir that does not exist yet is judged by its nearest existing ancestor: it must be
/// a writable directory, so the install can create the data dir under it.
fn script(data_dirs: &[String], binaries: &[String]) -> String {
    let mut s = String::from(
        "echo \"cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)\"\n\
         echo \"mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)\"\n\
         echo \"os=$( (. /etc/os-release 2>/dev/null && echo \"$ID $VERSION_ID\") )\"\n\
         echo \"kernel=$(uname -sr)\"\n",
    );
    for d in data_dirs {
        let q = sh_quote(d);
        s.push_str(&format!(
            "p={q}; while [ ! -e \"$p\" ] && [ \"$p\" != / ]; do p=$(dirname \"$p\"); done; \
             if [ \"$p\" = {q} ]; then e=1; else e=0; fi; \
             if [ -d \"$p\" ] && [ -w \"$p\" ]; then echo \"dir=$(df -Pk \"$p\" | awk 'NR==2 {{print $4}}') $e \"{q}; \
             else echo \"dir=- $e \"{q}; fi\n"
        ));
    }
    for b in binaries {
        let q = sh_quote(b);
        let name = sh_quote(b.rsplit('/').next().unwrap_or(b));
        s.push_str(&format!(
            "if [ -x {q} ]; then echo \"bin=1 \"{q}; else echo \"bin=0 \"{q}; \
             a=$(command -v {name} 2>/dev/null || ls -1d /usr/lib/postgresql/*/bin/{name} 2>/dev/null | tail -n 1); \
             if [ -n \"$a\" ]; then echo \"alt=$a \"{q}; fi; fi\n"
        ));
    }
    s
}

/// Parses the probe output (pure; unit-tested).
pub fn parse(stdout: &str) -> MachineFacts {
    let mut f = MachineFacts::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "cores" => f.cpu_cores = value.trim().parse().unwrap_or(0),
            "mem_kb" => f.mem_mb = value.trim().parse::<u64>().unwrap_or(0) / 1024,
            "os" => f.os = value.trim().to_string(),
            "kernel" => f.kernel = value.trim().to_string(),
            "dir" => {
                let mut parts = value.splitn(3, ' ');
                if let (Some(free), Some(exists), Some(path)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    f.dirs.push(DirFacts {
                        path: path.to_string(),
                        free_mb: free.parse::<u64>().ok().map(|kb| kb / 1024),
                        exists: exists == "1",
                    });
                }
            }
            "bin" => match value.split_once(' ') {
                Some(("1", path)) => f.binaries.push(path.to_string()),
                Some((_, path)) => f.missing_binaries.push(path.to_string()),
                None => {}
            },
            "alt" => {
                if let Some((alt, path)) = value.split_once(' ') {
                    f.found_elsewhere.push((path.to_string(), alt.to_string()));
                }
            }
            _ => {}
        }
    }
    f
}

/// Every problem that keeps the machine from hosting instances, each with a sentence naming
/// what is wrong (pure; empty means the machine is fine).
pub fn problems(facts: &MachineFacts) -> Vec<(Problem, String)> {
    let mut out = Vec::new();
    if !facts.missing_binaries.is_empty() {
        let names: Vec<String> = facts
            .missing_binaries
            .iter()
            .map(
                |path| match facts.found_elsewhere.iter().find(|(p, _)| p == path) {
                    Some((_, alt)) => format!("{path} (a {} exists at {alt})", base_name(path)),
                    None => path.clone(),
                },
            )
            .collect();
        out.push((
            Problem::MissingBinaries,
            format!("missing server binaries: {}", names.join(", ")),
        ));
    }
    for d in &facts.dirs {
        if d.free_mb.is_none() {
            out.push((
                Problem::DataDir,
                format!(
                    "data dir {} is not a writable directory and cannot be created",
                    d.path
                ),
            ));
        }
    }
    if !facts.kernel.starts_with("Linux") {
        out.push((
            Problem::Unsupported,
            format!("unsupported OS {:?} (Linux only)", facts.kernel),
        ));
    }
    if facts.cpu_cores == 0 || facts.mem_mb == 0 {
        out.push((
            Problem::Unsupported,
            "could not read CPU cores or memory".to_string(),
        ));
    }
    out
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Refuses a machine that cannot host instances; the reason names every problem found.
pub fn check(host: &str, facts: &MachineFacts) -> Result<()> {
    let problems = problems(facts);
    if problems.is_empty() {
        Ok(())
    } else {
        let reasons: Vec<String> = problems.into_iter().map(|(_, r)| r).collect();
        Err(Error::Refused {
            host: host.to_string(),
            reason: reasons.join("; "),
        })
    }
}

/// Whether `target` answers over SSH now: runs `true` within `timeout` (connect included).
/// Any error (unreachable, key, host key, timeout, non-zero exit) means not usable.
pub async fn alive(ex: &SshExecutor, target: &SshTarget, timeout: Duration) -> Result<()> {
    ex.exec(target, "true", timeout).await?.checked()?;
    Ok(())
}

/// Probes `target`: connects (transport and key errors come back as such), runs the
/// read-only script, and returns the facts; use [`check`] to accept or refuse them.
pub async fn probe(
    ex: &SshExecutor,
    target: &SshTarget,
    data_dirs: &[String],
    binaries: &[String],
) -> Result<MachineFacts> {
    let cmd = format!("sh -c {}", sh_quote(&script(data_dirs, binaries)));
    let out = ex.exec(target, &cmd, PROBE_TIMEOUT).await?.checked()?;
    Ok(parse(&out.stdout_str()))
}

/// [`probe`] then [`check`].
pub async fn probe_and_check(
    ex: &SshExecutor,
    target: &SshTarget,
    data_dirs: &[String],
    binaries: &[String],
) -> Result<MachineFacts> {
    let facts = probe(ex, target, data_dirs, binaries).await?;
    check(&target.label(), &facts)?;
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "cores=8\nmem_kb=16384000\nos=debian 12\nkernel=Linux 6.1.0\n\
                       dir=1048576 1 /data/a b\ndir=2048 0 /data/new\ndir=- 0 /nope\n\
                       bin=1 /usr/sbin/mariadbd\nbin=0 /usr/bin/initdb\n\
                       alt=/usr/lib/postgresql/16/bin/initdb /usr/bin/initdb\nbin=0 /opt/x\n";

    #[test]
    fn parses_every_fact() {
        let f = parse(OUT);
        assert_eq!(f.cpu_cores, 8);
        assert_eq!(f.mem_mb, 16000);
        assert_eq!(f.os, "debian 12");
        assert_eq!(f.kernel, "Linux 6.1.0");
        assert_eq!(
            f.dirs,
            vec![
                DirFacts {
                    path: "/data/a b".into(),
                    free_mb: Some(1024),
                    exists: true,
                },
                DirFacts {
                    path: "/data/new".into(),
                    free_mb: Some(2),
                    exists: false,
                },
                DirFacts {
                    path: "/nope".into(),
                    free_mb: None,
                    exists: false,
                },
            ]
        );
        assert_eq!(f.binaries, vec!["/usr/sbin/mariadbd"]);
        assert_eq!(f.missing_binaries, vec!["/usr/bin/initdb", "/opt/x"]);
        assert_eq!(
            f.found_elsewhere,
            vec![(
                "/usr/bin/initdb".to_string(),
                "/usr/lib/postgresql/16/bin/initdb".to_string()
            )]
        );
    }

    #[test]
    fn refusal_names_every_problem_and_a_good_machine_passes() {
        let err = check("h:22", &parse(OUT)).unwrap_err().to_string();
        assert!(err.contains("h:22: refused"), "{err}");
        assert!(err.contains("data dir /nope is not a writable"), "{err}");
        assert!(!err.contains("/data/new"), "a creatable dir is fine: {err}");
        assert!(
            err.contains(
                "missing server binaries: /usr/bin/initdb (a initdb exists at \
                 /usr/lib/postgresql/16/bin/initdb), /opt/x"
            ),
            "{err}"
        );
        let kinds: Vec<Problem> = problems(&parse(OUT)).into_iter().map(|p| p.0).collect();
        assert_eq!(kinds, vec![Problem::MissingBinaries, Problem::DataDir]);
        let good = OUT.replace("dir=- 0 /nope\n", "").replace("bin=0", "bin=1");
        check("h:22", &parse(&good)).unwrap();
        let bsd = good.replace("kernel=Linux 6.1.0", "kernel=FreeBSD 14");
        assert!(check("h", &parse(&bsd))
            .unwrap_err()
            .to_string()
            .contains("unsupported OS"));
        assert_eq!(problems(&parse(&bsd))[0].0, Problem::Unsupported);
        assert!(check("h", &parse("")).is_err(), "no facts, no machine");
    }

    #[test]
    fn script_quotes_paths() {
        let s = script(&["/d/it's".into()], &["/b/x y".into()]);
        assert!(s.contains(r"'/d/it'\''s'"), "{s}");
        assert!(s.contains("'/b/x y'"), "{s}");
        assert!(s.contains("command -v 'x y'"), "{s}");
    }

    /// The script itself, run by the local `sh`: an existing dir, one that can be created,
    /// one under a regular file, a present and a missing binary.
    #[test]
    fn script_runs_under_sh_and_judges_dirs_and_binaries() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let existing = tmp.path().display().to_string();
        let creatable = tmp.path().join("a/b/c").display().to_string();
        let under_file = file.join("sub").display().to_string();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(
                &[existing.clone(), creatable.clone(), under_file.clone()],
                &["/bin/sh".into(), "/nonexistent/bin/sh".into()],
            ))
            .output()
            .unwrap();
        let f = parse(&String::from_utf8_lossy(&out.stdout));
        assert!(f.cpu_cores >= 1 && f.mem_mb > 0, "{f:?}");
        let dir = |p: &str| f.dirs.iter().find(|d| d.path == p).cloned().unwrap();
        assert!(dir(&existing).exists && dir(&existing).free_mb.is_some());
        assert!(!dir(&creatable).exists && dir(&creatable).free_mb.is_some());
        assert_eq!(dir(&under_file).free_mb, None);
        assert!(
            !std::path::Path::new(&creatable).exists(),
            "probe is read-only"
        );
        assert_eq!(f.binaries, vec!["/bin/sh"]);
        assert_eq!(f.missing_binaries, vec!["/nonexistent/bin/sh"]);
        assert_eq!(f.found_elsewhere.len(), 1, "sh is on PATH: {f:?}");
    }
}
