//! The options object of `SyncClient.register` (camelCase in JavaScript) and of `restore`,
//! mapped to [`Config`] (snake_case, persisted by the worker) plus the page-side settings.
//!
//! Pure: it reads a `serde_json::Value` (the options object as JSON), so every rule is tested
//! natively. An unknown key or a wrong type is an `invalid_config` error, never ignored.

use rangersync_shared::capture::CaptureRoute;
use rangersync_shared::messages::{Config, DEFAULT_EXPORT_INTERVAL_MS};
use rangersync_shared::retry::RetryPolicy;
use rangersync_shared::validate::MAX_BATCH_MUTATIONS;
use serde_json::{Map, Value};

use crate::error::ClientError;

/// Default time to wait for one reply of the worker.
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
/// Default time to wait for a freshly registered worker to control the page.
pub const DEFAULT_CONTROLLER_TIMEOUT_MS: u32 = 10_000;

/// Everything `SyncClient.register` was given, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Script URL of the service worker (`swUrl`, default `/sw.js`).
    pub sw_url: String,
    /// Run the outbox in the page even when a worker could run (`forcePageMode`).
    pub force_page_mode: bool,
    /// Longest wait for one reply of the worker (`timeoutMs`); flush, export and restore get
    /// [`SLOW_REQUEST_FACTOR`] times as long.
    pub timeout_ms: u32,
    /// Longest wait for a new worker to take control of the page before falling back to page
    /// mode (`controllerTimeoutMs`).
    pub controller_timeout_ms: u32,
    /// The files the worker precaches at install so the app opens offline (`appShell`); none
    /// when absent.
    pub app_shell: Option<AppShell>,
    /// Ask the browser to keep this origin's storage under pressure
    /// (`navigator.storage.persist()`) when registering (`persistStorage`, default true).
    pub persist_storage: bool,
    /// What the worker (or the page engine) persists and syncs with.
    pub config: Config,
    /// `backupEncryption`: how server backups are encrypted (none when absent).
    pub backup_encryption: Option<BackupEncryption>,
}

/// `backupEncryption`: what server backups are encrypted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEncryption {
    /// `{ passphrase }`: sent to the outbox apart from the config, which is stored, so that
    /// only the key derived from it is kept.
    Passphrase(String),
    /// `{ key }`: the app's own `CryptoKey`, read from the options object itself (JSON, which
    /// this module reads, cannot hold one) and sent beside the request.
    Key,
}

/// Most files `appShell.files` may list (`rangersync-worker.js` checks the same bounds).
pub const MAX_SHELL_FILES: usize = 100;
/// Longest path in `appShell.files`.
pub const MAX_SHELL_PATH: usize = 1024;
/// Longest `appShell.version`.
pub const MAX_SHELL_VERSION: usize = 64;

/// The `appShell` option: what the worker caches at install, for opening the app offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppShell {
    /// Same-origin paths (`/`, `/app.js`, `/index.html?v=2`), in order, without duplicates.
    pub files: Vec<String>,
    /// A name for this set of files: change it to ship new contents under the same paths.
    pub version: Option<String>,
    /// What a navigation to a path that is not listed gets offline (default: the first file).
    pub fallback: Option<String>,
}

/// Flush, export and restore may do real work (network, large snapshots): their timeout is
/// this many times `timeoutMs`.
pub const SLOW_REQUEST_FACTOR: u32 = 6;

/// The option keys `register` accepts, as a caller writes them.
pub const REGISTER_KEYS: &[&str] = &[
    "swUrl",
    "serverUrl",
    "token",
    "captureRoutes",
    "batchSize",
    "periodicIntervalMs",
    "exportIntervalMs",
    "retry",
    "forcePageMode",
    "timeoutMs",
    "requestTimeoutMs",
    "captureMaxBodyBytes",
    "localOnly",
    "excludeFromBackup",
    "deadLetterRetentionDays",
    "backupIncludeBlobs",
    "backupEncryption",
    "captureCredentials",
    "controllerTimeoutMs",
    "appShell",
    "persistStorage",
];

const APP_SHELL_KEYS: &[&str] = &["files", "version", "fallback"];

const RETRY_KEYS: &[(&str, &str)] = &[
    ("baseDelayMs", "base_delay_ms"),
    ("maxDelayMs", "max_delay_ms"),
    ("maxAttempts", "max_attempts"),
    ("maxAgeMs", "max_age_ms"),
];

