//! TypeScript declarations of the option and result objects (added to the generated `.d.ts`).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Stable error codes: `catch (e) { switch (e.code) { … } }`. */
export type SyncErrorCode =
  | "invalid_message" | "unsupported_version" | "forbidden_origin"
  | "invalid_collection" | "invalid_key" | "invalid_value" | "value_too_large"
  | "invalid_config" | "quota_exceeded" | "storage_error" | "corrupt_record"
  | "worker_unavailable" | "not_found" | "network" | "server_error" | "auth"
  | "bad_response" | "bad_snapshot" | "checksum_mismatch" | "timeout" | "internal"
  | "rate_limited" | "unavailable" | "cursor_expired" | "config_error" | "restore_blocked"
  | "wrong_passphrase" | "passphrase_required" | "capture_too_large"
  | "blob_too_large" | "blob_not_found" | "invalid_blob";

/** What `putBlob` answers and `getBlob` takes: store it in any value; the bytes travel apart. */
export interface BlobRef {
  $blob: {
    /** SHA-256 of the bytes, 64 lowercase hex digits. */
    sha256: string;
    size: number;
    /** The Blob's MIME type (may be ""). */
    type: string;
    /** A File's name. */
    name?: string;
  };
}

/** What every rejected promise of SyncClient carries. */
export interface SyncError extends Error {
  name: "SyncError";
  code: SyncErrorCode;
}

/** Options of `SyncClient.register`. Unknown keys are an `invalid_config` error. */
export interface SyncClientOptions {
  /** Service worker script, registered at scope "/". Default "/sw.js". */
  swUrl?: string;
  /** Base URL of the sync server. Default: the page's origin. `null`: no sync server (capture only; `put()` is refused). */
  serverUrl?: string | null;
  /** Bearer token for the sync server (kept by the worker so it can sync with no page open), or a function giving a fresh one (called at register, before each `flush()`, and when the server refuses the token: the status shows `auth_error` until a page gives one it accepts; the outbox is kept meanwhile). */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** Existing REST routes whose unanswered requests are queued and replayed in order: a path pattern for the page's or the sync server's origin ("/api/sync/*"), a URL pattern for another API origin ("http://localhost:3000/api/sync/*"), or { origin?, path, secretHeaders? }. `*` matches anything; the query string and one trailing slash are ignored. A captured call's `Authorization`, `Cookie` and `Proxy-Authorization` headers, and those named in its route's `secretHeaders`, are kept in the outbox only to replay it: an export, a backup or a dead-letter copy never holds them (they are named in its `redacted`). */
  captureRoutes?: (string | { origin?: string; path: string; secretHeaders?: string[] })[];
  /** Encrypt every server backup in the browser (AES-256-GCM): the server stores ciphertext it cannot read and checks only an outer checksum. `{ passphrase }` (at least 8 characters): the key comes from PBKDF2-SHA-256 with 600,000 iterations; the worker keeps only the derived key (not extractable), never the passphrase; restore with `restoreFromServer(id, { passphrase })`. `{ key }`: the app's own AES-GCM `CryptoKey` of 256 bits with usages encrypt and decrypt (from its login, say; best not extractable), kept by the worker as it is; restore with `{ key }`, or with none on a client that still has it. A backup due before a page has given either fails with `passphrase_required` rather than leaving in clear; a wrong passphrase or key is `wrong_passphrase` and changes nothing. */
  backupEncryption?: { passphrase: string } | { key: CryptoKey };
  /** Collections that never leave the device: kept in IndexedDB, never pushed, never in a server backup, and not in `exportSnapshot` unless `{ includeLocalOnly: true }`. For secrets such as API keys (IndexedDB itself is not encrypted at rest). */
  localOnly?: string[];
  /** Collections that sync like any other but are left out of server backups (`backupNow`, scheduled backups). */
  excludeFromBackup?: string[];
  /** Days a dead letter is kept once a server backup holds it (0..36500). Default 90; `0` keeps every one. After each backup the server stores, the dead letters it holds whole that died longer ago than this are removed from the device: they leave it only into a backup (kept as long as the server keeps it), never silently. A captured call whose secret headers backups leave out stays on the device. */
  deadLetterRetentionDays?: number;
  /** Server backups hold the bytes of the blobs (`putBlob`) their entities reference, not only the references. Default false (uploaded blobs stay on the server, scoped to the user); a backup whose blobs would pass 64 MiB then fails with `value_too_large`. */
  backupIncludeBlobs?: boolean;
  /** The secret headers (e.g. `{ authorization: 'Bearer …' }`) a captured call restored from a snapshot needs: snapshots never hold them. Called at register and before each `flush()`; the worker keeps the answer in memory only. Until a page gives them, such a call waits (its status message says which header). */
  captureCredentials?: () => Record<string, string> | Promise<Record<string, string>>;
  /** Largest body of a captured call that is queued, bytes (1..16777216). Default 1048576. A larger one is answered 413 `capture_too_large` and not queued. */
  captureMaxBodyBytes?: number;
  /** Most mutations per push (1..1000). Default 100. */
  batchSize?: number;
  /** Periodic Background Sync interval in ms (Chromium, installed apps). */
  periodicIntervalMs?: number;
  /** Scheduled backup interval in ms: a snapshot of everything uploaded to the sync server (`POST /api/backups`) at worker start, page open or focus, on a timer while a page is open, and on periodic sync, whenever one is due. Default 86400000 (24 h); `0` turns scheduled backups off (`backupNow()` still works); at least 10000. */
  exportIntervalMs?: number;
  /** Ask the browser to keep this origin's storage under pressure (`navigator.storage.persist()`) when registering. Default true. The status's `persistent` says whether it agreed. */
  persistStorage?: boolean;
  /** Backoff and give-up limits. */
  retry?: { baseDelayMs?: number; maxDelayMs?: number; maxAttempts?: number; maxAgeMs?: number };
  /** Run the outbox in the page even when a worker could run. */
  forcePageMode?: boolean;
  /** Longest wait for one reply of the worker, ms (flush/export/restore: 6×). Default 10000. */
  timeoutMs?: number;
  /** Longest time one HTTP request of the outbox (push, pull, replay) may take, body included, before it is aborted and retried with backoff, ms (100..600000). Default 30000. */
  requestTimeoutMs?: number;
  /** Longest wait for a new worker to control the page before page mode, ms. Default 10000. */
  controllerTimeoutMs?: number;
  /** Files the worker caches when it installs, so the app opens offline. Off when absent:
   * nothing of the app is cached. (`cacheAppShell` was removed: it is an `invalid_config` error.) */
  appShell?: AppShellOptions;
}

