//! `www/sw.js` and the worker library it imports (`www/rangersync-worker.js`), run in Node with
//! a stub service-worker global (fetch, Cache Storage, events): which requests the fetch listener
//! answers (captured routes, the app shell) and which it leaves to the network or to an app's own
//! listener, what `install` precaches and refuses, what `activate` deletes, how `listen` checks
//! its options, and how a panic in the wasm (a trap) reaches the page.
//!
//! Needs Node: `$NODE`, else `node` on `PATH`. `cargo xtask test` installs Debian's `nodejs`
//! when it is missing and sets `NODE`; without Node this test fails saying so, it never skips.
#![cfg(not(target_arch = "wasm32"))]

use std::path::Path;
use std::process::Command;

/// Loads the scripts into a fresh context per scenario and prints one line per check.
const HARNESS: &str = r#"
const vm = require('vm');
const fs = require('fs');
const [swPath, libPath] = process.argv.slice(1);
const swSrc = fs.readFileSync(swPath, 'utf8');
const libSrc = fs.readFileSync(libPath, 'utf8');
const ORIGIN = 'http://127.0.0.1:8787';

class FakeRequest {
  constructor(url, init = {}) {
    this.url = new URL(typeof url === 'string' ? url : url.url, ORIGIN).href;
    this.method = init.method || 'GET';
    this.mode = init.mode || 'cors';
    this.credentials = init.credentials || 'same-origin';
    this.cache = init.cache || 'default';
  }
}
const FakeResponse = { error: () => ({ body: 'Response.error()', type: 'error', status: 0 }) };
function response(body, { status = 200, headers = {}, type = 'basic', redirected = false } = {}) {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { body, status, ok: status >= 200 && status < 300, type, redirected,
    headers: { get: (name) => lower[name.toLowerCase()] ?? null },
    arrayBuffer: async () => new ArrayBuffer(8),
    clone() { return this; } };
}
const pathOf = (url) => { const u = new URL(url, ORIGIN); return u.pathname + u.search; };
const offline = () => Promise.reject(new TypeError('Failed to fetch'));

function makeCaches(fetch) {
  const stores = new Map();
  const keyOf = (r) => new URL(typeof r === 'string' ? r : r.url, ORIGIN).href;
  const named = (name) => {
    if (!stores.has(name)) {
      const entries = new Map();
      stores.set(name, { entries,
        put: async (r, res) => { entries.set(keyOf(r), res); },
        match: async (r) => entries.get(keyOf(r)),
        keys: async () => [...entries.keys()].map((url) => ({ url })),
        delete: async (r) => entries.delete(keyOf(r)),
        add: async (r) => { entries.set(keyOf(r), await fetch(r)); } });
    }
    return stores.get(name);
  };
  return { stores, api: {
    open: async (name) => named(name),
    keys: async () => [...stores.keys()],
    delete: async (name) => stores.delete(name),
    match: async (r, options = {}) => {
      const store = stores.get(options.cacheName);
      return store ? store.entries.get(keyOf(r)) : undefined;
    },
  } };
}

/** This build's wasm as the stub glue names it. */
const WASM_FILE = 'rangersync_sw_bg.0123456789abcdef.wasm';

/**
 * A worker global running `script` (default: sw.js at `url`); the wasm settles on `settle()`.
 * `shareCaches`: another worker whose Cache Storage this one sees (a later start). The wasm is
 * served as `wasmType` and its downloads are counted apart (`wasmFetched`).
 */
