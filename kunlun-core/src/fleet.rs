//! Machine access: the SSH executor, the storage and compute recipes, and how hosts are
//! trusted ([`Provisioner`]). Jobs install through it, HA fences through it, the machine
//! registry probes through it.
//!
//! Invariant: a leaf below `jobs`, `ha` and `machines`: it imports none of them, so machine
//! access never pulls a subsystem in.

use std::path::PathBuf;
use std::sync::Arc;

use kunlun_meta::model::Machine;
use kunlun_provision::recipe::Recipe;
pub use kunlun_provision::HostKeyPolicy;
use kunlun_provision::{SshExecutor, SshTarget};

/// What installs need: the SSH executor, the recipes, and how to trust hosts.
#[derive(Clone)]
pub struct Provisioner {
    pub ssh: SshExecutor,
    pub storage: Arc<dyn Recipe>,
    pub compute: Arc<dyn Recipe>,
    /// `known_hosts` file of the manager.
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    /// When set, every machine's `ssh_key_path` must be a file under this directory (the
    /// daemon's `ssh_keys_dir`); the key file checks of `kunlun_provision::ssh::keyfile`
    /// apply either way.
    pub keys_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("storage", &self.storage.name())
            .field("compute", &self.compute.name())
            .field("known_hosts", &self.known_hosts)
            .field("host_key_policy", &self.host_key_policy)
            .field("keys_dir", &self.keys_dir)
            .finish()
    }
}

impl Provisioner {
    /// The system's MariaDB and PostgreSQL 15, a fresh SSH pool, and `known_hosts` with
    /// accept-new (first contact records the host key; a changed key is always refused).
    pub fn with_system_servers(known_hosts: PathBuf) -> Provisioner {
        Provisioner {
            ssh: SshExecutor::default(),
            storage: Arc::new(kunlun_provision::recipe::MariaDbRecipe::default()),
            compute: Arc::new(kunlun_provision::recipe::PostgresRecipe::default()),
            known_hosts,
            host_key_policy: HostKeyPolicy::AcceptNew,
            keys_dir: None,
        }
    }

    /// The SSH target of a machine.
    pub fn target(&self, m: &Machine) -> SshTarget {
        let mut t = SshTarget::new(
            m.hostaddr.clone(),
            m.ssh.port,
            m.ssh.user.clone(),
            m.ssh.key_path.clone(),
            self.known_hosts.clone(),
        );
        t.host_key_policy = self.host_key_policy;
        t.auth.key_dir = self.keys_dir.clone();
        t
    }
}
