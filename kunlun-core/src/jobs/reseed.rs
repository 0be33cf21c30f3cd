//! The machine work of a replica rebuild (`rebuild_node`), step by step, for the job in
//! [`super::kinds::rebuild_node`] to order and record: where an instance lives, how much room
//! a copy needs, stop and start, setting its data aside and putting it back, the two ways of
//! copying a consistent snapshot into it (the physical stream of [`Reseed`] or the logical
//! dump of [`super::seed`]), and following the primary again.
//!
//! Invariants: every SSH call and every SQL call has a deadline; the server's file layout is
//! the recipe's ([`Reseed`] scripts), never written here; passwords go only where
//! [`super::seed`] and the recipes put them (stdin, 0600 files); a copy only ever lands in a
//! data dir the set-aside emptied.

use std::time::Duration;

use kunlun_meta::api::RebuildMethod;
use kunlun_meta::model::{Machine, MachineType, MemberState, NodeStatus, ShardNode};
use kunlun_meta::store::repo::dirs::{self, NodeKind};
use kunlun_meta::store::Store;
use kunlun_provision::placement::InstanceKind;
use kunlun_provision::recipe::reseed::{self as scripts, Compression, Reseed};
use kunlun_provision::recipe::{sh_quote, validate_base_dir, InstanceSpec, Step};
use kunlun_provision::SshTarget;

use super::install::storage_users;
use super::plan::SystemPasswords;
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::storage::probe::{probe_node, NodeProbe};
use crate::storage::{NodeAddr, StorageConn, StorageOptions};

/// Deadline of a script that only looks (space, programs).
const LOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of setting data aside or putting it back (renames, and removing a partial copy).
const MOVE_TIMEOUT: Duration = Duration::from_secs(600);
/// Deadline of removing the set-aside data (a whole old data set).
const DROP_TIMEOUT: Duration = Duration::from_secs(1800);
/// The copy's deadline: this much for any size, plus the data at [`SLOWEST_COPY_KB_S`].
const COPY_BASE: Duration = Duration::from_secs(3600);
const SLOWEST_COPY_KB_S: u64 = 20 * 1024;

/// One installed storage instance as a rebuild reaches it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub node: ShardNode,
    pub machine: Machine,
    pub target: SshTarget,
    /// The recipe's spec: where it lives and its system users (for a re-initialisation).
    pub spec: InstanceSpec,
}

impl Instance {
    pub fn addr(&self) -> NodeAddr {
        NodeAddr::from(&self.node)
    }

    pub fn base_dir(&self) -> &str {
        &self.spec.base_dir
    }
}

/// Finds `node`'s storage machine and instance dir (recorded at install, else the conventional
/// one under the machine's first data dir).
pub async fn locate(
    store: &Store,
    fleet: &Provisioner,
    node: &ShardNode,
    passwords: &SystemPasswords,
) -> Result<Instance> {
    let machine = store
        .list_machines()
        .await?
        .into_iter()
        .find(|m| m.hostaddr == node.hostaddr && m.machine_type == MachineType::Storage)
        .ok_or_else(|| {
            Error::Conflict(format!(
                "no storage machine is registered at {} (node {})",
                node.hostaddr, node.id
            ))
        })?;
    let id = node.id;
    let recorded = store
        .read(async |tx| dirs::get(tx, NodeKind::Storage, id).await)
        .await?;
    let base_dir = match recorded {
        Some(d) => d,
        None => machine
            .data_dirs
            .first()
            .map(|d| InstanceSpec::base_dir_for(d, InstanceKind::Storage, node.port))
            .ok_or_else(|| Error::Conflict(format!("machine {} has no data dir", machine.id)))?,
    };
    validate_base_dir(&base_dir).map_err(|e| Error::Conflict(e.to_string()))?;
    let spec = InstanceSpec {
        bind_address: node.hostaddr.clone(),
        port: node.port,
        base_dir,
        server_id: 0,
        buffer_mb: 0,
        max_connections: 0,
        semi_sync: false,
        users: storage_users(passwords),
    };
    Ok(Instance {
        target: fleet.target(&machine),
        node: node.clone(),
        machine,
        spec,
    })
}

