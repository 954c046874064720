//! # rangersync-page
//!
//! The page side of rangersync, compiled to wasm and used from plain JavaScript or TypeScript:
//!
//! ```js
//! import init, { SyncClient } from '/pkg/rangersync_page.js';
//! await init();
//! const client = await SyncClient.register({ swUrl: '/sw.js', serverUrl: location.origin });
//! await client.put('notes', 'n1', { title: 'hi' }); // committed in IndexedDB when it resolves
//! const off = client.onStatus((s) => render(s));
//! ```
//!
//! Caveats first:
//! - Writes are acknowledged once they are in IndexedDB; delivery to the server happens later,
//!   exactly once, from the service worker (or from this page in page mode, only while a page
//!   is open).
//! - Page mode (no service worker: insecure context, no `navigator.serviceWorker`, registration
//!   refused, `forcePageMode`) runs the same outbox over the same database, so a later launch
//!   with a worker simply takes over.
//! - This module is the messaging client only. The page-only fallback engine and YAML
//!   conversion live in `rangersync_page_extras.js` (crate `rangersync-page-extras`), loaded
//!   with a dynamic `import()` from next to this module the first time a page needs them. If it
//!   cannot be loaded, that call fails with `worker_unavailable` naming the URL.
//! - Every failure is a rejected promise carrying an `Error` named `SyncError` with a stable
//!   `code` ([`rangersync_shared::messages::codes`]).
//!
//! | module | what |
//! |---|---|
//! | `options` | the `register` / `restore` option objects, camelCase → [`rangersync_shared::messages::Config`] |
//! | `request` | local checks, the request envelope, the reply |
//! | `error` | [`ClientError`] (`code` + message) |
//! | `client` (wasm32) | `SyncClient`, the JS API, the transport (worker or page engine) |
//! | `extras` (wasm32) | the on-demand `import()` of the extras module: page engine, YAML |
//! | `worker` (wasm32) | registration, controller, request/reply over `MessageChannel` |
//! | `js` (wasm32) | JSON ⇄ JS, errors, timers, self-removing event listeners |
//!
//! The pure modules compile and test on the host (`cargo test -p rangersync-page`); the
//! browser parts are tested with `wasm-bindgen-test` in headless Chromium (`tests/browser.rs`).

#![deny(missing_docs)]

pub mod coalesce;
pub mod error;
pub mod options;
pub mod request;

#[cfg(target_arch = "wasm32")]
mod autosave;
#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod extras;
#[cfg(target_arch = "wasm32")]
mod js;
#[cfg(target_arch = "wasm32")]
mod ts;
#[cfg(target_arch = "wasm32")]
mod worker;

#[cfg(target_arch = "wasm32")]
pub use client::SyncClient;
pub use error::ClientError;
pub use options::ClientOptions;
