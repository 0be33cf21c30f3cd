//! A leader term's write fence: the lease its writes depend on ([`WriteFence`]) and the
//! leadership actor's local view of it ([`LeaseClock`]); [`super::Store::fenced`] applies it.
//!
//! Invariant: a fenced write first checks the clock (no statement when it ran out), then the
//! lease row in the same transaction; either failure calls `on_deposed` and writes nothing.

use std::sync::Arc;

use super::{repo, Tx};
use crate::error::{Error, Result};

/// Until when a leader may act on its lease by its own monotonic clock, per epoch: the
/// leadership actor sets it on every confirmed renew and clears it when it steps down. Shared
/// by the actor and the fenced store handles of its terms. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LeaseClock(Arc<std::sync::Mutex<Option<(i64, std::time::Instant)>>>);

impl LeaseClock {
    /// The lease at `epoch` may be acted on until `until` (`None`: not at all).
    pub fn set(&self, v: Option<(i64, std::time::Instant)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// Whether the lease at `epoch` may still be acted on at `now`.
    pub fn valid(&self, epoch: i64, now: std::time::Instant) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|(e, until)| e == epoch && now < until)
    }
}

/// The leader lease a term's writes depend on; see [`Store::fenced`].
#[derive(Clone)]
pub struct WriteFence {
    pub lease: String,
    pub holder: String,
    pub epoch: i64,
    /// The leadership actor's view of the lease; `None` checks the store only.
    pub clock: Option<LeaseClock>,
    /// Called (possibly more than once) when a write found the term ended, so the term stops
    /// its tasks.
    pub on_deposed: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for WriteFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFence")
            .field("lease", &self.lease)
            .field("holder", &self.holder)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl WriteFence {
    fn deposed(&self, why: &str) -> Error {
        (self.on_deposed)();
        Error::Deposed(format!(
            "leadership term {} of {} ended ({why}): this manager no longer holds lease `{}`, \
             so it writes nothing",
            self.epoch, self.holder, self.lease
        ))
    }

    /// The local check: the leadership actor still vouches for the lease at this epoch.
    pub(super) fn check_clock(&self) -> Result<()> {
        match &self.clock {
            Some(c) if !c.valid(self.epoch, std::time::Instant::now()) => {
                Err(self.deposed("its lease was not renewed in time"))
            }
            _ => Ok(()),
        }
    }

    /// The store's check, first statement of a write transaction.
    pub(super) async fn check_in(&self, tx: &mut Tx) -> Result<()> {
        if repo::lease::fence_shared(tx, &self.lease, &self.holder, self.epoch).await? {
            Ok(())
        } else {
            Err(self.deposed("another manager holds the lease, or it expired"))
        }
    }
}
