//! # rangersync-sw
//!
//! The rangersync service worker, compiled to wasm32: every write a page hands it is committed
//! to IndexedDB (one `durability: "strict"` transaction) before the page hears "saved", then
//! delivered exactly once to the sync server with Background Sync, Periodic Background Sync and
//! its own retries. A thin shell over [`rangersync_shared`]: all decisions (batching, retry,
//! classification, dead-lettering, status) are made by the sans-IO
//! [`rangersync_shared::outbox::Flusher`]; this crate does IndexedDB, `fetch` and timers.
//!
//! Caveats first:
//! - Only a classic worker script can add the event listeners in time: `www/rangersync-worker.js`
//!   (`rangersync.listen`, called by `www/sw.js` or by an app's own worker) adds them, loads the
//!   `--target no-modules` build of this crate (global `rangersync_wasm`) and calls the entry
//!   points of [`worker`].
//! - [`Engine`] runs in a window too (the page fallback, `default-features = false`), but then
//!   delivers only while the page is open.
//! - Seqs are IndexedDB keys as JS numbers (never BigInt): at most 2^53 writes per profile.
//!
//! ## Modules
//! | module | what it knows |
//! |---|---|
//! | `schema` | the IndexedDB schema, the only place that does (names, versions, keys, upgrade) |
//! | `store` | typed operations, one transaction each |
//! | `lock` | the exclusive Web Lock an engine holds while it flushes (one engine per outbox) |
//! | [`engine`] | the [`Engine`]: messages, group commit, the flusher loop, pull, status |
//! | [`bindings`] | hand-written `SyncManager` / `PeriodicSyncManager` / `SyncEvent` bindings |
//! | [`worker`] | the `#[wasm_bindgen]` entry points for `rangersync-worker.js` (feature `worker`) |
//!
//! ## Features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `worker` | yes | the service-worker entry points (`start`, `on_message`, `on_sync`, `on_periodic_sync`, `on_fetch`, `wants`, `on_online`, `on_install`, `on_activate`) |
//!
//! ## Browser support
//! | browser | Background Sync | Periodic Background Sync | fallback triggers |
//! |---|---|---|---|
//! | Chrome, Edge (desktop, Android) | yes (`rangersync-flush` after every write and failed attempt) | yes, when the site may (installed PWA / engagement) | also |
//! | Firefox | no (`registration.sync` undefined) | no | worker start, every page message, `online`, retry timer while alive |
//! | Safari | no | no | same as Firefox |
//! | Electron | usually disabled | no | same as Firefox |
//!
//! ## Contexts
//! | context | [`Engine`] | [`worker`] entry points |
//! |---|---|---|
//! | service worker | yes | yes |
//! | window (page fallback) | yes | no |

pub mod bindings;
pub mod engine;
pub mod error;
mod idb;
mod js;
mod lock;
mod schema;
mod seal;
mod store;
#[cfg(feature = "worker")]
pub mod worker;

pub use engine::Engine;
pub use error::SwError;
pub use rangersync_shared::outbox::Trigger;

/// Delete a database by name (tests; close every engine on it first).
pub async fn delete_database(name: &str) -> Result<(), SwError> {
    schema::delete(name).await
}