impl ClientOptions {
    /// Check `options` (the JSON of the JS object; `null` means none given). `origin` is the
    /// page's origin, the default `serverUrl`.
    pub fn parse(options: &Value, origin: &str) -> Result<Self, ClientError> {
        let empty = Map::new();
        let map = match options {
            Value::Null => &empty,
            Value::Object(map) => map,
            _ => return Err(ClientError::config("options must be an object")),
        };
        if map.contains_key("cacheAppShell") {
            return Err(ClientError::config(
                "cacheAppShell was removed: nothing is cached unless you list the files, \
                 appShell: { files: ['/', '/app.js', …], version?: '1' }",
            ));
        }
        if let Some(unknown) = map.keys().find(|k| !REGISTER_KEYS.contains(&k.as_str())) {
            return Err(ClientError::config(format!(
                "unknown option {unknown:?} (known: {})",
                REGISTER_KEYS.join(", ")
            )));
        }
        // Absent: the page's origin. `null`: no sync server (capture only: nothing is pushed
        // or pulled, and `put()` is refused).
        let server_url = match map.get("serverUrl") {
            Some(Value::Null) => String::new(),
            _ => check_server_url(
                &opt_string(map, "serverUrl")?.unwrap_or_else(|| origin.to_owned()),
            )?,
        };
        let token = match map.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if t.is_empty() => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(ClientError::config("token must be a string")),
        };
        let capture_routes: Vec<CaptureRoute> = match map.get("captureRoutes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let route: CaptureRoute = serde_json::from_value(item.clone()).map_err(|_| {
                        ClientError::config(
                            "each of captureRoutes must be a path pattern (\"/api/sync/*\"), a URL pattern (\"http://localhost:3000/api/sync/*\") or { origin, path }",
                        )
                    })?;
                    route.parts().map_err(ClientError::config)?;
                    Ok::<_, ClientError>(route)
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ClientError::config("captureRoutes must be an array of strings")),
        };
        let defaults = Config::default();
        let batch_size = match opt_integer(map, "batchSize")? {
            None => defaults.batch_size,
            Some(n) if (1..=MAX_BATCH_MUTATIONS as u64).contains(&n) => n as u32,
            Some(n) => {
                return Err(ClientError::config(format!(
                    "batchSize must be 1 to {MAX_BATCH_MUTATIONS} (got {n})"
                )))
            }
        };
        let periodic_interval_ms = opt_positive(map, "periodicIntervalMs")?;
        // Absent: every 24 hours; 0: scheduled backups off.
        let export_interval_ms = match opt_integer(map, "exportIntervalMs")? {
            None => Some(DEFAULT_EXPORT_INTERVAL_MS),
            Some(0) => None,
            Some(ms) => Some(ms),
        };
        let persist_storage = match map.get("persistStorage") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ClientError::config("persistStorage must be true or false")),
        };
        let request_timeout_ms =
            opt_positive(map, "requestTimeoutMs")?.unwrap_or(defaults.request_timeout_ms);
        let capture_max_body_bytes =
            opt_positive(map, "captureMaxBodyBytes")?.unwrap_or(defaults.capture_max_body_bytes);
        let backup_encryption = parse_backup_encryption(map.get("backupEncryption"))?;
        let local_only = opt_collections(map, "localOnly")?;
        let exclude_from_backup = opt_collections(map, "excludeFromBackup")?;
        let dead_letter_retention_days = match opt_integer(map, "deadLetterRetentionDays")? {
            None => defaults.dead_letter_retention_days,
            Some(days) => u32::try_from(days).unwrap_or(u32::MAX),
        };
        let retry = parse_retry(map.get("retry"))?;
        let backup_include_blobs = match map.get("backupIncludeBlobs") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ClientError::config(
                    "backupIncludeBlobs must be true or false",
                ))
            }
        };
        let force_page_mode = match map.get("forcePageMode") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ClientError::config("forcePageMode must be true or false")),
        };
        let app_shell = parse_app_shell(map.get("appShell"))?;
        let timeout_ms = opt_millis(map, "timeoutMs")?.unwrap_or(DEFAULT_TIMEOUT_MS);
        let controller_timeout_ms =
            opt_millis(map, "controllerTimeoutMs")?.unwrap_or(DEFAULT_CONTROLLER_TIMEOUT_MS);
        let sw_url = opt_string(map, "swUrl")?.unwrap_or_else(|| "/sw.js".to_owned());
        if sw_url.is_empty() {
            return Err(ClientError::config("swUrl must not be empty"));
        }
        let config = Config {
            server_url,
            token,
            capture_routes,
            batch_size,
            retry,
            periodic_interval_ms,
            export_interval_ms,
            request_timeout_ms,
            capture_max_body_bytes,
            local_only,
            exclude_from_backup,
            backup_encryption: backup_encryption.is_some(),
            dead_letter_retention_days,
            backup_include_blobs,
        };
        // The worker's own rules (retry delays ≥ 100 ms, intervals ≥ 1 min, …), caught here
        // before anything is registered.
        config.check().map_err(ClientError::config)?;
        Ok(Self {
            sw_url,
            force_page_mode,
            timeout_ms,
            controller_timeout_ms,
            app_shell,
            persist_storage,
            config,
            backup_encryption,
        })
    }

    /// The worker script URL to register: `swUrl`, plus the app shell and the capture routes as
    /// JSON in its query (`/sw.js?appShell=%7B…%7D&captureRoutes=%5B…%5D`). A changed list or
    /// version is then a new worker version, and the worker knows at its first synchronous run
    /// whether it needs a `fetch` listener at all (without one, the app's navigations and
    /// requests never wake it) and which requests it may capture, without waiting for its wasm.
    pub fn worker_url(&self) -> String {
        let mut query = Vec::new();
        if let Some(shell) = &self.app_shell {
            let mut json = serde_json::Map::new();
            json.insert("files".into(), shell.files.clone().into());
            if let Some(version) = &shell.version {
                json.insert("version".into(), version.clone().into());
            }
            if let Some(fallback) = &shell.fallback {
                json.insert("fallback".into(), fallback.clone().into());
            }
            query.push(("appShell", Value::Object(json).to_string()));
        }
        if !self.config.capture_routes.is_empty() {
            let routes = serde_json::to_string(&self.config.capture_routes)
                .expect("capture routes serialise");
            query.push(("captureRoutes", routes));
        }
        if query.is_empty() {
            return self.sw_url.clone();
        }
        let (path, fragment) = match self.sw_url.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (self.sw_url.as_str(), None),
        };
        let mut url = path.to_owned();
        for (name, json) in query {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(name);
            url.push('=');
            url.push_str(&encode_uri_component(&json));
        }
        if let Some(fragment) = fragment {
            url.push('#');
            url.push_str(fragment);
        }
        url
    }
}