/** The app shell: precached at the worker's install in Cache Storage
 * `rangersync-shell-[<version>-]<hash of the list>`, older shell caches deleted at activate.
 * Navigations and the listed files go to the network first; when it fails, a listed file comes
 * from the cache and any other navigation gets `fallback`. A non-2xx, redirected or
 * `Cache-Control: no-store` answer is not cached; files are fetched without credentials. */
export interface AppShellOptions {
  /** Same-origin paths starting with "/", e.g. ["/", "/app.js", "/style.css"]; 1 to 100. */
  files: string[];
  /** Change it to ship new contents under the same paths (letters, digits, ".", "_", "-"; ≤ 64). */
  version?: string;
  /** What a navigation to a path that is not listed gets offline; one of `files`. Default: the first. */
  fallback?: string;
}

export type SyncState =
  | "idle" | "saving" | "syncing" | "waiting_retry" | "offline" | "auth_error" | "config_error" | "error";

/** The status object (times in ms since the epoch). */
export interface SyncStatus {
  state: SyncState;
  pending: number;
  /** Bytes of attachments (`putBlob`) not yet uploaded; their uploads count in `pending`. */
  blob_bytes_pending: number;
  in_flight: number;
  dead: number;
  last_saved_at: number | null;
  last_synced_at: number | null;
  /** When a snapshot was last built (a download, or a backup whatever became of its upload). */
  last_exported_at: number | null;
  /** The snapshot time of the last backup the server confirmed it holds (verified by checksum). */
  last_backup_at: number | null;
  /** When the next backup is due (the retry time after a failure); null when scheduled backups are off. */
  next_backup_at: number | null;
  /** Why the last backup failed (it is retried at `next_backup_at`); null after a success. */
  backup_error: { code: SyncErrorCode | string; message: string; at: number } | null;
  /** Whether the browser keeps this origin's storage under pressure; null where it cannot tell. */
  persistent: boolean | null;
  /** This database was created by the engine now (a first visit, or the site's storage was cleared): offer the latest server backup. */
  new_database: boolean;
  /** This database's client id (its writes' and backups' `client_id`); after a restore that adopted a backup's id, that one. */
  client_id: string;
  last_error: { code: SyncErrorCode | string; message: string; at: number } | null;
  next_retry_at: number | null;
  mode: "worker" | "page";
  /** Why this tab runs the outbox in the page (no worker could run), else null. Page mode delivers only while a page is open. */
  fallback_reason: string | null;
}

