//! Request and response bodies of the REST API `/v1`, shared by the daemon and `kunlunctl`.
//!
//! Every request type has a `validate` step that turns raw input into a domain value or an
//! [`Error::Invalid`] naming the field; the daemon calls it before anything is stored, so a
//! bad request never changes the metadata.

use serde::{Deserialize, Serialize};

mod backup;
mod backup_schedule;
mod backup_storage;
mod meta_shard;
pub use backup::{
    BackupArchive, BackupQuery, CreateBackup, RestoreBackup, RestoreInto, ShardArchive,
    SnapshotCompression,
};
pub use backup_schedule::{
    BackupWindow, SetBackupSchedule, MAX_KEEP_COUNT, MAX_KEEP_DAYS, SECS_PER_DAY,
};
pub use backup_storage::{
    check_storage_name, AddBackupStorage, BackupStorageInfo, KIND_SSH_DIR, MAX_STORAGE_NAME,
};
pub use meta_shard::{
    MetaChannel, MetaNode, MetaNodeObserved, MetaShard, PrimaryMove, StoreFollow,
};

use crate::error::{Error, Result};
use crate::model::{MachinePatch, MachineType, NewMachine, SshAccess};
use crate::validate;

/// The body of every error response: `code` is stable snake_case that scripts can branch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Reply to a request that started a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct JobAccepted {
    pub job_id: i64,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// `sqlite` or `mysql`.
    pub store: String,
    /// Why the status is degraded, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub version: String,
}

/// `POST /v1/machines`: register a machine reachable over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(example = json!({
    "hostaddr": "192.0.2.10",
    "machine_type": "storage",
    "ssh_key_path": "/etc/kunlun/keys/id_ed25519",
    "data_dirs": ["/data/kunlun"],
    "probe": false
})))]
#[serde(deny_unknown_fields)]
pub struct RegisterMachine {
    /// IP address or host name the manager reaches the machine at.
    pub hostaddr: String,
    pub machine_type: MachineType,
    /// SSH port (default 22).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1))]
    pub ssh_port: Option<u16>,
    /// SSH user (default `root`).
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// Private key on the manager's host used to log in: a regular file under the daemon's
    /// `ssh_keys_dir`, owned by its user, mode 0600 (else 422 `ssh_key_rejected`).
    pub ssh_key_path: String,
    /// Absolute directories instances are placed under.
    pub data_dirs: Vec<String>,
    /// `first-last`; default `57000-58000` for storage, `47000-48000` for computer.
    #[serde(default)]
    pub port_range: Option<String>,
    #[serde(default)]
    pub rack_id: Option<String>,
    #[serde(default)]
    pub total_mem_mb: Option<i64>,
    #[serde(default)]
    pub total_cpu_cores: Option<i64>,
    /// Probe the machine over SSH before storing it (default `true`): CPU cores, memory, OS,
    /// data dirs and server binaries are checked, and a machine that fails is refused. With
    /// `false` the machine is stored unchecked as `dead`; the liveness check makes it `running`
    /// once it answers over SSH. For hosts that are not reachable yet.
    #[serde(default = "default_probe")]
    pub probe: bool,
    /// The fingerprint the machine's SSH host key must have, `SHA256:<base64>` as
    /// `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it. Checked on the probe and
    /// recorded in the manager's `known_hosts`; needed with `ssh_host_key_policy = strict`
    /// (the default) for a host the manager does not know yet. A refusal names the offered one.
    #[serde(default)]
    pub ssh_host_key: Option<String>,
}

fn default_probe() -> bool {
    true
}

/// Default port range of a machine type (the original's defaults).
pub fn default_port_range(t: MachineType) -> &'static str {
    match t {
        MachineType::Storage => "57000-58000",
        MachineType::Computer => "47000-48000",
    }
}

