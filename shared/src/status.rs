//! The status a worker (or the page fallback) posts to every window client after
//! every state change, and `SyncClient.status()` returns.

use serde::{Deserialize, Serialize};

use crate::protocol::Millis;

/// What the outbox is doing right now, as a person would want to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Nothing pending, nothing running.
    #[default]
    Idle,
    /// A write is being committed to IndexedDB.
    Saving,
    /// A flush is talking to the server.
    Syncing,
    /// The last attempt failed; the next one is at `next_retry_at`.
    WaitingRetry,
    /// The network (or the server) cannot be reached.
    Offline,
    /// The server refused the credentials (401/403); nothing is sent until the config changes.
    AuthError,
    /// The server URL does not lead to a rangersync endpoint (404, 405, 415, HTML…), or the
    /// stored configuration cannot be read. `last_error` says what came back from which URL.
    /// Nothing counts toward `max_attempts`; delivery resumes by itself (checked at the
    /// normal backoff) once the endpoint answers properly, or when a page sends a valid config.
    ConfigError,
    /// Something else went wrong; see `last_error`.
    Error,
}

/// Where the outbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In the service worker (delivers with no tab open).
    #[default]
    Worker,
    /// In the page, because no worker could run (delivers while the page is open).
    Page,
}

/// The last error a person should see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub code: String,
    pub message: String,
    pub at: Millis,
}

/// The status object of the worker issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    pub state: SyncState,
    /// Entries in the outbox, including those in flight.
    pub pending: u64,
    /// Bytes of attachments (`putBlob`) not yet uploaded; their entries count in `pending`.
    #[serde(default)]
    pub blob_bytes_pending: u64,
    /// Entries in the request on the wire right now.
    pub in_flight: u64,
    /// Entries in the dead-letter store.
    pub dead: u64,
    pub last_saved_at: Option<Millis>,
    pub last_synced_at: Option<Millis>,
    /// When a snapshot was last built (a download, or a backup whatever became of its upload).
    pub last_exported_at: Option<Millis>,
    /// The snapshot time of the last backup the server confirmed it holds, verified by
    /// checksum (`POST /api/backups` answered 2xx). What the indicator shows as "backed up".
    #[serde(default)]
    pub last_backup_at: Option<Millis>,
    /// When the next backup is due (the retry time after a failure); `null` when scheduled
    /// backups are off and none failed, or there is no server to upload to.
    #[serde(default)]
    pub next_backup_at: Option<Millis>,
    /// Why the last backup failed (it is retried at `next_backup_at`); `null` after a success.
    #[serde(default)]
    pub backup_error: Option<LastError>,
    /// Whether the browser keeps this origin's storage under pressure
    /// (`navigator.storage.persisted()`); `null` where the browser cannot tell.
    #[serde(default)]
    pub persistent: Option<bool>,
    /// This engine created the database (a first visit, or the site's storage was cleared):
    /// the app may offer to restore the latest server backup.
    #[serde(default)]
    pub new_database: bool,
    /// This database's client id (the `client_id` of its writes and backups); after a
    /// restore that adopted a backup's id, that one.
    #[serde(default)]
    pub client_id: String,
    pub last_error: Option<LastError>,
    pub next_retry_at: Option<Millis>,
    pub mode: Mode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_with_snake_case_names_and_nulls() {
        let s = Status {
            state: SyncState::WaitingRetry,
            pending: 3,
            ..Status::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "waiting_retry");
        assert_eq!(v["mode"], "worker");
        assert_eq!(v["pending"], 3);
        assert!(v["last_error"].is_null());
        assert!(v["next_retry_at"].is_null());
        assert!(v["last_backup_at"].is_null());
        assert!(v["backup_error"].is_null());
        assert!(v["persistent"].is_null());
    }
}