/// The `appShell` option: `{ files: [...], version?, fallback? }`, checked like the worker does.
fn parse_app_shell(value: Option<&Value>) -> Result<Option<AppShell>, ClientError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ClientError::config(
                "appShell must be an object { files: [...], version?, fallback? }",
            ))
        }
    };
    if let Some(unknown) = map.keys().find(|k| !APP_SHELL_KEYS.contains(&k.as_str())) {
        return Err(ClientError::config(format!(
            "unknown appShell option {unknown:?} (known: {})",
            APP_SHELL_KEYS.join(", ")
        )));
    }
    let Some(Value::Array(items)) = map.get("files") else {
        return Err(ClientError::config(
            "appShell.files must be an array of paths, such as [\"/\", \"/app.js\"]",
        ));
    };
    if items.is_empty() || items.len() > MAX_SHELL_FILES {
        return Err(ClientError::config(format!(
            "appShell.files must list 1 to {MAX_SHELL_FILES} paths (got {})",
            items.len()
        )));
    }
    let mut files: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let file = shell_path(item, "each of appShell.files")?;
        if !files.contains(&file) {
            files.push(file);
        }
    }
    let version = match map.get("version") {
        None | Some(Value::Null) => None,
        Some(Value::String(v))
            if (1..=MAX_SHELL_VERSION).contains(&v.len())
                && v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) =>
        {
            Some(v.clone())
        }
        Some(v) => {
            return Err(ClientError::config(format!(
                "appShell.version must be 1 to {MAX_SHELL_VERSION} letters, digits, \".\", \"_\" or \"-\" (got {v})"
            )))
        }
    };
    let fallback = match map.get("fallback") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let fallback = shell_path(v, "appShell.fallback")?;
            if !files.contains(&fallback) {
                return Err(ClientError::config(format!(
                    "appShell.fallback {fallback:?} must be one of appShell.files"
                )));
            }
            Some(fallback)
        }
    };
    Ok(Some(AppShell {
        files,
        version,
        fallback,
    }))
}