impl RegisterMachine {
    /// Checks every field and builds what the store keeps.
    pub fn validate(&self) -> Result<NewMachine> {
        validate::hostaddr("hostaddr", &self.hostaddr)?;
        let ssh_port = self.ssh_port.unwrap_or(22);
        validate::port("ssh_port", ssh_port)?;
        let ssh_user = self.ssh_user.clone().unwrap_or_else(|| "root".to_string());
        validate::name("ssh_user", &ssh_user)?;
        validate::abs_path("ssh_key_path", &self.ssh_key_path)?;
        if let Some(fp) = &self.ssh_host_key {
            validate::host_key_fingerprint("ssh_host_key", fp)?;
        }
        validate::data_dirs("data_dirs", &self.data_dirs)?;
        let port_range = self
            .port_range
            .clone()
            .unwrap_or_else(|| default_port_range(self.machine_type).to_string());
        validate::port_range("port_range", &port_range)?;
        if let Some(r) = &self.rack_id {
            validate::name("rack_id", r)?;
        }
        validate::positive_opt("total_mem_mb", self.total_mem_mb)?;
        validate::positive_opt("total_cpu_cores", self.total_cpu_cores)?;
        Ok(NewMachine {
            hostaddr: self.hostaddr.clone(),
            machine_type: self.machine_type,
            rack_id: self.rack_id.clone(),
            data_dirs: self.data_dirs.clone(),
            port_range,
            total_mem_mb: self.total_mem_mb,
            total_cpu_cores: self.total_cpu_cores,
            ssh: SshAccess {
                port: ssh_port,
                user: ssh_user,
                key_path: self.ssh_key_path.clone(),
            },
        })
    }
}

/// `PATCH /v1/machines/{id}`: change some fields of a machine.
///
/// A change of the SSH port, user or key or of the data dirs is probed over SSH with the new
/// values before anything is stored, exactly like a registration (same refusals, same codes);
/// the stored probe facts are refreshed. Other fields (rack, port range, memory, cores) are
/// stored without reaching the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateMachine {
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1))]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub ssh_key_path: Option<String>,
    #[serde(default)]
    pub data_dirs: Option<Vec<String>>,
    #[serde(default)]
    pub port_range: Option<String>,
    #[serde(default)]
    pub rack_id: Option<String>,
    #[serde(default)]
    pub total_mem_mb: Option<i64>,
    #[serde(default)]
    pub total_cpu_cores: Option<i64>,
    /// Probe the machine when SSH access or data dirs change (default `true`). With `false`
    /// the change is stored unchecked and the machine's probe facts are dropped (`null`),
    /// since they no longer describe what is stored.
    #[serde(default = "default_probe")]
    pub probe: bool,
    /// Pinned host key fingerprint for the probe of this change (see
    /// [`RegisterMachine::ssh_host_key`]); e.g. with a new `ssh_port` under strict host key
    /// checking. Not a change by itself.
    #[serde(default)]
    pub ssh_host_key: Option<String>,
}

impl Default for UpdateMachine {
    /// Changes nothing; probing on, as when the field is left out of the JSON.
    fn default() -> Self {
        UpdateMachine {
            ssh_port: None,
            ssh_user: None,
            ssh_key_path: None,
            data_dirs: None,
            port_range: None,
            rack_id: None,
            total_mem_mb: None,
            total_cpu_cores: None,
            probe: true,
            ssh_host_key: None,
        }
    }
}

