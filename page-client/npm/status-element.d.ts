import type { SyncClient, SyncStatus } from './rangersync_page.js';

/**
 * `<rangersync-status>`: saved / syncing / offline / failed, pending count, last save, sync and
 * backup, the page-mode fallback and non-persistent storage, and a panel of dead letters with
 * Retry and Discard. Nudges (dismissable, `role="alert"`) on `config_error`, `auth_error`,
 * `quota_exceeded` and a failed backup. Shadow DOM; style it with `::part(pill | state | mode |
 * nudge | dismiss | panel | times | error | dead | dead-letter | retry-button | discard-button)`
 * and the custom properties `--rangersync-saved`, `--rangersync-pending`, `--rangersync-syncing`,
 * `--rangersync-offline`, `--rangersync-error`, `--rangersync-pill-text`, `--rangersync-panel`,
 * `--rangersync-panel-text`, `--rangersync-border`, `--rangersync-nudge`, `--rangersync-nudge-text`.
 */
export class RangersyncStatus extends HTMLElement {
  /** The client to show; setting it subscribes to its status (and unsubscribes the last one). */
  client: SyncClient | null;
  /** The last status shown, or null. */
  readonly status: SyncStatus | null;
}

declare global {
  interface HTMLElementTagNameMap {
    'rangersync-status': RangersyncStatus;
  }
}
