/* rangersync service worker bootstrap (classic worker).
 *
 * Every listener is added synchronously, during this script's first run, before the wasm is
 * ready (a listener added later is never called). Each one calls into wasm inside
 * event.waitUntil(ready.then(...)) or event.respondWith(...).
 */
/* global wasm_bindgen */
'use strict';

let wasmReady = false;
let ready;

function reportError(err) {
  const message = String((err && err.message) || err);
  // Tell every page instead of dying silently.
  self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((clients) => {
    for (const client of clients) {
      client.postMessage({ type: 'worker_error', code: 'worker_unavailable', message });
    }
  });
}

try {
  importScripts('/pkg/rangersync_sw.js');
  ready = wasm_bindgen({ module_or_path: '/pkg/rangersync_sw_bg.wasm' })
    .then(() => wasm_bindgen.start())
    .then(() => { wasmReady = true; });
} catch (err) {
  ready = Promise.reject(err);
}
ready.catch(reportError);

/** Run `f` once the wasm is ready; a failure is reported to the pages and rethrown. */
function whenReady(f) {
  return ready.then(f, (err) => { reportError(err); throw err; });
}

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener('activate', (event) => {
  event.waitUntil(Promise.all([
    self.clients.claim(),
    whenReady(() => wasm_bindgen.on_activate()).catch(() => {}),
  ]));
});

self.addEventListener('message', (event) => {
  event.waitUntil(ready.then(
    () => wasm_bindgen.on_message(event),
    (err) => {
      const port = event.ports && event.ports[0];
      if (port) {
        let id = 0;
        try {
          const data = typeof event.data === 'string' ? JSON.parse(event.data) : event.data;
          id = (data && typeof data.id === 'number') ? data.id : 0;
        } catch (_) { /* not JSON */ }
        port.postMessage({ v: 1, id, ok: false,
          error: { code: 'worker_unavailable', message: String((err && err.message) || err) } });
      }
      reportError(err);
    }));
});

self.addEventListener('sync', (event) => {
  // A rejected promise makes the browser retry later (with its own backoff).
  event.waitUntil(whenReady(() => wasm_bindgen.on_sync(event.tag, event.lastChance)));
});

self.addEventListener('periodicsync', (event) => {
  event.waitUntil(whenReady(() => wasm_bindgen.on_periodic_sync(event.tag)));
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (wasmReady) {
    if (!wasm_bindgen.wants(request.url, request.method)) return;
    event.respondWith(wasm_bindgen.on_fetch(request));
    return;
  }
  // Reads are never captured: let them through untouched while the wasm loads.
  if (request.method === 'GET' || request.method === 'HEAD') return;
  // The request that woke the worker may be one to capture: decide once the wasm (and the
  // stored route list) is ready. If the wasm failed to load, pass it through.
  event.respondWith(ready.then(
    () => (wasm_bindgen.wants(request.url, request.method)
      ? wasm_bindgen.on_fetch(request)
      : fetch(request)),
    () => fetch(request)));
});

self.addEventListener('online', () => {
  ready.then(() => wasm_bindgen.on_online(true)).catch(() => {});
});

self.addEventListener('offline', () => {
  ready.then(() => wasm_bindgen.on_online(false)).catch(() => {});
});