/// The recipe's reseeding scripts (`Conflict` when the storage recipe has none).
pub fn reseed(fleet: &Provisioner) -> Result<&dyn Reseed> {
    fleet.storage.reseed().ok_or_else(|| {
        Error::Conflict(format!(
            "the {} recipe cannot reseed an instance in place",
            fleet.storage.name()
        ))
    })
}

/// A machine-side error as the job reports it: a missing program is a refusal the operator
/// fixes (`Conflict`), a bad path or tag `Invalid`, anything else `Unavailable`.
/// A failed remote script is told by its host, status and stderr's tail, not by its text
/// (a script is long and says nothing the step's name does not).
fn machine(e: kunlun_provision::Error) -> Error {
    use kunlun_provision::Error as P;
    match e {
        P::Refused { .. } => Error::Conflict(e.to_string()),
        P::Invalid(m) => Error::Invalid(m),
        P::RemoteFailed {
            host,
            status,
            stderr_tail,
            ..
        } => Error::Unavailable(format!(
            "{host}: failed with {status}: {}",
            clip(&stderr_tail)
        )),
        other => Error::Unavailable(clip(&other.to_string())),
    }
}

/// Longest error text a rebuild records (a failed load can print whole rows).
const CLIP: usize = 1000;

/// `s` at most [`CLIP`] characters: its start and its end (where tools say what went wrong).
pub fn clip(s: &str) -> String {
    let n = s.chars().count();
    if n <= CLIP {
        return s.to_string();
    }
    let head: String = s.chars().take(CLIP / 4).collect();
    let tail: String = s.chars().skip(n - (CLIP - CLIP / 4)).collect();
    format!("{head} … {tail}")
}

/// Runs `script` on `target` (through `sh -c`) within `timeout`; a failed programs check is a
/// refusal naming the programs `what` needs.
async fn script(
    fleet: &Provisioner,
    target: &SshTarget,
    script: &str,
    what: &str,
    timeout: Duration,
) -> Result<String> {
    let out = fleet
        .ssh
        .exec(target, &format!("sh -c {}", sh_quote(script)), timeout)
        .await
        .map_err(machine)?;
    Ok(scripts::checked(out, what).map_err(machine)?.stdout_str())
}

/// `(data_kb, free_kb)` of `inst`, after checking it has `programs`.
pub async fn space(
    fleet: &Provisioner,
    inst: &Instance,
    programs: &[String],
) -> Result<(u64, u64)> {
    let s = reseed(fleet)?
        .space_script(inst.base_dir(), programs)
        .map_err(machine)?;
    let out = script(
        fleet,
        &inst.target,
        &s,
        "the physical snapshot",
        LOOK_TIMEOUT,
    )
    .await?;
    let kb = |key: &str| -> Result<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::Internal(format!("the space check printed no {key}: {out}")))
    };
    Ok((kb("data_kb=")?, kb("free_kb=")?))
}

/// How much a sample of `inst`'s largest table files shrinks through the stored snapshots'
/// compressor (see [`scripts::estimated_ratio`]); `None` when it holds no table file to
/// sample. A compressor that printed nothing for a non-empty sample is an error.
pub async fn compressibility(fleet: &Provisioner, inst: &Instance) -> Result<Option<f64>> {
    let s = reseed(fleet)?
        .compressibility_script(inst.base_dir())
        .map_err(machine)?;
    let out = script(
        fleet,
        &inst.target,
        &s,
        "the compressibility sample",
        LOOK_TIMEOUT,
    )
    .await?;
    let samples = scripts::parse_compressibility(&out);
    if samples
        .iter()
        .any(|f| f.sample_bytes > 0 && f.zstd_bytes == 0)
    {
        return Err(Error::Unavailable(clip(&format!(
            "the compressibility sample of {}: the compressor wrote nothing ({out})",
            inst.addr()
        ))));
    }
    Ok(scripts::estimated_ratio(&samples))
}

/// Whether `free_kb` holds a copy of `data_kb` with a margin (a tenth, at least 256 MB): the
/// old data stays on the same file system until the new data is in service.
pub fn room_for(data_kb: u64, free_kb: u64) -> bool {
    let margin = (data_kb / 10).max(256 * 1024);
    data_kb
        .checked_add(margin)
        .is_some_and(|need| free_kb >= need)
}

