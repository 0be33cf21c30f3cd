//! Field validators for everything that arrives from outside (API, CLI, job parameters).
//!
//! Each returns [`Error::Invalid`] with the field name and the reason, so the user can fix the
//! request. They are strict on purpose: names end up in SQL identifiers (per-cluster tables),
//! shell commands and file paths, so only a safe alphabet is accepted.

use crate::error::{Error, Result};

/// Longest name accepted (cluster, shard, user, rack names).
pub const MAX_NAME_LEN: usize = 64;
/// Longest host address accepted (DNS limit).
pub const MAX_HOST_LEN: usize = 253;
/// Longest free text accepted (nick names, descriptions).
pub const MAX_TEXT_LEN: usize = 255;
/// Longest path accepted.
pub const MAX_PATH_LEN: usize = 1024;

fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{field}: {why}"))
}

/// A name: 1..=64 characters of `A-Z a-z 0-9 _ - .`, starting with a letter or digit.
pub fn name(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(invalid(
            field,
            format!("character {c:?} not allowed (use A-Z, a-z, 0-9, '_', '-', '.')"),
        ));
    }
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(field, "must start with a letter or a digit"));
    }
    Ok(())
}

/// Free text shown to people (a cluster's nick name): at most [`MAX_TEXT_LEN`] characters, no
/// control characters (they could rewrite a terminal or a log line when echoed).
pub fn text(field: &str, v: &str) -> Result<()> {
    let n = v.chars().count();
    if n > MAX_TEXT_LEN {
        return Err(invalid(
            field,
            format!("{n} characters, at most {MAX_TEXT_LEN} allowed"),
        ));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!("control character {c:?} not allowed"),
        ));
    }
    Ok(())
}

/// A host address: an IPv4/IPv6 literal or a DNS name.
pub fn hostaddr(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.len() > MAX_HOST_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_HOST_LEN} characters"),
        ));
    }
    if v.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if v.split('.').all(ok_label) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "'{}' is neither an IP address nor a host name",
                v.escape_default()
            ),
        ))
    }
}

/// An OpenSSH SHA-256 host key fingerprint: `SHA256:` and 43 base64 characters (with or
/// without the `=` padding), as `ssh-keygen -l` prints it.
pub fn host_key_fingerprint(field: &str, v: &str) -> Result<()> {
    let b64 = v
        .strip_prefix("SHA256:")
        .map(|b| b.trim_end_matches('='))
        .filter(|b| b.len() == 43)
        .filter(|b| {
            b.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
        });
    match b64 {
        Some(_) => Ok(()),
        None => Err(invalid(
            field,
            "must be a SHA-256 fingerprint like SHA256:<43 base64 characters> (ssh-keygen -lf \
             the host's public key prints it)",
        )),
    }
}

/// The canonical form of an IP address literal, or `None` when `v` is not one (a host name
/// then). Accepts what the C resolver's `inet_aton` accepts for IPv4, so every spelling that
/// reaches the same host maps to one string: `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`
/// and `::ffff:127.0.0.1` are all `127.0.0.1`; IPv6 comes out in its compressed lower-case
/// form (`0:0::1` is `::1`), without brackets or zone.
pub fn canonical_ip(v: &str) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let bare = v
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(v);
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        return Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        });
    }
    inet_aton(bare).map(|n| IpAddr::V4(Ipv4Addr::from(n)))
}

/// `inet_aton(3)`: 1 to 4 parts, each decimal, octal (leading `0`) or hex (`0x`); the last
/// part fills the remaining bytes (`a`, `a.b` with b 24 bits, `a.b.c` with c 16 bits).
fn inet_aton(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let n = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(h, 16).ok()?
        } else if p.len() > 1 && p.starts_with('0') {
            if !p.chars().all(|c| ('0'..='7').contains(&c)) {
                return None;
            }
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            p.parse::<u64>().ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut out: u64 = 0;
    for (i, &n) in head.iter().enumerate() {
        out |= n << (24 - 8 * i as u32);
    }
    Some((out | last) as u32)
}

/// A TCP port other than 0.
pub fn port(field: &str, p: u16) -> Result<()> {
    if p == 0 {
        return Err(invalid(field, "port 0 is not allowed"));
    }
    Ok(())
}

