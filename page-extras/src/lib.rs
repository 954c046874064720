//! # rangersync-page-extras
//!
//! What the rangersync page module (`rangersync-page`) loads only when a page needs it, so that
//! a page in worker mode downloads the small messaging client and nothing else:
//!
//! - the **page-only fallback**: [`rangersync_sw::Engine`] run in the window when no service
//!   worker can (`openPageEngine`), answering the very same JSON text protocol the worker speaks
//!   over its `MessagePort`;
//! - **YAML snapshots**: `yamlFromJson` (a YAML export) and `jsonFromYaml` (a YAML restore,
//!   verified here and handed on as JSON); the worker speaks JSON only.
//!
//! Built by `cargo xtask build` with wasm-bindgen `--target web` into
//! `www/pkg/rangersync_page_extras.js` + `rangersync_page_extras_bg.wasm`, next to
//! `rangersync_page.js`, which imports it with a dynamic `import()` on first need. Apps never
//! import it themselves.
//!
//! | module | what |
//! |---|---|
//! | `convert` | JSON ⇄ YAML snapshot text (pure, tested natively) |
//! | `engine` (wasm32) | `openPageEngine`, `PageEngine` (`handle(text)`, `close()`), the JS exports |
//!
//! Errors thrown or rejected toward the client are `Error`s named `SyncError` with a stable
//! `code`, exactly as the client's own.

#![deny(missing_docs)]

pub mod convert;

#[cfg(target_arch = "wasm32")]
mod engine;