/// The copy's deadline for `data_kb` of data (see [`COPY_BASE`]), slower under a rate limit.
pub fn copy_timeout(data_kb: u64, rate_mb_s: Option<u32>) -> Duration {
    let kb_s = rate_mb_s
        .map(|r| u64::from(r) * 1024)
        .unwrap_or(SLOWEST_COPY_KB_S)
        .clamp(1, SLOWEST_COPY_KB_S);
    COPY_BASE + Duration::from_secs(data_kb / kb_s)
}

/// Runs recipe `steps` on `inst`.
async fn steps(fleet: &Provisioner, inst: &Instance, steps: &[Step]) -> Result<()> {
    fleet
        .storage
        .run_steps(&fleet.ssh, &inst.target, &inst.spec, steps, None)
        .await
        .map_err(|e| Error::Unavailable(clip(&format!("{}: {e}", inst.addr()))))
}

/// Stops the instance (idempotent).
pub async fn stop(fleet: &Provisioner, inst: &Instance) -> Result<()> {
    steps(fleet, inst, &[Step::Stop]).await
}

/// Starts the instance and waits until it answers (idempotent).
pub async fn start(fleet: &Provisioner, inst: &Instance) -> Result<()> {
    steps(fleet, inst, &[Step::Start, Step::WaitReady]).await
}

/// Starts the instance, waits until it answers, and sets its system users as `inst.spec`
/// has them (new data from elsewhere: a restored snapshot holds its source's accounts).
pub async fn start_with_users(fleet: &Provisioner, inst: &Instance) -> Result<()> {
    steps(
        fleet,
        inst,
        &[Step::Start, Step::WaitReady, Step::CreateUsers],
    )
    .await
}

/// Moves the stopped instance's data aside under `tag`, leaving empty dirs.
pub async fn set_aside(fleet: &Provisioner, inst: &Instance, tag: &str) -> Result<()> {
    let s = reseed(fleet)?
        .set_aside_script(inst.base_dir(), tag)
        .map_err(machine)?;
    script(
        fleet,
        &inst.target,
        &s,
        "setting the data aside",
        MOVE_TIMEOUT,
    )
    .await?;
    Ok(())
}

/// Puts the data set aside under `tag` back in place (the server stopped first), then starts
/// the instance when `start_after`.
pub async fn put_back(
    fleet: &Provisioner,
    inst: &Instance,
    tag: &str,
    start_after: bool,
) -> Result<()> {
    stop(fleet, inst).await?;
    let s = reseed(fleet)?
        .put_back_script(inst.base_dir(), tag)
        .map_err(machine)?;
    script(
        fleet,
        &inst.target,
        &s,
        "putting the data back",
        MOVE_TIMEOUT,
    )
    .await?;
    if start_after {
        start(fleet, inst).await?;
    }
    Ok(())
}

/// Removes every set-aside copy of the instance's data.
pub async fn drop_aside(fleet: &Provisioner, inst: &Instance) -> Result<()> {
    let s = reseed(fleet)?
        .drop_aside_script(inst.base_dir())
        .map_err(machine)?;
    script(
        fleet,
        &inst.target,
        &s,
        "removing the old data",
        DROP_TIMEOUT,
    )
    .await?;
    Ok(())
}

/// What a copy brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The GTID position the new data is at.
    pub gtid: String,
    /// Bytes streamed (physical copies).
    pub bytes: Option<u64>,
}