impl UpdateMachine {
    /// Checks the fields present and builds the patch; an update naming no field to change
    /// (`probe` alone is not a change) is refused.
    pub fn validate(&self) -> Result<MachinePatch> {
        let unchanged = UpdateMachine {
            probe: self.probe,
            ssh_host_key: self.ssh_host_key.clone(),
            ..UpdateMachine::default()
        };
        if self == &unchanged {
            return Err(Error::Invalid("update names no field to change".into()));
        }
        if let Some(p) = self.ssh_port {
            validate::port("ssh_port", p)?;
        }
        if let Some(u) = &self.ssh_user {
            validate::name("ssh_user", u)?;
        }
        if let Some(k) = &self.ssh_key_path {
            validate::abs_path("ssh_key_path", k)?;
        }
        if let Some(fp) = &self.ssh_host_key {
            validate::host_key_fingerprint("ssh_host_key", fp)?;
        }
        if let Some(d) = &self.data_dirs {
            validate::data_dirs("data_dirs", d)?;
        }
        if let Some(r) = &self.port_range {
            validate::port_range("port_range", r)?;
        }
        if let Some(r) = &self.rack_id {
            validate::name("rack_id", r)?;
        }
        validate::positive_opt("total_mem_mb", self.total_mem_mb)?;
        validate::positive_opt("total_cpu_cores", self.total_cpu_cores)?;
        Ok(MachinePatch {
            rack_id: self.rack_id.clone(),
            data_dirs: self.data_dirs.clone(),
            port_range: self.port_range.clone(),
            total_mem_mb: self.total_mem_mb,
            total_cpu_cores: self.total_cpu_cores,
            node_stats: None,
            ssh_port: self.ssh_port,
            ssh_user: self.ssh_user.clone(),
            ssh_key_path: self.ssh_key_path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RegisterMachine {
        RegisterMachine {
            hostaddr: "127.0.0.2".into(),
            machine_type: MachineType::Storage,
            ssh_port: Some(2222),
            ssh_user: None,
            ssh_key_path: "/root/.ssh/id_ed25519".into(),
            data_dirs: vec!["/data/kl".into()],
            port_range: None,
            rack_id: None,
            total_mem_mb: None,
            total_cpu_cores: None,
            probe: true,
            ssh_host_key: None,
        }
    }

    #[test]
    fn register_fills_defaults() {
        let m = req().validate().unwrap();
        assert_eq!(m.port_range, "57000-58000");
        assert_eq!(m.ssh.user, "root");
        assert_eq!(m.ssh.port, 2222);
    }

    #[test]
    fn register_rejects_bad_fields_naming_them() {
        let mut r = req();
        r.hostaddr = "10.0.0.1'; DROP TABLE server_nodes; --".into();
        assert!(r.validate().unwrap_err().to_string().contains("hostaddr"));
        let mut r = req();
        r.data_dirs = vec![];
        assert!(r.validate().unwrap_err().to_string().contains("data_dirs"));
        let mut r = req();
        r.port_range = Some("60000-50000".into());
        assert!(r.validate().unwrap_err().to_string().contains("port_range"));
        let mut r = req();
        r.ssh_key_path = "relative/key".into();
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ssh_key_path"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<RegisterMachine>(
            r#"{"hostaddr":"h","machine_type":"storage","ssh_key_path":"/k","data_dirs":["/d"],"colour":"red"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn probe_defaults_to_true_and_can_be_turned_off() {
        let base =
            r#"{"hostaddr":"h","machine_type":"storage","ssh_key_path":"/k","data_dirs":["/d"]"#;
        let on: RegisterMachine = serde_json::from_str(&format!("{base}}}")).unwrap();
        assert!(on.probe);
        let off: RegisterMachine =
            serde_json::from_str(&format!("{base},\"probe\":false}}")).unwrap();
        assert!(!off.probe);
    }

    #[test]
    fn empty_update_is_refused() {
        assert!(UpdateMachine::default().validate().is_err());
        let probe_only: UpdateMachine = serde_json::from_str(r#"{"probe":false}"#).unwrap();
        let e = probe_only.validate().unwrap_err().to_string();
        assert!(e.contains("names no field"), "{e}");
    }

    #[test]
    fn update_probes_by_default_and_can_be_told_not_to() {
        let on: UpdateMachine = serde_json::from_str(r#"{"ssh_port":2200}"#).unwrap();
        assert!(on.probe);
        assert_eq!(
            on,
            UpdateMachine {
                ssh_port: Some(2200),
                ..Default::default()
            }
        );
        let off: UpdateMachine =
            serde_json::from_str(r#"{"data_dirs":["/d"],"probe":false}"#).unwrap();
        assert!(!off.probe);
        assert_eq!(
            off.validate().unwrap().data_dirs,
            Some(vec!["/d".to_string()])
        );
        let e =
            serde_json::from_str::<UpdateMachine>(r#"{"ssh_port":1,"probe":"no"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}

/// `GET /v1/clusters/{id}`: a cluster with its shards, their nodes and its compute nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ClusterDetail {
    pub cluster: crate::model::Cluster,
    pub shards: Vec<ShardDetail>,
    pub comp_nodes: Vec<crate::model::CompNode>,
}

/// A shard with its storage nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ShardDetail {
    pub shard: crate::model::Shard,
    pub nodes: Vec<crate::model::ShardNode>,
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Only jobs in this status.
    #[serde(default)]
    pub status: Option<crate::model::JobStatus>,
    /// Only jobs of this type.
    #[serde(default)]
    #[cfg_attr(
        feature = "utoipa",
        param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    )]
    pub job_type: Option<String>,
    /// At most this many, newest first (default 100, 1..=1000; anything else is a 400).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
    /// Only jobs older than this id: the `X-Next-Cursor` of the previous page.
    #[serde(default)]
    pub after: Option<i64>,
}

impl JobQuery {
    /// The page size asked for, checked; and the job type, if any, is a valid name.
    pub fn validate(&self) -> Result<u32> {
        if let Some(t) = &self.job_type {
            validate::name("job_type", t)?;
        }
        page_limit(self.limit)
    }
}

/// Page size of a list when `limit` is not given.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// Largest `limit` accepted; more is refused (400), not clamped, so a client never mistakes a
/// short page for the end.
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// Response header carrying the cursor of the next page (absent on the last page).
pub const NEXT_CURSOR_HEADER: &str = "X-Next-Cursor";

/// `?limit=&after=` of a paginated list (machines and clusters by id ascending; jobs and
/// failovers newest first). The answer stays a JSON array; when more rows follow, the
/// response carries the next page's `after` in [`NEXT_CURSOR_HEADER`] and a `Link` header
/// `rel="next"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// At most this many rows (default 100, 1..=1000; anything else is a 400).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
    /// Only rows past this id: the cursor of the previous page.
    #[serde(default)]
    pub after: Option<i64>,
}

impl PageQuery {
    /// The page size asked for, checked.
    pub fn validate(&self) -> Result<u32> {
        page_limit(self.limit)
    }
}

fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(l) if (1..=MAX_PAGE_LIMIT).contains(&l) => Ok(l),
        Some(_) => Err(Error::Invalid(format!(
            "limit: must be 1..={MAX_PAGE_LIMIT}"
        ))),
    }
}

/// One page of a list and the cursor of the next one (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows read in list order: the extra row, if any, only tells
    /// that more follow, and the cursor is the id of the page's last row.
    pub fn from_probe(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> i64) -> Page<T> {
        let limit = limit as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(&id)
        } else {
            None
        };
        Page { items: rows, next }
    }
}