function worker({ url = '/sw.js', script = null, wasm = 'loads', shareCaches = null,
  wasmType = 'application/wasm', glueNamesWasm = true,
  network = (req) => response('network:' + pathOf(req.url)) } = {}) {
  let settle;
  const loading = new Promise((resolve, reject) => {
    settle = wasm === 'loads' ? resolve : () => reject(new Error('no wasm'));
  });
  loading.catch(() => {});
  const w = { listeners: {}, fetched: [], imported: [], logged: [], network, settle, error: null,
    toPages: [], wasmFetched: [], compiled: [], preload: [] };
  const ctx = {
    Promise, Error, TypeError, String, JSON, URL, Object, Array, Math, Boolean,
    WebAssembly: {
      RuntimeError: WebAssembly.RuntimeError,
      compileStreaming: async (r) => { w.compiled.push(`streamed ${r.body}`); return 'module'; },
      compile: async () => { w.compiled.push('from bytes'); return 'module'; },
    },
    registration: { navigationPreload: {
      enable: async () => { w.preload.push('enable'); },
      disable: async () => { w.preload.push('disable'); },
    } },
    console: { warn: (m) => w.logged.push(String(m)), error: (m) => w.logged.push(String(m)) },
    location: new URL(url, ORIGIN),
    Request: FakeRequest,
    Response: FakeResponse,
    skipWaiting: async () => {},
    clients: { matchAll: async () => [{ postMessage: (m) => w.toPages.push(m) }], claim: async () => {} },
  };
  ctx.self = ctx;
  ctx.fetch = async (r) => {
    const request = typeof r === 'string' ? new FakeRequest(r) : r;
    if (request.url.endsWith('.wasm')) {
      w.wasmFetched.push(pathOf(request.url));
      return response(`downloaded ${pathOf(request.url)}`, { headers: { 'Content-Type': wasmType } });
    }
    w.fetched.push(request);
    return w.network(request);
  };
  w.caches = shareCaches ? shareCaches.caches : makeCaches(ctx.fetch);
  ctx.caches = w.caches.api;
  ctx.addEventListener = (type, f) => { (w.listeners[type] = w.listeners[type] || []).push(f); };
  ctx.importScripts = (u) => {
    w.imported.push(pathOf(new URL(u, ctx.location).href));
    if (u.endsWith('rangersync-worker.js')) vm.runInContext(libSrc, ctx);
    if (u.endsWith('rangersync_sw.js') && glueNamesWasm) ctx.rangersync_wasm_file = WASM_FILE;
  };
  const glue = (init) => { w.initArg = init; return loading; };
  glue.start = async () => {};
  glue.on_activate = async () => {};
  glue.wants = (u, method) => u.endsWith('/api/sync/chat') && method !== 'GET';
  glue.on_fetch = async () => 'captured';
  ctx.rangersync_wasm = glue;
  w.glue = glue;
  vm.createContext(ctx);
  try {
    vm.runInContext(script === null ? swSrc : script, ctx);
  } catch (err) {
    w.error = err;
  }
  return w;
}

async function dispatch(w, type) {
  const waits = [];
  for (const f of w.listeners[type] || []) f({ waitUntil: (p) => waits.push(p) });
  await Promise.all(waits);
}

/** Fires `fetch`; → the promise given to respondWith, or null. */
function fire(w, request, preloadResponse = undefined) {
  let responded = null;
  const event = {
    request,
    preloadResponse,
    respondWith(p) {
      if (responded) throw new Error('InvalidStateError: answered already');
      responded = Promise.resolve(p);
    },
    waitUntil() {},
  };
  for (const f of w.listeners.fetch || []) f(event);
  return responded;
}

async function outcome(responded) {
  if (!responded) return 'not intercepted';
  try {
    const r = await responded;
    return typeof r === 'string' ? r : r.body;
  } catch (e) { return 'rejected: ' + e.message; }
}

