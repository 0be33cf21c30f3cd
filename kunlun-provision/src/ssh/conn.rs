//! One SSH connection: TCP connect with `TCP_NODELAY`, handshake, host key check,
//! authentication; deadlines for blocking libssh2 calls and socket waits for non-blocking ones.
//!
//! Invariant: a `Conn` is used by one thread at a time and only from blocking contexts; once
//! any transport error or timeout happened on it, `healthy` is false and it is never reused.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ssh2::{BlockDirections, ErrorCode, MethodType, Session};

use super::hostkey;
use super::{SshOptions, SshTarget};
use crate::error::{Error, Result};

/// When a call must be done by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    pub(crate) fn after(total: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + total,
            total,
        }
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub(crate) fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The earlier of this deadline and `now + limit`.
    pub(crate) fn capped(&self, limit: Duration) -> Deadline {
        let cap = Instant::now() + limit;
        if cap < self.at {
            Deadline {
                at: cap,
                total: limit,
            }
        } else {
            *self
        }
    }

    pub(crate) fn timeout(&self, host: &str, what: &str) -> Error {
        Error::Timeout {
            host: host.to_string(),
            what: what.to_string(),
            after: self.total,
        }
    }
}

/// A connected, authenticated session.
pub(crate) struct Conn {
    pub(crate) session: Session,
    /// A duplicate of the socket libssh2 uses, only for `poll`.
    socket: TcpStream,
    /// `host:port` for errors.
    pub(crate) label: String,
    pub(crate) last_used: Instant,
    /// False after any transport error or timeout: the connection is then dropped.
    pub(crate) healthy: bool,
    /// Set once the current operation sent something that has effects (a command, a file
    /// open); before that, a failure on a reused connection can be retried on a fresh one.
    pub(crate) work_started: bool,
    /// Where this connection goes and how, for a second connection (a kill must not share a
    /// session whose channel may hold a half-sent packet).
    pub(crate) target: SshTarget,
    pub(crate) options: SshOptions,
}

impl Conn {
    /// Connects, verifies the host key and authenticates, within `deadline` and
    /// `options.connect_timeout`.
    pub(crate) fn connect(
        target: &SshTarget,
        options: &SshOptions,
        deadline: &Deadline,
    ) -> Result<Conn> {
        let label = target.label();
        // The key first: a file we refuse must not cost (or reveal) a connection attempt.
        let key = match &target.auth.private_key {
            Some(path) => Some(super::keyfile::read_private_key(
                path,
                target.auth.key_dir.as_deref(),
            )?),
            None => None,
        };
        let deadline = deadline.capped(options.connect_timeout);
        let unreachable = |reason: String| Error::Unreachable {
            host: label.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("resolving: {e}")))?
            .collect();
        let mut last = unreachable("no address".to_string());
        let mut stream = None;
        for addr in addrs {
            let left = deadline.remaining();
            if left.is_zero() {
                return Err(deadline.timeout(&label, "connecting"));
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = unreachable(format!("connecting to {addr}: {e}")),
            }
        }
        let stream = stream.ok_or(last)?;
        // Small request/response packets: do not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|e| unreachable(format!("TCP_NODELAY: {e}")))?;
        let socket = stream
            .try_clone()
            .map_err(|e| Error::Local(format!("duplicating the socket: {e}")))?;
        let mut session =
            Session::new().map_err(|e| Error::Local(format!("creating an SSH session: {e}")))?;
        session.set_tcp_stream(stream);
        let algs = hostkey::recorded_algorithms(target);
        if !algs.is_empty() {
            if let Err(e) = session.method_pref(MethodType::HostKey, &algs.join(",")) {
                tracing::debug!(host = %label, error = %e, "host key algorithm preference not applied");
            }
        }
        session.set_blocking(true);
        set_timeout(&session, &deadline);
        session.handshake().map_err(|e| match classify(&e) {
            Kind::Timeout => deadline.timeout(&label, "SSH handshake"),
            _ => unreachable(format!("SSH handshake: {}", e.message())),
        })?;
        hostkey::verify(&session, target)?;
        set_timeout(&session, &deadline);
        authenticate(&session, target, key.as_deref(), &label, &deadline)?;
        session.set_keepalive(false, options.keepalive_interval.as_secs().max(1) as u32);
        Ok(Conn {
            session,
            socket,
            label,
            last_used: Instant::now(),
            healthy: true,
            work_started: false,
            target: target.clone(),
            options: options.clone(),
        })
    }

    /// Blocking mode with libssh2's per-call timeout set to what is left of `deadline`.
    pub(crate) fn blocking(&self, deadline: &Deadline) {
        self.session.set_blocking(true);
        set_timeout(&self.session, deadline);
    }

    /// Maps an error of a call made for `what`, marking the connection unusable when the
    /// transport is at fault.
    pub(crate) fn fail(&mut self, e: &ssh2::Error, deadline: &Deadline, what: &str) -> Error {
        let kind = classify(e);
        if kind != Kind::Other {
            self.healthy = false;
        }
        match kind {
            Kind::Timeout => deadline.timeout(&self.label, what),
            Kind::Transport | Kind::Other => Error::Disconnected {
                host: self.label.clone(),
                reason: format!("{what}: {}", e.message()),
            },
        }
    }

    /// Same for an `io::Error` from a channel or file stream.
    pub(crate) fn fail_io(&mut self, e: &std::io::Error, deadline: &Deadline, what: &str) -> Error {
        self.healthy = false;
        if e.kind() == std::io::ErrorKind::TimedOut {
            deadline.timeout(&self.label, what)
        } else {
            Error::Disconnected {
                host: self.label.clone(),
                reason: format!("{what}: {e}"),
            }
        }
    }

    /// In non-blocking mode after `EAGAIN`: waits until the socket is ready in the direction
    /// libssh2 is blocked on, at most `max`.
    pub(crate) fn wait_socket(&mut self, max: Duration) -> Result<()> {
        let flags = match self.session.block_directions() {
            BlockDirections::Inbound | BlockDirections::None => PollFlags::POLLIN,
            BlockDirections::Outbound => PollFlags::POLLOUT,
            BlockDirections::Both => PollFlags::POLLIN | PollFlags::POLLOUT,
        };
        let timeout =
            PollTimeout::try_from(max.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.socket.as_fd(), flags)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => {
                self.healthy = false;
                Err(Error::Disconnected {
                    host: self.label.clone(),
                    reason: format!("waiting on the socket: {e}"),
                })
            }
        }
    }
}

