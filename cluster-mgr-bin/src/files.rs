//! Secrets at rest: the daemon's files (SQLite store with its `-wal`/`-shm`, log, SSH
//! `known_hosts`) are readable by the daemon's user only.
//!
//! Invariants: after [`restrict_umask`] everything the process creates is `0600` (files) or
//! `0700` (dirs); [`secure_existing`] narrows files left wider by an older version to `0600`,
//! logging each change. Existing folders are never changed (they may be shared with what other
//! users need, e.g. instance data dirs next to the store), only warned about when open.

use std::os::unix::fs::PermissionsExt;
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
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
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
    /// `(path, old mode)` of each file narrowed.
    pub changed: Vec<(PathBuf, u32)>,
    /// Existing folders open to other users (warned about, left as they are).
    pub left_open: Vec<PathBuf>,
}

/// Narrows the modes of existing secret files to `0600` (logging each) and reports open
/// folders.
pub fn secure_existing(config: &Config) -> std::io::Result<Narrowed> {
    let (files, dirs) = secret_paths(config);
    let mut out = Narrowed::default();
    for f in files {
        narrow(&f, 0o600, &mut out)?;
    }
    for d in dirs {
        let Ok(md) = std::fs::metadata(&d) else {
            continue;
        };
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            // Never narrowed: the folder may be shared with what others need (the instances'
            // data dirs of a test, a home directory); the files in it are 0600 anyway.
            tracing::warn!(dir = %d.display(), mode = format!("{mode:o}"), "a folder of the daemon's data is open to other users (its files are not); chmod 700 it if nothing else needs it");
            out.left_open.push(d);
        }
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
    fn wide_files_are_narrowed_and_folders_left() {
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
        assert_eq!(got.changed.len(), 2, "{got:?}");
        assert_eq!(got.left_open, vec![data.clone()]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&db), mode(&wal), mode(&data)), (0o600, 0o600, 0o755));
        assert!(secure_existing(&config).unwrap().changed.is_empty());
    }
}
