//! One engine per outbox: the exclusive Web Lock (`navigator.locks`) an engine holds while it
//! flushes. The worker and a page-mode engine (after a Shift+Reload, or a `worker_error`) share
//! one IndexedDB outbox; without the lock both would send the same entries, and each one's
//! attempt counts and status would drift from the other's. With it, one flushes and the other
//! waits, then re-reads the counts the holder changed.
//!
//! Where the browser has no Web Locks (before Safari 15.4), [`FlushLock::acquire`] gives a
//! guard that holds nothing: the server's `(client_id, seq)` dedup still applies each entry
//! once.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::js;

/// Held while a flush runs; dropping it releases the lock.
pub struct FlushLock {
    release: Option<Function>,
}

impl Drop for FlushLock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.call0(&JsValue::UNDEFINED);
        }
    }
}

fn lock_manager() -> Option<JsValue> {
    let navigator = js::global_prop("navigator")?;
    Reflect::get(&navigator, &"locks".into())
        .ok()
        .filter(|l| !l.is_undefined() && !l.is_null())
}

/// Ask for `name`; `if_available`: give up at once (resolve `None`) when someone holds it.
async fn request(locks: &JsValue, name: &str, if_available: bool) -> Option<FlushLock> {
    let request: Function = Reflect::get(locks, &"request".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let options = Object::new();
    let _ = Reflect::set(&options, &"mode".into(), &"exclusive".into());
    if if_available {
        let _ = Reflect::set(&options, &"ifAvailable".into(), &JsValue::TRUE);
    }
    // The lock is held until the promise the callback returns settles: `release` settles it.
    let mut release: Option<Function> = None;
    let held = Promise::new(&mut |resolve, _| release = Some(resolve));
    let mut granted: Option<Function> = None;
    let acquired = Promise::new(&mut |resolve, _| granted = Some(resolve));
    let (granted, release) = (granted?, release?);
    let held_for_callback = held.clone();
    let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        let got = !lock.is_null() && !lock.is_undefined();
        let _ = granted.call1(&JsValue::UNDEFINED, &JsValue::from_bool(got));
        if got {
            held_for_callback.into()
        } else {
            JsValue::UNDEFINED
        }
    });
    // The request's own promise settles when the lock is released (it never rejects: no
    // abort signal is given and the callback does not throw).
    request
        .call3(locks, &name.into(), &options, &callback)
        .ok()?;
    let got = JsFuture::from(acquired).await.ok()?.as_bool() == Some(true);
    if got {
        Some(FlushLock {
            release: Some(release),
        })
    } else {
        let _ = release.call0(&JsValue::UNDEFINED);
        None
    }
}

impl FlushLock {
    /// Take the exclusive lock `name`, waiting while another engine holds it. Returns the guard
    /// and whether it had to wait (then the holder changed the outbox under this engine).
    pub async fn acquire(name: &str) -> (FlushLock, bool) {
        let Some(locks) = lock_manager() else {
            return (FlushLock { release: None }, false);
        };
        if let Some(lock) = request(&locks, name, true).await {
            return (lock, false);
        }
        match request(&locks, name, false).await {
            Some(lock) => (lock, true),
            None => (FlushLock { release: None }, true),
        }
    }
}
