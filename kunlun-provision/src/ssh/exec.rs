//! Running one command on a connection: stdout and stderr read together without blocking
//! (so neither stream can stall the other by filling the channel window), bounded by the
//! deadline, and the remote process group killed when the deadline passes.
//!
//! Why the pgid marker: SSH has no dependable way to kill a remote command (closing the
//! channel leaves e.g. `sleep` running, and libssh2 cannot send signal requests). sshd makes
//! the login shell of every session a process-group leader, so the command line is prefixed
//! with `printf 'MARK%s\n' $$ >&2`; that first stderr line (stripped from the output) gives
//! the group to `kill -KILL -- -<pgid>` over a second channel.
//!
//! A command may also get bytes on its stdin (then EOF), e.g. passwords that must appear
//! neither on a command line nor in a file, and may report progress: each stderr line
//! `kunlun-event:<text>` is handed to the caller's callback as soon as it arrives and is
//! stripped from the output.

use std::io::{Read, Write};
use std::time::Duration;

use ssh2::Channel;

use super::conn::{Conn, Deadline};
use super::output::Output;
use super::pipe::{ByteQueue, Pop, Push, POLL};
use crate::error::{Error, Result};

const MARK: &str = "kunlun-exec-pgid:";
/// Prefix of a progress line on a command's stderr (see [`ExecInput::on_event`]).
pub const EVENT: &str = "kunlun-event:";
const CHUNK: usize = 64 * 1024;
/// Longest single socket wait, so the deadline is rechecked often enough.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// A callback for a command's event lines.
pub type OnEvent = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// What a command gets besides its command line.
#[derive(Clone, Default)]
pub struct ExecInput {
    /// Written to the command's stdin, followed by EOF (no EOF is sent when `None`).
    pub stdin: Option<Vec<u8>>,
    /// Called with `<text>` of every stderr line `kunlun-event:<text>`, in order, as the
    /// lines arrive (on the executor's blocking thread: keep it short).
    pub on_event: Option<OnEvent>,
}

impl std::fmt::Debug for ExecInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecInput")
            .field(
                "stdin",
                &self.stdin.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

pub(crate) fn exec(
    conn: &mut Conn,
    command: &str,
    input: &ExecInput,
    deadline: &Deadline,
    kill_timeout: Duration,
) -> Result<Output> {
    let stdin = Stdin::Given(input.stdin.as_deref());
    exec_io(
        conn,
        command,
        input,
        stdin,
        Stdout::Collect,
        deadline,
        kill_timeout,
    )
}

/// Where a command's stdin comes from.
pub(crate) enum Stdin<'a> {
    /// These bytes then EOF, or (`None`) no EOF at all.
    Given(Option<&'a [u8]>),
    /// The chunks of a pipe, then EOF once its writer completed.
    Queue(&'a ByteQueue),
}

/// Where a command's stdout goes.
pub(crate) enum Stdout<'a> {
    /// Into [`Output::stdout`].
    Collect,
    /// Into a pipe (closed complete only when the command exits 0).
    Queue(&'a ByteQueue),
}

/// [`exec`] with stdin and stdout of a pipe ([`super::pipe`]); the pipe's side is closed here
/// once the command ran (or failed after it started).
pub(crate) fn exec_io(
    conn: &mut Conn,
    command: &str,
    input: &ExecInput,
    stdin: Stdin<'_>,
    stdout: Stdout<'_>,
    deadline: &Deadline,
    kill_timeout: Duration,
) -> Result<Output> {
    let r = run(
        conn,
        command,
        input,
        &stdin,
        &stdout,
        deadline,
        kill_timeout,
    );
    // A failure before the command started may be retried on a fresh connection by the
    // pool: the pipe stays open for that try (the caller closes it in the end either way).
    if r.is_ok() || conn.work_started {
        if let Stdin::Queue(q) = stdin {
            q.close_reader();
        }
        if let Stdout::Queue(q) = stdout {
            q.close_writer(matches!(&r, Ok(o) if o.success()));
        }
    }
    r
}

/// Stdin state of a running command.
struct Feed<'a> {
    src: &'a Stdin<'a>,
    /// The bytes being written and how far.
    cur: Vec<u8>,
    off: usize,
    /// Everything was written: EOF is due.
    done: bool,
    eof_sent: bool,
}

impl Feed<'_> {
    /// Waiting for the pipe's next chunk (not for the channel).
    fn starved(&self) -> bool {
        matches!(self.src, Stdin::Queue(_)) && !self.done && self.off >= self.cur.len()
    }
}

