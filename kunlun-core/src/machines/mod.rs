//! Machine registry operations of the facade: validate API input, then store it.
//!
//! Invariant: nothing reaches the store before its request validated.

use kunlun_meta::api::{RegisterMachine, UpdateMachine};
use kunlun_meta::model::Machine;

use crate::error::Result;
use crate::ClusterManager;

impl ClusterManager {
    /// Registers a machine (a plain insert for now; the SSH probe comes with provisioning).
    pub async fn register_machine(&self, req: &RegisterMachine) -> Result<Machine> {
        let new = req.validate()?;
        let m = self.store()?.insert_machine(&new).await?;
        tracing::info!(machine_id = m.id, hostaddr = %m.hostaddr, "machine registered");
        Ok(m)
    }

    /// Every registered machine, by id.
    pub async fn list_machines(&self) -> Result<Vec<Machine>> {
        Ok(self.store()?.list_machines().await?)
    }

    /// One machine.
    pub async fn get_machine(&self, id: i64) -> Result<Machine> {
        Ok(self.store()?.get_machine(id).await?)
    }

    /// Changes the fields named in `req`.
    pub async fn update_machine(&self, id: i64, req: &UpdateMachine) -> Result<Machine> {
        let patch = req.validate()?;
        let m = self.store()?.update_machine(id, &patch).await?;
        tracing::info!(machine_id = id, "machine updated");
        Ok(m)
    }

    /// Removes a machine.
    pub async fn delete_machine(&self, id: i64) -> Result<()> {
        self.store()?.delete_machine(id).await?;
        tracing::info!(machine_id = id, "machine deleted");
        Ok(())
    }
}