const answer = (w, path, init) => outcome(fire(w, new FakeRequest(path, init)));
const shellUrl = (shell) => '/sw.js?appShell=' + encodeURIComponent(JSON.stringify(shell));
const routesUrl = (routes) => '/sw.js?captureRoutes=' + encodeURIComponent(JSON.stringify(routes));
const tick = () => new Promise((resolve) => setTimeout(resolve, 5));
const out = (label, value) => console.log(`${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);

(async () => {
  // The request that wakes the worker arrives while the wasm is still loading. The routes in
  // the worker's URL decide at once what cannot be captured; the wasm decides the rest.
  for (const [label, wasm, method, path] of [
    ['post to a captured route', 'loads', 'POST', '/api/sync/chat'],
    ['post under a route that the wasm does not capture', 'loads', 'POST', '/api/sync/other'],
    ['post elsewhere', 'loads', 'POST', '/api/other'],
    ['post to a route of another origin', 'loads', 'POST', 'http://api.example:3000/api/sync/x'],
    ['get', 'loads', 'GET', '/api/sync/chat'],
    ['wasm failed', 'fails', 'POST', '/api/sync/chat'],
    ['get a page file, no app shell', 'loads', 'GET', '/app.js'],
    ['get the worker script', 'loads', 'GET', '/sw.js'],
  ]) {
    const w = worker({ wasm, url: routesUrl(['/api/sync/*/', 'http://API.example:3000/api/*']) });
    const responded = fire(w, new FakeRequest(path, { method }));
    w.settle();
    out(label, await outcome(responded));
  }
  {
    const w = worker({ url: routesUrl(['/api/sync/*']) });
    w.settle();
    await tick();
    out('a navigation, no app shell', await answer(w, '/account?x=1', { mode: 'navigate' }));
    out('the scripts sw.js imports', w.imported);
  }
  {
    const w = worker();
    out('nothing to capture, no app shell: listeners', Object.keys(w.listeners).sort().join(' '));
    const v = worker({ url: '/sw.js?captureRoutes=%5Bnot' });
    const put = fire(v, new FakeRequest('/anything', { method: 'PUT' }));
    v.settle();
    out('capture routes that are not JSON', `${'fetch' in v.listeners ? 'a fetch listener' : 'no fetch listener'}, `
      + `a put: ${await outcome(put)}; ${v.logged.length} error logged`);
    const own = worker({ script: `importScripts('/rangersync-worker.js');
      rangersync.listen({ captureRoutes: [{ origin: 'https://api.example', path: '/v1/*' }] });` });
    own.settle();
    out('an app worker giving its routes to listen', [
      await answer(own, 'https://api.example/v1/notes', { method: 'POST' }),
      await answer(own, 'https://api.example/v2/notes', { method: 'POST' }),
    ]);
  }

  // The wasm: downloaded once at the first start and kept; read from the cache at later starts,
  // compiled by streaming; the copies of other builds deleted at activate.
  {
    const first = worker();
    const cache = await first.caches.api.open('rangersync-worker-v1');
    await cache.put('/pkg/rangersync_sw_bg.wasm', response('old'));
    await cache.put('/pkg/rangersync_sw_bg.ffffffffffffffff.wasm', response('older'));
    first.settle();
    await dispatch(first, 'install');
    out('the first start', { downloads: first.wasmFetched, compiled: first.compiled, given: first.initArg });
    await dispatch(first, 'activate');
    out('the worker cache after activate', (await cache.keys()).map((r) => pathOf(r.url)));
    const later = worker({ shareCaches: first });
    later.settle();
    await tick();
    out('a later start', { downloads: later.wasmFetched, compiled: later.compiled });
    const untyped = worker({ wasmType: 'application/octet-stream' });
    untyped.settle();
    await tick();
    out('a wasm served with another type', { compiled: untyped.compiled, warned: untyped.logged.length });
    const unnamed = worker({ glueNamesWasm: false });
    const replies = [];
    for (const f of unnamed.listeners.message) {
      f({ data: { v: 1, id: 3, request: { type: 'status' } },
        ports: [{ postMessage: (m) => replies.push(m) }], waitUntil: () => {} });
    }
    await tick();
    out('a glue that names no wasm', replies.map((m) => `${m.error.code}: ${/names no wasm/.test(m.error.message)}`));
  }

  // A message the wasm fails on: a trap (a panic) is answered and told to every page; any
  // other failure was answered by the wasm itself.
  for (const [label, failure] of [
    ['a panic in the wasm', () => new WebAssembly.RuntimeError('unreachable')],
    ['another failure of the wasm', () => new Error('storage_error: the database closed')],
  ]) {
    const w = worker();
    w.settle();
    await tick();
    w.glue.on_message = async () => { throw failure(); };
    const replies = [];
    const waits = [];
    for (const f of w.listeners.message) {
      f({ data: { v: 1, id: 7, request: { type: 'status' } },
        ports: [{ postMessage: (m) => replies.push(m) }], waitUntil: (p) => waits.push(p) });
    }
    const [settled] = await Promise.allSettled(waits);
    await tick();
    out(label, { event: settled.status, replies, pages: w.toPages });
  }

  // An app's own worker: its listeners keep their requests.
  {
    const w = worker({ script: `
      self.addEventListener('fetch', (event) => {
        if (new URL(event.request.url).pathname === '/api/own') event.respondWith('the app answered');
      });
      importScripts('/rangersync-worker.js');
      rangersync.listen({ appShell: { files: ['/'] } });
      self.addEventListener('fetch', (event) => {
        if (new URL(event.request.url).pathname === '/hello') event.respondWith('hello from the app');
      });` });
    const before = w.fetched.length;
    const responded = fire(w, new FakeRequest('/api/own', { method: 'POST' }));
    w.settle();
    const answered = await outcome(responded);
    await tick();
    out('a post the app answered before rangersync', `${answered}; rangersync fetched ${w.fetched.length - before}`);
    out('a get the app answers after rangersync', await answer(w, '/hello'));
    out('the app worker imports', w.imported);
  }
  {
    const w = worker({ script: `importScripts('/rangersync-worker.js');
      rangersync.listen({ pkgUrl: '/vendor/rangersync' });` });
    await tick();
    out('pkgUrl', [...w.imported, ...w.wasmFetched]);
  }

  // Install and activate without an app shell: no cache of the app, old shell caches deleted.
  {
    const w = worker();
    w.settle();
    for (const name of ['rangersync-shell-v1', 'rangersync-shell-2-0badcafe', 'the-apps-own-cache']) {
      await w.caches.api.open(name);
    }
    await dispatch(w, 'install');
    await dispatch(w, 'activate');
    out('caches after install and activate, no app shell', [...w.caches.stores.keys()].sort());
    out('navigation preload without an app shell', w.preload);
  }

  // With an app shell.
  const files = ['/', '/about.html', '/app.js', '/private', '/missing.js', '/moved', '/elsewhere.js', '/app.js'];
  const w = worker({ url: shellUrl({ files, version: '7' }), network: (req) => {
    const path = pathOf(req.url);
    if (path === '/private') return response('secret', { headers: { 'Cache-Control': 'private, No-Store' } });
    if (path === '/missing.js') return response('not found', { status: 404 });
    if (path === '/moved') return response('a login page', { redirected: true });
    if (path === '/elsewhere.js') return response('', { type: 'opaque', status: 0 });
    return response('installed:' + path);
  } });
  w.settle();
  await w.caches.api.open('rangersync-shell-6-0badcafe');
  await dispatch(w, 'install');
  const shell = [...w.caches.stores.keys()].find((n) => n.startsWith('rangersync-shell-7-'));
  out('the cache of version 7', /^rangersync-shell-7-[0-9a-f]{8}$/.test(shell) ? 'rangersync-shell-7-<hash>' : String(shell));
  out('install caches', [...w.caches.stores.get(shell).entries.keys()].map(pathOf));
  out('install refuses', w.logged.map((m) => m.replace(/^rangersync: not caching (\S+) for the app shell: /, (_, u) => pathOf(u) + ' → ')));
  out('precache requests', [...new Set(w.fetched.filter((r) => pathOf(r.url) === '/').map((r) => `credentials ${r.credentials}, cache ${r.cache}`))]);
  await dispatch(w, 'activate');
  out('caches after activate', [...w.caches.stores.keys()].sort().map((n) => (n === shell ? '(version 7)' : n)));
  out('navigation preload', w.preload);
  out('a navigation with a preloaded response', await outcome(fire(w,
    new FakeRequest('/account', { mode: 'navigate' }), Promise.resolve(response('preloaded:/account')))));

  w.network = (req) => response('fresh:' + pathOf(req.url));
  out('a listed file, online', await answer(w, '/app.js'));
  out('a navigation, online', await answer(w, '/account?x=1', { mode: 'navigate' }));
  out('a file not listed', await answer(w, '/other.js'));
  out('a post', await answer(w, '/app.js', { method: 'POST' }));
  w.network = offline;
  out('a listed file, offline', await answer(w, '/app.js'));
  out('a listed page, offline', await answer(w, '/about.html', { mode: 'navigate' }));
  out('a navigation to a page not listed, offline', await answer(w, '/account?x=1', { mode: 'navigate' }));
  out('a navigation to a refused file, offline', await answer(w, '/private', { mode: 'navigate' }));
  out('a refused file, offline', await answer(w, '/private'));
  out('a file not listed, offline', await answer(w, '/other.js'));
  out('cache writes after install', [...w.caches.stores.get(shell).entries.keys()].map(pathOf).join(' ') === '/ /about.html /app.js' ? 'none' : 'some');

  // The cache name follows the list, the fallback and the version.
  const cacheOf = async (appShell) => {
    const v = worker({ url: shellUrl(appShell) });
    v.settle();
    await dispatch(v, 'install');
    return [...v.caches.stores.keys()].find((n) => n.startsWith('rangersync-shell-'));
  };
  const base = await cacheOf({ files: ['/', '/app.js'] });
  out('cache names', [
    /^rangersync-shell-[0-9a-f]{8}$/.test(base) ? 'no version: rangersync-shell-<hash>' : base,
    base === await cacheOf({ files: ['/', '/app.js'] }) ? 'same list, same cache' : 'same list, another cache',
    base !== await cacheOf({ files: ['/', '/app.css'] }) ? 'another list, another cache' : 'another list, same cache',
    base !== await cacheOf({ files: ['/', '/app.js'], fallback: '/app.js' }) ? 'another fallback, another cache' : 'another fallback, same cache',
  ]);

  // listen checks its options before adding any listener.
  for (const [label, call] of [
    ['a relative path', "rangersync.listen({ appShell: { files: ['app.js'] } })"],
    ['another origin', "rangersync.listen({ appShell: { files: ['//evil.example/x.js'] } })"],
    ['a full URL', "rangersync.listen({ appShell: { files: ['http://127.0.0.1:8787/'] } })"],
    ['no files', "rangersync.listen({ appShell: { files: [] } })"],
    ['101 files', "rangersync.listen({ appShell: { files: Array.from({ length: 101 }, (_, i) => '/f' + i) } })"],
    ['a fallback not listed', "rangersync.listen({ appShell: { files: ['/'], fallback: '/x' } })"],
    ['a bad version', "rangersync.listen({ appShell: { files: ['/'], version: '../x' } })"],
    ['an unknown option', "rangersync.listen({ cacheAppShell: true })"],
    ['an unknown appShell option', "rangersync.listen({ appShell: { files: ['/'], runtime: true } })"],
    ['listen twice', "rangersync.listen(); rangersync.listen()"],
  ]) {
    const v = worker({ script: `importScripts('/rangersync-worker.js'); ${call}` });
    const error = v.error ? v.error.name : 'no error';
    out(label, `${error}, ${Object.keys(v.listeners).length} listener types`);
  }
  for (const [label, query] of [
    ['sw.js with a bad app shell in its URL', shellUrl({ files: ['app.js'] })],
    ['sw.js with an app shell that is not JSON', '/sw.js?appShell=%7Bnot'],
  ]) {
    const v = worker({ url: query });
    out(label, `${Object.keys(v.listeners).sort().join(' ')}; ${v.logged.length} error logged`);
  }
})().catch((e) => { console.error(e); process.exit(1); });
"#;

const EXPECTED: &[&str] = &[
    "post to a captured route: captured",
    "post under a route that the wasm does not capture: network:/api/sync/other",
    "post elsewhere: not intercepted",
    "post to a route of another origin: network:/api/sync/x",
    "get: not intercepted",
    "wasm failed: network:/api/sync/chat",
    "get a page file, no app shell: not intercepted",
    "get the worker script: not intercepted",
    "a navigation, no app shell: not intercepted",
    r#"the scripts sw.js imports: ["/rangersync-worker.js","/pkg/rangersync_sw.js"]"#,
    "nothing to capture, no app shell: listeners: activate install message offline online periodicsync sync",
    "capture routes that are not JSON: a fetch listener, a put: network:/anything; 1 error logged",
    r#"an app worker giving its routes to listen: ["network:/v1/notes","not intercepted"]"#,
    r#"the first start: {"downloads":["/pkg/rangersync_sw_bg.0123456789abcdef.wasm"],"compiled":["streamed downloaded /pkg/rangersync_sw_bg.0123456789abcdef.wasm"],"given":{"module_or_path":"module"}}"#,
    r#"the worker cache after activate: ["/pkg/rangersync_sw_bg.0123456789abcdef.wasm"]"#,
    r#"a later start: {"downloads":[],"compiled":["streamed downloaded /pkg/rangersync_sw_bg.0123456789abcdef.wasm"]}"#,
    r#"a wasm served with another type: {"compiled":["from bytes"],"warned":1}"#,
    r#"a glue that names no wasm: ["worker_unavailable: true"]"#,
    r#"a panic in the wasm: {"event":"rejected","replies":[{"v":1,"id":7,"ok":false,"error":{"code":"worker_unavailable","message":"the worker's wasm stopped on a panic (unreachable); the worker console has its message"}}],"pages":[{"type":"worker_error","code":"worker_unavailable","message":"the worker's wasm stopped on a panic (unreachable); the worker console has its message"}]}"#,
    r#"another failure of the wasm: {"event":"rejected","replies":[],"pages":[]}"#,
    "a post the app answered before rangersync: the app answered; rangersync fetched 0",
    "a get the app answers after rangersync: hello from the app",
    r#"the app worker imports: ["/rangersync-worker.js","/pkg/rangersync_sw.js"]"#,
    r#"pkgUrl: ["/rangersync-worker.js","/vendor/rangersync/rangersync_sw.js","/vendor/rangersync/rangersync_sw_bg.0123456789abcdef.wasm"]"#,
    r#"caches after install and activate, no app shell: ["rangersync-worker-v1","the-apps-own-cache"]"#,
    r#"navigation preload without an app shell: ["disable"]"#,
    "the cache of version 7: rangersync-shell-7-<hash>",
    r#"install caches: ["/","/about.html","/app.js"]"#,
    r#"install refuses: ["/private → Cache-Control: no-store","/missing.js → HTTP 404","/moved → it was redirected","/elsewhere.js → the response is opaque"]"#,
    r#"precache requests: ["credentials omit, cache reload"]"#,
    r#"caches after activate: ["(version 7)","rangersync-worker-v1"]"#,
    r#"navigation preload: ["enable"]"#,
    "a navigation with a preloaded response: preloaded:/account",
    "a listed file, online: fresh:/app.js",
    "a navigation, online: fresh:/account?x=1",
    "a file not listed: not intercepted",
    "a post: not intercepted",
    "a listed file, offline: installed:/app.js",
    "a listed page, offline: installed:/about.html",
    "a navigation to a page not listed, offline: installed:/",
    "a navigation to a refused file, offline: installed:/",
    "a refused file, offline: Response.error()",
    "a file not listed, offline: not intercepted",
    "cache writes after install: none",
    r#"cache names: ["no version: rangersync-shell-<hash>","same list, same cache","another list, another cache","another fallback, another cache"]"#,
    "a relative path: TypeError, 0 listener types",
    "another origin: TypeError, 0 listener types",
    "a full URL: TypeError, 0 listener types",
    "no files: TypeError, 0 listener types",
    "101 files: TypeError, 0 listener types",
    "a fallback not listed: TypeError, 0 listener types",
    "a bad version: TypeError, 0 listener types",
    "an unknown option: TypeError, 0 listener types",
    "an unknown appShell option: TypeError, 0 listener types",
    "listen twice: Error, 7 listener types",
    "sw.js with a bad app shell in its URL: activate install message offline online periodicsync sync; 1 error logged",
    "sw.js with an app shell that is not JSON: activate install message offline online periodicsync sync; 1 error logged",
];

#[test]
fn the_bootstrap_answers_only_its_own_requests_and_caches_only_the_listed_app_shell() {
    let www = Path::new(env!("CARGO_MANIFEST_DIR")).join("../www");
    let node = std::env::var_os("NODE")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "node".into());
    let output = Command::new(&node)
        .arg("-e")
        .arg(HARNESS)
        .arg(www.join("sw.js"))
        .arg(www.join("rangersync-worker.js"))
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
    assert_eq!(lines, EXPECTED);
}