fn run(
    conn: &mut Conn,
    command: &str,
    input: &ExecInput,
    stdin: &Stdin<'_>,
    stdout_to: &Stdout<'_>,
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
    let mut feed = match stdin {
        Stdin::Given(bytes) => Feed {
            src: stdin,
            cur: bytes.map(<[u8]>::to_vec).unwrap_or_default(),
            off: 0,
            done: bytes.is_some_and(<[u8]>::is_empty),
            eof_sent: bytes.is_none(),
        },
        Stdin::Queue(_) => Feed {
            src: stdin,
            cur: Vec::new(),
            off: 0,
            done: false,
            eof_sent: false,
        },
    };
    // Output read but not yet taken by the pipe.
    let mut pending: Option<Vec<u8>> = None;
    // How far stderr was scanned for event lines.
    let mut scanned = 0;
    loop {
        let mut progress = false;
        if !feed.eof_sent {
            if feed.off >= feed.cur.len() && !feed.done {
                if let Stdin::Queue(q) = stdin {
                    match q.pop(Duration::ZERO) {
                        Pop::Chunk(c) => (feed.cur, feed.off) = (c, 0),
                        Pop::Empty => {}
                        Pop::End => feed.done = true,
                        Pop::Aborted => {
                            return Err(aborted(
                                conn,
                                &mut channel,
                                &mut stderr,
                                pgid,
                                kill_timeout,
                                command,
                            ))
                        }
                    }
                }
            }
            if feed.off < feed.cur.len() {
                match channel.write(&feed.cur[feed.off..]) {
                    Ok(n) => {
                        feed.off += n;
                        progress |= n > 0;
                        if feed.off >= feed.cur.len() && matches!(stdin, Stdin::Given(_)) {
                            feed.done = true;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        return Err(conn.fail_io(&e, deadline, "writing the command's input"))
                    }
                }
            }
            if feed.done && feed.off >= feed.cur.len() {
                match channel.send_eof() {
                    Ok(()) => {
                        feed.eof_sent = true;
                        progress = true;
                    }
                    Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {}
                    Err(e) => return Err(conn.fail(&e, deadline, "ending the command's input")),
                }
            }
        }
        if let (Some(p), Stdout::Queue(q)) = (pending.take(), stdout_to) {
            match q.push(p, Duration::ZERO) {
                Push::Queued => progress = true,
                Push::Full(c) => pending = Some(c),
                Push::ReaderGone => {
                    return Err(reader_gone(
                        conn,
                        &mut channel,
                        &mut stderr,
                        pgid,
                        kill_timeout,
                        command,
                    ))
                }
            }
        }
        let mut both_eof = true;
        for stream in [0, 1] {
            if stream == 0 && pending.is_some() {
                // The pipe is full: leave stdout in the channel (the window then holds the
                // sender back) and read only stderr.
                both_eof = false;
                continue;
            }
            match read_some(&mut channel, stream, &mut buf) {
                Ok(Some(0)) => {}
                Ok(Some(n)) => {
                    match (stream, stdout_to) {
                        (0, Stdout::Queue(q)) => match q.push(buf[..n].to_vec(), Duration::ZERO) {
                            Push::Queued => {}
                            Push::Full(c) => pending = Some(c),
                            Push::ReaderGone => {
                                return Err(reader_gone(
                                    conn,
                                    &mut channel,
                                    &mut stderr,
                                    pgid,
                                    kill_timeout,
                                    command,
                                ))
                            }
                        },
                        (0, Stdout::Collect) => stdout.extend_from_slice(&buf[..n]),
                        _ => stderr.extend_from_slice(&buf[..n]),
                    }
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
        if let Some(cb) = &input.on_event {
            scanned = emit_events(&stderr, scanned, &**cb);
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
        let wait = deadline.remaining().min(POLL);
        match (pending.take(), stdout_to, stdin) {
            // Waiting for the pipe's reader to make room.
            (Some(p), Stdout::Queue(q), _) => match q.push(p, wait) {
                Push::Queued => {}
                Push::Full(c) => pending = Some(c),
                Push::ReaderGone => {
                    return Err(reader_gone(
                        conn,
                        &mut channel,
                        &mut stderr,
                        pgid,
                        kill_timeout,
                        command,
                    ))
                }
            },
            // Waiting for the pipe's writer to send more.
            (None, _, Stdin::Queue(q)) if feed.starved() => match q.pop(wait) {
                Pop::Chunk(c) => (feed.cur, feed.off) = (c, 0),
                Pop::Empty => {}
                Pop::End => feed.done = true,
                Pop::Aborted => {
                    return Err(aborted(
                        conn,
                        &mut channel,
                        &mut stderr,
                        pgid,
                        kill_timeout,
                        command,
                    ))
                }
            },
            (p, _, _) => {
                pending = p;
                conn.wait_socket(deadline.remaining().min(MAX_WAIT))?;
            }
        }
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
    strip_events(&mut stderr);
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

/// How long a command cut off by its pipe may take to name its process group (the marker is
/// its first output, printed once its login shell is up), so it can be killed rather than only
/// lose its channel; and the least time its kill gets. Generous: the channel stays open
/// meanwhile, and closing it early is what gives the receiving command the EOF it must not get
/// (a login shell's start-up on a loaded machine took more than 3 s in CI).
const PGID_WAIT: Duration = Duration::from_secs(30);

/// The process group of the running command: known already, or read off its stderr now
/// (at most [`PGID_WAIT`]). Closing the channel without killing would give the command EOF on
/// its stdin, which a pipe's receiving command must never get from a failed sender.
fn await_pgid(
    conn: &mut Conn,
    channel: &mut Channel,
    stderr: &mut Vec<u8>,
    pgid: Option<u32>,
) -> Option<u32> {
    let until = std::time::Instant::now() + PGID_WAIT;
    let mut pgid = pgid;
    let mut buf = [0u8; 4096];
    while pgid.is_none() {
        match read_some(channel, 1, &mut buf) {
            Err(_) => return parse_pgid(stderr),
            // libssh2 also returns 0 from a non-blocking read that only processed another
            // packet (a window adjust after the input written so far): the stream ended only
            // when the channel says so. Taking that 0 for the end gave up on the marker, and
            // the unkilled receiver got EOF when its channel closed (the likely cause of a
            // CI failure: a sink that saw its input end after its sender failed).
            Ok(Some(0)) if channel.eof() => return parse_pgid(stderr),
            Ok(Some(n)) if n > 0 => stderr.extend_from_slice(&buf[..n]),
            Ok(_) => {
                if std::time::Instant::now() >= until {
                    return None;
                }
                let _ = conn.wait_socket(Duration::from_millis(20));
            }
        }
        pgid = parse_pgid(stderr);
    }
    pgid
}

/// The pipe's writer failed: the receiving command is killed rather than given a truncated
/// stream.
fn aborted(
    conn: &mut Conn,
    channel: &mut Channel,
    stderr: &mut Vec<u8>,
    pgid: Option<u32>,
    kill_timeout: Duration,
    command: &str,
) -> Error {
    let pgid = await_pgid(conn, channel, stderr, pgid);
    conn.healthy = false;
    kill_remote(conn, pgid, kill_timeout.max(PGID_WAIT));
    Error::Local(format!(
        "{}: the sending side of the pipe failed, so `{}` was killed before it got a \
         truncated stream",
        conn.label,
        short(command)
    ))
}

/// The pipe's reader ended before the stream did: the sending command is killed.
fn reader_gone(
    conn: &mut Conn,
    channel: &mut Channel,
    stderr: &mut Vec<u8>,
    pgid: Option<u32>,
    kill_timeout: Duration,
    command: &str,
) -> Error {
    let pgid = await_pgid(conn, channel, stderr, pgid);
    conn.healthy = false;
    kill_remote(conn, pgid, kill_timeout);
    Error::Local(format!(
        "{}: the receiving side of the pipe ended first, so `{}` was killed",
        conn.label,
        short(command)
    ))
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

/// Calls `cb` for every complete `kunlun-event:` line of `stderr` after byte `from`;
/// returns where the next scan starts (just after the last complete line).
fn emit_events(stderr: &[u8], from: usize, cb: &(dyn Fn(&str) + Send + Sync)) -> usize {
    let mut start = from;
    while let Some(i) = stderr[start..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&stderr[start..start + i]);
        if let Some(text) = line.strip_prefix(EVENT) {
            cb(text.trim_end());
        }
        start += i + 1;
    }
    start
}

/// Removes every `kunlun-event:` line from stderr.
fn strip_events(stderr: &mut Vec<u8>) {
    if !stderr.windows(EVENT.len()).any(|w| w == EVENT.as_bytes()) {
        return;
    }
    let mut out = Vec::with_capacity(stderr.len());
    for line in stderr.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(EVENT.as_bytes()) {
            out.extend_from_slice(line);
        }
    }
    *stderr = out;
}

/// Best effort: kills the command's process group within `kill_timeout`, over a fresh
/// connection to the same host, and over this one only when no fresh one can be had.
///
/// Not over this connection first: a non-blocking write that returned `EAGAIN` leaves its
/// packet half-sent in libssh2, and until that very write is repeated every other packet on
/// the session (the kill's channel open) gets `EAGAIN` (libssh2's `transport_send_existing`:
/// "Address is different"); the kill timed out, the command's channel was closed unkilled,
/// and a pipe's receiver got EOF from a failed sender (seen in CI). The connection is dropped
/// afterwards either way.
fn kill_remote(conn: &mut Conn, pgid: Option<u32>, kill_timeout: Duration) {
    let Some(pgid) = pgid.filter(|p| *p > 1) else {
        tracing::warn!(host = %conn.label, "timed-out command: no process group known, closing the connection only");
        return;
    };
    let deadline = Deadline::after(kill_timeout);
    let kill = |session: &ssh2::Session| {
        session.channel_session().and_then(|mut ch| {
            ch.exec(&format!("kill -KILL -- -{pgid}"))?;
            ch.wait_close()
        })
    };
    // Half the time at most for the fresh connection, so the fallback still gets some.
    let connecting = deadline.capped(kill_timeout / 2);
    let result = match Conn::connect(&conn.target, &conn.options, &connecting) {
        Ok(fresh) => {
            fresh.blocking(&deadline);
            kill(&fresh.session).map_err(|e| e.to_string())
        }
        Err(fresh_error) => {
            tracing::warn!(host = %conn.label, error = %fresh_error, "no second connection for a kill; using the command's own");
            conn.blocking(&deadline);
            kill(&conn.session).map_err(|e| e.to_string())
        }
    };
    if let Err(e) = result {
        tracing::warn!(host = %conn.label, pgid, error = %e, "could not kill a cut-off command");
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

    #[test]
    fn event_lines_are_reported_once_and_stripped() {
        use std::sync::Mutex;
        let seen = Mutex::new(Vec::<String>::new());
        let cb = |t: &str| seen.lock().unwrap().push(t.to_string());
        let mut err = b"kunlun-event:make_dirs\nwarn\nkunlun-event:sta".to_vec();
        let next = emit_events(&err, 0, &cb);
        assert_eq!(*seen.lock().unwrap(), ["make_dirs"]);
        err.extend_from_slice(b"rt\n");
        assert_eq!(emit_events(&err, next, &cb), err.len());
        assert_eq!(*seen.lock().unwrap(), ["make_dirs", "start"]);
        strip_events(&mut err);
        assert_eq!(err, b"warn\n");
    }
}
