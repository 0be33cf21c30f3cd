//! `Sshd`: a private OpenSSH server on a loopback address (127.0.0.1, .2, .3 … to play
//! separate machines) and a high port, with its own generated host key, a generated user key
//! pair authorised for root, and a `known_hosts` file naming exactly this server.
//!
//! Invariant: everything (config, keys, pid file, log) lives in the instance directory; the
//! system sshd, `/etc/ssh` and `/root/.ssh` are never read or written. Stopping kills the
//! listener and every session process it forked, so clients see their connections drop.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::process::{free_port, log_tail, port_open, run, wait_until, ServerProcess};
use super::workdir::InstanceDir;

const SSHD: &str = "/usr/sbin/sshd";
const START_LIMIT: Duration = Duration::from_secs(30);

/// A private/public key file pair.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Private key (OpenSSH format, no passphrase).
    pub private: PathBuf,
    /// Public key (`<type> <base64> <comment>`).
    pub public: PathBuf,
}

impl KeyPair {
    /// The public key line without its comment: `<type> <base64>`.
    pub fn public_key(&self) -> Result<String> {
        let text = fs::read_to_string(&self.public)
            .with_context(|| format!("reading {}", self.public.display()))?;
        let mut fields = text.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some(t), Some(k)) => Ok(format!("{t} {k}")),
            _ => anyhow::bail!("malformed public key in {}", self.public.display()),
        }
    }
}

/// Generates an ed25519 key pair without passphrase at `dir/name` and `dir/name.pub`
/// (replacing any previous one).
pub fn generate_key_pair(dir: &Path, name: &str) -> Result<KeyPair> {
    let private = dir.join(name);
    let public = dir.join(format!("{name}.pub"));
    let _ = fs::remove_file(&private);
    let _ = fs::remove_file(&public);
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "kunlun-harness",
            "-f",
        ])
        .arg(&private))
    .context("ssh-keygen")?;
    Ok(KeyPair { private, public })
}

/// A running private sshd. Dropping it kills the server and its sessions.
#[derive(Debug)]
pub struct Sshd {
    process: Mutex<Option<ServerProcess>>,
    ip: Ipv4Addr,
    port: AtomicU16,
    host_key: KeyPair,
    user_key: KeyPair,
    extra_config: Vec<String>,
    dir: InstanceDir,
}

impl Sshd {
    /// An sshd on 127.0.0.1.
    pub fn start() -> Result<Sshd> {
        Sshd::start_on(Ipv4Addr::LOCALHOST)
    }

    /// `n` sshds on 127.0.0.2, 127.0.0.3, …, one per address, like `n` machines.
    pub fn start_many(n: u8) -> Result<Vec<Sshd>> {
        (0..n)
            .map(|i| Sshd::start_on(Ipv4Addr::new(127, 0, 0, 2 + i)))
            .collect()
    }

    /// An sshd on `ip` (must be in 127.0.0.0/8) and a free port.
    pub fn start_on(ip: Ipv4Addr) -> Result<Sshd> {
        Sshd::start_with(ip, &[])
    }

