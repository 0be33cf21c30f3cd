//! The run of a `rebuild_node` job: each node checked, taken out of service, copied, followed,
//! caught up, made active and cleaned up, its `phase` stored before each step that changes it;
//! a resumed job first deals with the node it was on per [`recovery`]. See the module doc of
//! [`super`] for the invariants.

use kunlun_meta::api::RebuildMethod;
use kunlun_meta::model::{Job, JobStatus, MemberState, NodeMapMaster, NodeStatus, ShardNode};
use kunlun_meta::store::repo::{meta, nodes};
use kunlun_meta::store::Store;
use kunlun_meta::Error as MetaError;

use super::{
    recovery, refusal, NodeRebuild, Phase, RebuildExtra, RebuildMemo, RebuildRequest, Recovery,
    RESTARTED,
};
use crate::error::{Error, Result};
use crate::fleet::Provisioner;
use crate::jobs::common::passwords;
use crate::jobs::driver::{JobCtx, JobInfo, Stage};
use crate::jobs::plan::SystemPasswords;
use crate::jobs::plan_scale::host_port;
use crate::jobs::reseed::{self, pick_source, Candidate, Instance};
use crate::jobs::seed;
use crate::storage::probe::probe_node;
use crate::storage::{NodeAddr, StorageOptions};

/// What the checks of one node found.
struct Checked {
    target: Instance,
    source: Instance,
    primary: ShardNode,
    method: RebuildMethod,
    data_kb: u64,
    note: String,
}

/// Runs one claimed `rebuild_node` job to its end (the runner's registry calls this).
pub async fn run(store: &Store, fleet: &Provisioner, job: &Job) -> Result<()> {
    let info = JobInfo::<RebuildRequest>::of(job)?;
    let mut memo: RebuildMemo = match &job.memo {
        None | Some(serde_json::Value::Null) => RebuildMemo::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::Invalid(format!(
                "job {}: its stored memo is unreadable ({e}); nothing was done to its nodes \
                 (they are as the memo shows)",
                job.id
            ))
        })?,
    };
    memo.steps.clear();
    let passwords = passwords(store, info.cluster()?).await?;
    let cx = JobCtx::for_job(store, fleet, job);
    let r = Rebuild {
        cx: &cx,
        info: &info,
        passwords,
    }
    .go(memo)
    .await;
    cx.progress.close().await;
    r
}

struct Rebuild<'a> {
    cx: &'a JobCtx,
    info: &'a JobInfo<RebuildRequest>,
    passwords: SystemPasswords,
}