/// One prepared Kunlun XA branch on a shard primary (`GET /v1/clusters/{id}/xa`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct XaBranch {
    /// `<comp_node_id>-<start_ts>-<local_xid>`.
    pub xid: String,
    /// Seconds since the global transaction started, by the metadata server's clock.
    pub age_sec: u64,
    /// The decision logged in the cluster's commit log, if any.
    pub decision: Option<crate::model::TxnCmd>,
}

/// The prepared branches found on one shard's primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct XaShard {
    pub shard_id: i64,
    /// `host:port` of the primary asked, if one is recorded.
    pub node: Option<String>,
    pub branches: Vec<XaBranch>,
    /// Prepared branches that are not Kunlun's (never touched by the manager).
    pub foreign: usize,
    /// Why the shard could not be asked.
    pub error: Option<String>,
}

/// In-doubt branches of a cluster, per shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct XaInDoubt {
    pub cluster_id: i64,
    pub cluster_name: String,
    pub shards: Vec<XaShard>,
}

/// How an operator ends an in-doubt transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum XaAction {
    Commit,
    Rollback,
}

/// Body of `POST /v1/clusters/{id}/xa/{xid}/resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct XaResolveRequest {
    pub action: XaAction,
    /// Why (kept in the audit trail); 1 to 1024 characters.
    pub reason: String,
}

impl XaResolveRequest {
    /// Checks the reason.
    pub fn validate(&self) -> Result<()> {
        let n = self.reason.trim().chars().count();
        if n == 0 || self.reason.chars().count() > 1024 {
            return Err(Error::Invalid(
                "reason: must be 1 to 1024 characters".into(),
            ));
        }
        if let Some(c) = self.reason.chars().find(|c| c.is_control()) {
            return Err(Error::Invalid(format!(
                "reason: control character {c:?} not allowed"
            )));
        }
        Ok(())
    }
}