/** One backup the sync server holds (`serverBackups()`). */
export interface ServerBackup {
  /** The server's id of it (32 hex digits from the reference server: unguessable). */
  id: string;
  client_id: string | null;
  exported_at: number;
  received_at: number;
  size: number;
  checksum: string;
  counts: Record<string, number> | null;
  entities: number;
}

/** What `backupNow()` resolves with: the server's record of the stored backup. */
export interface BackupResult {
  backup: { id: string; client_id: string | null; exported_at: number; size: number; checksum: string } | null;
  exported_at: number;
  checksum: string;
}

export interface WriteAck { seq: number }
/** Options of `client.autosave(collection, key, options)`. */
export interface AutosaveOptions {
  /** Write this long after the last change (0 to 60000 ms). Default 300. */
  debounceMs?: number;
  /** …and never later than this after the first change not yet written (≥ debounceMs, ≤ 60000). Default 2000, or debounceMs if longer. */
  maxWaitMs?: number;
}
/** Where an auto-saved value stands: `saved` (everything set is committed to IndexedDB), `saving` (a change waits or is being written), `error` (the last write failed; the value is kept and tried again on the next change or `flush()`). */
export interface AutosaveStatus {
  collection: string;
  key: string;
  state: 'saved' | 'saving' | 'error';
  /** When the last write was committed (ms since the epoch), or null. */
  savedAt: number | null;
  error: { code: string; message: string } | null;
}
export interface WriteManyAck { seqs: number[] }
export interface PutItem { collection: string; key: string; value: unknown }
export type WriteOp =
  | { op: "put"; collection: string; key: string; value: unknown }
  | { op: "delete"; collection: string; key: string };

export interface ListItem<T = unknown> {
  key: string;
  value: T;
  updated_at: number;
  /** A local write of this entity is not yet acknowledged by the server. */
  pending: boolean;
}

export interface DeadLetter {
  seq: number;
  kind: "mutation" | "request" | "blob";
  /** The SHA-256 of a blob whose upload the server refused (kind "blob"). */
  sha256?: string;
  collection: string | null;
  key: string | null;
  method: string | null;
  url: string | null;
  reason: string;
  attempts: number;
  dead_at: number;
}

export interface RestoreOptions { dryRun?: boolean; /** The passphrase of an encrypted backup (`backupEncryption: { passphrase }`). */ passphrase?: string; /** The `CryptoKey` of a backup encrypted with `backupEncryption: { key }`. */ key?: CryptoKey }

export interface EntityRef { collection: string; key: string }

export interface RestoreReport {
  dry_run: boolean;
  added: EntityRef[];
  replaced: EntityRef[];
  unchanged: EntityRef[];
  refused: { collection: string; key: string; reason: string }[];
  /** A client snapshot: what goes back in the outbox under its own (client_id, seq). */
  pending?: {
    client_id: string;
    /** This browser takes the backup's client id (its own database was new). */
    adopts_client_id: boolean;
    requeued: number[];
    dead_restored: number[];
    already_here: number[];
    refused: { seq: number; reason: string }[];
  };
  /** A dry run that a real restore would refuse (`restore_blocked`): why. */
  blocked?: string;
}
"#;