/// Copies a consistent snapshot of `source` (running) into `inst` with `method`, within
/// `timeout`. A physical copy stops `inst` and sets its data aside under `tag` in the session
/// that receives the stream (so the source's backup starts meanwhile), and leaves it stopped;
/// a dump needs `inst` stopped with its data set aside already, and leaves it running (it was
/// initialised afresh to load the dump).
pub async fn copy(
    fleet: &Provisioner,
    method: RebuildMethod,
    source: &Instance,
    inst: &Instance,
    tag: &str,
    rate_mb_s: Option<u32>,
    timeout: Duration,
) -> Result<Copied> {
    match method {
        RebuildMethod::Backup => {
            let r = reseed(fleet)?;
            let stop = fleet
                .storage
                .step_script(&inst.spec, Step::Stop)
                .ok_or_else(|| Error::Conflict("the storage recipe has no stop script".into()))?;
            let send = r
                .backup_script(source.base_dir(), Compression::None)
                .map_err(machine)?;
            let receive = format!(
                "(\n{stop}\n) || exit $?\n(\n{aside}\n) || exit $?\n{restore}",
                aside = r.set_aside_script(inst.base_dir(), tag).map_err(machine)?,
                restore = r
                    .restore_script(inst.base_dir(), Compression::None)
                    .map_err(machine)?,
            );
            let piped = fleet
                .ssh
                .pipe(
                    &source.target,
                    &format!("sh -c {}", sh_quote(&send)),
                    &inst.target,
                    &format!("sh -c {}", sh_quote(&receive)),
                    rate_mb_s.map(|r| u64::from(r) * 1024 * 1024),
                    timeout,
                )
                .await
                .map_err(|e| {
                    Error::Unavailable(format!(
                        "snapshot of {} into {}: {}",
                        source.addr(),
                        inst.addr(),
                        machine(e)
                    ))
                })?;
            let gtid = scripts::parse_snapshot_gtid(&piped.sink.stdout_str()).map_err(machine)?;
            Ok(Copied {
                gtid,
                bytes: Some(piped.bytes),
            })
        }
        RebuildMethod::Dump => {
            // A fresh instance (the set-aside took its initialised marker along), its system
            // users, then the dump loaded without binary logging.
            steps(
                fleet,
                inst,
                &[
                    Step::Initialise,
                    Step::Start,
                    Step::WaitReady,
                    Step::CreateUsers,
                ],
            )
            .await?;
            let gtid = super::seed::seed(
                &fleet.ssh,
                &*fleet.storage,
                &inst.target,
                inst.base_dir(),
                &source.addr(),
                &inst.addr(),
            )
            .await
            .map_err(|e| Error::Unavailable(clip(&e.to_string())))?;
            Ok(Copied { gtid, bytes: None })
        }
    }
}

fn sql_err(what: &str, inst: &NodeAddr) -> impl Fn(crate::storage::Error) -> Error {
    let (what, inst) = (what.to_string(), inst.to_string());
    move |e| Error::Unavailable(format!("{what} on {inst}: {e}"))
}

/// Makes the (running) rebuilt instance read-only at once: it is not in service, and only the
/// primary may take writes.
pub async fn read_only(inst: &NodeAddr) -> Result<()> {
    let mut c = StorageConn::connect(inst, StorageOptions::default())
        .await
        .map_err(sql_err("read_only", inst))?;
    c.exec("SET GLOBAL read_only = ON")
        .await
        .map_err(sql_err("read_only", inst))?;
    c.close().await;
    Ok(())
}

/// Makes `inst` follow `primary` by GTID from `gtid` ([`super::seed::follow`]); when it already
/// names `primary` as its source (a resumed job that got that far), replication is only started.
pub async fn follow(inst: &NodeAddr, primary: &NodeAddr, repl_pwd: &str, gtid: &str) -> Result<()> {
    let p = probe_node(inst, StorageOptions::default()).await;
    if let Some(e) = p.error {
        return Err(Error::Unavailable(format!("{inst}: {e}")));
    }
    if p.channel_from(&primary.host, primary.port).is_some() {
        let mut c = StorageConn::connect(inst, StorageOptions::default())
            .await
            .map_err(sql_err("START SLAVE", inst))?;
        c.exec("START SLAVE")
            .await
            .map_err(sql_err("START SLAVE", inst))?;
        c.close().await;
        return Ok(());
    }
    super::seed::follow(inst, (&primary.host, primary.port), repl_pwd, gtid).await
}

/// A replica that could be the source of a copy (a rebuild's, a backup's snapshot): its row,
/// how far behind it is, whether it replicates from the primary with both threads running.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: ShardNode,
    pub healthy: bool,
    pub lag_s: Option<i64>,
}

