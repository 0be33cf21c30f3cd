//! `SshExecutor`: the async face of the SSH executor, with a pool of connections per target.
//!
//! Invariants:
//! - at most `max_connections_per_host` connections per target exist or are being opened
//!   (a semaphore permit is held for the whole use of a connection, and a connection goes
//!   back to the idle list before its permit is released, so a waiter reuses it);
//! - all libssh2 work runs inside `spawn_blocking` or on the keepalive thread;
//! - only healthy connections (no transport error, no timeout) return to the pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::conn::{Conn, Deadline};
use super::exec::{self, ExecInput};
use super::output::Output;
use super::pipe::{ByteQueue, Piped, QUEUE_BYTES};
use super::transfer::{self, Source};
use super::{SshOptions, SshTarget};
use crate::error::{Error, Result};

/// Runs commands and transfers files on machines over pooled SSH connections. Cheap to
/// clone; clones share the pool.
#[derive(Clone)]
pub struct SshExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SshExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshExecutor")
            .field("options", &self.inner.options)
            .field("connections_opened", &self.connections_opened())
            .finish()
    }
}

struct Inner {
    options: SshOptions,
    hosts: Mutex<HashMap<SshTarget, Arc<HostPool>>>,
    opened: AtomicU64,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

struct HostPool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
}

impl HostPool {
    fn take_idle(&self) -> Option<Conn> {
        lock(&self.idle).pop()
    }

    fn put_idle(&self, mut conn: Conn) {
        conn.work_started = false;
        conn.last_used = Instant::now();
        lock(&self.idle).push(conn);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *lock(flag) = true;
        cv.notify_all();
    }
}

impl Default for SshExecutor {
    fn default() -> Self {
        SshExecutor::new(SshOptions::default())
    }
}

