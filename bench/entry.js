/* The Workbox side of `cargo xtask bench`: workbox-background-sync's Queue in a classic
 * service worker (bundled by esbuild into dist/workbox-sw.js, served as /workbox-sw.js).
 *
 * The page drives it with messages on a MessageChannel ({cmd, ...} -> a reply object); times
 * are taken inside the worker with performance.now(). Every queue is created during the first
 * run of the script (sync listeners added later are never called).
 *
 * One harness device: each queue's onSync is gated. While a queue is not "armed", a sync event
 * for it resolves at once without replaying, so that Chrome's own sync events (fired as soon as
 * pushRequest registers a sync while online) do not replay entries in the middle of an enqueue
 * measurement. When armed, onSync is Workbox's own default, queue.replayRequests().
 */
import { Queue } from 'workbox-background-sync';

const QUEUE_NAMES = ['bench-a', 'bench-c', 'bench-d'];
const queues = new Map();
const armed = new Set();
const syncs = { started: 0, finished: 0, failed: 0, active: 0 };

for (const name of QUEUE_NAMES) {
  queues.set(name, new Queue(name, {
    onSync: async ({ queue }) => {
      if (!armed.has(queue.name)) return;
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
  }));
}

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

/** A ~100-byte JSON body, the same shape rangersync's bench writes. */
function body(id, i) {
  return JSON.stringify({ id, title: `note ${i}`, body: 'x'.repeat(56) });
}

function request(url, id, i) {
  return new Request(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: body(id, i),
  });
}

function queue(name) {
  const q = queues.get(name);
  if (!q) throw new Error(`no queue ${name}`);
  return q;
}

/** n pushRequest calls, `concurrency` in flight at a time. */
async function enqueue({ queue: name, prefix, n, concurrency, url }) {
  const q = queue(name);
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      await q.pushRequest({ request: request(url, `${prefix}${i}`, i) });
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  const ms = performance.now() - start;
  return { ms, size: await q.size() };
}

/** queue.replayRequests(), timed; a failure is reported, not thrown. */
async function replay({ queue: name }) {
  const q = queue(name);
  const start = performance.now();
  let error = null;
  try {
    await q.replayRequests();
  } catch (err) {
    error = String((err && err.message) || err);
  }
  const ms = performance.now() - start;
  return { ms, error, size: await q.size() };
}

async function handle(data) {
  switch (data.cmd) {
    case 'enqueue': return enqueue(data);
    case 'replay': return replay(data);
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
