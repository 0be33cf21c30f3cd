//! Per-process harness directories and the sweep of leftovers from crashed runs.
//!
//! Invariant: every instance directory lives under this process's owner directory
//! `<root>/<pid>-<start time>`; an owner directory whose process is gone (or whose PID was
//! reused by a process with another start time) belongs to a dead run, and the sweep kills the
//! processes whose command line names it before removing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The directory all harness state lives in: `$KUNLUN_HARNESS_DIR` or `/tmp/kunlun-harness`.
pub fn harness_root() -> PathBuf {
    std::env::var_os("KUNLUN_HARNESS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/kunlun-harness"))
}

/// Start time (clock ticks since boot) of a process, `None` if it does not exist.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th field after the command name (which is field 2).
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's owner directory, created (after sweeping dead owners) on first use.
pub(crate) fn owner_dir() -> Result<&'static Path> {
    static OWNER: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = OWNER.get() {
        return Ok(dir);
    }
    let root = harness_root();
    create_dir_mode(&root, 0o755)?;
    sweep_leftovers();
    let pid = std::process::id();
    let start = process_start_time(pid).context("reading this process's start time")?;
    let dir = root.join(format!("{pid}-{start}"));
    create_dir_mode(&dir, 0o755)?;
    Ok(OWNER.get_or_init(|| dir))
}

fn create_dir_mode(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Kills the processes of dead owners under [`harness_root`] and removes their directories.
/// Runs by itself before a process's first server; public for the harness self-tests. Best
/// effort: a failure to remove one leftover must not stop today's tests, and two processes
/// may sweep at once.
pub fn sweep_leftovers() {
    let Ok(entries) = fs::read_dir(harness_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, start)) = name.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if process_start_time(pid) == Some(start) {
            continue; // owner alive
        }
        let dir = entry.path();
        kill_processes_naming(&dir);
        let _ = fs::remove_dir_all(&dir);
    }
}

/// SIGKILLs every process whose command line mentions `dir` (servers get their directory as
/// an argument: `--datadir`, `-D`, `-f <config>`), which survives PID reuse unlike pid files.
pub(crate) fn kill_processes_naming(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// One instance's directory, removed on drop (unless `KUNLUN_HARNESS_KEEP` is set, to debug).
#[derive(Debug)]
pub struct InstanceDir {
    path: PathBuf,
}

impl InstanceDir {
    /// Creates `<owner dir>/<n>-<kind>` with mode 0755.
    pub fn new(kind: &str) -> Result<InstanceDir> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = owner_dir()?.join(format!("{n}-{kind}"));
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        create_dir_mode(&path, 0o755)?;
        Ok(InstanceDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        if std::env::var_os("KUNLUN_HARNESS_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
