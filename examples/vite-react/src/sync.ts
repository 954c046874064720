// The one rangersync client of the page, registered once per page load, outside React
// (StrictMode runs effects twice).
import init, { SyncClient } from 'rangersync'

/** The rangersync server `put()` syncs to (`rangersync-server --no-www`). */
export const SYNC_URL: string = import.meta.env.VITE_SYNC_URL ?? 'http://localhost:3011'
/** The app's own REST API (RangerPlex's Express server). */
export const API_URL: string = import.meta.env.VITE_API_URL ?? 'http://localhost:3000'

export const client: Promise<SyncClient> = init().then(() =>
  SyncClient.register({
    swUrl: '/sw.js',
    serverUrl: SYNC_URL,
    // Calls to these routes that fail on the network (API down, device offline) are queued by
    // the worker, answered 202, and replayed in order with an Idempotency-Key header.
    captureRoutes: [{ origin: API_URL, path: '/api/sync/*' }],
  }),
)