/// What a manual resolution did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct XaResolveResult {
    pub xid: String,
    /// The decision in the commit log, which every branch followed.
    pub decision: crate::model::TxnCmd,
    /// Shards whose branch was ended now.
    pub ended_on: Vec<i64>,
    /// Shards where the branch is still attached to its owner's session (left to it).
    pub attached_on: Vec<i64>,
    /// Shards that could not be reached or failed (retry, or the resolver will finish).
    pub failed_on: Vec<i64>,
    /// Id of the audit record (a `xa_resolve` job).
    pub audit_job_id: i64,
}

/// Body of `PATCH /v1/clusters/{id}/policy`: the self-healing switches to change (at least
/// one); a switch left out keeps its value. Read from a JSON object only (see its
/// `Deserialize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateClusterPolicy {
    /// The instance keeper starts the cluster's dead instances again.
    #[serde(default)]
    pub auto_restart: Option<bool>,
    /// A replica HA kept out for rebuild is rebuilt by a job on its own.
    #[serde(default)]
    pub auto_rebuild: Option<bool>,
}

/// By hand rather than derived: a derived struct is also read from an array (`[false]` would
/// mean `auto_restart: false`), a guess at what a malformed body meant. Only an object with
/// the two known keys, each at most once, is accepted.
impl<'de> Deserialize<'de> for UpdateClusterPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{Error as _, MapAccess, Visitor};
        const FIELDS: &[&str] = &["auto_restart", "auto_rebuild"];
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = UpdateClusterPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with auto_restart and/or auto_rebuild")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = UpdateClusterPolicy::default();
                let mut seen = [false; 2];
                while let Some(k) = m.next_key::<String>()? {
                    let i = FIELDS
                        .iter()
                        .position(|f| *f == k)
                        .ok_or_else(|| A::Error::unknown_field(&k, FIELDS))?;
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(A::Error::duplicate_field(FIELDS[i]));
                    }
                    let v = m.next_value::<Option<bool>>()?;
                    if i == 0 {
                        out.auto_restart = v;
                    } else {
                        out.auto_rebuild = v;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

impl UpdateClusterPolicy {
    /// Refuses a patch that changes nothing (`{}`).
    pub fn validate(&self) -> Result<()> {
        if self.auto_restart.is_none() && self.auto_rebuild.is_none() {
            return Err(Error::Invalid(
                "name at least one of auto_restart, auto_rebuild".into(),
            ));
        }
        Ok(())
    }

    /// `p` with the switches this patch names changed.
    pub fn apply(&self, p: crate::model::ClusterPolicy) -> crate::model::ClusterPolicy {
        crate::model::ClusterPolicy {
            cluster_id: p.cluster_id,
            auto_restart: self.auto_restart.unwrap_or(p.auto_restart),
            auto_rebuild: self.auto_rebuild.unwrap_or(p.auto_rebuild),
        }
    }
}

/// `POST /v1/clusters` (job `create_cluster`): a cluster of `shards` storage shards of `nodes`
/// nodes each plus `comps` compute nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    /// Unique; also names the tables `commit_log_<name>` and `ddl_ops_log_<name>`, so only
    /// `A-Z a-z 0-9 _`, at most 48 characters.
    #[cfg_attr(feature = "utoipa", schema(pattern = "^[A-Za-z0-9_]{1,48}$"))]
    pub name: String,
    #[serde(default)]
    pub nick_name: Option<String>,
    /// `rbr` (primary + replicas, semi-sync) or `no_rep` (one node per shard).
    pub ha_mode: crate::model::HaMode,
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 64))]
    pub shards: u32,
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 9))]
    pub nodes: u32,
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 32))]
    pub comps: u32,
    /// InnoDB buffer pool of each storage node, MB (default 128).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 1048576))]
    pub innodb_size_mb: Option<u32>,
    /// `max_connections` of every instance (default 1000).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 100000))]
    pub max_connections: Option<u32>,
    /// Only these storage machines (host addresses), else all running ones.
    #[serde(default)]
    pub storage_hosts: Vec<String>,
    /// Only these compute machines (host addresses), else all running ones.
    #[serde(default)]
    pub computer_hosts: Vec<String>,
}

