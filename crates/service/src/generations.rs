//! Reads of a project's backups generation, shared by the requests that wait for one.
//!
//! Every founding-list request reads its project's generation before it may reuse a
//! kept page (see `pages.rs`). On `PostgreSQL` that read is a round trip and a query the
//! server plans and runs, which under 200 clients cost more than the rest of the
//! request. So at most one read per project is under way: a request that arrives while
//! one runs waits for the next, which starts when that one ends, together with every
//! other request that arrived meanwhile. Each request thus gets a value read after it
//! arrived, which is all the pages need (a write committed before the request arrived
//! is seen), and the catalog answers one query per round instead of one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use vbs_catalog::{Catalog, CatalogError};

/// One read: `None` until it is done; `Err(())` when it failed (each waiter then reads
/// for itself, so that its error keeps its kind).
type Round = watch::Sender<Option<Result<i64, ()>>>;

#[derive(Default)]
struct Slot {
    running: bool,
    /// The read that starts when the running one ends.
    queued: Option<Arc<Round>>,
}

#[derive(Default)]
pub struct SharedGenerations {
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for SharedGenerations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedGenerations").finish_non_exhaustive()
    }
}

impl SharedGenerations {
    /// The project's generation, read after this call began.
    pub async fn read(
        self: &Arc<Self>,
        catalog: &Catalog,
        project: &str,
    ) -> Result<i64, CatalogError> {
        let round = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots.entry(project.to_owned()).or_default();
            if slot.running {
                slot.queued
                    .get_or_insert_with(|| Arc::new(watch::Sender::new(None)))
                    .clone()
            } else {
                slot.running = true;
                let round = Arc::new(watch::Sender::new(None));
                self.start(catalog.clone(), project.to_owned(), round.clone());
                round
            }
        };
        let mut done = round.subscribe();
        let outcome = done.wait_for(Option::is_some).await.ok().and_then(|v| *v);
        match outcome {
            Some(Ok(generation)) => Ok(generation),
            _ => catalog.backup_generation(project).await,
        }
    }

    /// Runs `round` on a task of its own (a request that goes away does not take the
    /// others' read with it), then the round queued meanwhile, if any.
    fn start(self: &Arc<Self>, catalog: Catalog, project: String, round: Arc<Round>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut round = round;
            loop {
                let value = catalog.backup_generation(&project).await.map_err(|_| ());
                round.send_replace(Some(value));
                let mut slots = this.slots.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(slot) = slots.get_mut(&project) else {
                    return;
                };
                let Some(next) = slot.queued.take() else {
                    slots.remove(&project);
                    return;
                };
                round = next;
            }
        });
    }
}
