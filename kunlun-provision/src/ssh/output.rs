//! `Output`: what a remote command produced, as data.
//!
//! Invariant: `status` is `Some(code)` exactly when the command exited normally; a command
//! killed by a signal has `status == None` and `signal == Some(name)`.

use crate::error::{Error, Result};

/// How much of stderr an error message carries.
const TAIL_BYTES: usize = 2048;

/// Result of a remote command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `host:port` it ran on.
    pub host: String,
    /// The command line as given.
    pub command: String,
    /// Exit code, `None` if it died of a signal.
    pub status: Option<i32>,
    /// Signal name (`KILL`, `TERM`, …) if it died of one.
    pub signal: Option<String>,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Stdout as text (lossy UTF-8).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy UTF-8).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `Ok(self)` on exit 0, else [`Error::RemoteFailed`] with the command and stderr's tail.
    pub fn checked(self) -> Result<Output> {
        if self.success() {
            return Ok(self);
        }
        let status = match (&self.status, &self.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "no exit status".to_string(),
        };
        Err(Error::RemoteFailed {
            host: self.host.clone(),
            command: self.command.clone(),
            status,
            stderr_tail: tail(&self.stderr, TAIL_BYTES),
        })
    }
}

/// The last `max` bytes of `bytes` as trimmed text, starting at a line boundary when one is
/// near, prefixed with `…` when cut.
pub(crate) fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    let cut = cut.split_once('\n').map_or(cut, |(_, rest)| rest);
    format!("…{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(status: Option<i32>, stderr: &str) -> Output {
        Output {
            host: "h:22".into(),
            command: "false".into(),
            status,
            signal: None,
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn checked_passes_success_and_reports_failure() {
        assert!(out(Some(0), "").checked().is_ok());
        let err = out(Some(3), "line1\nboom\n")
            .checked()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`false` failed with exit 3"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn tail_keeps_the_end_on_a_line_boundary() {
        let long = format!("{}\nlast line", "x".repeat(5000));
        let t = tail(long.as_bytes(), 100);
        assert_eq!(t, "…last line");
        assert_eq!(tail(b"short\n", 100), "short");
    }
}
