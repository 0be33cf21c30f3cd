//! Machines: `server_nodes` rows plus our SSH access data in `kl_machine_ssh` and the facts
//! of the last probe in `kl_machine_probe`.
//!
//! Invariant: a machine of ours always has both the `server_nodes` and the SSH row (written
//! in the same transaction); rows of `server_nodes` without a type or SSH row (pre-registered
//! by Kunlun's node_mgr) are not listed as machines. The probe row is optional (none for a
//! machine stored unprobed) and goes with the machine.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{conflict_as, last_insert_id, now};
use crate::api::Page;
use crate::error::{Error, Result};
use crate::model::{Machine, MachineInfo, MachinePatch, MachineProbe, NewMachine};
use crate::store::conn::{with_conn, ConnRef, Tx};
use crate::store::rows::{
    join_ports, MachineChangeset, MachineRow, NewMachineRow, ProbeRow, SshChangeset, SshRow,
};
use crate::store::schema::{kl_machine_probe, kl_machine_ssh, server_nodes};

/// Registers a machine; [`Error::Conflict`] if `(hostaddr, machine_type)` is registered.
pub async fn insert(tx: &mut Tx, m: &NewMachine) -> Result<Machine> {
    let row = NewMachineRow::new(m, now());
    with_conn!(tx, c => diesel::insert_into(server_nodes::table).values(&row).execute(c).await)
        .map_err(|e| {
            conflict_as(e, || {
                format!(
                    "machine {} ({}) is already registered",
                    m.hostaddr, m.machine_type
                )
            })
        })?;
    let id = last_insert_id(tx).await?;
    let ssh = SshRow {
        server_node_id: id,
        ssh_port: i64::from(m.ssh.port),
        ssh_user: m.ssh.user.clone(),
        ssh_key_path: m.ssh.key_path.clone(),
    };
    with_conn!(tx, c => diesel::insert_into(kl_machine_ssh::table).values(&ssh).execute(c).await)?;
    get(tx, id).await
}

/// One machine; [`Error::NotFound`] if unknown.
pub async fn get(tx: &mut Tx, id: i64) -> Result<Machine> {
    find(tx, id)
        .await?
        .ok_or_else(|| Error::not_found("machine", id))
}

/// One machine, if it exists.
///
/// In a MySQL write transaction the read locks the machine's rows (`FOR UPDATE`) until the
/// transaction ends: what a transaction reads here is the latest committed state, which no
/// other transaction changes before it ends, so a read-modify-write such as
/// "[`get`], compute the new port sets, [`set_ports`]" of concurrent jobs queue up instead of
/// failing the compare-and-swap. SQLite write transactions are serial already.
pub async fn find(tx: &mut Tx, id: i64) -> Result<Option<Machine>> {
    // A macro, not a value: the selection's type depends on the backend.
    macro_rules! query {
        () => {
            server_nodes::table
                .inner_join(kl_machine_ssh::table)
                .filter(server_nodes::id.eq(id))
                .filter(server_nodes::machine_type.is_not_null())
                .select((MachineRow::as_select(), SshRow::as_select()))
        };
    }
    let lock = tx.locking_reads();
    let r = match tx.conn_ref()? {
        ConnRef::Sqlite(c) => query!().first::<(MachineRow, SshRow)>(c).await,
        ConnRef::Mysql(c) if lock => query!().for_update().first::<(MachineRow, SshRow)>(c).await,
        ConnRef::Mysql(c) => query!().first::<(MachineRow, SshRow)>(c).await,
    };
    let row = tx.check(r.optional())?;
    row.map(Machine::try_from).transpose()
}

/// Every machine, by id.
pub async fn list(tx: &mut Tx) -> Result<Vec<Machine>> {
    let rows = with_conn!(tx, c => server_nodes::table
        .inner_join(kl_machine_ssh::table)
        .filter(server_nodes::machine_type.is_not_null())
        .order(server_nodes::id.asc())
        .select((MachineRow::as_select(), SshRow::as_select()))
        .load::<(MachineRow, SshRow)>(c)
        .await)?;
    rows.into_iter().map(Machine::try_from).collect()
}

/// Changes the fields the patch names and returns the machine as stored.
pub async fn update(tx: &mut Tx, id: i64, p: &MachinePatch) -> Result<Machine> {
    let current = get(tx, id).await?;
    let cs = MachineChangeset::new(p, current.machine_type);
    if !cs.is_empty() {
        with_conn!(tx, c => diesel::update(server_nodes::table.filter(server_nodes::id.eq(id))).set(&cs).execute(c).await)?;
    }
    let ssh = SshChangeset::new(p);
    if !ssh.is_empty() {
        with_conn!(tx, c => diesel::update(kl_machine_ssh::table.filter(kl_machine_ssh::server_node_id.eq(id)))
            .set(&ssh)
            .execute(c)
            .await)?;
    }
    get(tx, id).await
}