impl Rebuild<'_> {
    fn req(&self) -> &RebuildRequest {
        &self.info.request
    }

    fn tag(&self) -> String {
        self.cx.job_id.to_string()
    }

    /// Stores `memo` (the job still `ongoing`), with `status` of node `node_id` changed from
    /// `from` to `to` in the same transaction when given (`Conflict` if it was no longer
    /// `from`).
    async fn save(
        &self,
        memo: &RebuildMemo,
        status: Option<(i64, NodeStatus, NodeStatus)>,
    ) -> Result<()> {
        self.cx
            .commit(async |tx| {
                if let Some((id, from, to)) = status {
                    if from != to && !nodes::set_status_if(tx, id, from, to).await? {
                        let now = nodes::get(tx, id).await?.status;
                        if now != to {
                            return Err(MetaError::Conflict(format!(
                                "storage node {id} is {now}, not {from}: something else changed it"
                            )));
                        }
                    }
                }
                Ok(memo.clone())
            })
            .await?;
        Ok(())
    }

    async fn go(&self, mut memo: RebuildMemo) -> Result<()> {
        if !memo.nodes.is_empty() {
            return self.resume(memo).await;
        }
        memo = RebuildMemo {
            cluster_id: self.info.cluster_id,
            extra: RebuildExtra {
                shard_id: Some(self.req().shard_id),
                nodes: self
                    .req()
                    .node_ids
                    .iter()
                    .map(|&node_id| NodeRebuild {
                        node_id,
                        ..NodeRebuild::default()
                    })
                    .collect(),
            },
            ..RebuildMemo::default()
        };
        // Addresses first, so every step is named after its instance.
        if let Ok(all) = self
            .cx
            .store
            .list_shard_nodes(Some(self.req().shard_id))
            .await
        {
            for n in memo.nodes.iter_mut() {
                if let Some(row) = all.iter().find(|r| r.id == n.node_id) {
                    (n.host, n.port) = (row.hostaddr.clone(), row.port);
                }
            }
        }
        for n in &memo.nodes {
            let l = n.label();
            // The rest of a node's steps are known once its check chose the method.
            self.cx.progress.plan([format!("check {l}")]);
        }
        self.save(&memo, None).await?;
        for i in 0..memo.nodes.len() {
            if let Err(e) = self.one(&mut memo, i).await {
                return self.fail(memo, i, &e).await;
            }
        }
        memo.stage = Stage::Done;
        self.cx.end(JobStatus::Done, &memo).await
    }

    /// Ends the job failed at node `i` with `e`: the nodes after it are not started.
    async fn fail(&self, mut memo: RebuildMemo, i: usize, e: &Error) -> Result<()> {
        for n in memo.nodes.iter_mut().skip(i + 1) {
            if n.phase == Phase::Pending {
                n.phase = Phase::Skipped;
                n.outcome = Some("not started: an earlier node failed".into());
            }
        }
        self.cx.progress.skip_pending("an earlier step failed");
        memo.stage = match memo.nodes.get(i).map(|n| n.phase) {
            Some(Phase::PutBack) => Stage::RolledBack,
            Some(Phase::Aside) => Stage::RollbackFailed,
            _ => Stage::Failed,
        };
        let why = match memo.nodes.get(i).and_then(|n| n.outcome.clone()) {
            Some(o) => Error::Unavailable(o),
            None => Error::Unavailable(e.to_string()),
        };
        self.cx.fail(memo, &why).await
    }

    /// A job found `ongoing` at start: the node it was on is finished forward or given its
    /// old data back (see [`recovery`]); nodes not started are not started now.
    async fn resume(&self, mut memo: RebuildMemo) -> Result<()> {
        let mut failed_at = None;
        for i in 0..memo.nodes.len() {
            let phase = memo.nodes[i].phase;
            let r = match recovery(phase) {
                Recovery::Nothing => {
                    if phase == Phase::Pending {
                        memo.nodes[i].phase = Phase::Skipped;
                        memo.nodes[i].outcome = Some(format!("not started: {RESTARTED}"));
                        failed_at.get_or_insert(i);
                    }
                    continue;
                }
                Recovery::Restart | Recovery::PutBack => {
                    let cause = Error::Unavailable(RESTARTED.into());
                    self.undo(&mut memo, i, &cause).await;
                    Err(cause)
                }
                Recovery::Forward | Recovery::CleanUp => match self.instances(&memo.nodes[i]).await
                {
                    Ok((target, primary)) => self.forward(&mut memo, i, &target, &primary).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = r {
                if memo.nodes[i].outcome.is_none() {
                    memo.nodes[i].outcome = Some(format!("{RESTARTED}, then: {e}"));
                }
                if !matches!(memo.nodes[i].phase, Phase::PutBack | Phase::Aside) {
                    memo.nodes[i].phase = Phase::Failed;
                }
                return self.fail(memo, i, &e).await;
            }
        }
        // Done only when every node was rebuilt (a run cut short while ending may have left
        // a failed node behind it).
        match failed_at.or_else(|| memo.nodes.iter().position(|n| n.phase != Phase::Done)) {
            Some(i) => {
                let e = Error::Unavailable(format!(
                    "{RESTARTED}: node {} and those after it were not rebuilt",
                    memo.nodes[i].node_id
                ));
                self.fail(memo, i, &e).await
            }
            None => {
                memo.stage = Stage::Done;
                self.cx.end(JobStatus::Done, &memo).await
            }
        }
    }

    /// The node's instance and the shard's current primary (for a resumed node).
    async fn instances(&self, n: &NodeRebuild) -> Result<(Instance, ShardNode)> {
        let all = self
            .cx
            .store
            .list_shard_nodes(Some(self.req().shard_id))
            .await?;
        let node = all
            .iter()
            .find(|r| r.id == n.node_id)
            .ok_or_else(|| Error::NotFound {
                what: "storage node",
                id: n.node_id.to_string(),
            })?;
        let primary = primary_of(&all)?;
        let target = reseed::locate(&self.cx.store, &self.cx.fleet, node, &self.passwords).await?;
        Ok((target, primary))
    }

    /// Rebuilds node `i` of `memo` from its checks to its end; on failure the node's phase and
    /// outcome say what was done about it.
    async fn one(&self, memo: &mut RebuildMemo, i: usize) -> Result<()> {
        let label = memo.nodes[i].label();
        let step = self.cx.progress.step(format!("check {label}"));
        let c = match self.check_node(&memo.nodes[i]).await {
            Ok(c) => {
                step.done_with(c.note.clone());
                c
            }
            Err(e) => {
                step.fail(&e);
                memo.nodes[i].phase = Phase::Failed;
                memo.nodes[i].outcome = Some(format!("not touched: {e}"));
                return Err(e);
            }
        };
        {
            let n = &mut memo.nodes[i];
            n.status_before = Some(c.target.node.status);
            n.base_dir = Some(c.target.base_dir().to_string());
            n.source = Some(format!("{}:{}", c.source.node.hostaddr, c.source.node.port));
            n.source_id = Some(c.source.node.id);
            n.method = Some(c.method);
            n.data_kb = Some(c.data_kb);
            // A physical copy stops the node and sets its data aside in the copy's own session
            // (while the source's backup starts), so the old data may be aside from then on.
            n.phase = match c.method {
                RebuildMethod::Backup => Phase::Aside,
                RebuildMethod::Dump => Phase::Stopping,
            };
        }
        self.cx.progress.plan(
            steps_after_check(c.method)
                .iter()
                .map(|s| format!("{s} {label}")),
        );
        // Out of service before it goes down, so HA, the catalog and the seeders leave it be.
        let id = c.target.node.id;
        if let Err(e) = self
            .save(memo, Some((id, c.target.node.status, NodeStatus::Inactive)))
            .await
        {
            memo.nodes[i].phase = Phase::Failed;
            memo.nodes[i].outcome = Some(format!("not touched: {e}"));
            return Err(e);
        }
        let r = self.replace_data(memo, i, &c).await;
        if let Err(e) = r {
            self.undo(memo, i, &e).await;
            return Err(e);
        }
        self.forward(memo, i, &c.target, &c.primary).await
    }

    /// Stop, set aside, copy: up to `copied`.
    async fn replace_data(&self, memo: &mut RebuildMemo, i: usize, c: &Checked) -> Result<()> {
        let label = memo.nodes[i].label();
        let fleet = &self.cx.fleet;
        if c.method == RebuildMethod::Dump {
            self.cx
                .step(&format!("stop {label}"), reseed::stop(fleet, &c.target))
                .await?;
            memo.nodes[i].phase = Phase::Aside;
            self.save(memo, None).await?;
            self.cx
                .step(
                    &format!("set aside {label}"),
                    reseed::set_aside(fleet, &c.target, &self.tag()),
                )
                .await?;
        }
        let step = self.cx.progress.step(format!("copy {label}"));
        step.note(format!(
            "{} of {} ({} MB){}",
            c.method.as_str(),
            memo.nodes[i].source.as_deref().unwrap_or(""),
            c.data_kb / 1024,
            match c.method {
                RebuildMethod::Backup => "; the node is stopped and its data set aside first",
                RebuildMethod::Dump => "",
            }
        ));
        let rate = self.req().rate_limit_mb_s;
        let timeout = reseed::copy_timeout(c.data_kb, rate);
        let tag = self.tag();
        match reseed::copy(fleet, c.method, &c.source, &c.target, &tag, rate, timeout).await {
            Ok(copied) => {
                step.done_with(format!(
                    "{} of {} at '{}'{}",
                    c.method.as_str(),
                    memo.nodes[i].source.as_deref().unwrap_or(""),
                    copied.gtid,
                    copied
                        .bytes
                        .map(|b| format!(", {} MB streamed", b / (1024 * 1024)))
                        .unwrap_or_default()
                ));
                let n = &mut memo.nodes[i];
                n.gtid = Some(copied.gtid);
                n.bytes = copied.bytes;
                n.phase = Phase::Copied;
                self.save(memo, None).await
            }
            Err(e) => {
                step.fail(&e);
                Err(e)
            }
        }
    }

    /// Undoes node `i` after `cause` per [`recovery`] of its phase (before the new data is
    /// complete); records what was done in its phase and outcome. Never fails: what could not
    /// be undone is said in the outcome.
    async fn undo(&self, memo: &mut RebuildMemo, i: usize, cause: &Error) {
        let n = memo.nodes[i].clone();
        let before = n.status_before.unwrap_or(NodeStatus::Inactive);
        let label = n.label();
        let target = match self.instances(&n).await {
            Ok((t, _)) => t,
            Err(e) => {
                memo.nodes[i].outcome = Some(format!(
                    "failed ({cause}) and could not be reached to undo it: {e}; its data is as \
                     phase {:?} says",
                    n.phase
                ));
                return;
            }
        };
        // A node the operator had stopped stays stopped.
        let start = before != NodeStatus::ManualStop;
        let undone = match recovery(n.phase) {
            Recovery::Restart => {
                let r = if start {
                    self.cx
                        .step(&format!("restart {label}"), async {
                            reseed::start(&self.cx.fleet, &target).await?;
                            reseed::read_only(&target.addr()).await
                        })
                        .await
                } else {
                    Ok(())
                };
                r.map(|()| {
                    (
                        Phase::Failed,
                        format!("failed before its data was touched ({cause}); it runs its own data again"),
                    )
                })
            }
            Recovery::PutBack => self
                .cx
                .step(&format!("put back {label}"), async {
                    reseed::put_back(&self.cx.fleet, &target, &self.tag(), start).await?;
                    // Not the primary: read-only at once (a start leaves it writable).
                    if start {
                        reseed::read_only(&target.addr()).await?;
                    }
                    Ok(())
                })
                .await
                .map(|()| {
                    (
                        Phase::PutBack,
                        format!("failed before the new data was complete ({cause}); its old data was put back"),
                    )
                }),
            _ => return,
        };
        match undone {
            Ok((phase, outcome)) => {
                memo.nodes[i].phase = phase;
                memo.nodes[i].outcome = Some(outcome);
                let status = (before != NodeStatus::Inactive).then_some((
                    n.node_id,
                    NodeStatus::Inactive,
                    before,
                ));
                if let Err(e) = self.save(memo, status).await {
                    tracing::warn!(job_id = self.cx.job_id, error = %e, "rebuild: status not put back");
                }
            }
            Err(e) => {
                memo.nodes[i].outcome = Some(format!(
                    "failed ({cause}), and undoing it failed too ({e}): the node stays out of \
                     service; its old data is in {}/data.rebuild-{}",
                    target.base_dir(),
                    self.tag()
                ));
                let _ = self.save(memo, None).await;
            }
        }
    }

    /// From `copied` on: start, follow, catch up, activate, clean up. A failure leaves the
    /// new data in place and the node out of service.
    async fn forward(
        &self,
        memo: &mut RebuildMemo,
        i: usize,
        target: &Instance,
        primary: &ShardNode,
    ) -> Result<()> {
        let label = memo.nodes[i].label();
        let fleet = &self.cx.fleet;
        let addr = target.addr();
        let paddr = NodeAddr::from(primary);
        let r = async {
            if memo.nodes[i].phase < Phase::Active {
                self.cx
                    .step(&format!("start {label}"), async {
                        reseed::start(fleet, target).await?;
                        reseed::read_only(&addr).await
                    })
                    .await?;
                let gtid = memo.nodes[i].gtid.clone().unwrap_or_default();
                let step = self.cx.progress.step(format!("replicate {label}"));
                let r = async {
                    reseed::follow(&addr, &paddr, &self.passwords.repl, &gtid).await?;
                    memo.nodes[i].phase = Phase::Following;
                    self.save(memo, None).await?;
                    seed::wait_caught_up(&addr, &paddr, seed::CATCH_UP_TIMEOUT).await
                }
                .await;
                match &r {
                    Ok(()) => step.done_with(format!(
                        "follows {}:{} (node {})",
                        primary.hostaddr, primary.port, primary.id
                    )),
                    Err(e) => step.fail(e),
                }
                r?;
                let step = self.cx.progress.step(format!("activate {label}"));
                memo.nodes[i].phase = Phase::Active;
                let r = self.activate(memo, target, primary).await;
                match &r {
                    Ok(()) => step.done(),
                    Err(e) => {
                        memo.nodes[i].phase = Phase::Following;
                        step.fail(e)
                    }
                }
                r?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = r {
            let n = &mut memo.nodes[i];
            n.phase = Phase::Failed;
            n.outcome = Some(format!(
                "failed after the new data was complete ({e}): the node keeps the new data and \
                 stays out of service; its old data stays in {}/data.rebuild-{} until a rebuild \
                 succeeds",
                target.base_dir(),
                self.tag()
            ));
            let _ = self.save(memo, None).await;
            return Err(e);
        }
        // In service again: the old data goes. A failure here is said, not undone.
        let cleaned = self
            .cx
            .step(
                &format!("clean up {label}"),
                reseed::drop_aside(fleet, target),
            )
            .await;
        let n = &mut memo.nodes[i];
        n.phase = Phase::Done;
        n.outcome = Some(match cleaned {
            Ok(()) => format!(
                "rebuilt from {} at '{}'",
                n.source.as_deref().unwrap_or("?"),
                n.gtid.as_deref().unwrap_or("")
            ),
            Err(e) => format!(
                "rebuilt from {}, but the old data could not be removed: {e}",
                n.source.as_deref().unwrap_or("?")
            ),
        });
        self.save(memo, None).await
    }

    /// In one transaction: the shard's primary is still the one followed, the node becomes
    /// `active` and is recorded following it; the memo at `active`.
    async fn activate(
        &self,
        memo: &RebuildMemo,
        target: &Instance,
        primary: &ShardNode,
    ) -> Result<()> {
        let (id, shard, pid) = (target.node.id, target.node.shard_id, primary.id);
        let m = NodeMapMaster {
            cluster_id: target.node.db_cluster_id,
            node_host: host_port(&target.node.hostaddr, target.node.port),
            master_host: host_port(&primary.hostaddr, primary.port),
            master_uuid: None,
        };
        self.cx
            .commit(async |tx| {
                let all = nodes::list(tx, Some(shard)).await?;
                let now = all.iter().find(|n| {
                    n.member_state == MemberState::Source && n.status == NodeStatus::Active
                });
                if now.map(|n| n.id) != Some(pid) {
                    return Err(MetaError::Conflict(format!(
                        "the shard's primary changed during the rebuild (it followed node {pid})"
                    )));
                }
                let row = nodes::get(tx, id).await?;
                match row.status {
                    NodeStatus::Active => {}
                    NodeStatus::Inactive => {
                        nodes::set_status_if(tx, id, NodeStatus::Inactive, NodeStatus::Active)
                            .await?;
                    }
                    other => {
                        return Err(MetaError::Conflict(format!(
                            "storage node {id} is {other}: not made active"
                        )))
                    }
                }
                meta::set_node_master(tx, &m).await?;
                Ok(memo.clone())
            })
            .await?;
        Ok(())
    }

    /// The checks of one node (nothing changed): the node, the primary, the source, both
    /// instances, the programs and the room for a copy.
    async fn check_node(&self, n: &NodeRebuild) -> Result<Checked> {
        let store = &self.cx.store;
        let all = store.list_shard_nodes(Some(self.req().shard_id)).await?;
        let node = all
            .iter()
            .find(|r| r.id == n.node_id)
            .ok_or_else(|| Error::NotFound {
                what: "storage node of this shard",
                id: n.node_id.to_string(),
            })?;
        if let Some(why) = refusal(node) {
            return Err(Error::Conflict(why));
        }
        let primary = primary_of(&all)?;
        let source = self.source(&all, node, &primary).await?;
        let fleet = &self.cx.fleet;
        let target = reseed::locate(store, fleet, node, &self.passwords).await?;
        let src = reseed::locate(store, fleet, &source, &self.passwords).await?;
        let programs = reseed::reseed(fleet)?.snapshot_programs();
        let mut method = self.req().method.unwrap_or_default();
        let mut note = String::new();
        let wanted: &[String] = match method {
            RebuildMethod::Backup => &programs,
            RebuildMethod::Dump => &[],
        };
        let looked = match tokio::join!(
            reseed::space(fleet, &src, wanted),
            reseed::space(fleet, &target, wanted)
        ) {
            (Ok((data_kb, _)), Ok((_, free_kb))) => Ok((data_kb, free_kb)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let (data_kb, free_kb) = match looked {
            Ok(x) => x,
            // The default method falls back to the dump on a machine without the backup
            // programs; a method asked for is refused.
            Err(Error::Conflict(why))
                if self.req().method.is_none() && why.contains("no such program") =>
            {
                method = RebuildMethod::Dump;
                note = format!("; dump, since {why}");
                let (data_kb, _) = reseed::space(fleet, &src, &[]).await?;
                let (_, free_kb) = reseed::space(fleet, &target, &[]).await?;
                (data_kb, free_kb)
            }
            Err(e) => return Err(e),
        };
        if !reseed::room_for(data_kb, free_kb) {
            return Err(Error::Conflict(format!(
                "{}: {} MB free where its data goes, the copy needs {} MB and a margin",
                target.addr(),
                free_kb / 1024,
                data_kb / 1024
            )));
        }
        Ok(Checked {
            note: format!(
                "source {}:{} (node {}{}), {}{note}",
                source.hostaddr,
                source.port,
                source.id,
                if source.id == primary.id {
                    ", the primary"
                } else {
                    ""
                },
                method.as_str()
            ),
            target,
            source: src,
            primary,
            method,
            data_kb,
        })
    }

    /// The node to copy from: the one asked for (a healthy replica within the lag, or the
    /// primary), else [`pick_source`] over the shard's other active replicas.
    async fn source(
        &self,
        all: &[ShardNode],
        node: &ShardNode,
        primary: &ShardNode,
    ) -> Result<ShardNode> {
        let req = self.req();
        let others: Vec<&ShardNode> = all
            .iter()
            .filter(|n| {
                n.id != node.id
                    && n.id != primary.id
                    && n.status == NodeStatus::Active
                    && n.member_state == MemberState::Replica
            })
            .collect();
        let mut candidates = Vec::new();
        for n in others
            .into_iter()
            .filter(|n| req.source_id.is_none_or(|s| s == n.id))
        {
            let p = probe_node(&NodeAddr::from(n), StorageOptions::default()).await;
            candidates.push(Candidate::of(n, &p, primary));
        }
        if let Some(s) = req.source_id {
            if s == primary.id {
                return Ok(primary.clone());
            }
            return pick_source(&candidates, primary, req.max_source_lag_s, false).ok_or_else(
                || {
                    Error::Conflict(format!(
                        "source node {s} is not an active replica replicating from the primary \
                         within {} s",
                        req.max_source_lag_s
                    ))
                },
            );
        }
        pick_source(
            &candidates,
            primary,
            req.max_source_lag_s,
            req.allow_primary,
        )
        .ok_or_else(|| {
            Error::Conflict(format!(
                "no source: no replica replicates from the primary within {} s, and the \
                 primary may not be used",
                req.max_source_lag_s
            ))
        })
    }
}

/// The steps of a node after its check, by method: a physical copy stops the node and sets
/// its data aside in the copy's own session.
fn steps_after_check(method: RebuildMethod) -> &'static [&'static str] {
    match method {
        RebuildMethod::Backup => &["copy", "start", "replicate", "activate", "clean up"],
        RebuildMethod::Dump => &[
            "stop",
            "set aside",
            "copy",
            "start",
            "replicate",
            "activate",
            "clean up",
        ],
    }
}

/// The shard's active recorded primary among `all`.
fn primary_of(all: &[ShardNode]) -> Result<ShardNode> {
    all.iter()
        .find(|n| n.member_state == MemberState::Source && n.status == NodeStatus::Active)
        .cloned()
        .ok_or_else(|| Error::Conflict("the shard has no active primary".into()))
}
