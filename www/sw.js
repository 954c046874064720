/* rangersync service worker bootstrap (classic worker).
 *
 * Every listener is added synchronously, during this script's first run, before the wasm is
 * ready (a listener added later is never called). Each one calls into wasm inside
 * event.waitUntil(ready().then(...)) or event.respondWith(...).
 */
/* global wasm_bindgen */
'use strict';

let wasmReady = false;

/** The worker's wasm, and the cache that keeps a copy so a worker started offline still runs. */
const WASM_URL = '/pkg/rangersync_sw_bg.wasm';
const WORKER_CACHE = 'rangersync-worker-v1';

function reportError(err) {
  const message = String((err && err.message) || err);
  // Tell every page instead of dying silently.
  self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((clients) => {
    for (const client of clients) {
      client.postMessage({ type: 'worker_error', code: 'worker_unavailable', message });
    }
  });
}

/** The wasm from the network (refreshing the cached copy), else the cached copy. */
function wasmResponse() {
  return fetch(WASM_URL).then((response) => {
    if (!response.ok) throw new Error(`HTTP ${response.status} for ${WASM_URL}`);
    const copy = response.clone();
    caches.open(WORKER_CACHE).then((cache) => cache.put(WASM_URL, copy)).catch(() => {});
    return response;
  }).catch((err) => caches.open(WORKER_CACHE)
    .then((cache) => cache.match(WASM_URL))
    .then((cached) => {
      if (cached) return cached;
      throw err;
    }));
}

let importError = null;
try {
  importScripts('/pkg/rangersync_sw.js');
} catch (err) {
  importError = err;
}

let loading = null;
/**
 * The wasm, loaded once. A failed load is reported to the pages and forgotten, so the next event
 * tries again: a worker that woke while the server was down recovers once it is back.
 */
function ready() {
  if (importError) return Promise.reject(importError);
  if (!loading) {
    const response = wasmResponse();
    response.catch(() => {}); // handled through `loading`
    loading = wasm_bindgen({ module_or_path: response })
      .then(() => wasm_bindgen.start())
      .then(() => { wasmReady = true; });
    loading.catch((err) => {
      loading = null;
      reportError(err);
    });
  }
  return loading;
}
ready().catch(() => {});

/** Run `f` once the wasm is ready; a failure is reported to the pages and rethrown. */
function whenReady(f) {
  return ready().then(f);
}

self.addEventListener('install', (event) => {
  // Keep a copy of this version's wasm (a failure here only means no offline start yet).
  event.waitUntil(caches.open(WORKER_CACHE)
    .then((cache) => cache.add(new Request(WASM_URL, { cache: 'reload' })))
    .catch(() => {})
    .then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(Promise.all([
    self.clients.claim(),
    whenReady(() => wasm_bindgen.on_activate()).catch(() => {}),
  ]));
});

self.addEventListener('message', (event) => {
  event.waitUntil(ready().then(
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
    }));
});

self.addEventListener('sync', (event) => {
  // A rejected promise makes the browser retry later (with its own backoff).
  event.waitUntil(whenReady(() => wasm_bindgen.on_sync(event.tag, event.lastChance)));
});

self.addEventListener('periodicsync', (event) => {
  event.waitUntil(whenReady(() => wasm_bindgen.on_periodic_sync(event.tag)));
});

/** Cache Storage name of the app shell (the page's own files, for opening it offline). */
const SHELL_CACHE = 'rangersync-shell-v1';

/** A same-origin GET of a page file (not the API, not this script): served network first. */
function isShellRequest(request) {
  if (request.method !== 'GET') return false;
  const url = new URL(request.url);
  return url.origin === self.location.origin
    && !url.pathname.startsWith('/api/')
    && url.pathname !== self.location.pathname;
}

/** Network first; a good answer refreshes the cache; offline, the cached copy answers. */
function networkFirst(event) {
  const request = event.request;
  return fetch(request).then((response) => {
    if (response.ok && response.type === 'basic') {
      const copy = response.clone();
      event.waitUntil(caches.open(SHELL_CACHE)
        .then((cache) => cache.put(request, copy))
        .catch(() => {}));
    }
    return response;
  }, (err) => fromCache(request).then((cached) => {
    if (cached) return cached;
    throw err;
  })).catch(() => Response.error());
}

function fromCache(request) {
  return caches.open(SHELL_CACHE).then((cache) => {
    // Offline, a stale copy beats none: ignore Vary (CORS layers add `Vary: Origin`).
    if (request.mode !== 'navigate') return cache.match(request, { ignoreVary: true });
    return cache.match(request, { ignoreSearch: true, ignoreVary: true })
      .then((hit) => hit || cache.match('/'))
      .then((hit) => hit || cache.match('/index.html'));
  }).catch(() => undefined);
}

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (isShellRequest(request)) {
    event.respondWith(networkFirst(event));
    return;
  }
  if (wasmReady) {
    if (!wasm_bindgen.wants(request.url, request.method)) return;
    event.respondWith(wasm_bindgen.on_fetch(request));
    return;
  }
  // Reads are never captured: let them through untouched while the wasm loads.
  if (request.method === 'GET' || request.method === 'HEAD') return;
  // The request that woke the worker may be one to capture: decide once the wasm (and the
  // stored route list) is ready. If the wasm failed to load, pass it through.
  event.respondWith(ready().then(
    () => (wasm_bindgen.wants(request.url, request.method)
      ? wasm_bindgen.on_fetch(request)
      : fetch(request)),
    () => fetch(request)));
});

self.addEventListener('online', () => {
  ready().then(() => wasm_bindgen.on_online(true)).catch(() => {});
});

self.addEventListener('offline', () => {
  ready().then(() => wasm_bindgen.on_online(false)).catch(() => {});
});