impl CreateCluster {
    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty() || n.len() > 48 || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Invalid(
                "name: 1 to 48 characters of A-Z, a-z, 0-9, '_'".into(),
            ));
        }
        if let Some(nick) = &self.nick_name {
            validate::text("nick_name", nick)?;
        }
        count("shards", self.shards, MAX_SHARDS)?;
        count("nodes", self.nodes, MAX_NODES)?;
        count("comps", self.comps, MAX_COMPS)?;
        let instances = self.shards * self.nodes + self.comps;
        if instances > MAX_INSTANCES {
            return Err(Error::Invalid(format!(
                "shards: {} shards of {} nodes plus {} compute nodes are {instances} \
                 instances, at most {MAX_INSTANCES} in one job",
                self.shards, self.nodes, self.comps
            )));
        }
        match self.ha_mode {
            crate::model::HaMode::Rbr => {}
            crate::model::HaMode::NoRep if self.nodes == 1 => {}
            crate::model::HaMode::NoRep => {
                return Err(Error::Invalid(
                    "nodes: ha_mode no_rep has exactly 1 node per shard".into(),
                ))
            }
            crate::model::HaMode::Mgr => {
                return Err(Error::Invalid(
                    "ha_mode: mgr is not supported (use rbr or no_rep)".into(),
                ))
            }
        }
        if let Some(v) = self.innodb_size_mb {
            if !(1..=MAX_INNODB_SIZE_MB).contains(&v) {
                return Err(Error::Invalid(format!(
                    "innodb_size_mb: must be 1 to {MAX_INNODB_SIZE_MB}, not {v}"
                )));
            }
        }
        if let Some(v) = self.max_connections {
            if !(1..=MAX_MAX_CONNECTIONS).contains(&v) {
                return Err(Error::Invalid(format!(
                    "max_connections: must be 1 to {MAX_MAX_CONNECTIONS}, not {v}"
                )));
            }
        }
        for h in self.storage_hosts.iter().chain(&self.computer_hosts) {
            validate::hostaddr("hosts", h)?;
        }
        Ok(())
    }
}

/// `POST /v1/clusters/{id}/shards` (job `add_shards`): `shards` new shards of `nodes` nodes
/// each, placed like `create_cluster` places them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddShards {
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 64))]
    pub shards: u32,
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 9))]
    pub nodes: u32,
    /// Only these storage machines (host addresses), else all running ones.
    #[serde(default)]
    pub storage_hosts: Vec<String>,
}

impl AddShards {
    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<()> {
        count("shards", self.shards, MAX_SHARDS)?;
        count("nodes", self.nodes, MAX_NODES)?;
        hosts(&self.storage_hosts)
    }
}

/// `POST /v1/clusters/{id}/shards/{shard_id}/nodes` (job `add_nodes`): `nodes` new replicas,
/// seeded with the shard's data, then following its primary by GTID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddNodes {
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 9))]
    pub nodes: u32,
    /// Only these storage machines (host addresses), else all running ones.
    #[serde(default)]
    pub storage_hosts: Vec<String>,
}

impl AddNodes {
    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<()> {
        count("nodes", self.nodes, MAX_NODES)?;
        hosts(&self.storage_hosts)
    }
}

/// `POST /v1/clusters/{id}/comps` (job `add_comps`): `comps` new compute nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddComps {
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 32))]
    pub comps: u32,
    /// Only these compute machines (host addresses), else all running ones.
    #[serde(default)]
    pub computer_hosts: Vec<String>,
}

impl AddComps {
    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<()> {
        count("comps", self.comps, MAX_COMPS)?;
        hosts(&self.computer_hosts)
    }
}