/// An absolute path without control characters, quotes, `;` or `..` components.
pub fn abs_path(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.len() > MAX_PATH_LEN {
        return Err(invalid(
            field,
            format!("longer than {MAX_PATH_LEN} characters"),
        ));
    }
    if !v.starts_with('/') {
        return Err(invalid(
            field,
            format!("'{}' is not an absolute path", v.escape_default()),
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|c| c.is_control() || matches!(c, '\'' | '"' | ';' | '`' | '$' | '\\'))
    {
        return Err(invalid(
            field,
            format!("character {c:?} not allowed in a path"),
        ));
    }
    if v.split('/').any(|c| c == "..") {
        return Err(invalid(field, "'..' is not allowed in a path"));
    }
    Ok(())
}

/// A non-empty list of distinct absolute paths.
pub fn data_dirs(field: &str, dirs: &[String]) -> Result<()> {
    if dirs.is_empty() {
        return Err(invalid(field, "give at least one directory"));
    }
    for d in dirs {
        abs_path(field, d)?;
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = dirs.iter().find(|d| !seen.insert(d.as_str())) {
        return Err(invalid(field, format!("'{d}' is listed twice")));
    }
    Ok(())
}

/// `first-last` with 1024 <= first < last <= 65535; returns the bounds.
pub fn port_range(field: &str, v: &str) -> Result<(u16, u16)> {
    let (a, b) = v.split_once('-').ok_or_else(|| {
        invalid(
            field,
            format!("'{}' is not of the form first-last", v.escape_default()),
        )
    })?;
    let parse = |s: &str| {
        s.trim().parse::<u16>().map_err(|_| {
            invalid(
                field,
                format!("'{}' is not a port number", s.escape_default()),
            )
        })
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a < 1024 {
        return Err(invalid(field, "ports below 1024 are not allowed"));
    }
    if a >= b {
        return Err(invalid(
            field,
            format!("first port {a} must be below last port {b}"),
        ));
    }
    Ok((a, b))
}

/// A positive number when given.
pub fn positive_opt(field: &str, v: Option<i64>) -> Result<()> {
    match v {
        Some(n) if n <= 0 => Err(invalid(field, format!("{n} must be positive"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_spelling_of_an_address_has_one_canonical_form() {
        for v in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "0177.0.0.1",
            "127.0.1",
            "::ffff:127.0.0.1",
            "[::ffff:127.0.0.1]",
            "::FFFF:7F00:1",
        ] {
            assert_eq!(
                canonical_ip(v).map(|a| a.to_string()).as_deref(),
                Some("127.0.0.1"),
                "{v}"
            );
        }
        for (v, want) in [
            ("0:0:0:0:0:0:0:1", "::1"),
            ("[::1]", "::1"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            ("10.1.2.3", "10.1.2.3"),
            ("0", "0.0.0.0"),
        ] {
            assert_eq!(canonical_ip(v).unwrap().to_string(), want, "{v}");
        }
        for v in [
            "localhost",
            "db1.example",
            "256.0.0.1",
            "1.2.3.4.5",
            "127.0.0.256",
            "1.16777216",
            "4294967296",
            "08.1.1.1",
            "0x",
            "1..2",
            "",
            "127.0.0.1.",
        ] {
            assert_eq!(canonical_ip(v), None, "{v}");
        }
    }

    #[test]
    fn host_key_fingerprints_are_sha256_base64() {
        let good = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        host_key_fingerprint("f", good).unwrap();
        host_key_fingerprint("f", &format!("{good}=")).unwrap();
        for bad in [
            "",
            "MD5:aa:bb",
            "SHA256:short",
            &format!("{good}x"),
            &good.replace('u', "-"),
        ] {
            assert!(host_key_fingerprint("f", bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn names() {
        assert!(name("n", "cluster_1657012345_000003").is_ok());
        assert!(name("n", "").is_err());
        assert!(name("n", &"a".repeat(65)).is_err());
        assert!(name("n", "a'b").is_err());
        assert!(name("n", "a;b").is_err());
        assert!(name("n", "données").is_err());
        assert!(name("n", "-x").is_err());
    }

    #[test]
    fn hosts() {
        assert!(hostaddr("h", "127.0.0.2").is_ok());
        assert!(hostaddr("h", "::1").is_ok());
        assert!(hostaddr("h", "db-1.example.org").is_ok());
        assert!(hostaddr("h", "a b").is_err());
        assert!(hostaddr("h", "x;rm -rf /").is_err());
        assert!(hostaddr("h", "").is_err());
    }

    #[test]
    fn ranges_and_paths() {
        assert_eq!(port_range("p", "57000-58000").unwrap(), (57000, 58000));
        assert!(port_range("p", "80-90").is_err());
        assert!(port_range("p", "x-y").is_err());
        assert!(abs_path("d", "/data/kl").is_ok());
        assert!(abs_path("d", "/data/../etc").is_err());
        assert!(abs_path("d", "/data/$(reboot)").is_err());
        assert!(data_dirs("d", &["/a".into(), "/a".into()]).is_err());
    }
}
