//! Host key verification against an OpenSSH `known_hosts` file, and accept-new recording.
//!
//! Invariant: authentication never starts before the offered key matched a recorded one, or
//! (accept-new, or a pinned fingerprint equal to the offered key's) the host had no recorded
//! key and this one was appended to the file. A pin that differs from the offered key refuses
//! the host even when `known_hosts` has its key. Existing lines of the file are never rewritten.

use std::fs;
use std::io::Write;
use std::sync::Mutex;

use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};

use super::{HostKeyPolicy, SshTarget};
use crate::error::{Error, Result};

/// Serialises appends to known_hosts files within this process.
static APPEND: Mutex<()> = Mutex::new(());

pub(crate) fn verify(session: &Session, target: &SshTarget) -> Result<()> {
    let label = target.label();
    let (key, key_type) = session.host_key().ok_or_else(|| Error::Disconnected {
        host: label.clone(),
        reason: "the server sent no host key".to_string(),
    })?;
    let type_name = key_type_name(key_type);
    let offered = session
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64(h, false)))
        .unwrap_or_else(|| "SHA256:?".to_string());
    if let Some(pin) = &target.host_key_pin {
        if !same_fingerprint(pin, &offered) {
            return Err(Error::HostKeyPinMismatch {
                host: label.clone(),
                key_type: type_name.to_string(),
                offered: offered.clone(),
                pinned: pin.clone(),
            });
        }
    }
    let check = || -> Result<CheckResult> {
        let mut kh = session
            .known_hosts()
            .map_err(|e| Error::Local(format!("known_hosts: {}", e.message())))?;
        match fs::metadata(&target.known_hosts) {
            Ok(_) => {
                kh.read_file(&target.known_hosts, KnownHostFileKind::OpenSSH)
                    .map_err(|e| {
                        Error::Local(format!(
                            "reading {}: {}",
                            target.known_hosts.display(),
                            e.message()
                        ))
                    })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Local(format!(
                    "reading {}: {e}",
                    target.known_hosts.display()
                )))
            }
        }
        Ok(kh.check_port(&target.host, target.port, key))
    };
    let mismatch = || Error::HostKeyMismatch {
        host: label.clone(),
        key_type: type_name.to_string(),
        offered: offered.clone(),
        known_hosts: target.known_hosts.clone(),
    };
    match check()? {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(mismatch()),
        CheckResult::Failure => Err(Error::Local(format!(
            "checking the host key of {label} against {} failed",
            target.known_hosts.display()
        ))),
        CheckResult::NotFound => match target.host_key_policy {
            HostKeyPolicy::Strict if target.host_key_pin.is_none() => Err(Error::HostKeyUnknown {
                host: label.clone(),
                key_type: type_name.to_string(),
                offered: offered.clone(),
                known_hosts: target.known_hosts.clone(),
            }),
            _ => {
                let _guard = APPEND.lock().unwrap_or_else(|e| e.into_inner());
                // Another connection may have recorded it meanwhile.
                match check()? {
                    CheckResult::Match => return Ok(()),
                    CheckResult::Mismatch => return Err(mismatch()),
                    _ => {}
                }
                let line = format!(
                    "{} {type_name} {}\n",
                    host_pattern(&target.host, target.port),
                    base64(key, true)
                );
                append(target, &line)?;
                tracing::info!(host = %label, key = %offered, file = %target.known_hosts.display(),
                    pinned = target.host_key_pin.is_some(), "recorded new host key");
                Ok(())
            }
        },
    }
}

fn append(target: &SshTarget, line: &str) -> Result<()> {
    let path = &target.known_hosts;
    let err = |e: std::io::Error| {
        Error::Local(format!("recording the host key in {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    // Keep the file line-oriented even if its last line lacks a newline.
    let needs_newline = fs::read(path)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    if needs_newline {
        f.write_all(b"\n").map_err(err)?;
    }
    f.write_all(line.as_bytes()).map_err(err)
}

/// libssh2 host key algorithms for the key types recorded for `target` in plain (unhashed)
/// `known_hosts` lines, most preferred first; empty when none (then libssh2's default order
/// applies). Without this, a server offering several key types can negotiate one that is not
/// recorded, and libssh2 reports a mismatch against the recorded one of another type.
pub(crate) fn recorded_algorithms(target: &SshTarget) -> Vec<&'static str> {
    let Ok(text) = fs::read_to_string(&target.known_hosts) else {
        return Vec::new();
    };
    let pattern = host_pattern(&target.host, target.port);
    let mut algs = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(key_type)) = (fields.next(), fields.next()) else {
            continue;
        };
        if hosts.starts_with('#') || hosts.starts_with('@') {
            continue;
        }
        if !hosts.split(',').any(|h| h == pattern) {
            continue;
        }
        let names: &[&'static str] = match key_type {
            "ssh-ed25519" => &["ssh-ed25519"],
            "ecdsa-sha2-nistp256" => &["ecdsa-sha2-nistp256"],
            "ecdsa-sha2-nistp384" => &["ecdsa-sha2-nistp384"],
            "ecdsa-sha2-nistp521" => &["ecdsa-sha2-nistp521"],
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            "ssh-dss" => &["ssh-dss"],
            _ => &[],
        };
        for n in names {
            if !algs.contains(n) {
                algs.push(*n);
            }
        }
    }
    algs
}

/// Whether two `SHA256:` fingerprints are the same key (base64 padding optional).
pub(crate) fn same_fingerprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('=').to_string();
    norm(a) == norm(b)
}

/// `host` on port 22, `[host]:port` otherwise (OpenSSH's known_hosts convention).
pub(crate) fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// Standard base64 (RFC 4648), with or without `=` padding.
pub(crate) fn base64(data: &[u8], pad: bool) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b"", true), "");
        assert_eq!(base64(b"f", true), "Zg==");
        assert_eq!(base64(b"fo", true), "Zm8=");
        assert_eq!(base64(b"foo", true), "Zm9v");
        assert_eq!(base64(b"foob", false), "Zm9vYg");
        assert_eq!(base64(b"foobar", true), "Zm9vYmFy");
    }

    #[test]
    fn recorded_algorithms_follow_plain_lines_for_the_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kh = dir.path().join("known_hosts");
        fs::write(
            &kh,
            "# comment\n[10.0.0.1]:2222 ecdsa-sha2-nistp256 AAAA\n\
             10.0.0.1 ssh-ed25519 AAAA\n\
             other,[10.0.0.1]:2222 ssh-rsa AAAA\n|1|hashed= ssh-ed25519 AAAA\n",
        )
        .expect("write");
        let t = SshTarget::new("10.0.0.1", 2222, "root", "/k", &kh);
        assert_eq!(
            recorded_algorithms(&t),
            [
                "ecdsa-sha2-nistp256",
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ssh-rsa"
            ]
        );
        let t22 = SshTarget::new("10.0.0.1", 22, "root", "/k", &kh);
        assert_eq!(recorded_algorithms(&t22), ["ssh-ed25519"]);
    }

    #[test]
    fn fingerprints_compare_without_padding() {
        assert!(same_fingerprint("SHA256:abc", "SHA256:abc="));
        assert!(!same_fingerprint("SHA256:abc", "SHA256:abd"));
    }

    #[test]
    fn host_pattern_brackets_non_default_ports() {
        assert_eq!(host_pattern("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(host_pattern("127.0.0.2", 2222), "[127.0.0.2]:2222");
    }
}