    /// Like [`Sshd::start_on`] with extra `sshd_config` lines appended (e.g.
    /// `"SetEnv HOME=/nonexistent"` so bash skips the user's `~/.bashrc`).
    pub fn start_with(ip: Ipv4Addr, extra_config: &[&str]) -> Result<Sshd> {
        anyhow::ensure!(ip.is_loopback(), "Sshd only listens on loopback, not {ip}");
        // sshd's privilege separation directory; the system package normally makes it at boot.
        fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let dir = InstanceDir::new("sshd")?;
        let host_key = generate_key_pair(dir.path(), "ssh_host_ed25519_key")?;
        let user_key = generate_key_pair(dir.path(), "id_ed25519")?;
        fs::copy(&user_key.public, dir.path().join("authorized_keys"))
            .context("writing authorized_keys")?;
        let sshd = Sshd {
            process: Mutex::new(None),
            ip,
            port: AtomicU16::new(0),
            host_key,
            user_key,
            extra_config: extra_config.iter().map(|l| l.to_string()).collect(),
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            sshd.port
                .store(free_port(IpAddr::V4(ip)), Ordering::Relaxed);
            sshd.write_config()?;
            sshd.write_known_hosts()?;
            match sshd.launch() {
                Ok(()) => return Ok(sshd),
                Err(e) => {
                    let in_use = log_tail(&sshd.log(), 20).contains("Address already in use");
                    if !in_use || attempt >= 5 {
                        return Err(e);
                    }
                    sshd.stop()?;
                }
            }
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn lock(&self) -> MutexGuard<'_, Option<ServerProcess>> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.path();
        let mut config = format!(
            "ListenAddress {ip}:{port}\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {auth}\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             MaxSessions 100\n\
             MaxStartups 200:30:400\n\
             LoginGraceTime 30\n\
             LogLevel INFO\n\
             Subsystem sftp internal-sftp\n",
            ip = self.ip,
            port = self.port(),
            host_key = self.host_key.private.display(),
            pid = d.join("sshd.pid").display(),
            auth = d.join("authorized_keys").display(),
        );
        // sshd uses only the first `SetEnv` line, so the harness's own variables and any the
        // caller gives go on one. Root's ~/.bashrc on the test hosts runs `pyenv rehash`, which
        // waits for a lock file that a login shell killed half-way through leaves behind; every
        // later login then stalls and prints pyenv's complaint on stderr (failing the tests that
        // read a command's stderr). SHLVL=1: bash sources ~/.bashrc for a command sent over SSH
        // only when it is not a nested shell (SHLVL < 2 once it counts itself), so the test
        // hosts' sessions skip it, as a server's non-interactive shell commonly does; the
        // commands we send name their programs by path. PYENV_REHASH_TIMEOUT bounds the wait
        // anyway should a shell read it.
        let mut env = vec!["PYENV_REHASH_TIMEOUT=1".to_string(), "SHLVL=1".to_string()];
        for line in &self.extra_config {
            if let Some(vars) = line.trim().strip_prefix("SetEnv ") {
                env.extend(vars.split_whitespace().map(str::to_string));
            } else {
                config.push_str(line);
                config.push('\n');
            }
        }
        config.push_str(&format!("SetEnv {}\n", env.join(" ")));
        fs::write(self.config_path(), config).context("writing sshd_config")
    }

    fn write_known_hosts(&self) -> Result<()> {
        let line = format!(
            "[{}]:{} {}\n",
            self.ip,
            self.port(),
            self.host_key.public_key()?
        );
        fs::write(self.known_hosts(), line).context("writing known_hosts")
    }

    fn launch(&self) -> Result<()> {
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D").arg("-e").arg("-f").arg(self.config_path());
        let mut guard = self.lock();
        *guard = Some(ServerProcess::spawn("sshd", cmd, &self.log())?);
        let process = guard.as_mut().context("just spawned")?;
        let addr = self.addr();
        let res = wait_until("sshd to accept connections", START_LIMIT, || {
            process.ensure_running()?;
            Ok(port_open(addr))
        });
        drop(guard);
        res.with_context(|| {
            format!(
                "starting sshd on {addr} ({}); log:\n{}",
                self.dir.path().display(),
                log_tail(&self.log(), 30)
            )
        })
    }

    /// The loopback address it listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The address as a string, e.g. `"127.0.0.2"`.
    pub fn host(&self) -> String {
        self.ip.to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.port())
    }

