/* rangersync worker library: a classic script for `importScripts`.
 *
 *   importScripts('/rangersync-worker.js');
 *   rangersync.listen({ appShell: { files: ['/', '/app.js', '/style.css'], version: '7' } });
 *
 * `rangersync.listen(options)` adds every listener rangersync needs (install, activate, message,
 * sync, periodicsync, online, offline, and fetch only when there is something to capture or an
 * app shell) and starts loading the wasm. Call it once, during the worker script's first
 * synchronous run: browsers deliver events only to listeners added then. Each listener calls
 * into the wasm inside event.waitUntil(...) or event.respondWith(...).
 *
 * `sw.js` is a whole worker made of this file and one call. An app with a worker of its own
 * imports this file into it and keeps its own listeners: rangersync's fetch listener answers only
 * what it owns (captured routes; with `appShell`, GET navigations and the listed files) and leaves
 * every other request to the app. Caveats for such a worker:
 * - while the wasm loads (the first moments after the worker starts), a non-GET request that one
 *   of the capture routes may match is held until the wasm decides, and passed on with fetch()
 *   if it is not captured after all. A fetch listener of the app that answers such requests
 *   itself must therefore be added before `listen` (rangersync then sees that the request is
 *   answered and leaves it alone). Every other request is left to the browser at once;
 * - with `appShell`, navigation preload is on: an app listener that answers navigations itself
 *   should use `event.preloadResponse`;
 * - rangersync calls skipWaiting() at install and clients.claim() at activate, so that a page's
 *   first visit is controlled at once (SyncClient.register waits for a controller).
 *
 * The wasm is loaded cache-first: its file name carries a hash of its bytes (the glue names it,
 * `rangersync_wasm_file`), it is kept in Cache Storage `rangersync-worker-v1` at install and read
 * from there at every start, never revalidated over the network, and compiled with
 * `WebAssembly.compileStreaming` so that the browser's code cache serves later starts. The glue
 * is imported with `importScripts`, which the browser keeps with this worker version and
 * compares at each update check: a new build is always a new worker, and a glue never meets a
 * wasm of another build. Activation deletes the copies of other builds.
 *
 * Options (an unknown key, a wrong type or a bad path throws a TypeError):
 * - appShell: { files, version?, fallback? }. Off when absent: nothing of the app is cached and
 *   every `rangersync-shell-*` cache is deleted at activate. When given: at install, each file
 *   (a same-origin path, at most 100) is fetched with credentials omitted, bypassing the HTTP
 *   cache, into Cache Storage `rangersync-shell-[<version>-]<hash of the list>`; a non-2xx,
 *   redirected, opaque or `Cache-Control: no-store` answer is skipped with a console warning. At
 *   activate the other `rangersync-shell-*` caches are deleted. At run time GET navigations and
 *   the listed files go to the network first; when the network fails, a listed file comes from
 *   the cache and any other navigation gets `fallback` (default: the first file). Nothing else is
 *   served from the cache and nothing is written to it after install: change `version` (or the
 *   list) to ship new files.
 * - captureRoutes: the page's `captureRoutes` (the same strings and { origin?, path } objects).
 *   Default: those in this worker script's URL (`?captureRoutes=<JSON>`), where
 *   SyncClient.register puts them. Without any, and without `appShell`, the worker adds no fetch
 *   listener and the app's navigations and requests never start it. The wasm still decides
 *   what is captured (from the stored configuration); the list here only says which requests it
 *   may want, so that every other one is left to the browser without waiting for the wasm.
 * - pkgUrl: the folder holding `rangersync_sw.js` and the wasm it names, resolved against the
 *   worker script's URL. Default '/pkg/'.
 */