/// How a rebuilt replica gets its new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RebuildMethod {
    /// A physical snapshot: `mariadb-backup --backup --stream` on the source's machine, relayed
    /// over SSH into `mbstream -x` on the node's machine, then `--prepare` (the default: the
    /// faster one, see README).
    #[default]
    Backup,
    /// A logical copy: `mariadb-dump --single-transaction --gtid` of the source loaded into a
    /// freshly initialised instance (what `add_nodes` does); needs no backup tool.
    Dump,
}

impl RebuildMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RebuildMethod::Backup => "backup",
            RebuildMethod::Dump => "dump",
        }
    }
}

/// `POST /v1/instances/{host}:{port}/rebuild` (job `rebuild_node`): the replica's data is
/// replaced in place by a consistent copy of a healthy replica's (else the primary's), then
/// it follows the primary by GTID again. No body, or `{}`, chooses the source and the method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RebuildNode {
    /// `host:port` of the node to copy from: a replica of the same shard, or its primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `backup` (default) or `dump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<RebuildMethod>,
}

impl RebuildNode {
    /// Checks every field; the message names the field. Returns the source as (host, port).
    pub fn validate(&self) -> Result<Option<(String, u16)>> {
        let Some(src) = &self.source else {
            return Ok(None);
        };
        let parsed = src
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p > 0)?)));
        match parsed {
            Some((h, p)) => {
                validate::hostaddr("source", h)?;
                Ok(Some((h.to_string(), p)))
            }
            None => Err(Error::Invalid(format!("source: {src:?} is not host:port"))),
        }
    }
}

/// Most shards one request may create.
pub const MAX_SHARDS: u32 = 64;
/// Most nodes per shard (one primary and its replicas).
pub const MAX_NODES: u32 = 9;
/// Most compute nodes one request may create.
pub const MAX_COMPS: u32 = 32;
/// Most instances one `create_cluster` job installs (they are installed in parallel).
pub const MAX_INSTANCES: u32 = 256;
/// Largest InnoDB buffer pool, MB (1 TiB).
pub const MAX_INNODB_SIZE_MB: u32 = 1 << 20;
/// Largest `max_connections` of an instance.
pub const MAX_MAX_CONNECTIONS: u32 = 100_000;

fn count(field: &str, v: u32, max: u32) -> Result<()> {
    if (1..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field}: must be 1 to {max}, not {v}"
        )))
    }
}

fn hosts(list: &[String]) -> Result<()> {
    for h in list {
        validate::hostaddr("hosts", h)?;
    }
    Ok(())
}

#[cfg(test)]
mod create_cluster_tests {
    use super::*;
    use crate::model::HaMode;

    fn req() -> CreateCluster {
        CreateCluster {
            name: "c1".into(),
            nick_name: None,
            ha_mode: HaMode::Rbr,
            shards: 2,
            nodes: 3,
            comps: 1,
            innodb_size_mb: None,
            max_connections: None,
            storage_hosts: vec![],
            computer_hosts: vec![],
        }
    }

    #[test]
    fn bad_create_cluster_requests_are_refused() {
        req().validate().unwrap();
        let mut r = req();
        r.shards = 0;
        assert!(r.validate().unwrap_err().to_string().contains("shards"));
        r = req();
        r.nodes = 257;
        assert!(r.validate().is_err());
        r = req();
        r.name = "a-b".into();
        assert!(r.validate().unwrap_err().to_string().contains("name"));
        r = req();
        r.ha_mode = HaMode::NoRep;
        assert!(r.validate().is_err(), "no_rep with 3 nodes");
        r.nodes = 1;
        r.validate().unwrap();
        r.ha_mode = HaMode::Mgr;
        assert!(r.validate().is_err());
        r = req();
        r.storage_hosts = vec!["bad host".into()];
        assert!(r.validate().is_err());
    }

