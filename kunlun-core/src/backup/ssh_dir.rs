//! [`SshDirStorage`]: a backup storage that is a directory on a registered machine, reached over
//! SSH with the manager's own executor (no agent, no extra service on the machine).
//!
//! Invariants (beyond the [`BackupStore`] contract):
//! - the root is an absolute path of `[A-Za-z0-9._-]` segments ([`check_root`]) and every path
//!   reaches the remote shell through [`sh_quote`], so no input can run a command;
//! - every remote script runs with `umask 077`: files are 0600 and directories 0700 (backups
//!   hold the clusters' data);
//! - a stream is written to `<rel>.part-<random>` next to its final name; the storage machine
//!   computes its SHA-256 while the bytes arrive, fsyncs the file, renames it and fsyncs the
//!   directory; on failure the sink script removes its temporary files itself, and since a
//!   killed sink (source failed, deadline) cannot, the manager then runs a cleanup command for
//!   that exact temporary name too.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kunlun_provision::recipe::sh_quote;
use kunlun_provision::ssh::ExecInput;
use kunlun_provision::{SshExecutor, SshTarget};

use super::store::{check_rel, BackupStore, Endpoint, Got, Space, Stored};
use crate::error::{Error, ProbeFailure, Result};

/// Longest root path accepted.
pub const MAX_ROOT_LEN: usize = 1024;

/// How long the cleanup after a failed put may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks a storage root: absolute, at most [`MAX_ROOT_LEN`] bytes, segments of
/// `[A-Za-z0-9._-]`, no empty, `.` or `..` segment, not `/` itself; a trailing `/` is dropped.
/// Returns the normalised path.
pub fn check_root(path: &str) -> Result<String> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let bad = |why: &str| Err(Error::Invalid(format!("path {path:?}: {why}")));
    if !trimmed.starts_with('/') {
        return bad("must be an absolute path");
    }
    if trimmed.len() > MAX_ROOT_LEN {
        return bad(&format!("longer than {MAX_ROOT_LEN} bytes"));
    }
    let segments: Vec<&str> = trimmed[1..].split('/').collect();
    if trimmed.len() == 1 || segments.is_empty() {
        return bad("the root directory itself cannot be a backup storage");
    }
    for s in segments {
        if s.is_empty() || s == "." || s == ".." {
            return bad("no empty, `.` or `..` segment");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad("segments are made of A-Z a-z 0-9 . _ - only");
        }
    }
    Ok(trimmed.to_string())
}

/// A random-enough suffix for temporary names (unique per process and call).
fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A directory on a machine, reached over SSH.
#[derive(Clone)]
pub struct SshDirStorage {
    ssh: SshExecutor,
    target: SshTarget,
    root: String,
}