fn set_timeout(session: &Session, deadline: &Deadline) {
    // 0 would mean "no timeout": never pass it.
    let ms = deadline.remaining().as_millis().clamp(1, u32::MAX as u128) as u32;
    session.set_timeout(ms);
}

fn authenticate(
    session: &Session,
    target: &SshTarget,
    key_bytes: Option<&[u8]>,
    label: &str,
    deadline: &Deadline,
) -> Result<()> {
    let mut reasons = Vec::new();
    if let (Some(key), Some(bytes)) = (&target.auth.private_key, key_bytes) {
        // libssh2 (OpenSSL backend) parses PEM and OpenSSH private keys from memory and
        // derives the public key itself.
        let text = std::str::from_utf8(bytes).map_err(|_| Error::KeyFile {
            path: key.display().to_string(),
            reason: "it is not a PEM or OpenSSH private key (not text)".to_string(),
        })?;
        match session.userauth_pubkey_memory(
            &target.user,
            None,
            text,
            target.auth.passphrase.as_deref(),
        ) {
            Ok(()) => {}
            Err(e) if classify(&e) == Kind::Timeout => {
                return Err(deadline.timeout(label, "authentication"))
            }
            Err(e) => reasons.push(format!("key {}: {}", key.display(), e.message())),
        }
    }
    if !session.authenticated() {
        if let Some(password) = &target.auth.password {
            match session.userauth_password(&target.user, password) {
                Ok(()) => {}
                Err(e) if classify(&e) == Kind::Timeout => {
                    return Err(deadline.timeout(label, "authentication"))
                }
                Err(e) => reasons.push(format!("password: {}", e.message())),
            }
        }
    }
    if session.authenticated() {
        return Ok(());
    }
    if reasons.is_empty() {
        reasons.push("no key or password configured".to_string());
    }
    Err(Error::AuthFailed {
        host: label.to_string(),
        user: target.user.clone(),
        reason: reasons.join("; "),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Timeout,
    Transport,
    Other,
}

/// What kind of failure a libssh2 error is.
pub(crate) fn classify(e: &ssh2::Error) -> Kind {
    match e.code() {
        ErrorCode::Session(-9) | ErrorCode::Session(-30) => Kind::Timeout, // TIMEOUT, SOCKET_TIMEOUT
        // BANNER_RECV/SEND, KEX, SOCKET_SEND, KEY_EXCHANGE, SOCKET_DISCONNECT, SOCKET_RECV
        ErrorCode::Session(-2 | -3 | -5 | -7 | -8 | -13 | -43) => Kind::Transport,
        _ => Kind::Other,
    }
}