    /// The user to log in as: `root` (key only; other local users work with the same key).
    pub fn user(&self) -> &'static str {
        "root"
    }

    /// The key pair authorised to log in.
    pub fn user_key(&self) -> &KeyPair {
        &self.user_key
    }

    /// The server's current host key pair.
    pub fn host_key(&self) -> &KeyPair {
        &self.host_key
    }

    /// A storage machine at `ip` reached through this sshd, with `data_dir` as its data dir.
    pub fn storage_machine(
        &self,
        ip: std::net::Ipv4Addr,
        data_dir: &Path,
    ) -> kunlun_meta::model::NewMachine {
        kunlun_meta::model::NewMachine {
            hostaddr: ip.to_string(),
            machine_type: kunlun_meta::model::MachineType::Storage,
            rack_id: None,
            data_dirs: vec![data_dir.to_string_lossy().into_owned()],
            port_range: "20000-65000".into(),
            total_mem_mb: None,
            total_cpu_cores: None,
            ssh: kunlun_meta::model::SshAccess {
                port: self.port(),
                user: self.user().into(),
                key_path: self.user_key().private.to_string_lossy().into_owned(),
            },
        }
    }

    /// A `known_hosts` file with exactly one line, `[ip]:port <host key>` (the key at start).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The instance directory (scratch space for a test, removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The listener's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut g = self.lock();
        g.as_mut().and_then(ServerProcess::running_pid)
    }

    /// An OpenSSH client command for `remote` on this server as root, verified against
    /// [`Sshd::known_hosts`], using only the harness key and no user config.
    pub fn ssh_command(&self, remote: &str) -> Command {
        self.ssh_command_as("root", remote)
    }

    /// Like [`Sshd::ssh_command`] as another local user: the authorised key file is shared
    /// by every user of this server, so any account with a shell can log in with the key.
    pub fn ssh_command_as(&self, user: &str, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!(
            "UserKnownHostsFile={}",
            self.known_hosts().display()
        ))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-i"])
        .arg(&self.user_key.private)
        .arg("-p")
        .arg(self.port().to_string())
        .arg(format!("{user}@{}", self.ip))
        .arg(remote);
        cmd
    }

    /// Kills the listener and every session it forked (SIGKILL), and reaps the listener:
    /// open connections drop at once.
    pub fn stop(&self) -> Result<()> {
        let mut g = self.lock();
        if let Some(p) = g.as_mut() {
            if let Some(pid) = p.pid() {
                // Freeze the listener so it forks no new sessions while we kill them.
                let _ = p.signal(Signal::SIGSTOP);
                // SIGTERM first, so a login shell stopped half-way through ~/.bashrc runs its
                // exit traps: a SIGKILLed `pyenv rehash` leaves its lock file behind, and then
                // every later SSH session on this host waits 60 s for it. Whatever still runs
                // after a moment is SIGKILLed (also if it was reparented meanwhile).
                let first = descendants(pid);
                for &c in &first {
                    let _ = kill(Pid::from_raw(c as i32), Signal::SIGTERM);
                }
                let t0 = std::time::Instant::now();
                while first.iter().any(|&c| running(c)) && t0.elapsed() < Duration::from_millis(500)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                for &c in first.iter().filter(|&&c| running(c)) {
                    let _ = kill(Pid::from_raw(c as i32), Signal::SIGKILL);
                }
                for _ in 0..5 {
                    let children = descendants(pid);
                    if children.is_empty() {
                        break;
                    }
                    for c in children {
                        let _ = kill(Pid::from_raw(c as i32), Signal::SIGKILL);
                    }
                }
            }
            p.kill9()?;
        }
        *g = None;
        Ok(())
    }

    /// SIGSTOP the listener (new connections hang; existing sessions go on).
    pub fn pause(&self) -> Result<()> {
        self.with_process(ServerProcess::pause)
    }

    /// SIGCONT after [`Sshd::pause`].
    pub fn resume(&self) -> Result<()> {
        self.with_process(ServerProcess::resume)
    }

    fn with_process(&self, f: impl FnOnce(&mut ServerProcess) -> Result<()>) -> Result<()> {
        let mut g = self.lock();
        let p = g.as_mut().context("sshd is not running")?;
        f(p)
    }

    /// Starts again on the same address, port and keys (stopping first if running).
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Gives the server a new host key and restarts it; [`Sshd::known_hosts`] keeps the old
    /// key, so a client checking it must now see a mismatch.
    pub fn change_host_key(&self) -> Result<()> {
        generate_key_pair(self.dir.path(), "ssh_host_ed25519_key")?;
        self.restart()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    super::process::pid_running(pid)
}

/// All descendants of `root` (children, grandchildren, …) from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(procs) = fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            // After the command name: state, ppid, …
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some(cs) = children.get(&p) {
            out.extend(cs);
            todo.extend(cs);
        }
    }
    out
}