    #[test]
    fn sizes_counts_and_free_text_are_bounded() {
        let mut r = req();
        r.innodb_size_mb = Some(u32::MAX);
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("innodb_size_mb"));
        r = req();
        r.max_connections = Some(4_294_967_295);
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_connections"));
        r = req();
        (r.shards, r.nodes, r.comps) = (64, 9, 32);
        assert!(r.validate().unwrap_err().to_string().contains("instances"));
        r = req();
        r.comps = 33;
        assert!(r.validate().is_err());
        r = req();
        r.nick_name = Some("x".repeat(256));
        assert!(r.validate().unwrap_err().to_string().contains("nick_name"));
        r.nick_name = Some("a\u{1b}[2Jb".into());
        assert!(r.validate().unwrap_err().to_string().contains("control"));
        r.nick_name = Some("Ünïcode nick, 255 chars ok".into());
        r.validate().unwrap();
        let xa = |reason: &str| XaResolveRequest {
            action: XaAction::Commit,
            reason: reason.into(),
        };
        assert!(xa("fix\u{1b}[2J").validate().is_err());
        xa("coordinator lost, checked the app's log")
            .validate()
            .unwrap();
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn a_page_ends_where_the_probe_row_begins() {
        let full = Page::from_probe(vec![1, 2, 3, 4], 3, |&i| i64::from(i));
        assert_eq!(full.items, vec![1, 2, 3]);
        assert_eq!(full.next, Some(3));
        let last = Page::from_probe(vec![7, 8, 9], 3, |&i| i64::from(i));
        assert_eq!(last.items, vec![7, 8, 9]);
        assert_eq!(last.next, None);
        let empty = Page::from_probe(Vec::<i32>::new(), 3, |&i| i64::from(i));
        assert_eq!(empty.next, None);
    }

    #[test]
    fn limit_defaults_and_is_refused_past_the_cap() {
        let q = |limit| PageQuery { limit, after: None };
        assert_eq!(q(None).validate().ok(), Some(DEFAULT_PAGE_LIMIT));
        assert_eq!(q(Some(1)).validate().ok(), Some(1));
        assert_eq!(
            q(Some(MAX_PAGE_LIMIT)).validate().ok(),
            Some(MAX_PAGE_LIMIT)
        );
        assert!(q(Some(0)).validate().is_err());
        assert!(q(Some(MAX_PAGE_LIMIT + 1)).validate().is_err());
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use crate::model::ClusterPolicy;

    #[test]
    fn a_policy_patch_names_a_switch_and_changes_only_what_it_names() {
        let empty: UpdateClusterPolicy = serde_json::from_str("{}").unwrap();
        assert!(empty.validate().is_err());
        assert!(
            serde_json::from_str::<UpdateClusterPolicy>(r#"{"auto_restart": true, "x": 1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<UpdateClusterPolicy>(r#"{"auto_restart": "yes"}"#).is_err());
        for guess in [
            "[false]",
            "[false, true]",
            "false",
            r#"{"auto_restart": true, "auto_restart": false}"#,
        ] {
            assert!(
                serde_json::from_str::<UpdateClusterPolicy>(guess).is_err(),
                "{guess}"
            );
        }
        let off: UpdateClusterPolicy = serde_json::from_str(r#"{"auto_restart": false}"#).unwrap();
        off.validate().unwrap();
        let p = off.apply(ClusterPolicy::default_for(3));
        assert_eq!(
            p,
            ClusterPolicy {
                cluster_id: 3,
                auto_restart: false,
                auto_rebuild: true
            }
        );
    }
}

#[cfg(test)]
mod rebuild_tests {
    use super::*;

    #[test]
    fn a_rebuild_body_names_a_source_by_host_and_port_and_nothing_else() {
        let b: RebuildNode = serde_json::from_str("{}").unwrap();
        assert_eq!(b.validate().unwrap(), None);
        let b: RebuildNode =
            serde_json::from_str(r#"{"source": "10.0.0.2:57003", "method": "dump"}"#).unwrap();
        assert_eq!(b.validate().unwrap(), Some(("10.0.0.2".into(), 57003)));
        assert_eq!(b.method, Some(RebuildMethod::Dump));
        for bad in ["10.0.0.2", "10.0.0.2:0", ":57003", "a b:1", "h:70000"] {
            let b = RebuildNode {
                source: Some(bad.into()),
                method: None,
            };
            assert!(b.validate().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RebuildNode>(r#"{"sources": "h:1"}"#).is_err());
        assert!(serde_json::from_str::<RebuildNode>(r#"{"method": "rsync"}"#).is_err());
    }
}
