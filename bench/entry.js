/* The Workbox side of `cargo xtask bench`: Workbox's documented offline-write recipe, a
 * `NetworkOnly` route with a `BackgroundSyncPlugin` (workbox-routing, workbox-strategies,
 * workbox-background-sync 7.4.1), in a classic service worker bundled by esbuild into
 * dist/workbox-sw.js and served as /workbox-sw.js.
 *
 * The page writes the way an app does: `fetch('/api/sync/push?q=NAME', {method: 'POST', body})`.
 * While the server is unreachable the fetch fails, the plugin's `fetchDidFail` awaits
 * `queue.pushRequest()` (an IndexedDB write), then the page's fetch rejects: the page's promise
 * settles once the write is queued, which is what the bench times. A sync event for the queue
 * replays it, one POST per entry.
 *
 * One queue per purpose (`?q=`), so that a measurement never replays another's entries:
 * `put` (the write rows, never replayed), `drain` (the drain rows), `cold` (the cold start).
 *
 * One harness device: the `put` and `drain` queues are gated. While a gated queue is not "armed",
 * a sync event for it resolves at once without replaying, so that Chrome's own sync events (fired
 * as soon as pushRequest registers a sync while the browser is online) do not replay entries in
 * the middle of a measurement. When armed, onSync is Workbox's own default,
 * queue.replayRequests(). The `cold` queue is never gated: its handler must run in a freshly
 * started worker, where nothing has been armed yet.
 */
import { BackgroundSyncPlugin } from 'workbox-background-sync';
import { registerRoute } from 'workbox-routing';
import { NetworkOnly } from 'workbox-strategies';

const QUEUES = { put: true, drain: true, cold: false }; // name -> gated
const armed = new Set();
const syncs = { started: 0, finished: 0, failed: 0, active: 0 };
const plugins = new Map();

for (const [name, gated] of Object.entries(QUEUES)) {
  const plugin = new BackgroundSyncPlugin(`bench-${name}`, {
    onSync: async ({ queue }) => {
      if (gated && !armed.has(name)) return;
      syncs.started += 1;
      syncs.active += 1;
      try {
        await queue.replayRequests();
        syncs.finished += 1;
      } catch (err) {
        syncs.failed += 1;
        throw err;
      } finally {
        syncs.active -= 1;
      }
    },
  });
  plugins.set(name, plugin);
  registerRoute(
    ({ url }) => url.pathname === '/api/sync/push' && url.searchParams.get('q') === name,
    new NetworkOnly({ plugins: [plugin] }),
    'POST',
  );
}

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

function queue(name) {
  const plugin = plugins.get(name);
  if (!plugin) throw new Error(`no queue ${name}`);
  // The plugin keeps its Queue private; esbuild does not rename properties, so this is stable.
  return plugin._queue;
}

async function handle(data) {
  switch (data.cmd) {
    case 'size': return { size: await queue(data.queue).size() };
    case 'arm':
      if (data.on) armed.add(data.queue); else armed.delete(data.queue);
      return { armed: [...armed] };
    case 'syncs': return { ...syncs };
    case 'tags': return { tags: self.registration.sync ? await self.registration.sync.getTags() : [] };
    default: throw new Error(`unknown command ${data.cmd}`);
  }
}

self.addEventListener('message', (event) => {
  const port = event.ports && event.ports[0];
  event.waitUntil(handle(event.data || {}).then(
    (reply) => port && port.postMessage(reply),
    (err) => port && port.postMessage({ error: String((err && err.message) || err) }),
  ));
});