impl std::fmt::Debug for SshDirStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What the sink script prints on success: `<bytes> <sha256>`.
fn parse_stored(rel: &str, stdout: &str) -> Result<Stored> {
    let mut it = stdout.split_whitespace();
    let bytes = it.next().and_then(|b| b.parse::<u64>().ok());
    let sha = it.next().filter(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    match (bytes, sha) {
        (Some(bytes), Some(sha)) => Ok(Stored {
            rel: rel.to_string(),
            bytes,
            sha256: sha.to_string(),
        }),
        _ => Err(Error::Internal(format!(
            "backup storage: unexpected answer {:?} for {rel}",
            stdout.chars().take(200).collect::<String>()
        ))),
    }
}

/// Shell function `h`: the SHA-256 of stdin as hex first on its line. OpenSSL's when the
/// machine has it (with the CPU's SHA instructions: about 4x coreutils' `sha256sum`, which
/// took a core for 7 s per GB while a snapshot streamed in), else `sha256sum`.
const SHA256_FN: &str =
    "h() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; \
                         else sha256sum; fi; }";

/// The parent directory of `rel` under `root` (the root itself for a top-level file).
fn parent_of(root: &str, rel: &str) -> String {
    match rel.rsplit_once('/') {
        Some((dir, _)) => format!("{root}/{dir}"),
        None => root.to_string(),
    }
}

/// Shell script that reads a stream on stdin into `full` atomically: `tmp` while it arrives
/// (SHA-256 computed on the way through a FIFO), fsync, rename, fsync of the directory; prints
/// `<bytes> <sha256>`. On any failure it removes its temporary files and exits non-zero.
/// POSIX `sh` only (no process substitution), so any login shell runs it.
fn sink_script(parent: &str, full: &str, tmp: &str) -> String {
    format!(
        r#"umask 077
{SHA256_FN}
d={d}; f={f}; t={t}
clean() {{ rm -f "$t" "$t.sha" "$t.fifo"; }}
trap 'clean; exit 1' HUP INT TERM PIPE
mkdir -p "$d" || {{ clean; exit 3; }}
mkfifo "$t.fifo" || {{ clean; exit 3; }}
h < "$t.fifo" > "$t.sha" &
p=$!
tee "$t.fifo" > "$t"; r=$?
wait $p; s=$?
if [ $r -ne 0 ] || [ $s -ne 0 ]; then clean; exit 4; fi
sum=$(cut -c1-64 "$t.sha"); n=$(wc -c < "$t" | tr -d ' ')
sync "$t" && mv -f "$t" "$f" || {{ clean; exit 5; }}
sync "$d" || {{ rm -f "$f"; clean; exit 5; }}
rm -f "$t.sha" "$t.fifo"
printf '%s %s\n' "$n" "$sum""#,
        d = sh_quote(parent),
        f = sh_quote(full),
        t = sh_quote(tmp),
    )
}

impl SshDirStorage {
    /// A storage at `root` (checked with [`check_root`]) on the machine `target`.
    pub fn new(ssh: SshExecutor, target: SshTarget, root: &str) -> Result<SshDirStorage> {
        Ok(SshDirStorage {
            ssh,
            target,
            root: check_root(root)?,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The machine's `host:port`.
    pub fn host(&self) -> String {
        self.target.label()
    }

    fn full(&self, rel: &str) -> Result<String> {
        check_rel(rel)?;
        Ok(format!("{}/{rel}", self.root))
    }

    /// A failure of a call on the storage as the error a caller acts on: a full disk says so,
    /// a missing file is `NotFound`, everything else names the storage and the cause.
    fn error(&self, rel: &str, e: kunlun_provision::Error) -> Error {
        use kunlun_provision::Error as P;
        match &e {
            P::RemoteFailed { stderr_tail, .. } if no_space(stderr_tail) => {
                Error::Unavailable(format!(
                    "no space left on {}:{} (writing {rel}); nothing was kept",
                    self.target.host, self.root
                ))
            }
            P::RemoteFailed { stderr_tail, .. } if stderr_tail.contains("kl-no-such-file") => {
                Error::NotFound {
                    what: "backup file",
                    id: format!("{}/{rel} on {}", self.root, self.target.host),
                }
            }
            _ => Error::Unavailable(format!("backup storage {}: {e}", self.describe())),
        }
    }

    /// Removes the temporary files of a failed put (the sink may have been killed before its
    /// own cleanup ran). A failure here is logged: the `.part-` name says what it is.
    async fn cleanup(&self, tmp: &str) {
        let t = sh_quote(tmp);
        let cmd = format!("rm -f {t} {t}.sha {t}.fifo");
        match self.ssh.exec(&self.target, &cmd, CLEANUP_TIMEOUT).await {
            Ok(o) if o.success() => {}
            Ok(o) => {
                tracing::warn!(storage = %self.describe(), tmp, stderr = %o.stderr_str(), "cleanup of a failed backup put failed")
            }
            Err(e) => {
                tracing::warn!(storage = %self.describe(), tmp, error = %e, "cleanup of a failed backup put failed")
            }
        }
    }

    fn tmp_name(full: &str) -> String {
        format!("{full}.part-{}", random_suffix())
    }
}

/// Whether a command's stderr says the disk is full.
fn no_space(stderr: &str) -> bool {
    stderr.contains("No space left on device") || stderr.contains("Disk quota exceeded")
}

/// The probe failure kind of a transport error (for [`BackupStore::space`]'s refusals).
fn probe_kind(e: &kunlun_provision::Error) -> ProbeFailure {
    use kunlun_provision::Error as P;
    match e {
        P::AuthFailed { .. } | P::KeyFile { .. } => ProbeFailure::AuthFailed,
        P::HostKeyMismatch { .. } | P::HostKeyPinMismatch { .. } => ProbeFailure::HostKeyMismatch,
        P::HostKeyUnknown { .. } => ProbeFailure::HostKeyUnknown,
        P::RemoteFailed { .. } | P::RemoteFile { .. } => ProbeFailure::DataDir,
        _ => ProbeFailure::Unreachable,
    }
}

#[async_trait]
impl BackupStore for SshDirStorage {
    fn describe(&self) -> String {
        format!("ssh_dir {}:{}", self.target.label(), self.root)
    }

    /// Creates the root (0700) when missing, proves it writable with a probe file, and reads
    /// the free space with `df`. A failure is [`Error::MachineRefused`] whose kind says what
    /// to fix (unreachable, SSH login, host key, or the directory: `DataDir`).
    async fn space(&self, timeout: Duration) -> Result<Space> {
        let r = sh_quote(&self.root);
        let probe = sh_quote(&format!("{}/.kl-probe-{}", self.root, random_suffix()));
        let cmd = format!(
            r#"umask 077
mkdir -p {r} || exit 3
: > {probe} || exit 4
rm -f {probe}
df -Pk {r} | awk 'NR==2 {{print $4}}'"#
        );
        let refused = |e: kunlun_provision::Error| Error::MachineRefused {
            kind: probe_kind(&e),
            message: format!("backup storage {}: {e}", self.describe()),
        };
        let out = self
            .ssh
            .exec(&self.target, &cmd, timeout)
            .await
            .and_then(|o| o.checked())
            .map_err(refused)?;
        let kb: u64 = out
            .stdout_str()
            .trim()
            .parse()
            .map_err(|_| Error::MachineRefused {
                kind: ProbeFailure::DataDir,
                message: format!(
                    "backup storage {}: cannot read the free space (df printed {:?})",
                    self.describe(),
                    out.stdout_str().trim()
                ),
            })?;
        Ok(Space {
            free_bytes: kb.saturating_mul(1024),
        })
    }

    async fn put(
        &self,
        source: &Endpoint,
        rel: &str,
        rate: Option<u64>,
        timeout: Duration,
    ) -> Result<Stored> {
        let full = self.full(rel)?;
        let tmp = Self::tmp_name(&full);
        let script = sink_script(&parent_of(&self.root, rel), &full, &tmp);
        let piped = self
            .ssh
            .pipe(
                &source.target,
                &source.command,
                &self.target,
                &script,
                rate,
                timeout,
            )
            .await;
        let piped = match piped {
            Ok(p) => p,
            Err(e) => {
                // The temporary file, and `rel` too: a receiver that could not be killed in
                // time got EOF and may have renamed a truncated stream into place.
                self.cleanup(&tmp).await;
                let _ = self.remove(rel, CLEANUP_TIMEOUT).await;
                return Err(self.error(rel, e));
            }
        };
        let stored = match parse_stored(rel, &piped.sink.stdout_str()) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.remove(rel, CLEANUP_TIMEOUT).await;
                return Err(e);
            }
        };
        if stored.bytes != piped.bytes {
            // Cannot happen unless the stream was cut between us and the file: then the file
            // under `rel` is wrong and goes.
            let _ = self.remove(rel, CLEANUP_TIMEOUT).await;
            return Err(Error::Unavailable(format!(
                "backup storage {}: {rel} holds {} bytes but {} were sent; removed",
                self.describe(),
                stored.bytes,
                piped.bytes
            )));
        }
        Ok(stored)
    }

    async fn put_bytes(&self, rel: &str, bytes: &[u8], timeout: Duration) -> Result<Stored> {
        let full = self.full(rel)?;
        let tmp = Self::tmp_name(&full);
        let script = sink_script(&parent_of(&self.root, rel), &full, &tmp);
        let input = ExecInput {
            stdin: Some(bytes.to_vec()),
            on_event: None,
        };
        let out = self
            .ssh
            .exec_with(&self.target, &script, input, timeout)
            .await
            .and_then(|o| o.checked());
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                // The temporary file, and `rel` too: a receiver that could not be killed in
                // time got EOF and may have renamed a truncated stream into place.
                self.cleanup(&tmp).await;
                let _ = self.remove(rel, CLEANUP_TIMEOUT).await;
                return Err(self.error(rel, e));
            }
        };
        let stored = match parse_stored(rel, &out.stdout_str()) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.remove(rel, CLEANUP_TIMEOUT).await;
                return Err(e);
            }
        };
        if stored.bytes != bytes.len() as u64 {
            let _ = self.remove(rel, CLEANUP_TIMEOUT).await;
            return Err(Error::Unavailable(format!(
                "backup storage {}: {rel} holds {} bytes, not {}; removed",
                self.describe(),
                stored.bytes,
                bytes.len()
            )));
        }
        Ok(stored)
    }

    async fn get(&self, rel: &str, sink: &Endpoint, timeout: Duration) -> Result<Got> {
        let f = sh_quote(&self.full(rel)?);
        let cmd = format!("[ -f {f} ] || {{ echo kl-no-such-file >&2; exit 2; }}\nexec cat -- {f}");
        let piped = self
            .ssh
            .pipe(
                &self.target,
                &cmd,
                &sink.target,
                &sink.command,
                None,
                timeout,
            )
            .await
            .map_err(|e| self.error(rel, e))?;
        Ok(Got {
            bytes: piped.bytes,
            stdout: piped.sink.stdout_str(),
        })
    }

    async fn get_bytes(&self, rel: &str, max: usize, timeout: Duration) -> Result<Vec<u8>> {
        let f = sh_quote(&self.full(rel)?);
        let limit = max.saturating_add(1);
        let cmd = format!(
            "[ -f {f} ] || {{ echo kl-no-such-file >&2; exit 2; }}\nexec head -c {limit} -- {f}"
        );
        let out = self
            .ssh
            .exec(&self.target, &cmd, timeout)
            .await
            .and_then(|o| o.checked())
            .map_err(|e| self.error(rel, e))?;
        if out.stdout.len() > max {
            return Err(Error::Invalid(format!(
                "backup file {rel} on {} is larger than {max} bytes",
                self.describe()
            )));
        }
        Ok(out.stdout)
    }

    async fn checksum(&self, rel: &str, timeout: Duration) -> Result<Stored> {
        let f = sh_quote(&self.full(rel)?);
        let cmd = format!(
            r#"{SHA256_FN}
[ -f {f} ] || {{ echo kl-no-such-file >&2; exit 2; }}
n=$(wc -c < {f} | tr -d ' ') || exit 3
s=$(h < {f} | cut -c1-64) || exit 3
printf '%s %s\n' "$n" "$s""#
        );
        let out = self
            .ssh
            .exec(&self.target, &cmd, timeout)
            .await
            .and_then(|o| o.checked())
            .map_err(|e| self.error(rel, e))?;
        parse_stored(rel, &out.stdout_str())
    }

    async fn remove(&self, rel: &str, timeout: Duration) -> Result<()> {
        let f = sh_quote(&self.full(rel)?);
        // Leftover temporary files of `rel` go too (the glob is outside the quotes).
        let cmd = format!("rm -rf -- {f} {f}.part-*");
        self.ssh
            .exec(&self.target, &cmd, timeout)
            .await
            .and_then(|o| o.checked())
            .map_err(|e| self.error(rel, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_absolute_plain_paths() {
        assert_eq!(check_root("/backups").unwrap(), "/backups");
        assert_eq!(
            check_root("/srv/kl-backups_1/").unwrap(),
            "/srv/kl-backups_1"
        );
        assert_eq!(check_root("/a/b.c/d").unwrap(), "/a/b.c/d");
        for bad in [
            "",
            "/",
            "//",
            "backups",
            "./backups",
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a b",
            "/a;rm -rf /",
            "/a$(id)",
            "/a`id`",
            "/a'b",
            "/a\"b",
            "/a\nb",
            "/a|b",
            "/a&b",
            "/a*",
            "/ä",
            &format!("/{}", "x".repeat(MAX_ROOT_LEN)),
        ] {
            assert!(check_root(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sink_answer_is_parsed_strictly() {
        let sha = "a".repeat(64);
        let s = parse_stored("x/y", &format!("12 {sha}\n")).unwrap();
        assert_eq!(
            (s.bytes, s.sha256.as_str(), s.rel.as_str()),
            (12, sha.as_str(), "x/y")
        );
        for bad in [
            "",
            "12",
            &format!("x {sha}"),
            "12 abc",
            &format!("12 {}", "A".repeat(64)),
        ] {
            assert!(parse_stored("r", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_path_in_the_sink_script_is_quoted() {
        let s = sink_script("/b/c", "/b/c/f.x", "/b/c/f.x.part-1");
        assert!(
            s.contains("d='/b/c'; f='/b/c/f.x'; t='/b/c/f.x.part-1'"),
            "{s}"
        );
        assert!(s.starts_with("umask 077\n"));
        assert_eq!(parent_of("/r", "a/b/c"), "/r/a/b");
        assert_eq!(parent_of("/r", "m.json"), "/r");
    }

    #[test]
    fn temporary_names_differ() {
        let a = SshDirStorage::tmp_name("/r/f");
        let b = SshDirStorage::tmp_name("/r/f");
        assert_ne!(a, b);
        assert!(a.starts_with("/r/f.part-"));
    }

    #[test]
    fn a_full_disk_is_recognised() {
        assert!(no_space("tee: standard output: No space left on device"));
        assert!(!no_space("Permission denied"));
    }
}