/// Replaces the used and installing port lists if they still equal `expected`'s
/// (compare-and-swap); [`Error::Conflict`] if another writer changed them meanwhile. Read
/// `expected` with [`get`] in the same transaction (which locks the row on MySQL) and the
/// swap cannot lose to a concurrent transaction.
pub async fn set_ports(
    tx: &mut Tx,
    expected: &Machine,
    used: &[u16],
    installing: &[u16],
) -> Result<Machine> {
    let (old_used, old_inst) = (
        join_ports(&expected.used_ports),
        join_ports(&expected.installing_ports),
    );
    let (new_used, new_inst) = (join_ports(used), join_ports(installing));
    let n = with_conn!(tx, c => diesel::update(
            server_nodes::table
                .filter(server_nodes::id.eq(expected.id))
                .filter(server_nodes::used_port.eq(&old_used))
                .filter(server_nodes::installing_port.eq(&old_inst)),
        )
        .set((server_nodes::used_port.eq(&new_used), server_nodes::installing_port.eq(&new_inst)))
        .execute(c)
        .await)?;
    if n == 0 {
        get(tx, expected.id).await?;
        return Err(Error::Conflict(format!(
            "ports of machine {} changed concurrently; retry",
            expected.id
        )));
    }
    get(tx, expected.id).await
}

/// Removes a machine; [`Error::Conflict`] while instances use or are installing on its ports.
pub async fn delete(tx: &mut Tx, id: i64) -> Result<()> {
    let m = get(tx, id).await?;
    if !m.used_ports.is_empty() || !m.installing_ports.is_empty() {
        return Err(Error::Conflict(format!(
            "machine {id} ({}) still hosts instances on ports {:?} (installing {:?}); remove them first",
            m.hostaddr, m.used_ports, m.installing_ports
        )));
    }
    with_conn!(tx, c => diesel::delete(kl_machine_probe::table.filter(kl_machine_probe::server_node_id.eq(id))).execute(c).await)?;
    with_conn!(tx, c => diesel::delete(kl_machine_ssh::table.filter(kl_machine_ssh::server_node_id.eq(id))).execute(c).await)?;
    with_conn!(tx, c => diesel::delete(server_nodes::table.filter(server_nodes::id.eq(id))).execute(c).await)?;
    Ok(())
}

/// Replaces the probe facts of machine `id` (`None` removes them: the machine's SSH access or
/// data dirs are no longer what was probed). [`Error::NotFound`] if the machine is unknown.
pub async fn set_probe(tx: &mut Tx, id: i64, probe: Option<&MachineProbe>) -> Result<()> {
    get(tx, id).await?;
    with_conn!(tx, c => diesel::delete(kl_machine_probe::table.filter(kl_machine_probe::server_node_id.eq(id))).execute(c).await)?;
    if let Some(p) = probe {
        let row = ProbeRow::new(id, p)?;
        with_conn!(tx, c => diesel::insert_into(kl_machine_probe::table).values(&row).execute(c).await)?;
    }
    Ok(())
}

/// The facts of the last probe of machine `id`; `None` if it was stored unprobed (or unknown).
pub async fn get_probe(tx: &mut Tx, id: i64) -> Result<Option<MachineProbe>> {
    let row = with_conn!(tx, c => kl_machine_probe::table
        .filter(kl_machine_probe::server_node_id.eq(id))
        .select(ProbeRow::as_select())
        .first::<ProbeRow>(c)
        .await
        .optional())?;
    row.map(MachineProbe::try_from).transpose()
}

/// One machine with its probe facts; [`Error::NotFound`] if unknown.
pub async fn get_info(tx: &mut Tx, id: i64) -> Result<MachineInfo> {
    let machine = get(tx, id).await?;
    let probe = get_probe(tx, id).await?;
    Ok(MachineInfo { machine, probe })
}

/// Every machine with its probe facts, by id (two queries, whatever the number of machines).
pub async fn list_info(tx: &mut Tx) -> Result<Vec<MachineInfo>> {
    let machines = list(tx).await?;
    let rows = with_conn!(tx, c => kl_machine_probe::table
        .select(ProbeRow::as_select())
        .load::<ProbeRow>(c)
        .await)?;
    let mut probes = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        probes.insert(r.server_node_id, MachineProbe::try_from(r)?);
    }
    Ok(machines
        .into_iter()
        .map(|machine| {
            let probe = probes.remove(&machine.id);
            MachineInfo { machine, probe }
        })
        .collect())
}

/// One page of machines with their probe facts, by id: those past `after`, at most `limit`
/// (two queries; the probe rows read are those of the page only).
pub async fn list_info_page(
    tx: &mut Tx,
    after: Option<i64>,
    limit: u32,
) -> Result<Page<MachineInfo>> {
    let after = after.unwrap_or(i64::MIN);
    let rows = with_conn!(tx, c => server_nodes::table
        .inner_join(kl_machine_ssh::table)
        .filter(server_nodes::machine_type.is_not_null())
        .filter(server_nodes::id.gt(after))
        .order(server_nodes::id.asc())
        .limit(i64::from(limit) + 1)
        .select((MachineRow::as_select(), SshRow::as_select()))
        .load::<(MachineRow, SshRow)>(c)
        .await)?;
    let machines = rows
        .into_iter()
        .map(Machine::try_from)
        .collect::<Result<Vec<_>>>()?;
    let page = Page::from_probe(machines, limit, |m| m.id);
    let ids: Vec<i64> = page.items.iter().map(|m| m.id).collect();
    let rows = with_conn!(tx, c => kl_machine_probe::table
        .filter(kl_machine_probe::server_node_id.eq_any(&ids))
        .select(ProbeRow::as_select())
        .load::<ProbeRow>(c)
        .await)?;
    let mut probes = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        probes.insert(r.server_node_id, MachineProbe::try_from(r)?);
    }
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|machine| {
                let probe = probes.remove(&machine.id);
                MachineInfo { machine, probe }
            })
            .collect(),
        next: page.next,
    })
}
