//! Machine probe: one SSH command gathers CPU cores, memory, OS, free space of each data dir
//! and which server binaries exist; a pure check turns missing pieces into a refusal.
//!
//! Invariant: probing changes nothing on the machine (read-only commands only), and a machine
//! is accepted only when every data dir is a writable directory and every required binary is
//! executable, so an install never fails later for a reason the probe could have seen.

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
}

/// A data dir as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirFacts {
    pub path: String,
    /// Free space in MB; `None` when the dir is missing or not writable.
    pub free_mb: Option<u64>,
}

/// The probe script (read-only). Output: `key=value` lines.
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
            "if [ -d {q} ] && [ -w {q} ]; then echo \"dir=$(df -Pk {q} | awk 'NR==2 {{print $4}}') \"{q}; \
             else echo \"dir=- \"{q}; fi\n"
        ));
    }
    for b in binaries {
        let q = sh_quote(b);
        s.push_str(&format!(
            "if [ -x {q} ]; then echo \"bin=1 \"{q}; else echo \"bin=0 \"{q}; fi\n"
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
                if let Some((free, path)) = value.split_once(' ') {
                    f.dirs.push(DirFacts {
                        path: path.to_string(),
                        free_mb: free.parse::<u64>().ok().map(|kb| kb / 1024),
                    });
                }
            }
            "bin" => match value.split_once(' ') {
                Some(("1", path)) => f.binaries.push(path.to_string()),
                Some((_, path)) => f.missing_binaries.push(path.to_string()),
                None => {}
            },
            _ => {}
        }
    }
    f
}

/// Refuses a machine that cannot host instances; the reason names every problem found.
pub fn check(host: &str, facts: &MachineFacts) -> Result<()> {
    let mut problems = Vec::new();
    if !facts.kernel.starts_with("Linux") {
        problems.push(format!("unsupported OS {:?} (Linux only)", facts.kernel));
    }
    if facts.cpu_cores == 0 || facts.mem_mb == 0 {
        problems.push("could not read CPU cores or memory".to_string());
    }
    for d in &facts.dirs {
        if d.free_mb.is_none() {
            problems.push(format!("data dir {} is missing or not writable", d.path));
        }
    }
    if !facts.missing_binaries.is_empty() {
        problems.push(format!(
            "missing server binaries: {}",
            facts.missing_binaries.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused {
            host: host.to_string(),
            reason: problems.join("; "),
        })
    }
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
                       dir=1048576 /data/a b\ndir=- /nope\nbin=1 /usr/sbin/mariadbd\nbin=0 /usr/bin/initdb\n";

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
                    free_mb: Some(1024)
                },
                DirFacts {
                    path: "/nope".into(),
                    free_mb: None
                },
            ]
        );
        assert_eq!(f.binaries, vec!["/usr/sbin/mariadbd"]);
        assert_eq!(f.missing_binaries, vec!["/usr/bin/initdb"]);
    }

    #[test]
    fn refusal_names_every_problem_and_a_good_machine_passes() {
        let err = check("h:22", &parse(OUT)).unwrap_err().to_string();
        assert!(err.contains("h:22: refused"), "{err}");
        assert!(err.contains("data dir /nope is missing"), "{err}");
        assert!(
            err.contains("missing server binaries: /usr/bin/initdb"),
            "{err}"
        );
        let good = OUT.replace("dir=- /nope\n", "").replace("bin=0", "bin=1");
        check("h:22", &parse(&good)).unwrap();
        let bsd = good.replace("kernel=Linux 6.1.0", "kernel=FreeBSD 14");
        assert!(check("h", &parse(&bsd))
            .unwrap_err()
            .to_string()
            .contains("unsupported OS"));
        assert!(check("h", &parse("")).is_err(), "no facts, no machine");
    }

    #[test]
    fn script_quotes_paths() {
        let s = script(&["/d/it's".into()], &["/b/x y".into()]);
        assert!(s.contains(r"'/d/it'\''s'"), "{s}");
        assert!(s.contains("'/b/x y'"), "{s}");
    }
}