/// A same-origin path: starts with one `/`, no `#`, `\` or whitespace, at most
/// [`MAX_SHELL_PATH`] bytes.
fn shell_path(value: &Value, what: &str) -> Result<String, ClientError> {
    match value {
        Value::String(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.len() <= MAX_SHELL_PATH
                && !path.contains(['#', '\\'])
                && !path.contains(char::is_whitespace) =>
        {
            Ok(path.clone())
        }
        _ => Err(ClientError::config(format!(
            "{what} must be a path on this origin starting with \"/\", without \"#\", \"\\\" or spaces, at most {MAX_SHELL_PATH} bytes (got {value})"
        ))),
    }
}

/// JavaScript's `encodeURIComponent`: every byte of `text` except `A-Z a-z 0-9 - _ . ! ~ * ' ( )`
/// as `%XX`.
fn encode_uri_component(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

/// The options of `restore(text, { dryRun })`: returns `dry_run` (default `false`).
pub fn parse_restore_options(options: &Value) -> Result<RestoreOptions, ClientError> {
    match options {
        Value::Null => Ok(RestoreOptions::default()),
        Value::Object(map) => {
            if let Some(unknown) = map
                .keys()
                .find(|k| !matches!(k.as_str(), "dryRun" | "passphrase" | "key"))
            {
                return Err(ClientError::config(format!(
                    "unknown restore option {unknown:?} (known: dryRun, passphrase, key)"
                )));
            }
            let key = match map.get("key") {
                None | Some(Value::Null) => false,
                // A CryptoKey is `{}` as JSON: the client reads the key itself.
                Some(Value::Object(_)) => true,
                Some(_) => return Err(ClientError::config("key must be a CryptoKey")),
            };
            let dry_run = match map.get("dryRun") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(ClientError::config("dryRun must be true or false")),
            };
            let passphrase = opt_string(map, "passphrase")?;
            if key && passphrase.is_some() {
                return Err(ClientError::config(
                    "restore takes a passphrase or a key, not both",
                ));
            }
            Ok(RestoreOptions {
                dry_run,
                passphrase,
                key,
            })
        }
        _ => Err(ClientError::config("restore options must be an object")),
    }
}

/// Default `debounceMs` of `client.autosave`.
pub const DEFAULT_AUTOSAVE_DEBOUNCE_MS: u32 = 300;
/// Default `maxWaitMs` of `client.autosave`.
pub const DEFAULT_AUTOSAVE_MAX_WAIT_MS: u32 = 2_000;
/// The longest `debounceMs` / `maxWaitMs` (a value kept unsaved longer is a value at risk).
pub const MAX_AUTOSAVE_WAIT_MS: u32 = 60_000;

/// `{ debounceMs, maxWaitMs }` of `client.autosave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutosaveOptions {
    /// Write this long after the last change.
    pub debounce_ms: u32,
    /// …and never later than this after the first change not yet written.
    pub max_wait_ms: u32,
}

/// The options of `autosave(collection, key, options)`.
pub fn parse_autosave_options(options: &Value) -> Result<AutosaveOptions, ClientError> {
    let empty = Map::new();
    let map = match options {
        Value::Null => &empty,
        Value::Object(map) => map,
        _ => return Err(ClientError::config("autosave options must be an object")),
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "debounceMs" | "maxWaitMs"))
    {
        return Err(ClientError::config(format!(
            "unknown autosave option {unknown:?} (known: debounceMs, maxWaitMs)"
        )));
    }
    let within = |name: &str, default: u32| -> Result<u32, ClientError> {
        match opt_integer(map, name)? {
            None => Ok(default),
            Some(ms) if ms <= u64::from(MAX_AUTOSAVE_WAIT_MS) => Ok(ms as u32),
            Some(ms) => Err(ClientError::config(format!(
                "{name} must be 0 to {MAX_AUTOSAVE_WAIT_MS} ms (got {ms})"
            ))),
        }
    };
    let debounce_ms = within("debounceMs", DEFAULT_AUTOSAVE_DEBOUNCE_MS)?;
    let max_wait_ms = within("maxWaitMs", DEFAULT_AUTOSAVE_MAX_WAIT_MS.max(debounce_ms))?;
    if max_wait_ms < debounce_ms {
        return Err(ClientError::config(format!(
            "maxWaitMs ({max_wait_ms}) must be at least debounceMs ({debounce_ms})"
        )));
    }
    Ok(AutosaveOptions {
        debounce_ms,
        max_wait_ms,
    })
}

/// `{ dryRun, passphrase, key }` of a restore.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Report what would change and write nothing.
    pub dry_run: bool,
    /// The passphrase of an encrypted backup.
    pub passphrase: Option<String>,
    /// A `CryptoKey` was given (`key`), which the client reads from the options object.
    pub key: bool,
}

