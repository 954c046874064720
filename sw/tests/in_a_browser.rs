//! A pointer for a bare `cargo test`: this crate's real tests (`worker.rs` (in a service worker) and `window.rs`) are wasm tests,
//! compiled only for `wasm32` and run in headless Chromium, so natively they compile to
//! nothing and would show green without running. This test is listed as ignored with the
//! command that runs them; forced with `--ignored`, it fails.
#![cfg(not(target_arch = "wasm32"))]

#[test]
#[ignore = "this crate's browser tests run in headless Chromium: cargo xtask test wasm (or all of cargo xtask test)"]
fn the_browser_tests_of_this_crate_run_with_cargo_xtask_test_wasm() {
    panic!("the browser tests of this crate are wasm tests: run `cargo xtask test wasm`");
}
