//! Status and change broadcasts, coalesced: however many writes, results and state changes
//! happen in one macrotask, the tabs hear one status (only when it changed) and each changed
//! entity once, after the acknowledgements have gone out.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use rangersync_shared::messages::Broadcast;
use rangersync_shared::status::Status;
use wasm_bindgen_futures::spawn_local;

use super::Engine;
use crate::js::Timeout;

/// What waits for the next broadcast.
#[derive(Default)]
pub(super) struct Coalescer {
    scheduled: RefCell<Option<Timeout>>,
    status_dirty: Cell<bool>,
    /// In the order they changed; `announced` answers "already in?" without a scan, since a
    /// `write_many` of 10,000 keys lands here in one macrotask.
    changes: RefCell<Vec<(String, String)>>,
    announced: RefCell<BTreeSet<(String, String)>>,
    last_status: RefCell<Option<Status>>,
}

impl Coalescer {
    /// Drop anything not yet sent (the engine closes).
    pub(super) fn cancel(&self) {
        self.scheduled.borrow_mut().take();
        self.changes.borrow_mut().clear();
        self.announced.borrow_mut().clear();
        self.status_dirty.set(false);
    }
}

impl Engine {
    /// The status may have changed: tell every tab at the end of this macrotask.
    pub(super) fn broadcast_status(&self) {
        self.broadcast.status_dirty.set(true);
        self.schedule_broadcast();
    }

    /// `(collection, key)` changed locally: tell every tab at the end of this macrotask.
    pub(super) fn broadcast_change(&self, collection: &str, key: &str) {
        let entity = (collection.to_owned(), key.to_owned());
        if self.broadcast.announced.borrow_mut().insert(entity.clone()) {
            self.broadcast.changes.borrow_mut().push(entity);
        }
        self.schedule_broadcast();
    }

    fn schedule_broadcast(&self) {
        if self.broadcast.scheduled.borrow().is_some() {
            return;
        }
        let weak = self.me.borrow().clone();
        // A macrotask, so replies already posted in this one leave first.
        let timer = Timeout::new(0, move || {
            let Some(engine) = weak.upgrade() else { return };
            // Not from inside the timer's own callback: that would free the running closure.
            spawn_local(async move { engine.send_broadcasts() });
        });
        *self.broadcast.scheduled.borrow_mut() = Some(timer);
    }

    /// Send what waits now (an engine about to retire).
    pub(super) fn send_broadcasts(&self) {
        self.broadcast.scheduled.borrow_mut().take();
        let changes = std::mem::take(&mut *self.broadcast.changes.borrow_mut());
        self.broadcast.announced.borrow_mut().clear();
        for (collection, key) in changes {
            (self.notify)(&Broadcast::Change { collection, key });
        }
        if self.broadcast.status_dirty.replace(false) {
            let status = self.status();
            if self.broadcast.last_status.borrow().as_ref() != Some(&status) {
                *self.broadcast.last_status.borrow_mut() = Some(status.clone());
                (self.notify)(&Broadcast::Status {
                    status: Box::new(status),
                });
            }
        }
    }
}
