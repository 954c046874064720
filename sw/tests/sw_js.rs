//! `www/sw.js`, the bootstrap, run in Node with a stub service-worker global: the request that
//! wakes the worker (before the wasm is ready) is still captured.
//!
//! Needs Node: `$NODE`, else `node` on `PATH`. `cargo xtask test` installs Debian's `nodejs`
//! when it is missing and sets `NODE`; without Node this test fails saying so, it never skips.
#![cfg(not(target_arch = "wasm32"))]

use std::path::Path;
use std::process::Command;

/// Loads sw.js into a fresh context per scenario and prints one line per check.
const HARNESS: &str = r#"
const vm = require('vm');
const fs = require('fs');
const src = fs.readFileSync(process.argv[1], 'utf8');

async function scenario(wasmLoads, method, path) {
  let settle;
  const loading = new Promise((res, rej) => { settle = wasmLoads ? res : () => rej(new Error('no wasm')); });
  const listeners = {};
  const ctx = {
    console, Promise, Error, String, JSON, URL,
    location: new URL('http://127.0.0.1:8787/sw.js'),
    importScripts() {},
    fetch: async (req) => 'passed through',
  };
  ctx.self = ctx;
  ctx.addEventListener = (type, f) => { listeners[type] = f; };
  ctx.skipWaiting = async () => {};
  ctx.clients = { matchAll: async () => [], claim: async () => {} };
  const wb = () => loading;
  wb.start = async () => {};
  wb.wants = (url, m) => url.endsWith('/api/sync/chat') && m !== 'GET';
  wb.on_fetch = async (req) => 'captured';
  ctx.wasm_bindgen = wb;
  vm.createContext(ctx);
  vm.runInContext(src, ctx);
  let responded = null;
  const event = {
    request: { url: 'http://127.0.0.1:8787' + path, method },
    respondWith(p) { responded = Promise.resolve(p); },
  };
  listeners.fetch(event); // the worker just woke: the wasm is still loading
  settle();
  if (!responded) return 'not intercepted';
  try { return await responded; } catch (e) { return 'rejected: ' + e.message; }
}

(async () => {
  console.log('post to a captured route: ' + await scenario(true, 'POST', '/api/sync/chat'));
  console.log('post elsewhere: ' + await scenario(true, 'POST', '/api/other'));
  console.log('get: ' + await scenario(true, 'GET', '/api/sync/chat'));
  console.log('wasm failed: ' + await scenario(false, 'POST', '/api/sync/chat'));
  console.log('get a page file: ' + await scenario(false, 'GET', '/app.js'));
  console.log('get the worker script: ' + await scenario(true, 'GET', '/sw.js'));
})();
"#;

#[test]
fn the_first_request_after_the_worker_wakes_is_captured_once_the_wasm_is_ready() {
    let sw_js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/sw.js");
    let node = std::env::var_os("NODE")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "node".into());
    let output = Command::new(&node)
        .arg("-e")
        .arg(HARNESS)
        .arg(&sw_js)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {node:?} ({e}): this test needs Node. Install it \
                 (`apt-get install -y nodejs`; `cargo xtask test` does so as root) or set NODE"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "post to a captured route: captured",
            "post elsewhere: passed through",
            "get: not intercepted",
            "wasm failed: passed through",
            "get a page file: passed through",
            "get the worker script: not intercepted",
        ]
    );
}