/* global rangersync_wasm */
(function () {
  'use strict';

  if (self.rangersync) return; // imported twice: the first copy stays

  /** Cache Storage names of the app shell start with this; one cache per shell version. */
  const SHELL_PREFIX = 'rangersync-shell-';
  /** The cache that keeps a copy of the worker's wasm, so a worker started offline still runs. */
  const WORKER_CACHE = 'rangersync-worker-v1';
  const DEFAULT_PKG_URL = '/pkg/';
  const GLUE_FILE = 'rangersync_sw.js';
  /** Bounds of `appShell` (the page module checks the same ones). */
  const MAX_SHELL_FILES = 100;
  const MAX_PATH_LENGTH = 1024;
  const VERSION_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
  const OPTION_KEYS = ['appShell', 'captureRoutes', 'pkgUrl'];
  /** Methods the wasm never captures (`wants` says no to them). */
  const NEVER_CAPTURED = ['GET', 'HEAD', 'OPTIONS'];
  const SHELL_KEYS = ['files', 'version', 'fallback'];

  let listening = false;

  /** A bad option: a TypeError with `code: 'invalid_config'`, thrown before any listener is added. */
  function fail(message) {
    const err = new TypeError(`rangersync.listen: ${message}`);
    err.code = 'invalid_config';
    throw err;
  }

  function describe(err) {
    return String((err && err.message) || err);
  }

  function isObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  function checkKeys(object, known, what) {
    for (const key of Object.keys(object)) {
      if (!known.includes(key)) {
        fail(`unknown ${what} ${JSON.stringify(key)} (known: ${known.join(', ')})`);
      }
    }
  }

  /** A same-origin path (`/app.js`, `/?x=1`) → its absolute URL; anything else throws. */
  function shellUrl(path, what) {
    if (typeof path !== 'string' || !path.startsWith('/') || path.startsWith('//')
      || path.length > MAX_PATH_LENGTH || /[\s#\\]/.test(path)) {
      fail(`${what} must be a same-origin path starting with "/", without "#", "\\" or spaces `
        + `(got ${JSON.stringify(path)})`);
    }
    return new URL(path, self.location.origin).href;
  }

  /** FNV-1a (32 bits) of `text`, as 8 hex digits: names the cache of one list of files. */
  function hash(text) {
    let h = 0x811c9dc5;
    for (let i = 0; i < text.length; i += 1) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h.toString(16).padStart(8, '0');
  }

  /** The checked `appShell` option: { cache, files (absolute URLs), fallback }, or null. */
  function checkShell(shell) {
    if (shell === undefined || shell === null) return null;
    if (!isObject(shell)) fail('appShell must be an object { files, version?, fallback? }');
    checkKeys(shell, SHELL_KEYS, 'appShell option');
    const { files, version, fallback } = shell;
    if (!Array.isArray(files) || files.length === 0 || files.length > MAX_SHELL_FILES) {
      fail(`appShell.files must be an array of 1 to ${MAX_SHELL_FILES} paths`);
    }
    const urls = [];
    for (const file of files) {
      const url = shellUrl(file, 'each of appShell.files');
      if (!urls.includes(url)) urls.push(url);
    }
    if (version !== undefined && version !== null
      && (typeof version !== 'string' || !VERSION_PATTERN.test(version))) {
      fail(`appShell.version must be 1 to 64 letters, digits, ".", "_" or "-" (got ${JSON.stringify(version)})`);
    }
    let fallbackUrl = urls[0];
    if (fallback !== undefined && fallback !== null) {
      fallbackUrl = shellUrl(fallback, 'appShell.fallback');
      if (!urls.includes(fallbackUrl)) fail('appShell.fallback must be one of appShell.files');
    }
    const path = (url) => url.slice(self.location.origin.length);
    const id = hash(JSON.stringify({ files: urls.map(path), fallback: path(fallbackUrl) }));
    return {
      cache: SHELL_PREFIX + (version ? `${version}-${id}` : id),
      files: urls,
      fallback: fallbackUrl,
    };
  }

  /**
   * `http(s)://Host:80/x` → { origin: 'http://host', path: '/x' } (default ports dropped, as
   * browsers print origins), or null when not such a URL.
   */
  function splitUrl(text) {
    const m = /^(https?):\/\/([^/?#]+)([^?#]*)/i.exec(text);
    if (!m) return null;
    const scheme = m[1].toLowerCase();
    let host = m[2].toLowerCase();
    const defaultPort = scheme === 'http' ? ':80' : ':443';
    if (host.endsWith(defaultPort)) host = host.slice(0, -defaultPort.length);
    return { origin: `${scheme}://${host}`, path: m[3] || '/' };
  }

  /**
   * The capture routes → what a request must have for the wasm to possibly capture it: its
   * origin (null: any, as a path-only route applies to the page's origin and the sync
   * server's, which only the wasm knows) and a path prefix (the pattern up to its first `*`,
   * without a trailing slash). A superset of the wasm's matching, never narrower: a request it
   * rejects is one no route captures.
   */
  function capturePrefixes(routes) {
    if (routes === undefined || routes === null) return [];
    if (!Array.isArray(routes)) fail('captureRoutes must be an array');
    return routes.map((route) => {
      let origin = null;
      let path = route;
      if (isObject(route)) {
        if (typeof route.path !== 'string') fail('each object of captureRoutes needs a string path');
        path = route.path;
        if (route.origin !== undefined && route.origin !== null) {
          const parts = typeof route.origin === 'string' ? splitUrl(route.origin) : null;
          if (!parts) fail(`captureRoutes origin ${JSON.stringify(route.origin)} is not an http(s) origin`);
          origin = parts.origin;
        }
      } else if (typeof route !== 'string') {
        fail('each of captureRoutes must be a path pattern, a URL pattern or { origin, path }');
      } else if (!route.startsWith('/')) {
        const parts = splitUrl(route);
        if (!parts) fail(`capture route ${JSON.stringify(route)} must start with / or be an http(s) URL`);
        ({ origin, path } = parts);
      }
      if (!path.startsWith('/')) fail(`capture route path ${JSON.stringify(path)} must start with /`);
      let prefix = path.split('*')[0];
      if (prefix.length > 1 && prefix.endsWith('/')) prefix = prefix.slice(0, -1);
      return { origin, prefix };
    });
  }

  /** `captureRoutes` of the worker script's URL, or every non-GET request when unreadable. */
  function routesInScriptUrl() {
    const text = new URL(self.location.href).searchParams.get('captureRoutes');
    if (text === null) return [];
    try {
      return capturePrefixes(JSON.parse(text));
    } catch (err) {
      // A hand-made URL: the wasm (the stored configuration) decides every non-GET request.
      console.error(`rangersync: captureRoutes in the worker URL are unreadable (${describe(err)}); `
        + 'every non-GET request waits for the wasm to decide');
      return [{ origin: null, prefix: '/' }];
    }
  }

  /** The folder of the glue and the wasm, as an absolute URL ending in "/". */
  function checkPkgUrl(pkgUrl) {
    if (pkgUrl === undefined || pkgUrl === null) pkgUrl = DEFAULT_PKG_URL;
    if (typeof pkgUrl !== 'string' || pkgUrl === '') fail('pkgUrl must be a non-empty string');
    const url = new URL(pkgUrl, self.location.href).href;
    return url.endsWith('/') ? url : `${url}/`;
  }

  /** Why a precache answer is not kept, or null when it is. */
  function refusal(response) {
    if (response.type !== 'basic') return `the response is ${response.type}`;
    if (response.redirected) return 'it was redirected';
    if (!response.ok) return `HTTP ${response.status}`;
    const cacheControl = (response.headers.get('Cache-Control') || '').toLowerCase();
    if (cacheControl.split(',').some((d) => d.trim() === 'no-store')) return 'Cache-Control: no-store';
    if ((response.headers.get('Vary') || '').trim() === '*') return 'Vary: *';
    return null;
  }

  /** Fetch every listed file into the shell's cache; one refused or failed file skips only itself. */
  function precache(shell) {
    return caches.open(shell.cache).then((cache) => Promise.all(shell.files.map((url) => {
      const request = new Request(url, { credentials: 'omit', cache: 'reload' });
      return fetch(request).then((response) => {
        const why = refusal(response);
        if (why) {
          console.warn(`rangersync: not caching ${url} for the app shell: ${why}`);
          return cache.delete(url); // a copy from an earlier install of the same list
        }
        return cache.put(url, response);
      }).catch((err) => {
        console.warn(`rangersync: not caching ${url} for the app shell: ${describe(err)}`);
      });
    })));
  }

  /** Delete every app-shell cache except `keep` (null: all of them). */
  function deleteOtherShells(keep) {
    return caches.keys().then((names) => Promise.all(names
      .filter((name) => name.startsWith(SHELL_PREFIX) && name !== keep)
      .map((name) => caches.delete(name))));
  }

  /**
   * `event.respondWith(make())`, unless another listener (an app's, added before) has answered
   * the request already: then nothing is started, so a request is never sent twice.
   */
  function respond(event, make) {
    let start;
    const started = new Promise((resolve) => { start = resolve; });
    try {
      event.respondWith(started.then(make));
    } catch (_) {
      return; // InvalidStateError: answered already
    }
    start();
  }

  function listen(options) {
    if (listening) throw new Error('rangersync.listen was already called in this worker');
    if (options === undefined || options === null) options = {};
    if (!isObject(options)) fail('options must be an object');
    checkKeys(options, OPTION_KEYS, 'option');
    const shell = checkShell(options.appShell);
    const capturable = options.captureRoutes === undefined
      ? routesInScriptUrl()
      : capturePrefixes(options.captureRoutes);
    const pkgUrl = checkPkgUrl(options.pkgUrl);
    listening = true;

    let wasmReady = false;

    function reportError(err) {
      const message = describe(err);
      // Tell every page instead of dying silently.
      self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((clients) => {
        for (const client of clients) {
          client.postMessage({ type: 'worker_error', code: 'worker_unavailable', message });
        }
      });
    }

    let importError = null;
    let wasmUrl = null;
    try {
      importScripts(pkgUrl + GLUE_FILE);
      if (typeof self.rangersync_wasm_file !== 'string') {
        throw new Error(`${pkgUrl}${GLUE_FILE} names no wasm (rangersync_wasm_file): `
          + 'it was not built by `cargo xtask build`');
      }
      wasmUrl = new URL(self.rangersync_wasm_file, pkgUrl).href;
    } catch (err) {
      importError = err;
    }

    /**
     * This build's wasm: from the worker's cache, else from the network (kept in the cache
     * then). Its name is a hash of its bytes, so a cached copy is never stale and is never
     * revalidated: a start makes no network round trip.
     */
    function wasmResponse() {
      const download = () => fetch(wasmUrl).then((response) => {
        if (!response.ok) throw new Error(`HTTP ${response.status} for ${wasmUrl}`);
        return response;
      });
      return caches.open(WORKER_CACHE).then((cache) => cache.match(wasmUrl).then((hit) => hit
        || download().then((response) => cache.put(wasmUrl, response.clone())
          .catch((err) => console.warn(`rangersync: cannot keep the wasm for offline starts: ${describe(err)}`))
          .then(() => response))),
      // No Cache Storage here (a private window in some browsers): the network only.
      () => download());
    }

    /** The compiled module, streamed so the browser's code cache serves later starts. */
    function compile(response) {
      const type = (response.headers.get('Content-Type') || '').split(';')[0].trim();
      if (typeof WebAssembly.compileStreaming === 'function' && type === 'application/wasm') {
        return WebAssembly.compileStreaming(response);
      }
      if (type !== 'application/wasm') {
        console.warn(`rangersync: ${wasmUrl} is served as ${JSON.stringify(type)}, not application/wasm: `
          + 'compiled without streaming (slower starts); fix the server\'s Content-Type');
      }
      return response.arrayBuffer().then((bytes) => WebAssembly.compile(bytes));
    }

    /**
     * Delete the cached wasm of every other build, once this build's is kept (an install that
     * could not download it leaves the older copies alone).
     */
    function deleteOtherWasm() {
      return caches.open(WORKER_CACHE).then((cache) => cache.match(wasmUrl).then((kept) => (kept
        ? cache.keys().then((requests) => Promise.all(
          requests.filter((r) => r.url !== wasmUrl).map((r) => cache.delete(r)),
        ))
        : null)));
    }

    let loading = null;
    /**
     * The wasm, loaded once. A failed load is reported to the pages and forgotten, so the next
     * event tries again: a worker that woke while the server was down recovers once it is back.
     */
    function ready() {
      if (importError) return Promise.reject(importError);
      if (!loading) {
        loading = wasmResponse()
          .then(compile)
          .then((module) => rangersync_wasm({ module_or_path: module }))
          .then(() => rangersync_wasm.start())
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
      // Keep this build's wasm: the one download that loads it also fills the cache (a failure
      // here only means no offline start yet). And the app shell when there is one (a file
      // that fails is skipped, never the install: the worker holds the outbox, which matters
      // more than opening offline).
      const wasmCopy = ready().catch(() => {});
      const shellCopy = shell ? precache(shell).catch((err) => {
        console.warn(`rangersync: caching the app shell failed: ${describe(err)}`);
      }) : null;
      event.waitUntil(Promise.all([wasmCopy, shellCopy]).then(() => self.skipWaiting()));
    });

    self.addEventListener('activate', (event) => {
      event.waitUntil(Promise.all([
        self.clients.claim(),
        deleteOtherShells(shell ? shell.cache : null).catch(() => {}),
        wasmUrl ? deleteOtherWasm().catch(() => {}) : null,
        navigationPreload(Boolean(shell)),
        whenReady(() => rangersync_wasm.on_activate()).catch(() => {}),
      ]));
    });

    /**
     * Navigation preload on with an app shell (its navigations go to the network first, and
     * preload starts that request while the worker boots), off otherwise (an earlier version
     * of the worker may have turned it on).
     */
    function navigationPreload(on) {
      const preload = self.registration && self.registration.navigationPreload;
      if (!preload) return null;
      return (on ? preload.enable() : preload.disable()).catch(() => {});
    }

    /** Answers a message the wasm could not: `worker_unavailable`, echoing its id. */
    function replyUnavailable(event, err) {
      const port = event.ports && event.ports[0];
      if (!port) return;
      let id = 0;
      try {
        const data = typeof event.data === 'string' ? JSON.parse(event.data) : event.data;
        id = (data && typeof data.id === 'number') ? data.id : 0;
      } catch (_) { /* not JSON */ }
      port.postMessage({ v: 1, id, ok: false,
        error: { code: 'worker_unavailable', message: describe(err) } });
    }

    self.addEventListener('message', (event) => {
      event.waitUntil(ready().then(
        () => rangersync_wasm.on_message(event).catch((err) => {
          // A trap is a panic in the wasm: its state can no longer be trusted, so the page
          // hears it twice, as this request's answer and as a worker error (the page then
          // works in page mode and says why in its status), never as a silent timeout.
          if (err instanceof WebAssembly.RuntimeError) {
            const panic = new Error(`the worker's wasm stopped on a panic (${describe(err)}); `
              + 'the worker console has its message');
            replyUnavailable(event, panic);
            reportError(panic);
          }
          throw err;
        }),
        (err) => replyUnavailable(event, err)));
    });

    self.addEventListener('sync', (event) => {
      // A rejected promise makes the browser retry later (with its own backoff).
      event.waitUntil(whenReady(() => rangersync_wasm.on_sync(event.tag, event.lastChance)));
    });

    self.addEventListener('periodicsync', (event) => {
      event.waitUntil(whenReady(() => rangersync_wasm.on_periodic_sync(event.tag)));
    });

    /** `url` from the shell's cache, or undefined. */
    function fromShell(url) {
      // Offline, a stale copy beats none: ignore Vary (CORS layers add `Vary: Origin`).
      return caches.match(url, { cacheName: shell.cache, ignoreVary: true })
        .catch(() => undefined);
    }

    /**
     * With an app shell: a GET navigation or a listed file → a function that answers it
     * (network first; when the network fails, the cached file, or for a navigation the cached
     * fallback); anything else → null.
     */
    function shellAnswer(event) {
      const request = event.request;
      if (!shell || request.method !== 'GET') return null;
      const url = request.url.split('#')[0];
      const listed = shell.files.includes(url);
      const navigation = request.mode === 'navigate';
      if (!listed && !navigation) return null;
      const network = () => (navigation
        ? Promise.resolve(event.preloadResponse).then((preloaded) => preloaded || fetch(request))
        : fetch(request));
      return () => network().catch((err) => fromShell(listed ? url : shell.fallback)
        .then((hit) => hit || (navigation ? fromShell(shell.fallback) : undefined))
        .then((hit) => {
          if (hit) return hit;
          throw err;
        })).catch(() => Response.error());
    }

    /** Whether some capture route may match `request` (the wasm decides whether one does). */
    function mayCapture(request) {
      if (capturable.length === 0 || NEVER_CAPTURED.includes(request.method.toUpperCase())) {
        return false;
      }
      const parts = splitUrl(request.url);
      return Boolean(parts) && capturable.some((route) => (route.origin === null
        || route.origin === parts.origin) && parts.path.startsWith(route.prefix));
    }

    function onFetch(event) {
      const request = event.request;
      const answer = shellAnswer(event);
      if (answer) {
        respond(event, answer);
        return;
      }
      // Decided synchronously: a request no route can capture never waits for the wasm.
      if (!mayCapture(request)) return;
      if (wasmReady) {
        if (!rangersync_wasm.wants(request.url, request.method)) return;
        respond(event, () => rangersync_wasm.on_fetch(request));
        return;
      }
      // The request that woke the worker may be one to capture: decide once the wasm (and the
      // stored route list) is ready. If the wasm failed to load, pass it through.
      respond(event, () => ready().then(
        () => (rangersync_wasm.wants(request.url, request.method)
          ? rangersync_wasm.on_fetch(request)
          : fetch(request)),
        () => fetch(request)));
    }

    // Without anything to capture or cache, no fetch listener: the app's navigations and
    // requests then never start this worker, nor wait for it.
    if (shell || capturable.length > 0) self.addEventListener('fetch', onFetch);

    self.addEventListener('online', () => {
      ready().then(() => rangersync_wasm.on_online(true)).catch(() => {});
    });

    self.addEventListener('offline', () => {
      ready().then(() => rangersync_wasm.on_online(false)).catch(() => {});
    });
  }

  self.rangersync = Object.freeze({ listen });
}());