impl Candidate {
    pub fn of(node: &ShardNode, probe: &NodeProbe, primary: &ShardNode) -> Candidate {
        let ch = probe.channel_from(&primary.hostaddr, primary.port);
        let healthy = probe.reachable && ch.is_some_and(|c| c.io_connected() && c.sql_running);
        Candidate {
            node: node.clone(),
            healthy,
            lag_s: ch.and_then(|c| c.seconds_behind),
        }
    }
}

/// The source among `candidates` (pure): the healthy active replica least behind within
/// `max_lag_s` (ties: the lowest id), else the primary when allowed; `None` when neither.
pub fn pick_source(
    candidates: &[Candidate],
    primary: &ShardNode,
    max_lag_s: u32,
    allow_primary: bool,
) -> Option<ShardNode> {
    candidates
        .iter()
        .filter(|c| {
            c.healthy
                && c.node.id != primary.id
                && c.node.member_state == MemberState::Replica
                && c.node.status == NodeStatus::Active
                && c.lag_s.is_some_and(|l| l <= i64::from(max_lag_s))
        })
        .min_by_key(|c| (c.lag_s, c.node.id))
        .map(|c| c.node.clone())
        .or_else(|| allow_primary.then(|| primary.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::common::tests::node;

    fn cand(id: i64, healthy: bool, lag: Option<i64>) -> Candidate {
        Candidate {
            node: node(id, false),
            healthy,
            lag_s: lag,
        }
    }

    #[test]
    fn the_source_is_the_healthiest_replica_else_the_primary_if_allowed() {
        let primary = node(1, true);
        let c = [
            cand(2, true, Some(5)),
            cand(3, true, Some(0)),
            cand(4, false, Some(0)),
            cand(5, true, None),
        ];
        assert_eq!(pick_source(&c, &primary, 30, true).unwrap().id, 3);
        // Too far behind: the primary, when allowed.
        let late = [cand(2, true, Some(100))];
        assert_eq!(pick_source(&late, &primary, 30, true).unwrap().id, 1);
        assert!(pick_source(&late, &primary, 30, false).is_none());
        assert_eq!(pick_source(&late, &primary, 100, false).unwrap().id, 2);
        // Broken replicas never.
        assert!(pick_source(&[cand(4, false, Some(0))], &primary, 30, false).is_none());
        assert_eq!(pick_source(&[], &primary, 30, true).unwrap().id, 1);
    }

    #[test]
    fn a_copy_needs_its_size_and_a_margin_free() {
        let gb = 1024 * 1024;
        assert!(room_for(gb, 2 * gb));
        assert!(!room_for(gb, gb), "no margin");
        assert!(room_for(10 * gb, 11 * gb + 1));
        assert!(!room_for(10 * gb, 10 * gb + gb / 20), "a tenth at least");
        // Small data still wants 256 MB spare.
        assert!(!room_for(1024, 200 * 1024));
        assert!(room_for(1024, 300 * 1024));
        assert!(!room_for(u64::MAX, u64::MAX), "no overflow");
    }

    #[test]
    fn long_errors_keep_their_start_and_their_end() {
        assert_eq!(clip("short"), "short");
        let long = format!("start{}end: table is full", "x".repeat(5000));
        let c = clip(&long);
        assert!(c.chars().count() <= CLIP + 3, "{}", c.len());
        assert!(
            c.starts_with("start") && c.ends_with("end: table is full"),
            "{c}"
        );
        let multibyte = "é".repeat(3000);
        assert!(clip(&multibyte).chars().count() <= CLIP + 3);
    }

    #[test]
    fn the_copy_deadline_grows_with_the_data_and_a_rate_limit() {
        let gb = 1024 * 1024;
        assert_eq!(copy_timeout(0, None), COPY_BASE);
        let plain = copy_timeout(100 * gb, None);
        assert!(plain > COPY_BASE);
        let slow = copy_timeout(100 * gb, Some(10));
        assert!(slow > plain, "10 MB/s takes longer than the assumed 20");
        assert_eq!(copy_timeout(100 * gb, Some(1000)), plain, "never shorter");
        assert!(copy_timeout(gb, Some(0)) > COPY_BASE);
    }
}
