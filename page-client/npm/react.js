// rangersync/react: React hooks over one SyncClient (React is an optional peer dependency).
//
// The hooks only move values between React state and the client: when a write is due, what a
// failed write keeps, and what is handed over on pagehide are decided by the client's
// autosave (page-client/src/autosave.rs and coalesce.rs), so a hook never writes on its own.
import { createContext, createElement, useContext, useEffect, useRef, useState } from 'react';

const ClientContext = createContext(null);

/**
 * Makes `client` (a `SyncClient`, or the promise `SyncClient.register` returns) the one the
 * hooks below use. Hooks return their "not yet" values until the promise resolves.
 */
export function SyncProvider({ client, children }) {
  const [resolved, setResolved] = useState(() => (isPromise(client) ? null : client));
  useEffect(() => {
    if (!isPromise(client)) {
      setResolved(client);
      return undefined;
    }
    let live = true;
    client.then(
      (c) => {
        if (live) setResolved(c);
      },
      // A failed register is the app's to report (it holds the promise); the hooks stay in
      // their "not yet" state rather than pretend to save.
      () => {},
    );
    return () => {
      live = false;
    };
  }, [client]);
  return createElement(ClientContext.Provider, { value: resolved }, children);
}

/** The provider's client, or `null` while it registers. */
export function useSyncClient() {
  return useContext(ClientContext);
}

/** The worker's status, live in every tab; `null` until the client is registered. */
export function useSyncStatus() {
  const client = useSyncClient();
  const [status, setStatus] = useState(null);
  useEffect(() => (client ? client.onStatus(setStatus) : undefined), [client]);
  return status;
}

/**
 * Every live entity of `collection`, read again whenever one of them changes (a write in any
 * tab, a pulled change, a resolved conflict) and when the outbox's pending count changes (so
 * each item's `pending` follows delivery); `undefined` until the first read.
 */
export function useCollection(collection) {
  const client = useSyncClient();
  const [items, setItems] = useState(undefined);
  useEffect(() => {
    if (!client) return undefined;
    let live = true;
    // One read at a time: changes during a read ask for one more read after it, so a burst of
    // writes costs two reads, and the last read always starts after the last change.
    let reading = false;
    let again = false;
    const read = async () => {
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      try {
        do {
          again = false;
          const next = await client.list(collection);
          if (live && !again) setItems(next);
        } while (again && live);
      } catch (err) {
        if (live) console.error(`rangersync/react: list(${JSON.stringify(collection)}) failed`, err);
      } finally {
        reading = false;
      }
    };
    const offChange = client.onChange((changed) => {
      if (changed === collection) void read();
    });
    // An item's `pending` flag changes when the server acknowledges it, which is no change of
    // the entity: the outbox's pending count moving is the cue to read again.
    let pending = null;
    const offStatus = client.onStatus((status) => {
      if (pending !== null && status.pending !== pending) void read();
      pending = status.pending;
    });
    setItems(undefined);
    void read();
    return () => {
      live = false;
      offChange();
      offStatus();
    };
  }, [client, collection]);
  return items;
}

/**
 * `[value, setValue, status]` for one entity, saved as it changes with `client.autosave`
 * (`options` are its `debounceMs` / `maxWaitMs`). `value` starts as `initial`, becomes the
 * stored value once read (unless set before), and follows writes of the same entity from other
 * tabs while nothing of this hook's waits to be written. `setValue` takes a value or an
 * updater `(previous) => next`, and throws the autosave's `SyncError` for a value that cannot
 * be stored (the state does not change). `status` is the autosave's (`saved` / `saving` /
 * `error`), `null` until the stored value is read. On unmount, or when the key changes, what
 * waits is written.
 */
export function useSynced(collection, key, initial, options) {
  const client = useSyncClient();
  const [value, setState] = useState(initial);
  const [status, setStatus] = useState(null);
  const current = useRef(value);
  const saver = useRef(null);
  // A value set before the autosave exists (the client registering, the stored value being
  // read): it wins over the stored one and is handed to the autosave when it starts.
  const early = useRef(undefined);
  const debounceMs = options?.debounceMs;
  const maxWaitMs = options?.maxWaitMs;

  // Which entity the state holds: a new collection or key starts again from `initial`.
  const entity = useRef(null);

  useEffect(() => {
    const id = JSON.stringify([collection, key]);
    if (entity.current !== null && entity.current !== id) {
      current.current = initial;
      setState(initial);
      early.current = undefined;
    }
    entity.current = id;
    setStatus(null);
    if (!client) return undefined;
    let live = true;
    let autosave = null;
    let offStatus = () => {};
    // Counts this hook's own sets, so that a read of another tab's value that started before a
    // local change never overwrites it.
    let localChanges = 0;
    const show = (next) => {
      if (JSON.stringify(next) === JSON.stringify(current.current)) return;
      current.current = next;
      setState(next);
    };
    const adopt = async () => {
      const before = localChanges;
      const stored = await client.get(collection, key);
      if (!live || before !== localChanges || autosave?.status.state !== 'saved') return;
      if (stored !== undefined) show(stored);
    };
    const offChange = client.onChange((c, k) => {
      // Our own write comes back here too: while something of ours waits, ours is the newer
      // value; once saved, the read below finds what we wrote and changes nothing.
      if (c === collection && k === key && autosave?.status.state === 'saved') {
        adopt().catch(() => {});
      }
    });
    (async () => {
      const stored = await client.get(collection, key);
      if (!live) return;
      const options = {};
      if (debounceMs !== undefined) options.debounceMs = debounceMs;
      if (maxWaitMs !== undefined) options.maxWaitMs = maxWaitMs;
      autosave = client.autosave(collection, key, options);
      const wrapped = {
        set(next) {
          autosave.set(next);
          localChanges += 1;
        },
      };
      saver.current = wrapped;
      offStatus = autosave.onStatus((s) => {
        if (live) setStatus(s);
      });
      if (early.current !== undefined) {
        const pending = early.current.value;
        early.current = undefined;
        try {
          wrapped.set(pending);
        } catch (err) {
          // setValue could not throw this at the time (the checks live in the autosave): it
          // shows as the hook's error instead, and the stored value stays as it was.
          setStatus(errorStatus(collection, key, err));
          return;
        }
      } else if (stored !== undefined) {
        show(stored);
      }
      setStatus(autosave.status);
    })().catch((err) => {
      if (live) setStatus(errorStatus(collection, key, err));
    });
    return () => {
      live = false;
      offChange();
      offStatus();
      saver.current = null;
      if (autosave) void autosave.dispose().catch(() => {});
    };
  }, [client, collection, key, debounceMs, maxWaitMs]);

  const setValue = useRef(null);
  if (setValue.current === null) {
    setValue.current = (next) => {
      const resolved = typeof next === 'function' ? next(current.current) : next;
      if (saver.current) {
        saver.current.set(resolved);
      } else {
        early.current = { value: resolved };
      }
      current.current = resolved;
      setState(resolved);
    };
  }
  return [value, setValue.current, status];
}

function errorStatus(collection, key, err) {
  const error = { code: err?.code ?? 'internal', message: err?.message ?? String(err) };
  return { collection, key, state: 'error', savedAt: null, error };
}

function isPromise(value) {
  return value !== null && typeof value === 'object' && typeof value.then === 'function';
}
