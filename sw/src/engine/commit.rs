//! The write path: group commit. Nothing stands between a write and its acknowledgement but
//! the strict IndexedDB transaction: writes that arrive while a transaction is in flight go
//! into the next one together; counts are adjusted in memory; broadcasts, the Background Sync
//! registration and the flush trigger all happen after the acknowledgements.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use rangersync_shared::messages::codes;
use rangersync_shared::outbox::Trigger;
use wasm_bindgen_futures::spawn_local;

use super::Engine;
use crate::error::SwError;
use crate::js::{now, storage_estimate, Signal};
use crate::store::NewEntry;

type Answer = Rc<RefCell<Option<Result<Vec<u64>, SwError>>>>;

/// One caller's writes: committed together, acknowledged together.
struct Job {
    entries: Vec<NewEntry>,
    answer: Answer,
    done: Signal,
}

/// The group-commit queue.
#[derive(Default)]
pub(super) struct GroupCommit {
    queue: RefCell<Vec<Job>>,
    committing: Cell<bool>,
    transactions: Cell<u64>,
}

impl GroupCommit {
    /// Write transactions committed so far.
    pub(super) fn transactions(&self) -> u64 {
        self.transactions.get()
    }
}

impl Engine {
    pub(super) async fn write_one(self: &Rc<Self>, entry: NewEntry) -> Result<u64, SwError> {
        self.write(vec![entry])
            .await?
            .pop()
            .ok_or_else(|| SwError::coded(codes::INTERNAL, "no seq"))
    }

    /// Commit `entries` in one transaction (all or nothing) and return their seqs, in order.
    /// A lone write starts at once; writes arriving meanwhile share the next transaction.
    pub(super) async fn write(
        self: &Rc<Self>,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<u64>, SwError> {
        let answer: Answer = Rc::default();
        let (done, settled) = Signal::new();
        self.commit.queue.borrow_mut().push(Job {
            entries,
            answer: answer.clone(),
            done,
        });
        if !self.commit.committing.replace(true) {
            let me = self.clone();
            spawn_local(async move { me.commit_loop().await });
        }
        let _ = settled.await;
        let result = answer.borrow_mut().take();
        result.unwrap_or_else(|| Err(SwError::coded(codes::INTERNAL, "write lost")))
    }

    async fn commit_loop(self: Rc<Self>) {
        let mut committed_any = false;
        loop {
            let jobs = std::mem::take(&mut *self.commit.queue.borrow_mut());
            if jobs.is_empty() {
                break;
            }
            self.update_counts(|c| c.saving = true);
            let entries: Vec<&NewEntry> = jobs.iter().flat_map(|j| &j.entries).collect();
            let guard = self.coalesce_guard();
            // Stamped by the write clock: never before the server's last word.
            let at = self.flusher.borrow_mut().stamp(now());
            let local_only = self.config.borrow().local_only.clone();
            let result = self
                .store
                .commit_writes(&entries, at, &guard, &local_only)
                .await;
            self.commit
                .transactions
                .set(self.commit.transactions.get() + 1);
            match result {
                Ok((seqs, coalesced)) => {
                    committed_any = true;
                    self.update_counts(|c| {
                        c.last_saved_at = Some(at);
                        c.pending = (c.pending + seqs.len() as u64).saturating_sub(coalesced);
                    });
                    let mut seqs = seqs.into_iter();
                    for job in &jobs {
                        let mine: Vec<u64> = seqs.by_ref().take(job.entries.len()).collect();
                        *job.answer.borrow_mut() = Some(Ok(mine));
                        job.done.fire();
                    }
                    // Every tab hears about local writes too (put, delete, restore).
                    for entry in jobs.iter().flat_map(|j| &j.entries) {
                        if let NewEntry::Write {
                            collection, key, ..
                        } = entry
                        {
                            self.broadcast_change(collection, key);
                        }
                    }
                }
                Err(e) => {
                    let e = quota_if_storage_is_full(e, &jobs).await;
                    if matches!(&e, SwError::Js { name, .. } if name == "InvalidStateError") {
                        // Firefox, once a transaction of this connection ran into the quota,
                        // may refuse every later write on it ("a database that did not allow
                        // mutations") even after space is freed: the owner opens a fresh
                        // connection before the next request. Nothing of this write was kept.
                        self.retire();
                    }
                    for job in jobs {
                        *job.answer.borrow_mut() = Some(Err(e.clone()));
                        job.done.fire();
                    }
                }
            }
        }
        self.commit.committing.set(false);
        self.update_counts(|c| c.saving = false);
        self.broadcast_status();
        if committed_any {
            self.request_background_sync();
            self.kick(Trigger::Write);
        }
    }
}

/// A failed write transaction, named for what it ran into. Firefox does not always say
/// `QuotaExceededError` when an origin's storage is full: a transaction that needs more room
/// can also fail with `InvalidStateError` ("a database that did not allow mutations"). Such a
/// write is a `quota_exceeded` when the origin's own estimate shows it could not fit: usage
/// plus the write's size reaches the quota. Anything else keeps its own error.
async fn quota_if_storage_is_full(error: SwError, jobs: &[Job]) -> SwError {
    let SwError::Js { name, message } = &error else {
        return error;
    };
    let Some((usage, quota)) = storage_estimate().await else {
        return error;
    };
    let needed: usize = jobs
        .iter()
        .flat_map(|j| &j.entries)
        .map(NewEntry::approximate_size)
        .sum();
    if quota > 0.0 && usage + needed as f64 >= quota {
        SwError::QuotaExceeded {
            message: format!(
                "the origin's storage is full ({usage:.0} of {quota:.0} bytes used, this write \
                 needs about {needed} more); IndexedDB said {name}: {message}"
            ),
        }
    } else {
        error
    }
}
