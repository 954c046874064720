/* The browser's own limits for `cargo xtask bench`: a tiny service worker with none of
 * rangersync's code, registered by the rangersync bench page at its own scope
 * (`/bench-limits/`, so it controls no page and rangersync's worker at `/` is untouched) with
 * its own database (`rangersync-bench-limits`). The page talks to it the way rangersync's page
 * module talks to its worker: `registration.active.postMessage(message, [port])`, one reply on
 * the port.
 *
 * - `{ op: 'echo' }`: replied to at once (a message round trip, nothing else).
 * - `{ op: 'put', key, value }`: one `put` in one `readwrite` transaction with
 *   `durability: 'strict'`; replied to on the transaction's `complete`.
 * - `{ op: 'many', items: [[key, value], ...] }`: every item `put` in one such transaction.
 */
'use strict';

const DB_NAME = 'rangersync-bench-limits';
let opened = null;

function database() {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore('records');
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opened;
}

function commit(db, items) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction('records', 'readwrite', { durability: 'strict' });
    const store = tx.objectStore('records');
    for (const [key, value] of items) store.put(value, key);
    tx.oncomplete = () => resolve({ ok: true, durability: tx.durability, n: items.length });
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
  });
}

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener('message', (event) => {
  const port = event.ports && event.ports[0];
  const message = event.data || {};
  if (!port) return;
  if (message.op === 'echo') {
    port.postMessage({ ok: true });
    return;
  }
  const items = message.op === 'put' ? [[message.key, message.value]] : message.items;
  event.waitUntil(database().then((db) => commit(db, items || [])).then(
    (reply) => port.postMessage(reply),
    (err) => port.postMessage({ ok: false, error: String((err && err.message) || err) }),
  ));
});
