//! The invariant every HA chaos step must leave behind, checked on the servers themselves:
//! exactly one reachable node is writable and it is metadata's primary; no node in service
//! holds a GTID the primary's history lacks (errant transactions); every acknowledged write is
//! on the primary and, once caught up, on every replica in service; every replica in service
//! replicates from the primary with both threads running.
//!
//! Invariant of the checker: every server call is bounded (connect, query, catch-up wait), and
//! a failure names the node and the GTIDs, ids or replication error that break the invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kunlun_core::ha::GtidPos;
use kunlun_meta::model::{MemberState, NodeStatus};
use kunlun_meta::store::Store;
use mysql_async::prelude::Queryable;

/// How long a replica may take to catch up with the primary, and how long transient states
/// (a fence or a repoint still in progress) may last before the check fails.
pub const SETTLE: Duration = Duration::from_secs(45);

/// A login the checker uses on every node (an admin: it reads `SHOW SLAVE STATUS`).
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl Login {
    pub fn root() -> Login {
        Login {
            user: "root".into(),
            password: String::new(),
        }
    }
}

/// Acknowledged ids of one table, with the writer's name for the messages.
pub struct Acked {
    pub writer: String,
    pub table: String,
    pub ids: Vec<i64>,
}

/// What the check found, printed by the test.
#[derive(Debug, Default)]
pub struct Report {
    pub primary: i64,
    pub lines: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invariant holds; primary node {}", self.primary)?;
        for l in &self.lines {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// One node as metadata has it.
#[derive(Clone, Debug)]
struct Node {
    id: i64,
    host: String,
    port: u16,
    status: NodeStatus,
    source: bool,
}

impl Node {
    fn name(&self) -> String {
        format!("node {} ({}:{})", self.id, self.host, self.port)
    }
}

/// What a node answered.
#[derive(Clone)]
struct Seen {
    read_only: bool,
    pos: String,
    state: String,
}

/// A bounded connection.
pub async fn connect(host: &str, port: u16, login: &Login) -> Result<mysql_async::Conn> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port)
        .user(Some(login.user.clone()))
        .pass(Some(login.password.clone()))
        .prefer_socket(false);
    tokio::time::timeout(Duration::from_secs(3), mysql_async::Conn::new(opts))
        .await
        .context("connect timed out")?
        .context("connect")
}

/// Rows of `sql`, bounded.
async fn rows<T>(c: &mut mysql_async::Conn, sql: &str, limit: Duration) -> Result<Vec<T>>
where
    T: mysql_async::prelude::FromRow + Send + 'static,
{
    tokio::time::timeout(limit, c.query::<T, _>(sql))
        .await
        .with_context(|| format!("{sql}: timed out"))?
        .with_context(|| sql.to_string())
}

const Q: Duration = Duration::from_secs(10);

async fn look(n: &Node, login: &Login) -> Result<Seen> {
    let mut c = connect(&n.host, n.port, login).await?;
    let r: Vec<(i64, String, String)> = rows(
        &mut c,
        "SELECT @@read_only, @@gtid_binlog_pos, @@gtid_binlog_state",
        Q,
    )
    .await?;
    let (ro, pos, state) = r.into_iter().next().context("no row")?;
    Ok(Seen {
        read_only: ro != 0,
        pos,
        state,
    })
}

/// `gtid_binlog_state` as `(domain, server_id) -> last seq`: unlike `gtid_binlog_pos` (one
/// GTID per domain) it keeps every server that wrote in a domain, so an errant transaction
/// with a lower sequence number than the primary's still shows.
pub fn parse_state(s: &str) -> Result<BTreeMap<(u32, u32), u64>> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v: Vec<&str> = part.split('-').collect();
        let [d, srv, seq] = v[..] else {
            bail!("bad GTID '{part}' in '{s}'");
        };
        m.insert(
            (d.parse()?, srv.parse()?),
            seq.parse().with_context(|| format!("bad GTID '{part}'"))?,
        );
    }
    Ok(m)
}