/// `backupEncryption: { passphrase }` or `{ key }`.
fn parse_backup_encryption(value: Option<&Value>) -> Result<Option<BackupEncryption>, ClientError> {
    let bad = || {
        ClientError::config(
            "backupEncryption must be { passphrase: string } (at least 8 characters) or { key: CryptoKey }",
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            if map.len() != 1 {
                return Err(bad());
            }
            match (map.get("passphrase"), map.get("key")) {
                (Some(Value::String(p)), None) if p.chars().count() >= 8 => {
                    Ok(Some(BackupEncryption::Passphrase(p.clone())))
                }
                // A CryptoKey is `{}` as JSON: the client reads the key itself.
                (None, Some(Value::Object(_))) => Ok(Some(BackupEncryption::Key)),
                _ => Err(bad()),
            }
        }
        Some(_) => Err(bad()),
    }
}

fn check_server_url(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| {
            ClientError::config(format!("serverUrl must be an http(s) URL (got {url:?})"))
        })?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(ClientError::config(format!(
            "serverUrl has no host (got {url:?})"
        )));
    }
    Ok(trimmed.to_owned())
}

/// A list of collection names (absent: none); the names themselves are checked with the rest
/// of the config.
fn opt_collections(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, ClientError> {
    let bad = || ClientError::config(format!("{key} must be a list of collection names"));
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

fn opt_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ClientError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ClientError::config(format!("{key} must be a string"))),
    }
}

fn opt_integer(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ClientError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => integer(v)
            .map(Some)
            .ok_or_else(|| ClientError::config(format!("{key} must be a whole number ≥ 0"))),
    }
}

fn opt_positive(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ClientError> {
    match opt_integer(map, key)? {
        Some(0) => Err(ClientError::config(format!("{key} must be greater than 0"))),
        other => Ok(other),
    }
}

fn opt_millis(map: &Map<String, Value>, key: &str) -> Result<Option<u32>, ClientError> {
    match opt_positive(map, key)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| ClientError::config(format!("{key} is too large"))),
    }
}

/// A JSON number that is a whole number ≥ 0 (JS numbers arrive as floats like `5.0`).
fn integer(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_991.0).then_some(f as u64)
}

