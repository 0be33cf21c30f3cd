//! Secrets at rest: the daemon's files (SQLite store with its `-wal`/`-shm`, log, SSH
//! `known_hosts`) are readable by the daemon's user only.
//!
//! Invariants: after [`restrict_umask`] everything the process creates is `0600` (files) or
//! `0700` (dirs); [`secure_existing`] narrows files left wider by an older version to `0600`
//! and our own data dirs to `0700`, logging each change. A directory is only narrowed when the
//! daemon's user owns it and it has no sticky bit, so a shared one (`/tmp`, `/var/log` when
//! not running as root) is never changed, only warned about.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{Config, MetaBackend};

/// Sets the process umask to `077`. Call first thing in `main`, before any file is created.
pub fn restrict_umask() {
    use nix::sys::stat::{umask, Mode};
    umask(Mode::from_bits_truncate(0o077));
}

/// The files holding secrets and the dirs that are ours, for `config`.
fn secret_paths(config: &Config) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut dirs = vec![config.tmp_data_path.clone()];
    if config.meta_backend == MetaBackend::Sqlite {
        let p = &config.sqlite_path;
        files.push(p.clone());
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut s = p.as_os_str().to_owned();
            s.push(suffix);
            files.push(PathBuf::from(s));
        }
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(d.to_path_buf());
        }
    }
    if let Some(log) = &config.log_file {
        files.push(log.clone());
    }
    files.push(config.tmp_data_path.join("known_hosts"));
    (files, dirs)
}

/// What [`secure_existing`] changed or could not change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Narrowed {
    /// `(path, old mode)` of each file or dir narrowed.
    pub changed: Vec<(PathBuf, u32)>,
    /// Dirs left group/world-accessible because they are not ours alone.
    pub left_open: Vec<PathBuf>,
}

/// Narrows the modes of existing secret files to `0600` and our dirs to `0700`; logs each.
pub fn secure_existing(config: &Config) -> std::io::Result<Narrowed> {
    let (files, dirs) = secret_paths(config);
    let mut out = Narrowed::default();
    for f in files {
        narrow(&f, 0o600, &mut out)?;
    }
    let uid = nix::unistd::geteuid().as_raw();
    for d in dirs {
        let Ok(md) = std::fs::metadata(&d) else {
            continue;
        };
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        if md.uid() != uid || mode & 0o1000 != 0 {
            tracing::warn!(dir = %d.display(), mode = format!("{mode:o}"), "a directory of the daemon's data is open to other users and not owned by it alone; left as is");
            out.left_open.push(d);
            continue;
        }
        narrow(&d, 0o700, &mut out)?;
    }
    Ok(out)
}

fn narrow(path: &Path, want: u32, out: &mut Narrowed) -> std::io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if md.file_type().is_symlink() {
        tracing::warn!(path = %path.display(), "a symlink where a secret file belongs; left as is");
        return Ok(());
    }
    let mode = md.permissions().mode() & 0o7777;
    if mode & !want == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & want))?;
    tracing::warn!(path = %path.display(), old_mode = format!("{mode:o}"), new_mode = format!("{:o}", mode & want), "narrowed the mode of a file holding secrets");
    out.changed.push((path.to_path_buf(), mode));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_files_and_our_dirs_are_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = data.join("m.sqlite3");
        let wal = data.join("m.sqlite3-wal");
        for f in [&db, &wal] {
            std::fs::write(f, b"x").unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let config = Config {
            sqlite_path: db.clone(),
            tmp_data_path: data.clone(),
            ..Config::default()
        };
        let got = secure_existing(&config).unwrap();
        assert_eq!(got.changed.len(), 3, "{got:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&db), mode(&wal), mode(&data)), (0o600, 0o600, 0o700));
        assert_eq!(secure_existing(&config).unwrap(), Narrowed::default());
    }
}
