//! Reading an SSH private key file ourselves, so that `ssh_key_path` cannot name a device, a
//! FIFO, another user's file or anything outside the configured keys directory.
//!
//! Invariant: the bytes handed to libssh2 come from a regular file that was opened without
//! following a final symlink and without blocking (`O_NOFOLLOW | O_NONBLOCK`), checked with
//! `fstat` on the opened descriptor (not the path: no check-then-open race), owned by this
//! process's effective user, without group or other permission bits, at most
//! [`MAX_KEY_BYTES`] long, and, when a keys directory is set, whose canonical path lies
//! under the canonical keys directory (a symlink in the path cannot escape it). Every refusal
//! reads the same way to the caller ("not an acceptable key file: ..."): it says what the
//! operator must fix without telling a missing file from an unreadable one.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Upper bound of a private key file (an RSA-16384 key in PEM is about 12 KiB).
pub const MAX_KEY_BYTES: u64 = 64 * 1024;

/// What the operator is told for every key that cannot be used; `why` adds what to fix.
fn refuse(path: &Path, why: &str) -> Error {
    Error::KeyFile {
        path: path.display().to_string(),
        reason: why.to_string(),
    }
}

/// The key file at `path`, checked as the module doc says; `keys_dir` (if set) confines it.
pub fn read_private_key(path: &Path, keys_dir: Option<&Path>) -> Result<Vec<u8>> {
    if !path.is_absolute() {
        return Err(refuse(path, "the path must be absolute"));
    }
    let place = match keys_dir {
        Some(dir) => format!(
            "it must be a regular file under the keys directory {} (ssh_keys_dir), owned by \
             the daemon's user, mode 0600, at most {} KiB",
            dir.display(),
            MAX_KEY_BYTES / 1024
        ),
        None => format!(
            "it must be a regular file owned by the daemon's user, mode 0600, at most {} KiB",
            MAX_KEY_BYTES / 1024
        ),
    };
    let unusable = || refuse(path, &place);
    if let Some(dir) = keys_dir {
        // Canonical forms on both sides: `..` and symlinks anywhere in the path are resolved
        // before the prefix test. A path that does not resolve gets the same answer as one
        // outside the dir.
        let dir = dir.canonicalize().map_err(|_| unusable())?;
        let real = path.canonicalize().map_err(|_| unusable())?;
        if !real.starts_with(&dir) || real == dir {
            return Err(unusable());
        }
        // The path as given must itself resolve inside: open the canonical one below, so a
        // symlink swapped in after this check is not followed (O_NOFOLLOW on the last part;
        // the parents are the canonical dirs just checked).
        return read_checked(&real, &unusable);
    }
    read_checked(path, &unusable)
}

fn read_checked(path: &Path, unusable: &dyn Fn() -> Error) -> Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|_| unusable())?;
    let meta = file.metadata().map_err(|_| unusable())?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_file()
        || meta.uid() != euid
        || meta.mode() & 0o077 != 0
        || meta.len() > MAX_KEY_BYTES
    {
        return Err(unusable());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The cap holds even if the file grows between fstat and read.
    (&file as &File)
        .take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| unusable())?;
    if bytes.len() as u64 > MAX_KEY_BYTES || bytes.is_empty() {
        return Err(unusable());
    }
    Ok(bytes)
}

/// The keys directory as the daemon creates it: `dir` made (0700) if missing.
pub fn ensure_keys_dir(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    dir.canonicalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"-----BEGIN OPENSSH PRIVATE KEY-----\nx\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn refused(r: Result<Vec<u8>>) -> String {
        match r {
            Err(e @ Error::KeyFile { .. }) => e.to_string(),
            other => panic!("expected a key file refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_0600_regular_file_in_the_dir_is_read() {
        let d = tempfile::tempdir().unwrap();
        let k = key(d.path(), "id", 0o600);
        assert!(read_private_key(&k, Some(d.path()))
            .unwrap()
            .starts_with(b"-----BEGIN"));
        assert!(read_private_key(&k, None).is_ok());
    }

    #[test]
    fn group_or_other_bits_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let k = key(d.path(), "id", mode);
            let e = refused(read_private_key(&k, Some(d.path())));
            assert!(
                e.contains("not an acceptable key file") && e.contains("0600"),
                "{e}"
            );
        }
    }

    #[test]
    fn devices_fifos_and_dirs_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A FIFO with no writer: a blocking open would hang here forever.
        refused(read_private_key(&fifo, Some(d.path())));
        refused(read_private_key(&fifo, None));
        for dev in ["/dev/kmsg", "/dev/zero", "/dev/null", "/dev/tty"] {
            refused(read_private_key(Path::new(dev), None));
            refused(read_private_key(Path::new(dev), Some(d.path())));
        }
        refused(read_private_key(d.path(), None));
    }

    #[test]
    fn outside_the_dir_or_escaping_by_symlink_or_dotdot_is_refused() {
        let keys = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let outside = key(other.path(), "id", 0o600);
        refused(read_private_key(&outside, Some(keys.path())));
        let link = keys.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let e = refused(read_private_key(&link, Some(keys.path())));
        assert!(e.contains("ssh_keys_dir"), "{e}");
        let dotdot = keys
            .path()
            .join("..")
            .join(other.path().file_name().unwrap())
            .join("id");
        refused(read_private_key(&dotdot, Some(keys.path())));
        // Without a keys dir a final symlink is still not followed.
        refused(read_private_key(&link, None));
        // A symlink inside the dir to a key inside the dir is fine (it resolves inside).
        let inside = key(keys.path(), "real", 0o600);
        let ok_link = keys.path().join("alias");
        std::os::unix::fs::symlink(&inside, &ok_link).unwrap();
        read_private_key(&ok_link, Some(keys.path())).unwrap();
    }

    #[test]
    fn missing_relative_empty_and_oversized_are_refused_alike() {
        let d = tempfile::tempdir().unwrap();
        let missing = refused(read_private_key(&d.path().join("nope"), Some(d.path())));
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_KEY_BYTES as usize + 1]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        let too_big = refused(read_private_key(&big, Some(d.path())));
        // Same sentence for a missing and an oversized file: no file-existence oracle.
        assert_eq!(
            missing.replace("nope", "X"),
            too_big.replace("big", "X"),
            "uniform refusals"
        );
        let empty = key(d.path(), "empty", 0o600);
        std::fs::write(&empty, b"").unwrap();
        refused(read_private_key(&empty, Some(d.path())));
        refused(read_private_key(Path::new("relative/id"), None));
    }

    #[test]
    fn another_users_file_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return; // chown needs root; the rest of the checks are covered above
        }
        let d = tempfile::tempdir().unwrap();
        let k = key(d.path(), "id", 0o600);
        nix::unistd::chown(&k, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        refused(read_private_key(&k, Some(d.path())));
    }
}