fn parse_retry(value: Option<&Value>) -> Result<RetryPolicy, ClientError> {
    let mut policy = RetryPolicy::default();
    let map = match value {
        None | Some(Value::Null) => return Ok(policy),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ClientError::config("retry must be an object")),
    };
    for (key, value) in map {
        let Some((_, field)) = RETRY_KEYS.iter().find(|(js, _)| js == key) else {
            return Err(ClientError::config(format!(
                "unknown retry option {key:?} (known: baseDelayMs, maxDelayMs, maxAttempts, maxAgeMs)"
            )));
        };
        let n = integer(value).ok_or_else(|| {
            ClientError::config(format!("retry.{key} must be a whole number ≥ 0"))
        })?;
        match *field {
            "base_delay_ms" => policy.base_delay_ms = n,
            "max_delay_ms" => policy.max_delay_ms = n,
            "max_attempts" => {
                policy.max_attempts = u32::try_from(n)
                    .map_err(|_| ClientError::config("retry.maxAttempts is too large"))?;
            }
            _ => policy.max_age_ms = n,
        }
    }
    if policy.base_delay_ms == 0 || policy.max_delay_ms < policy.base_delay_ms {
        return Err(ClientError::config(
            "retry.baseDelayMs must be > 0 and retry.maxDelayMs ≥ retry.baseDelayMs",
        ));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rangersync_shared::messages::codes;
    use serde_json::json;

    const ORIGIN: &str = "http://127.0.0.1:8787";

    #[test]
    fn no_options_means_the_page_origin_and_the_defaults() {
        let o = ClientOptions::parse(&Value::Null, ORIGIN).unwrap();
        assert_eq!(o.sw_url, "/sw.js");
        assert_eq!(o.config.server_url, ORIGIN);
        assert_eq!(
            o.config,
            Config {
                server_url: ORIGIN.into(),
                export_interval_ms: Some(DEFAULT_EXPORT_INTERVAL_MS),
                ..Config::default()
            }
        );
        assert!(!o.force_page_mode);
        assert_eq!(o.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(o.app_shell, None, "no app shell unless the page lists one");
        assert_eq!(o.worker_url(), "/sw.js");
    }

    #[test]
    fn capture_routes_may_name_another_api_origin_and_server_url_null_means_capture_only() {
        let o = ClientOptions::parse(
            &json!({
                "serverUrl": null,
                "captureRoutes": [
                    "http://localhost:3000/api/sync/chat",
                    { "origin": "http://localhost:3000", "path": "/api/sync/settings" }
                ]
            }),
            ORIGIN,
        )
        .unwrap();
        assert_eq!(o.config.server_url, "");
        assert_eq!(o.config.capture_routes.len(), 2);
        for bad in [
            json!({ "captureRoutes": ["api/*"] }),
            json!({ "captureRoutes": [{ "origin": "http://x/y", "path": "/a" }] }),
            json!({ "captureRoutes": [5] }),
        ] {
            let e = ClientOptions::parse(&bad, ORIGIN).unwrap_err();
            assert_eq!(e.code, "invalid_config", "{bad}");
        }
    }

    #[test]
    fn camel_case_options_map_to_the_snake_case_config() {
        let o = ClientOptions::parse(
            &json!({
                "swUrl": "/public/sw.js", "serverUrl": "http://localhost:3010/", "token": "t0k",
                "captureRoutes": ["/api/sync/chat", "/api/sync/settings"], "batchSize": 50.0,
                "periodicIntervalMs": 3_600_000, "exportIntervalMs": 86_400_000,
                "retry": { "baseDelayMs": 500, "maxAttempts": 3 },
                "forcePageMode": true, "timeoutMs": 2000, "controllerTimeoutMs": 3000,
                "appShell": { "files": ["/", "/app.js"], "version": "7", "fallback": "/" }
            }),
            ORIGIN,
        )
        .unwrap();
        assert_eq!(o.sw_url, "/public/sw.js");
        assert_eq!(o.config.server_url, "http://localhost:3010");
        assert_eq!(o.config.token.as_deref(), Some("t0k"));
        assert_eq!(
            o.config.capture_routes,
            [
                CaptureRoute::from("/api/sync/chat"),
                CaptureRoute::from("/api/sync/settings")
            ]
        );
        assert_eq!(o.config.batch_size, 50);
        assert_eq!(o.config.periodic_interval_ms, Some(3_600_000));
        assert_eq!(o.config.export_interval_ms, Some(86_400_000));
        assert_eq!(o.config.retry.base_delay_ms, 500);
        assert_eq!(o.config.retry.max_attempts, 3);
        assert_eq!(
            o.config.retry.max_delay_ms,
            RetryPolicy::default().max_delay_ms
        );
        assert!(o.force_page_mode);
        assert_eq!((o.timeout_ms, o.controller_timeout_ms), (2000, 3000));
        assert_eq!(
            o.app_shell,
            Some(AppShell {
                files: vec!["/".into(), "/app.js".into()],
                version: Some("7".into()),
                fallback: Some("/".into()),
            })
        );
    }

    #[test]
    fn backups_default_to_every_24_hours_and_zero_turns_them_off() {
        let o = ClientOptions::parse(&json!({}), ORIGIN).unwrap();
        assert_eq!(
            o.config.export_interval_ms,
            Some(DEFAULT_EXPORT_INTERVAL_MS)
        );
        let o = ClientOptions::parse(&json!({ "exportIntervalMs": 0 }), ORIGIN).unwrap();
        assert_eq!(o.config.export_interval_ms, None);
        let o = ClientOptions::parse(&json!({ "exportIntervalMs": 15_000 }), ORIGIN).unwrap();
        assert_eq!(o.config.export_interval_ms, Some(15_000));
    }

    #[test]
    fn persistent_storage_is_requested_unless_turned_off() {
        assert!(
            ClientOptions::parse(&json!({}), ORIGIN)
                .unwrap()
                .persist_storage
        );
        let o = ClientOptions::parse(&json!({ "persistStorage": false }), ORIGIN).unwrap();
        assert!(!o.persist_storage);
    }

    #[test]
    fn an_unknown_option_key_is_an_invalid_config_error() {
        for bad in [
            json!({ "server_url": "http://x" }),
            json!({ "serverURL": "http://x" }),
            json!({ "retry": { "base_delay_ms": 5 } }),
        ] {
            let e = ClientOptions::parse(&bad, ORIGIN).unwrap_err();
            assert_eq!(e.code, codes::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn a_wrongly_typed_or_out_of_range_option_is_an_invalid_config_error() {
        for bad in [
            json!("http://x"),
            json!({ "serverUrl": 5 }),
            json!({ "serverUrl": "ftp://x" }),
            json!({ "serverUrl": "http://" }),
            json!({ "batchSize": 0 }),
            json!({ "batchSize": 1001 }),
            json!({ "batchSize": 2.5 }),
            json!({ "captureRoutes": "/api/*" }),
            json!({ "captureRoutes": [5] }),
            json!({ "captureRoutes": ["ftp://localhost:3010/api/sync/chat"] }),
            json!({ "token": 5 }),
            json!({ "forcePageMode": "yes" }),
            json!({ "cacheAppShell": "no" }),
            json!({ "appShell": true }),
            json!({ "appShell": ["/"] }),
            json!({ "appShell": {} }),
            json!({ "appShell": { "files": [] } }),
            json!({ "appShell": { "files": "/" } }),
            json!({ "appShell": { "files": ["/"], "precache": true } }),
            json!({ "appShell": { "files": ["app.js"] } }),
            json!({ "appShell": { "files": ["//evil.example/app.js"] } }),
            json!({ "appShell": { "files": ["http://127.0.0.1:8787/app.js"] } }),
            json!({ "appShell": { "files": ["/app.js#top"] } }),
            json!({ "appShell": { "files": ["/a b.js"] } }),
            json!({ "appShell": { "files": ["/\\evil.example"] } }),
            json!({ "appShell": { "files": [5] } }),
            json!({ "appShell": { "files": ["/"], "version": "" } }),
            json!({ "appShell": { "files": ["/"], "version": "1/2" } }),
            json!({ "appShell": { "files": ["/"], "version": 2 } }),
            json!({ "appShell": { "files": ["/"], "fallback": "/index.html" } }),
            json!({ "timeoutMs": -1 }),
            json!({ "periodicIntervalMs": 0 }),
            json!({ "retry": { "baseDelayMs": 10, "maxDelayMs": 5 } }),
            json!({ "retry": { "baseDelayMs": 1, "maxDelayMs": 1 } }),
            json!({ "periodicIntervalMs": 1000 }),
            json!({ "exportIntervalMs": 9_999 }),
            json!({ "exportIntervalMs": -1 }),
            json!({ "persistStorage": "yes" }),
            json!({ "swUrl": "" }),
        ] {
            let e = ClientOptions::parse(&bad, ORIGIN).unwrap_err();
            assert_eq!(e.code, codes::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn cache_app_shell_is_refused_with_a_pointer_to_app_shell() {
        for value in [json!(true), json!(false)] {
            let e = ClientOptions::parse(&json!({ "cacheAppShell": value }), ORIGIN).unwrap_err();
            assert_eq!(e.code, codes::INVALID_CONFIG);
            assert!(e.message.contains("appShell"), "{}", e.message);
        }
    }

    #[test]
    fn the_app_shell_is_bounded() {
        let files: Vec<String> = (0..=MAX_SHELL_FILES).map(|i| format!("/f{i}.js")).collect();
        let e =
            ClientOptions::parse(&json!({ "appShell": { "files": files } }), ORIGIN).unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);
        let ok = ClientOptions::parse(
            &json!({ "appShell": { "files": files[..MAX_SHELL_FILES] } }),
            ORIGIN,
        )
        .unwrap();
        assert_eq!(ok.app_shell.unwrap().files.len(), MAX_SHELL_FILES);
        let long = format!("/{}", "a".repeat(MAX_SHELL_PATH));
        let e =
            ClientOptions::parse(&json!({ "appShell": { "files": [long] } }), ORIGIN).unwrap_err();
        assert_eq!(e.code, codes::INVALID_CONFIG);
    }

    #[test]
    fn capture_routes_travel_in_the_worker_url_so_the_worker_listens_for_fetch_only_when_needed() {
        let url = |options: Value| ClientOptions::parse(&options, ORIGIN).unwrap().worker_url();
        assert_eq!(url(json!({})), "/sw.js", "nothing to capture: no query");
        assert_eq!(
            url(json!({ "captureRoutes": ["/api/sync/*", { "origin": "http://x:1", "path": "/a" }] })),
            "/sw.js?captureRoutes=%5B%22%2Fapi%2Fsync%2F*%22%2C%7B%22origin%22%3A%22http%3A%2F%2Fx%3A1%22%2C%22path%22%3A%22%2Fa%22%7D%5D"
        );
        assert_eq!(
            url(json!({ "captureRoutes": ["/a"], "appShell": { "files": ["/"] } })),
            "/sw.js?appShell=%7B%22files%22%3A%5B%22%2F%22%5D%7D&captureRoutes=%5B%22%2Fa%22%5D",
            "both, the shell first"
        );
    }

    #[test]
    fn the_app_shell_travels_in_the_worker_url_so_a_new_list_is_a_new_worker() {
        let parse = |shell: Value, sw_url: &str| {
            ClientOptions::parse(&json!({ "swUrl": sw_url, "appShell": shell }), ORIGIN)
                .unwrap()
                .worker_url()
        };
        let url = parse(
            json!({ "files": ["/", "/app.js?v=2", "/app.js?v=2"] }),
            "/sw.js",
        );
        assert_eq!(
            url, "/sw.js?appShell=%7B%22files%22%3A%5B%22%2F%22%2C%22%2Fapp.js%3Fv%3D2%22%5D%7D",
            "duplicates dropped, JSON encoded like encodeURIComponent"
        );
        let with_version = parse(
            json!({ "files": ["/"], "version": "2026.11-b", "fallback": "/" }),
            "/public/sw.js?debug=1",
        );
        assert_eq!(
            with_version,
            "/public/sw.js?debug=1&appShell=%7B%22fallback%22%3A%22%2F%22%2C%22files%22%3A%5B%22%2F%22%5D%2C%22version%22%3A%222026.11-b%22%7D",
            "appended to a query, keys sorted"
        );
        assert_ne!(
            parse(json!({ "files": ["/"], "version": "1" }), "/sw.js"),
            parse(json!({ "files": ["/"], "version": "2" }), "/sw.js")
        );
    }

    #[test]
    fn backup_encryption_takes_a_passphrase_of_eight_characters_or_a_key_never_both() {
        let parse = |v: Value| ClientOptions::parse(&json!({ "backupEncryption": v }), ORIGIN);
        let o = parse(json!({ "passphrase": "correct horse" })).unwrap();
        assert_eq!(
            o.backup_encryption,
            Some(BackupEncryption::Passphrase("correct horse".into()))
        );
        assert!(o.config.backup_encryption);
        // A CryptoKey reads as `{}` in JSON.
        let o = parse(json!({ "key": {} })).unwrap();
        assert_eq!(o.backup_encryption, Some(BackupEncryption::Key));
        assert!(o.config.backup_encryption);
        for bad in [
            json!({ "passphrase": "short" }),
            json!({ "key": "a string" }),
            json!({ "passphrase": "correct horse", "key": {} }),
            json!({}),
            json!({ "secret": "correct horse" }),
            json!("correct horse"),
        ] {
            assert_eq!(
                parse(bad.clone()).unwrap_err().code,
                codes::INVALID_CONFIG,
                "{bad}"
            );
        }
        assert!(
            !ClientOptions::parse(&Value::Null, ORIGIN)
                .unwrap()
                .config
                .backup_encryption
        );
    }

    #[test]
    fn autosave_waits_300_ms_and_at_most_2_s_unless_told_within_a_minute() {
        let o = parse_autosave_options(&Value::Null).unwrap();
        assert_eq!((o.debounce_ms, o.max_wait_ms), (300, 2_000));
        let o = parse_autosave_options(&json!({ "debounceMs": 0 })).unwrap();
        assert_eq!((o.debounce_ms, o.max_wait_ms), (0, 2_000));
        let o = parse_autosave_options(&json!({ "debounceMs": 5_000 })).unwrap();
        assert_eq!(o.max_wait_ms, 5_000, "max wait follows a longer debounce");
        for bad in [
            json!({ "debounceMs": 60_001 }),
            json!({ "debounceMs": -1 }),
            json!({ "debounceMs": 500, "maxWaitMs": 100 }),
            json!({ "debounce": 300 }),
            json!({ "maxWaitMs": "2s" }),
            json!(300),
        ] {
            assert_eq!(
                parse_autosave_options(&bad).unwrap_err().code,
                codes::INVALID_CONFIG,
                "{bad}"
            );
        }
    }

    #[test]
    fn restore_options_take_a_key_or_a_passphrase_not_both() {
        assert!(parse_restore_options(&json!({ "key": {} })).unwrap().key);
        assert!(!parse_restore_options(&json!({})).unwrap().key);
        for bad in [
            json!({ "key": "k" }),
            json!({ "key": {}, "passphrase": "correct horse" }),
        ] {
            assert_eq!(
                parse_restore_options(&bad).unwrap_err().code,
                codes::INVALID_CONFIG,
                "{bad}"
            );
        }
    }

    #[test]
    fn restore_options_take_dry_run_a_passphrase_and_a_key_only() {
        assert!(!parse_restore_options(&Value::Null).unwrap().dry_run);
        assert!(
            parse_restore_options(&json!({ "dryRun": true }))
                .unwrap()
                .dry_run
        );
        assert_eq!(
            parse_restore_options(&json!({ "passphrase": "pw" }))
                .unwrap()
                .passphrase
                .as_deref(),
            Some("pw")
        );
        assert_eq!(
            parse_restore_options(&json!({ "dry_run": true }))
                .unwrap_err()
                .code,
            codes::INVALID_CONFIG
        );
    }
}