/// The GTIDs of `node_state` not in the history `primary_state`/`primary_pos` describes:
/// a `(domain, server)` the primary never saw or a sequence beyond what it has from that
/// server, and (through [`GtidPos`]) a domain where the node is ahead of the primary.
pub fn errant_gtids(
    node_state: &str,
    node_pos: &str,
    primary_state: &str,
    primary_pos: &str,
) -> Result<Vec<String>> {
    let p = parse_state(primary_state)?;
    let mut out: Vec<String> = parse_state(node_state)?
        .into_iter()
        .filter(|(k, seq)| p.get(k).is_none_or(|ps| ps < seq))
        .map(|((d, s), q)| format!("{d}-{s}-{q}"))
        .collect();
    let (np, pp) = (GtidPos::parse(node_pos)?, GtidPos::parse(primary_pos)?);
    if !pp.contains(&np) {
        for g in np.gtids().filter(|g| g.seq > pp.seq(g.domain)) {
            let s = format!("{}-{}-{}", g.domain, g.server_id, g.seq);
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// `(Master_Host, Master_Port, IO, SQL, last errors)` of a replica, `None` when not one.
async fn slave_status(c: &mut mysql_async::Conn) -> Result<Option<(String, u16, String)>> {
    let r: Vec<mysql_async::Row> = rows(c, "SHOW SLAVE STATUS", Q).await?;
    let Some(r) = r.first() else { return Ok(None) };
    let get = |name: &str| -> String {
        r.columns_ref()
            .iter()
            .position(|x| x.name_str() == name)
            .and_then(|i| r.as_ref(i))
            .map(|v| match v {
                mysql_async::Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    };
    let running = get("Slave_IO_Running") == "Yes" && get("Slave_SQL_Running") == "Yes";
    let text = format!(
        "IO={} SQL={} io_error=[{}] {} sql_error=[{}] {}",
        get("Slave_IO_Running"),
        get("Slave_SQL_Running"),
        get("Last_IO_Errno"),
        get("Last_IO_Error"),
        get("Last_SQL_Errno"),
        get("Last_SQL_Error")
    );
    Ok(Some((
        if running { "running".into() } else { text },
        get("Master_Port").parse().unwrap_or(0),
        get("Master_Host"),
    )))
}

/// A failure that waiting does not cure (errant GTIDs), as opposed to a transient one.
struct Permanent(anyhow::Error);

/// Checks the invariant on `shard_id` as metadata has it now, waiting (bounded by [`SETTLE`])
/// for transient states to settle; `Err` names what is broken.
pub async fn check(store: &Store, shard_id: i64, login: &Login, acked: &[Acked]) -> Result<Report> {
    check_with(store, shard_id, login, acked, &[]).await
}

/// [`check`], where the nodes in `cannot_follow` (which cannot reach the primary by
/// construction of the test, e.g. inside a network namespace) are checked for read-only and
/// errant GTIDs but not for replication.
pub async fn check_with(
    store: &Store,
    shard_id: i64,
    login: &Login,
    acked: &[Acked],
    cannot_follow: &[i64],
) -> Result<Report> {
    let deadline = Instant::now() + SETTLE;
    loop {
        match check_once(store, shard_id, login, acked, cannot_follow).await {
            Ok(r) => return Ok(r),
            Err(Err(Permanent(e))) => return Err(e),
            Err(Ok(e)) if Instant::now() > deadline => {
                return Err(e.context(format!("invariant still broken after {SETTLE:?}")))
            }
            Err(Ok(_)) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

type Once = std::result::Result<Report, std::result::Result<anyhow::Error, Permanent>>;

async fn check_once(
    store: &Store,
    shard_id: i64,
    login: &Login,
    acked: &[Acked],
    cannot_follow: &[i64],
) -> Once {
    let t = |e: anyhow::Error| Err(Ok(e));
    let nodes: Vec<Node> = match store.list_shard_nodes(Some(shard_id)).await {
        Ok(v) => v
            .into_iter()
            .filter(|n| n.status != NodeStatus::Deleted)
            .map(|n| Node {
                id: n.id,
                host: n.hostaddr,
                port: n.port,
                status: n.status,
                source: n.member_state == MemberState::Source,
            })
            .collect(),
        Err(e) => return t(e.into()),
    };
    let Some(primary) = nodes.iter().find(|n| n.source).cloned() else {
        return t(anyhow::anyhow!("metadata names no primary"));
    };
    let mut report = Report {
        primary: primary.id,
        lines: Vec::new(),
    };
    let mut seen = Vec::new();
    for n in &nodes {
        match look(n, login).await {
            Ok(s) => seen.push((n.clone(), s)),
            Err(e) if n.id == primary.id => {
                return t(e.context(format!("the primary {} does not answer", n.name())))
            }
            Err(e) => report.lines.push(format!(
                "{} unreachable ({e:#}), status {:?}",
                n.name(),
                n.status
            )),
        }
    }
    // Exactly one writable node, and it is the recorded primary.
    let writable: Vec<String> = seen
        .iter()
        .filter(|(_, s)| !s.read_only)
        .map(|(n, _)| n.name())
        .collect();
    if writable != vec![primary.name()] {
        return t(anyhow::anyhow!(
            "writable nodes {writable:?}, metadata's primary {}",
            primary.name()
        ));
    }
    let Some((_, ps)) = seen.iter().find(|(n, _)| n.id == primary.id) else {
        return t(anyhow::anyhow!("primary not seen"));
    };
    // The primary is read again after every other node: writers may still be running, and
    // a replica read after the primary's first reading may hold what the primary logged
    // since. The primary's history only grows, so this reading covers everything the
    // replicas can have received from it.
    let ps = match look(&primary, login).await {
        Ok(again) => again,
        Err(_) => ps.clone(),
    };
    let (ppos, pstate) = (ps.pos.clone(), ps.state.clone());
    report.lines.push(format!(
        "{} writable, gtid_binlog_pos {ppos}",
        primary.name()
    ));
    // No errant GTIDs on a node in service; a node out of service (kept out for rebuild) is
    // named but excused: nothing routes to it and it is read-only (checked above).
    for (n, s) in seen.iter().filter(|(n, _)| n.id != primary.id) {
        let errant = match errant_gtids(&s.state, &s.pos, &pstate, &ppos) {
            Ok(e) => e,
            Err(e) => return t(e),
        };
        if errant.is_empty() {
            continue;
        }
        let msg = format!(
            "{} (status {:?}) holds GTIDs not in the primary's history: {errant:?} \
             (its gtid_binlog_state {}, the primary {} has {pstate})",
            n.name(),
            n.status,
            s.state,
            primary.name()
        );
        if n.status == NodeStatus::Active {
            return Err(Err(Permanent(anyhow::anyhow!(msg))));
        }
        report.lines.push(format!("excused, out of service: {msg}"));
    }
    let mut pc = match connect(&primary.host, primary.port, login).await {
        Ok(c) => c,
        Err(e) => return t(e),
    };
    let want: Vec<(&Acked, BTreeSet<i64>)> = acked
        .iter()
        .map(|a| (a, a.ids.iter().copied().collect()))
        .collect();
    if let Err(e) = have_all(&mut pc, &primary, &want).await {
        return t(e);
    }
    drop(pc);
    // Replicas in service follow the primary, run, catch up and have every write.
    for (n, _) in seen
        .iter()
        .filter(|(n, _)| n.id != primary.id && n.status == NodeStatus::Active)
    {
        if cannot_follow.contains(&n.id) {
            report.lines.push(format!(
                "{} read-only, not checked for replication",
                n.name()
            ));
            continue;
        }
        let r = async {
            let mut c = connect(&n.host, n.port, login).await?;
            let st = slave_status(&mut c).await?;
            let (state, port, host) =
                st.with_context(|| format!("{} is not a replica", n.name()))?;
            if port != primary.port || host != primary.host {
                bail!(
                    "{} replicates from {host}:{port}, not from the primary",
                    n.name()
                );
            }
            if state != "running" {
                bail!("{} replication not running: {state}", n.name());
            }
            let got: Vec<Option<i64>> = rows(
                &mut c,
                &format!("SELECT MASTER_GTID_WAIT('{ppos}', 30)"),
                Duration::from_secs(35),
            )
            .await?;
            if got.first().copied().flatten() != Some(0) {
                bail!(
                    "{} did not reach the primary's {ppos} within 30 s",
                    n.name()
                );
            }
            have_all(&mut c, n, &want).await?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            return t(e);
        }
        report.lines.push(format!(
            "{} replicates (IO, SQL running), caught up",
            n.name()
        ));
    }
    for (a, w) in &want {
        report.lines.push(format!(
            "{}: {} acknowledged writes present on every node in service",
            a.writer,
            w.len()
        ));
    }
    Ok(report)
}

async fn have_all(
    c: &mut mysql_async::Conn,
    n: &Node,
    want: &[(&Acked, BTreeSet<i64>)],
) -> Result<()> {
    for (a, w) in want {
        if w.is_empty() {
            continue;
        }
        let have: BTreeSet<i64> = rows::<i64>(c, &format!("SELECT id FROM {}", a.table), Q)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<_> = w.difference(&have).take(10).collect();
        if !missing.is_empty() {
            bail!(
                "{} lacks {} acknowledged writes of {} ({}), e.g. ids {missing:?}",
                n.name(),
                w.difference(&have).count(),
                a.writer,
                a.table
            );
        }
    }
    Ok(())
}

/// Errant GTIDs on the shard's reachable nodes in service, against metadata's primary:
/// `(node, GTIDs)` per node holding any (what a benchmark counts after each trial).
pub async fn errant_on_shard(
    store: &Store,
    shard_id: i64,
    login: &Login,
) -> Result<Vec<(i64, Vec<String>)>> {
    let nodes: Vec<Node> = store
        .list_shard_nodes(Some(shard_id))
        .await?
        .into_iter()
        .filter(|n| n.status == NodeStatus::Active)
        .map(|n| Node {
            id: n.id,
            host: n.hostaddr,
            port: n.port,
            status: n.status,
            source: n.member_state == MemberState::Source,
        })
        .collect();
    let primary = nodes.iter().find(|n| n.source).context("no primary")?;
    let p = look(primary, login).await?;
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| !n.source) {
        if let Ok(s) = look(n, login).await {
            let e = errant_gtids(&s.state, &s.pos, &p.state, &p.pos)?;
            if !e.is_empty() {
                out.push((n.id, e));
            }
        }
    }
    Ok(out)
}
