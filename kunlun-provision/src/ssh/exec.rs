//! Running one command on a connection: stdout and stderr read together without blocking
//! (so neither stream can stall the other by filling the channel window), bounded by the
//! deadline, and the remote process group killed when the deadline passes.
//!
//! Why the pgid marker: SSH has no dependable way to kill a remote command (closing the
//! channel leaves e.g. `sleep` running, and libssh2 cannot send signal requests). sshd makes
//! the login shell of every session a process-group leader, so the command line is prefixed
//! with `printf 'MARK%s\n' $$ >&2`; that first stderr line (stripped from the output) gives
//! the group to `kill -KILL -- -<pgid>` over a second channel.

use std::io::Read;
use std::time::Duration;

use ssh2::Channel;

use super::conn::{Conn, Deadline};
use super::output::Output;
use crate::error::Result;

const MARK: &str = "kunlun-exec-pgid:";
const CHUNK: usize = 64 * 1024;
/// Longest single socket wait, so the deadline is rechecked often enough.
const MAX_WAIT: Duration = Duration::from_millis(200);

pub(crate) fn exec(
    conn: &mut Conn,
    command: &str,
    deadline: &Deadline,
    kill_timeout: Duration,
) -> Result<Output> {
    conn.blocking(deadline);
    let mut channel = match conn.session.channel_session() {
        Ok(c) => c,
        Err(e) => return Err(conn.fail(&e, deadline, "opening a channel")),
    };
    let wrapped = format!("printf '{MARK}%s\\n' $$ >&2\n{command}");
    conn.work_started = true;
    if let Err(e) = channel.exec(&wrapped) {
        return Err(conn.fail(&e, deadline, "starting the command"));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut pgid: Option<u32> = None;
    conn.session.set_blocking(false);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut progress = false;
        let mut both_eof = true;
        for (stream, sink) in [(0, &mut stdout), (1, &mut stderr)] {
            match read_some(&mut channel, stream, &mut buf) {
                Ok(Some(0)) => {}
                Ok(Some(n)) => {
                    sink.extend_from_slice(&buf[..n]);
                    progress = true;
                    both_eof = false;
                }
                Ok(None) => both_eof = false,
                Err(e) => return Err(conn.fail_io(&e, deadline, "reading command output")),
            }
        }
        if pgid.is_none() {
            pgid = parse_pgid(&stderr);
        }
        if both_eof && channel.eof() {
            break;
        }
        if progress {
            continue;
        }
        if deadline.expired() {
            conn.healthy = false;
            kill_remote(conn, pgid, kill_timeout);
            return Err(deadline.timeout(&conn.label, &format!("`{}`", short(command))));
        }
        conn.wait_socket(deadline.remaining().min(MAX_WAIT))?;
    }
    // Exit status arrives with (or just before) the channel close.
    loop {
        match channel.wait_close() {
            Ok(()) => break,
            Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {
                if deadline.expired() {
                    conn.healthy = false;
                    let what = format!("`{}` exit status", short(command));
                    return Err(deadline.timeout(&conn.label, &what));
                }
                conn.wait_socket(deadline.remaining().min(MAX_WAIT))?;
            }
            Err(e) => return Err(conn.fail(&e, deadline, "closing the channel")),
        }
    }
    let signal = channel.exit_signal().ok().and_then(|s| s.exit_signal);
    let status = match &signal {
        Some(_) => None,
        None => Some(
            channel
                .exit_status()
                .map_err(|e| conn.fail(&e, deadline, "reading the exit status"))?,
        ),
    };
    strip_marker(&mut stderr);
    conn.session.set_blocking(true);
    Ok(Output {
        host: conn.label.clone(),
        command: command.to_string(),
        status,
        signal,
        stdout,
        stderr,
    })
}

/// The command as shown in a timeout error: first line, at most 120 characters.
fn short(command: &str) -> String {
    let line = command.lines().next().unwrap_or_default();
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None if line.len() < command.trim_end().len() => format!("{line} …"),
        None => line.to_string(),
    }
}

/// `Ok(Some(n))` bytes read (0 = end of that stream), `Ok(None)` nothing yet.
fn read_some(channel: &mut Channel, stream: i32, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    let r = if stream == 0 {
        channel.read(buf)
    } else {
        channel.stderr().read(buf)
    };
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The pgid from the marker line, once the whole line has arrived.
fn parse_pgid(stderr: &[u8]) -> Option<u32> {
    let head = &stderr[..stderr.len().min(4096)];
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // A partial UTF-8 char at the cut: the marker line is ASCII and earlier.
        std::str::from_utf8(&head[..head.len().saturating_sub(3)]).ok()
    })?;
    let start = text.find(MARK)? + MARK.len();
    let line = &text[start..];
    let end = line.find('\n')?;
    line[..end].trim().parse().ok()
}

/// Removes the marker line (and only it) from stderr.
fn strip_marker(stderr: &mut Vec<u8>) {
    let Some(start) = stderr
        .windows(MARK.len())
        .take(4096)
        .position(|w| w == MARK.as_bytes())
    else {
        return;
    };
    let end = stderr[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(stderr.len(), |i| start + i + 1);
    stderr.drain(start..end);
}

/// Best effort: kills the command's process group over a second channel, within
/// `kill_timeout`. The connection is dropped afterwards either way.
fn kill_remote(conn: &mut Conn, pgid: Option<u32>, kill_timeout: Duration) {
    let Some(pgid) = pgid.filter(|p| *p > 1) else {
        tracing::warn!(host = %conn.label, "timed-out command: no process group known, closing the connection only");
        return;
    };
    let deadline = Deadline::after(kill_timeout);
    conn.blocking(&deadline);
    let result = conn.session.channel_session().and_then(|mut ch| {
        ch.exec(&format!("kill -KILL -- -{pgid}"))?;
        ch.wait_close()
    });
    if let Err(e) = result {
        tracing::warn!(host = %conn.label, pgid, error = %e, "could not kill a timed-out command");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_commands_are_shortened_in_errors() {
        assert_eq!(short("sleep 5"), "sleep 5");
        assert_eq!(short("set -e\nrm -rf x"), "set -e …");
        assert_eq!(short(&"a".repeat(200)).chars().count(), 121);
    }

    #[test]
    fn marker_is_parsed_and_stripped() {
        let mut err = b"kunlun-exec-pgid:4242\nreal error\n".to_vec();
        assert_eq!(parse_pgid(&err), Some(4242));
        strip_marker(&mut err);
        assert_eq!(err, b"real error\n");
        assert_eq!(
            parse_pgid(b"kunlun-exec-pgid:42"),
            None,
            "line not complete yet"
        );
        let mut other = b"motd\nkunlun-exec-pgid:7\nx".to_vec();
        strip_marker(&mut other);
        assert_eq!(other, b"motd\nx");
    }
}
