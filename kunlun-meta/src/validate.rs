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