impl SshExecutor {
    /// A new executor with its own pool and keepalive thread (which ends with the executor).
    pub fn new(options: SshOptions) -> SshExecutor {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let inner = Arc::new(Inner {
            options,
            hosts: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            stop: stop.clone(),
        });
        let weak = Arc::downgrade(&inner);
        let interval = inner
            .options
            .keepalive_interval
            .max(Duration::from_millis(100));
        let spawned = std::thread::Builder::new()
            .name("kunlun-ssh-keepalive".to_string())
            .spawn(move || keepalive_loop(weak, stop, interval));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no SSH keepalive thread; idle connections are checked on reuse only");
        }
        SshExecutor { inner }
    }

    /// Runs `command` through the login shell of `target`'s user. A non-zero exit is
    /// returned as data; past `timeout` (which includes waiting for a pooled connection and
    /// connecting) the remote command's process group is killed and `Timeout` returned.
    pub async fn exec(
        &self,
        target: &SshTarget,
        command: &str,
        timeout: Duration,
    ) -> Result<Output> {
        self.exec_with(target, command, ExecInput::default(), timeout)
            .await
    }

    /// [`exec`](Self::exec) with bytes for the command's stdin (then EOF) and a callback for
    /// its `kunlun-event:` stderr lines (see [`ExecInput`]).
    pub async fn exec_with(
        &self,
        target: &SshTarget,
        command: &str,
        input: ExecInput,
        timeout: Duration,
    ) -> Result<Output> {
        let command = command.to_string();
        let kill_timeout = self.inner.options.kill_timeout;
        self.with_conn(target, timeout, move |conn, deadline| {
            exec::exec(conn, &command, &input, deadline, kill_timeout)
        })
        .await
    }

    /// Runs `source_cmd` on `source` and `sink_cmd` on `sink` with the first's stdout streamed
    /// into the second's stdin through this process (`source_cmd | sink_cmd` across two
    /// machines), at most `rate` bytes per second when set, both within `timeout`. The sink
    /// gets EOF only once the source exited 0; a failed source gets the sink killed, a sink
    /// that ends first gets the source killed (see [`super::pipe`]). `Ok` only when both
    /// exited 0; otherwise the source's failure comes first.
    pub async fn pipe(
        &self,
        source: &SshTarget,
        source_cmd: &str,
        sink: &SshTarget,
        sink_cmd: &str,
        rate: Option<u64>,
        timeout: Duration,
    ) -> Result<Piped> {
        let queue = Arc::new(ByteQueue::new(QUEUE_BYTES, rate));
        let kill_timeout = self.inner.options.kill_timeout;
        let (q, cmd) = (queue.clone(), source_cmd.to_string());
        let send = self.with_conn(source, timeout, move |conn, deadline| {
            let none = ExecInput::default();
            let (stdin, stdout) = (exec::Stdin::Given(None), exec::Stdout::Queue(&q));
            exec::exec_io(conn, &cmd, &none, stdin, stdout, deadline, kill_timeout)
        });
        let (q, cmd) = (queue.clone(), sink_cmd.to_string());
        let receive = self.with_conn(sink, timeout, move |conn, deadline| {
            let none = ExecInput::default();
            let (stdin, stdout) = (exec::Stdin::Queue(&q), exec::Stdout::Collect);
            exec::exec_io(conn, &cmd, &none, stdin, stdout, deadline, kill_timeout)
        });
        // Each side closes its end of the queue when its call ends, however it ends (a call
        // that failed before its command started may not have).
        let (q1, q2) = (queue.clone(), queue.clone());
        let send = async move {
            let r = send.await;
            q1.close_writer(matches!(&r, Ok(o) if o.success()));
            r
        };
        let receive = async move {
            let r = receive.await;
            q2.close_reader();
            r
        };
        let (sent, received) = tokio::join!(send, receive);
        let source = sent?.checked()?;
        let sink = received?.checked()?;
        Ok(Piped {
            source,
            sink,
            bytes: queue.pushed(),
        })
    }

    /// Writes `contents` to `remote_path` (created or truncated) and sets its mode.
    pub async fn upload(
        &self,
        target: &SshTarget,
        contents: impl Into<Vec<u8>>,
        remote_path: &str,
        mode: u32,
        timeout: Duration,
    ) -> Result<()> {
        let source = Source::Bytes(contents.into());
        let remote = remote_path.to_string();
        self.with_conn(target, timeout, move |conn, deadline| {
            transfer::upload(conn, deadline, &source, &remote, mode)
        })
        .await
    }

    /// Copies the local file `local` to `remote_path` and sets its mode.
    pub async fn upload_file(
        &self,
        target: &SshTarget,
        local: &Path,
        remote_path: &str,
        mode: u32,
        timeout: Duration,
    ) -> Result<()> {
        let source = Source::File(local.to_path_buf());
        let remote = remote_path.to_string();
        self.with_conn(target, timeout, move |conn, deadline| {
            transfer::upload(conn, deadline, &source, &remote, mode)
        })
        .await
    }

    /// The contents of the remote file `remote_path`.
    pub async fn read_file(
        &self,
        target: &SshTarget,
        remote_path: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let remote = remote_path.to_string();
        self.with_conn(target, timeout, move |conn, deadline| {
            transfer::read_file(conn, deadline, &remote)
        })
        .await
    }

    /// How many SSH connections this executor has opened so far (all targets).
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// Idle pooled connections to `target` right now.
    pub fn idle_connections(&self, target: &SshTarget) -> usize {
        lock(&self.inner.hosts)
            .get(target)
            .map_or(0, |p| lock(&p.idle).len())
    }

    fn host_pool(&self, target: &SshTarget) -> Arc<HostPool> {
        let max = self.inner.options.max_connections_per_host.max(1);
        lock(&self.inner.hosts)
            .entry(target.clone())
            .or_insert_with(|| {
                Arc::new(HostPool {
                    permits: Arc::new(Semaphore::new(max)),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Runs `work` on a pooled (or new) connection on the blocking pool, within `timeout`.
    async fn with_conn<T, F>(&self, target: &SshTarget, timeout: Duration, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Conn, &Deadline) -> Result<T> + Send + 'static,
    {
        let deadline = Deadline::after(timeout);
        let label = target.label();
        let pool = self.host_pool(target);
        let permit = match tokio::time::timeout(timeout, pool.permits.clone().acquire_owned()).await
        {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Error::Local("the SSH pool was closed".to_string())),
            Err(_) => return Err(deadline.timeout(&label, "waiting for a pooled connection")),
        };
        let idle = pool.take_idle();
        let inner = self.inner.clone();
        let target = target.clone();
        let grace = self.inner.options.kill_timeout + WORKER_GRACE;
        let worker = tokio::task::spawn_blocking(move || {
            let result = run_on_conn(&inner, &pool, &target, idle, &deadline, &work);
            drop(permit); // after the connection went back to the pool
            result
        });
        // libssh2 honours its timeouts, and the key file is read without blocking; this
        // outer bound is for what neither covers (a stuck resolver, a libssh2 bug). The
        // worker then finishes (or not) on its own; its permit keeps the host's pool bounded.
        match tokio::time::timeout(timeout + grace, worker).await {
            Ok(joined) => {
                joined.map_err(|e| Error::Local(format!("SSH worker for {label} failed: {e}")))?
            }
            Err(_) => {
                tracing::warn!(host = %label, "SSH worker overran its deadline; abandoned");
                Err(deadline.timeout(&label, "the SSH call"))
            }
        }
    }
}

/// How long past a call's deadline (plus the kill timeout) its caller still waits for the
/// blocking worker before giving up on it.
const WORKER_GRACE: Duration = Duration::from_secs(2);

/// Blocking part of [`SshExecutor::with_conn`]: reuse or connect, run, return the connection
/// to the pool if still healthy. A reused connection that fails before any work started
/// (it died while idle) is replaced by a fresh one once.
fn run_on_conn<T>(
    inner: &Inner,
    pool: &HostPool,
    target: &SshTarget,
    idle: Option<Conn>,
    deadline: &Deadline,
    work: &dyn Fn(&mut Conn, &Deadline) -> Result<T>,
) -> Result<T> {
    let connect = || {
        let c = Conn::connect(target, &inner.options, deadline);
        if c.is_ok() {
            inner.opened.fetch_add(1, Ordering::Relaxed);
        }
        c
    };
    let (mut conn, reused) = match idle {
        Some(c) if c.last_used.elapsed() < inner.options.idle_timeout => (c, true),
        Some(old) => {
            discard(old);
            (connect()?, false)
        }
        None => (connect()?, false),
    };
    let mut result = work(&mut conn, deadline);
    if reused && !conn.work_started && matches!(result, Err(Error::Disconnected { .. })) {
        discard(conn);
        conn = connect()?;
        result = work(&mut conn, deadline);
    }
    if conn.healthy {
        pool.put_idle(conn);
    } else {
        discard(conn);
    }
    result
}

/// Drops a connection with a short libssh2 timeout, so freeing it cannot hang on a dead peer.
fn discard(conn: Conn) {
    conn.session.set_blocking(true);
    conn.session.set_timeout(1000);
    drop(conn);
}

/// Every `interval`: drop idle connections past the idle timeout, send a keepalive on the
/// others and drop those whose keepalive fails.
fn keepalive_loop(inner: Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    loop {
        {
            let (flag, cv) = &*stop;
            let guard = lock(flag);
            let (guard, _) = cv
                .wait_timeout_while(guard, interval, |stopped| !*stopped)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let pools: Vec<Arc<HostPool>> = lock(&inner.hosts).values().cloned().collect();
        for pool in pools {
            let conns: Vec<Conn> = std::mem::take(&mut *lock(&pool.idle));
            for conn in conns {
                if conn.last_used.elapsed() >= inner.options.idle_timeout {
                    discard(conn);
                    continue;
                }
                conn.session.set_blocking(true);
                conn.session.set_timeout(2000);
                match conn.session.keepalive_send() {
                    Ok(_) => lock(&pool.idle).push(conn),
                    Err(e) => {
                        tracing::debug!(host = %conn.label, error = %e, "dropping a dead pooled SSH connection");
                        discard(conn);
                    }
                }
            }
        }
    }
}
