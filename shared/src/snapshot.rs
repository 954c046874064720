//! The snapshot (export / restore): build, canonical JSON, SHA-256 checksum, JSON and YAML
//! encodings that verify to the same checksum, and a validator that returns a dry-run report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use sha2::{Digest, Sha256};

use crate::messages::ExportFormat;
use crate::protocol::{Entity, Millis, Mutation};
use crate::validate::{validate_collection, validate_key, validate_value, ValidationError};

/// The `format` field of every snapshot.
pub const SNAPSHOT_FORMAT: &str = "rangersync-snapshot";
/// The snapshot format version this crate writes: 2 adds what a client needs to come back
/// whole (`requests`, `dead`, `meta`, `problems`).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// The oldest format version this crate still reads (1: entities and pending mutations only).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Largest snapshot text accepted for restore or backup.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// Who made the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotSource {
    Client,
    Server,
}

/// `{ "algorithm": "sha256", "value": "hex…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksum {
    pub algorithm: String,
    pub value: String,
}

/// A snapshot document (PROTOCOL.md, "Snapshot").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: String,
    pub format_version: u32,
    pub exported_at: Millis,
    pub source: SnapshotSource,
    #[serde(default)]
    pub client_id: Option<String>,
    pub app_version: String,
    /// Version 2: the bytes of the blobs the entities reference, when the export was asked to
    /// hold them (`include_blobs`); otherwise the references alone are in the entities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobCopy>,
    pub entities: Vec<Entity>,
    #[serde(default)]
    pub outbox: Vec<Mutation>,
    /// Version 2: the captured REST requests waiting in the outbox, in seq order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<PendingRequest>,
    /// Version 2: the dead letters, in seq order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead: Vec<DeadLetterCopy>,
    /// Version 2: the client's own bookkeeping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<SnapshotMeta>,
    /// Version 2: every record that could not be read, and so is not in this snapshot. A
    /// snapshot never leaves a record out without naming it here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    pub counts: BTreeMap<String, u64>,
    pub checksum: Checksum,
}

/// A captured REST request waiting in the outbox (its own `(client_id, seq)` is its
/// `Idempotency-Key` on replay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRequest {
    pub seq: u64,
    pub created_at: Millis,
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body's bytes.
    #[serde(default)]
    pub body: Vec<u8>,
    /// The headers left out because they are secrets (credentials, a route's
    /// `secretHeaders`): the outbox keeps them to replay the call; a snapshot never holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// The bytes of one blob (`crate::blob`), base64 (standard alphabet, padded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobCopy {
    pub sha256: String,
    pub size: u64,
    #[serde(rename = "type", default)]
    pub content_type: String,
    pub data: String,
}

impl BlobCopy {
    pub fn new(sha256: String, content_type: String, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            sha256,
            size: bytes.len() as u64,
            content_type,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The bytes, checked against the size and the SHA-256 the copy names.
    pub fn bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        use base64::Engine as _;
        let bad = |why: String| SnapshotError::Parse(format!("blob {}: {why}", self.sha256));
        crate::blob::check_sha256(&self.sha256).map_err(bad)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| bad(format!("its data is not base64: {e}")))?;
        if bytes.len() as u64 != self.size {
            return Err(bad(format!(
                "{} bytes, not the {} it says",
                bytes.len(),
                self.size
            )));
        }
        if sha256_hex(&bytes) != self.sha256 {
            return Err(bad("its bytes do not hash to its sha256".into()));
        }
        Ok(bytes)
    }
}

/// A dead letter: the entry as it was stored, why it died, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterCopy {
    pub seq: u64,
    pub reason: String,
    pub dead_at: Millis,
    #[serde(default)]
    pub attempts: u32,
    /// The outbox record, as stored, less its secret headers.
    #[serde(default)]
    pub record: Value,
    /// The headers left out of `record` (see [`PendingRequest::redacted`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// A client's bookkeeping at export time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMeta {
    /// The next seq the client would give a write.
    pub next_seq: u64,
    /// The change-feed cursor (the server version pulled up to).
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub last_synced_at: Option<Millis>,
}

/// A record the export could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// The store (`entities`, `outbox`, `dead`, `meta`).
    pub store: String,
    /// Its key, as text.
    pub key: String,
    pub reason: String,
}

/// What a client snapshot holds besides its entities and pending mutations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extras {
    pub requests: Vec<PendingRequest>,
    pub dead: Vec<DeadLetterCopy>,
    pub meta: Option<SnapshotMeta>,
    pub problems: Vec<Problem>,
    pub blobs: Vec<BlobCopy>,
}

/// Why a snapshot was refused. Nothing is changed when any of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("snapshot cannot be parsed: {0}")]
    Parse(String),
    #[error("not a rangersync snapshot (format {0:?})")]
    WrongFormat(String),
    #[error("snapshot format version {0} is not supported (this build reads 1 and 2)")]
    UnsupportedVersion(u32),
    #[error("checksum algorithm {0:?} is not supported (only sha256)")]
    UnsupportedAlgorithm(String),
    #[error("checksum mismatch: the document says {expected}, its content hashes to {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("counts do not match the entities: {0}")]
    CountsMismatch(String),
}

impl SnapshotError {
    /// Stable code: `bad_snapshot`, or `checksum_mismatch`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChecksumMismatch { .. } => "checksum_mismatch",
            _ => "bad_snapshot",
        }
    }
}

/// Build a snapshot: counts live (not deleted) entities per collection, sorts entities by
/// `(collection, key)` and the outbox by seq, and computes the checksum.
pub fn build(
    source: SnapshotSource,
    client_id: Option<String>,
    app_version: &str,
    exported_at: Millis,
    entities: Vec<Entity>,
    outbox: Vec<Mutation>,
) -> Snapshot {
    build_with(
        source,
        client_id,
        app_version,
        exported_at,
        entities,
        outbox,
        Extras::default(),
    )
}

/// [`build`] with everything else a client holds: captured requests, dead letters, its meta,
/// and the records it could not read.
pub fn build_with(
    source: SnapshotSource,
    client_id: Option<String>,
    app_version: &str,
    exported_at: Millis,
    entities: Vec<Entity>,
    outbox: Vec<Mutation>,
    extras: Extras,
) -> Snapshot {
    let mut entities = entities;
    entities.sort_by(|a, b| (&a.collection, &a.key).cmp(&(&b.collection, &b.key)));
    let mut outbox = outbox;
    outbox.sort_by_key(|m| m.seq);
    let Extras {
        mut requests,
        mut dead,
        meta,
        problems,
        mut blobs,
    } = extras;
    blobs.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    blobs.dedup_by(|a, b| a.sha256 == b.sha256);
    requests.sort_by_key(|r| r.seq);
    dead.sort_by_key(|d| d.seq);
    let counts = live_counts(&entities);
    let mut snapshot = Snapshot {
        format: SNAPSHOT_FORMAT.to_owned(),
        format_version: SNAPSHOT_FORMAT_VERSION,
        exported_at,
        source,
        client_id,
        app_version: app_version.to_owned(),
        blobs,
        entities,
        outbox,
        requests,
        dead,
        meta,
        problems,
        counts,
        checksum: Checksum {
            algorithm: CHECKSUM_ALGORITHM.to_owned(),
            value: String::new(),
        },
    };
    snapshot.checksum.value = compute_checksum(&snapshot);
    snapshot
}

/// The only checksum algorithm: `sha256`.
pub const CHECKSUM_ALGORITHM: &str = "sha256";

/// Number of live (not deleted) entities per collection. Collections with none are absent.
pub fn live_counts(entities: &[Entity]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for e in entities.iter().filter(|e| !e.deleted) {
        let n: &mut u64 = counts.entry(e.collection.clone()).or_default();
        *n = n.saturating_add(1);
    }
    counts
}

/// Canonical JSON: object keys sorted, no whitespace.
///
/// Keys are sorted by their UTF-8 bytes at every depth (done here, so the result does not
/// depend on serde_json's `preserve_order` feature); strings and numbers are written exactly as
/// `serde_json` writes them (so a float keeps its `.0`: `1.0` and `1` hash differently).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    // Serializing a &str cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// SHA-256 (lower-case hex) of the canonical JSON of the snapshot without its `checksum` field.
///
/// Streamed: the canonical text is fed to the hash field by field and, for the lists, item by
/// item, so the whole document never exists a second time in memory (as a JSON value or as
/// text). The result is the hash of `canonical_json` of the whole document (tested).
pub fn compute_checksum(snapshot: &Snapshot) -> String {
    let mut hash = CanonicalHasher::default();
    let s = snapshot;
    // Every serialized field, in byte order of the names; `checksum` left out, and the
    // version-2 fields only when they are serialized (not empty).
    hash.raw("{");
    hash.field("app_version", &s.app_version, true);
    if !s.blobs.is_empty() {
        hash.list("blobs", &s.blobs);
    }
    hash.field("client_id", &s.client_id, false);
    hash.field("counts", &s.counts, false);
    if !s.dead.is_empty() {
        hash.list("dead", &s.dead);
    }
    hash.list("entities", &s.entities);
    hash.field("exported_at", &s.exported_at, false);
    hash.field("format", &s.format, false);
    hash.field("format_version", &s.format_version, false);
    if let Some(meta) = &s.meta {
        hash.field("meta", meta, false);
    }
    hash.list("outbox", &s.outbox);
    if !s.problems.is_empty() {
        hash.list("problems", &s.problems);
    }
    if !s.requests.is_empty() {
        hash.list("requests", &s.requests);
    }
    hash.field("source", &s.source, false);
    hash.raw("}");
    hash.finish()
}

/// Canonical JSON written into SHA-256 piece by piece (one list item at a time).
#[derive(Default)]
struct CanonicalHasher {
    sha: Sha256,
    buf: String,
}

impl CanonicalHasher {
    fn raw(&mut self, text: &str) {
        self.sha.update(text.as_bytes());
    }

    fn value<T: Serialize>(&mut self, value: &T) {
        // Serializing these types to a Value cannot fail (every map key is a string).
        let v = serde_json::to_value(value).unwrap_or_default();
        self.buf.clear();
        write_canonical(&v, &mut self.buf);
        self.sha.update(self.buf.as_bytes());
    }

    fn name(&mut self, name: &str, first: bool) {
        if !first {
            self.raw(",");
        }
        self.buf.clear();
        write_json_string(name, &mut self.buf);
        self.buf.push(':');
        self.sha.update(self.buf.as_bytes());
    }

    fn field<T: Serialize>(&mut self, name: &str, value: &T, first: bool) {
        self.name(name, first);
        self.value(value);
    }

    fn list<T: Serialize>(&mut self, name: &str, items: &[T]) {
        self.name(name, false);
        self.raw("[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.value(item);
        }
        self.raw("]");
    }

    fn finish(self) -> String {
        hex(&self.sha.finalize())
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Encode as pretty JSON or YAML.
///
/// YAML carries values natively, not wrapped: serde-saphyr writes every float with a decimal
/// point or an exponent (`1.0`, `1.0e+300`, `-0.0`), integers up to `u64::MAX` / `i64::MIN`
/// as plain digits, and quotes every string that would read back as another type (`"yes"`,
/// `"007"`, `"null"`, `"1e3"`, `""`), so the parsed YAML is the same JSON data model and
/// verifies to the same checksum (property-tested against arbitrary values). A snapshot nested
/// deeper than [`YAML_MAX_DEPTH`] is written as pretty JSON, which is also valid YAML.
pub fn encode(snapshot: &Snapshot, format: ExportFormat) -> String {
    match format {
        ExportFormat::Json => to_json(snapshot),
        // JSON is valid YAML, and decode reads either: should the YAML serializer ever fail,
        // the export is still a document that restores.
        // The same holds for a snapshot nested deeper than the YAML reader accepts.
        ExportFormat::Yaml if snapshot_depth(snapshot) > YAML_MAX_DEPTH => to_json(snapshot),
        #[cfg(feature = "yaml")]
        ExportFormat::Yaml => {
            serde_saphyr::to_string(snapshot).unwrap_or_else(|_| to_json(snapshot))
        }
        // Without the `yaml` feature (the service worker's build, where the YAML stack would be
        // 40% of the wasm), the document is written as JSON, which is valid YAML; the page
        // module, built with the feature, turns it into block YAML.
        #[cfg(not(feature = "yaml"))]
        ExportFormat::Yaml => to_json(snapshot),
    }
}

/// Nesting depth of the whole document: root mapping, `entities`/`outbox` sequence, item
/// mapping, then the value.
fn snapshot_depth(snapshot: &Snapshot) -> usize {
    let values = snapshot
        .entities
        .iter()
        .map(|e| &e.value)
        .chain(snapshot.outbox.iter().map(|m| &m.value))
        .chain(snapshot.dead.iter().map(|d| &d.record));
    3 + values.map(value_depth).max().unwrap_or(0)
}

/// Nesting depth of a value: a scalar is 0, `[]` is 1, `[[1]]` is 2.
fn value_depth(value: &Value) -> usize {
    // Iterative, so no input can exhaust the stack here.
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(depth + 1);
                stack.extend(items.iter().map(|i| (i, depth + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(depth + 1);
                stack.extend(map.values().map(|i| (i, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

fn to_json(snapshot: &Snapshot) -> String {
    // Serializing these types cannot fail (every map key is a string).
    serde_json::to_string_pretty(snapshot).unwrap_or_default()
}

/// Parse JSON or YAML (detected from the text), then [`verify`]. Refuses text over
/// [`MAX_SNAPSHOT_BYTES`].
///
/// The text is JSON when its first non-whitespace character is `{`, else YAML. The document is
/// read into the JSON data model first, so a foreign document is reported as
/// [`SnapshotError::WrongFormat`] / [`SnapshotError::UnsupportedVersion`] rather than as a
/// parse error.
pub fn decode(text: &str) -> Result<Snapshot, SnapshotError> {
    if text.len() > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::TooLarge {
            limit: MAX_SNAPSHOT_BYTES,
        });
    }
    let body = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    let value: Value = if body.starts_with('{') {
        serde_json::from_str(body).map_err(|e| parse_error(&e))?
    } else {
        decode_yaml(body)?
    };
    let Value::Object(map) = &value else {
        return Err(SnapshotError::Parse(
            "a snapshot is a JSON object / YAML mapping".to_owned(),
        ));
    };
    match map.get("format") {
        Some(Value::String(f)) if f == SNAPSHOT_FORMAT => {}
        Some(Value::String(f)) => return Err(SnapshotError::WrongFormat(f.clone())),
        Some(other) => {
            return Err(SnapshotError::WrongFormat(truncate(
                &other.to_string(),
                100,
            )))
        }
        None => return Err(SnapshotError::WrongFormat(String::new())),
    }
    if let Some(version) = map.get("format_version") {
        match version.as_u64() {
            Some(v) if readable_version(v) => {}
            Some(v) => {
                return Err(SnapshotError::UnsupportedVersion(
                    u32::try_from(v).unwrap_or(u32::MAX),
                ))
            }
            None => {
                return Err(SnapshotError::Parse(format!(
                    "format_version must be an integer, got {version}"
                )))
            }
        }
    }
    let snapshot: Snapshot = serde_json::from_value(value).map_err(|e| parse_error(&e))?;
    verify(&snapshot)?;
    Ok(snapshot)
}

/// Deepest YAML nesting [`decode`] reads (serde-saphyr's default, which protects the stack: the
/// worker has a small one). Counted from the document root, so an entity value may nest
/// `YAML_MAX_DEPTH - 3` levels. [`encode`] writes a deeper snapshot as JSON instead.
pub const YAML_MAX_DEPTH: usize = 64;

#[cfg(feature = "yaml")]
fn decode_yaml(body: &str) -> Result<Value, SnapshotError> {
    serde_saphyr::from_str_with_options(body, yaml_options()).map_err(|e| parse_error(&e))
}

#[cfg(not(feature = "yaml"))]
fn decode_yaml(_body: &str) -> Result<Value, SnapshotError> {
    Err(SnapshotError::Parse(
        "this build reads JSON snapshots only; YAML is converted to JSON by the page module"
            .to_owned(),
    ))
}

/// YAML parser limits: the defaults (depth [`YAML_MAX_DEPTH`]), with node and event counts
/// raised for large snapshots (the text size is already bounded by [`MAX_SNAPSHOT_BYTES`]).
#[cfg(feature = "yaml")]
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = YAML_MAX_DEPTH;
    budget.max_nodes = 20_000_000;
    budget.max_events = 40_000_000;
    options.budget = Some(budget);
    options
}

fn parse_error(e: &dyn std::fmt::Display) -> SnapshotError {
    SnapshotError::Parse(truncate(&e.to_string(), 1000))
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Whether this build reads format version `v`.
fn readable_version(v: u64) -> bool {
    (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(SNAPSHOT_FORMAT_VERSION)).contains(&v)
}

/// Check format, version, algorithm, checksum and counts.
///
/// The checksum value is compared case-insensitively. Counts compare equal when they agree on
/// every collection with at least one live entity (a `0` entry is the same as no entry).
pub fn verify(snapshot: &Snapshot) -> Result<(), SnapshotError> {
    if snapshot.format != SNAPSHOT_FORMAT {
        return Err(SnapshotError::WrongFormat(snapshot.format.clone()));
    }
    if !readable_version(u64::from(snapshot.format_version)) {
        return Err(SnapshotError::UnsupportedVersion(snapshot.format_version));
    }
    if snapshot.format_version < 2
        && (!snapshot.requests.is_empty()
            || !snapshot.dead.is_empty()
            || snapshot.meta.is_some()
            || !snapshot.problems.is_empty()
            || !snapshot.blobs.is_empty())
    {
        return Err(SnapshotError::Parse(
            "a format version 1 snapshot cannot hold requests, dead, meta, problems or blobs"
                .into(),
        ));
    }
    if snapshot.checksum.algorithm != CHECKSUM_ALGORITHM {
        return Err(SnapshotError::UnsupportedAlgorithm(
            snapshot.checksum.algorithm.clone(),
        ));
    }
    let actual = compute_checksum(snapshot);
    if !actual.eq_ignore_ascii_case(&snapshot.checksum.value) {
        return Err(SnapshotError::ChecksumMismatch {
            expected: snapshot.checksum.value.clone(),
            actual,
        });
    }
    let recomputed = live_counts(&snapshot.entities);
    let stated: BTreeMap<&String, &u64> = snapshot.counts.iter().filter(|(_, n)| **n > 0).collect();
    let wanted: BTreeMap<&String, &u64> = recomputed.iter().collect();
    if stated != wanted {
        let mut diffs = Vec::new();
        for name in stated
            .keys()
            .chain(wanted.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let says = stated.get(name).map_or(0, |n| **n);
            let has = wanted.get(name).map_or(0, |n| **n);
            if says != has {
                diffs.push(format!("{name}: says {says}, has {has}"));
            }
        }
        return Err(SnapshotError::CountsMismatch(diffs.join(", ")));
    }
    for blob in &snapshot.blobs {
        blob.bytes()?;
    }
    Ok(())
}

/// One entity named in a restore report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRef {
    pub collection: String,
    pub key: String,
}

/// One entity a restore would not write, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub collection: String,
    pub key: String,
    pub reason: String,
}

/// What a restore would do (dry run) or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestoreReport {
    pub dry_run: bool,
    pub added: Vec<EntityRef>,
    pub replaced: Vec<EntityRef>,
    pub unchanged: Vec<EntityRef>,
    pub refused: Vec<Refusal>,
    /// A client restore: the pending writes, captured requests and dead letters it puts back
    /// under their own `(client_id, seq)` (`crate::requeue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::requeue::RequeueReport>,
    /// A dry run that a real restore would refuse: why (`restore_blocked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// Blobs of the snapshot this device did not hold: put back (and queued for upload), or
    /// in a dry run, that would be.
    #[serde(default)]
    pub blobs_restored: u64,
}

/// Plan a restore of `snapshot` over the current local copy: every snapshot entity is
/// validated (collection, key, value size); one equal to the current is `unchanged`, one
/// absent is `added`, one different is `replaced`, an invalid one is `refused` with the reason.
/// Pure: the caller applies `added` + `replaced` only when not a dry run.
pub fn plan_restore(
    snapshot: &Snapshot,
    current: &dyn Fn(&str, &str) -> Option<Entity>,
    dry_run: bool,
) -> RestoreReport {
    let mut report = RestoreReport {
        dry_run,
        ..RestoreReport::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    for e in &snapshot.entities {
        let entity = EntityRef {
            collection: e.collection.clone(),
            key: e.key.clone(),
        };
        if let Err(reason) = check_entity(e) {
            report.refused.push(Refusal {
                collection: entity.collection,
                key: entity.key,
                reason,
            });
            continue;
        }
        if !seen.insert((e.collection.as_str(), e.key.as_str())) {
            report.refused.push(Refusal {
                collection: entity.collection,
                key: entity.key,
                reason: "the snapshot holds this entity more than once".to_owned(),
            });
            continue;
        }
        match current(&e.collection, &e.key) {
            // A tombstone for something we never had changes nothing.
            None if e.deleted => report.unchanged.push(entity),
            None => report.added.push(entity),
            Some(cur) if cur.deleted == e.deleted && cur.value == e.value => {
                report.unchanged.push(entity);
            }
            Some(_) => report.replaced.push(entity),
        }
    }
    report
}

/// Why one snapshot entity cannot be restored, if it cannot.
fn check_entity(e: &Entity) -> Result<(), String> {
    validate_collection(&e.collection).map_err(|err| err.to_string())?;
    validate_key(&e.key).map_err(|err| err.to_string())?;
    if e.deleted && !e.value.is_null() {
        return Err(ValidationError::DeleteWithValue.to_string());
    }
    validate_value(&e.value).map_err(|err| err.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::Op;

    fn entity(collection: &str, key: &str, value: Value, deleted: bool) -> Entity {
        Entity {
            collection: collection.into(),
            key: key.into(),
            value,
            deleted,
            updated_at: 1_764_000_000_000,
            version: 3,
        }
    }

    fn mutation(seq: u64, value: Value) -> Mutation {
        Mutation {
            client_id: "c1".into(),
            seq,
            collection: "notes".into(),
            key: format!("k{seq}"),
            op: Op::Put,
            value,
            updated_at: 1_764_000_000_001,
        }
    }

    /// Values that trip up YAML and number handling.
    fn awkward_values() -> Vec<Value> {
        vec![
            json!(0.1),
            json!(1e300),
            json!(-1e-300),
            json!(1.0),
            json!(-0.0),
            json!(2.5e-8),
            json!(123_456_789.125),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
            // serde_json parses these 1 ULP off unless its float_roundtrip feature is on.
            json!(-9.687_297_544_939_433e-89),
            json!(1.480_053_561_484_057_2e225),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(0),
            json!(-1),
            json!("yes"),
            json!("no"),
            json!("on"),
            json!("off"),
            json!("y"),
            json!("n"),
            json!("true"),
            json!("False"),
            json!("007"),
            json!("0x1F"),
            json!("0o17"),
            json!("1_000"),
            json!("null"),
            json!("Null"),
            json!("~"),
            json!("1e3"),
            json!("1.0"),
            json!(".5"),
            json!("-.inf"),
            json!(".nan"),
            json!("12:30:45"),
            json!("2026-11-25"),
            json!(""),
            json!(" leading and trailing "),
            json!("line1\nline2\n"),
            json!("tab\there"),
            json!("quote \" and ' and \\ backslash"),
            json!("- looks like a list"),
            json!("key: value"),
            json!("# not a comment"),
            json!("&anchor *alias !tag %directive @at `tick"),
            json!("---"),
            json!("..."),
            json!("[not, a, list]"),
            json!("{not: a map}"),
            json!("unicode ✓ é 中文 😀 \u{0} \u{7f} \u{85} \u{2028} \u{feff}"),
            json!(null),
            json!(true),
            json!(false),
            json!([]),
            json!({}),
            json!([[], [[]], {}, [{}], [null, 1, "1", 1.5, true]]),
            json!({"1": "one", "true": 1, "null": null, "": "empty key", "a: b": 1, "- x": 2, "#": 3, "é": 4, "y": "yes", "007": 7}),
            json!({"nested": {"deeper": {"deepest": [1, {"x": [0.1, "0.1"]}]}}}),
        ]
    }

    fn sample() -> Snapshot {
        let mut entities: Vec<Entity> = awkward_values()
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                entity(
                    if i % 2 == 0 { "notes" } else { "settings" },
                    &format!("k{i:03}"),
                    v,
                    false,
                )
            })
            .collect();
        entities.push(entity("notes", "gone", Value::Null, true));
        entities.push(entity("trash", "only-tombstone", Value::Null, true));
        entities.reverse();
        let outbox = vec![
            mutation(9, json!({"v": 1.0, "s": "yes"})),
            mutation(2, json!(u64::MAX)),
        ];
        build(
            SnapshotSource::Client,
            Some("c1".into()),
            "1.2.3",
            1_764_000_000_000,
            entities,
            outbox,
        )
    }

    #[test]
    fn error_codes_are_bad_snapshot_except_a_checksum_mismatch() {
        let mismatch = SnapshotError::ChecksumMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        assert_eq!(mismatch.code(), "checksum_mismatch");
        for e in [
            SnapshotError::TooLarge { limit: 1 },
            SnapshotError::Parse("x".into()),
            SnapshotError::WrongFormat("x".into()),
            SnapshotError::UnsupportedVersion(2),
            SnapshotError::UnsupportedAlgorithm("md5".into()),
            SnapshotError::CountsMismatch("x".into()),
        ] {
            assert_eq!(e.code(), "bad_snapshot", "{e:?}");
        }
    }

    #[test]
    fn build_sorts_entities_and_outbox_counts_live_entities_and_signs_the_result() {
        let s = sample();
        assert_eq!(s.format, SNAPSHOT_FORMAT);
        assert_eq!(s.format_version, SNAPSHOT_FORMAT_VERSION);
        assert_eq!(s.checksum.algorithm, "sha256");
        assert_eq!(s.checksum.value.len(), 64);
        assert!(s
            .checksum
            .value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let keys: Vec<(&str, &str)> = s
            .entities
            .iter()
            .map(|e| (e.collection.as_str(), e.key.as_str()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert_eq!(
            s.outbox.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![2, 9]
        );
        let n = awkward_values().len() as u64;
        let expected: BTreeMap<String, u64> = [
            ("notes".to_owned(), n.div_ceil(2)),
            ("settings".to_owned(), n / 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            s.counts, expected,
            "tombstones are not counted; a collection of only tombstones is absent"
        );
        assert_eq!(verify(&s), Ok(()));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_has_no_whitespace() {
        let v = json!({"b": {"z": 1, "a": [ {"y": null, "x": "s p"} ]}, "a": 1.0, "A": -0.0, "é": "\n"});
        assert_eq!(
            canonical_json(&v),
            r#"{"A":-0.0,"a":1.0,"b":{"a":[{"x":"s p","y":null}],"z":1},"é":"\n"}"#
        );
        assert_eq!(canonical_json(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(canonical_json(&json!(i64::MIN)), "-9223372036854775808");
        assert_eq!(canonical_json(&json!("\u{1}")), r#""\u0001""#);
    }

    #[test]
    fn canonical_json_parses_back_to_the_same_value() {
        for v in awkward_values() {
            let back: Value = serde_json::from_str(&canonical_json(&v)).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn the_checksum_is_sha256_of_the_canonical_document_without_its_checksum() {
        let s = sample();
        let mut v = serde_json::to_value(&s).unwrap();
        v.as_object_mut().unwrap().remove("checksum");
        assert_eq!(s.checksum.value, sha256_hex(canonical_json(&v).as_bytes()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut other = s.clone();
        other.checksum.value = "ignored".into();
        assert_eq!(
            compute_checksum(&other),
            s.checksum.value,
            "the checksum field itself is not hashed"
        );
    }

    /// The checksum as first defined: the canonical JSON of the whole document as one value.
    fn checksum_of_the_whole_value(snapshot: &Snapshot) -> String {
        let mut value = serde_json::to_value(snapshot).unwrap();
        value.as_object_mut().unwrap().remove("checksum");
        sha256_hex(canonical_json(&value).as_bytes())
    }

    #[test]
    fn the_streamed_checksum_equals_the_hash_of_the_whole_canonical_document() {
        let mut empty = sample();
        empty.entities.clear();
        empty.outbox.clear();
        empty.counts.clear();
        empty.client_id = None;
        for snap in [sample(), full(), empty] {
            assert_eq!(compute_checksum(&snap), checksum_of_the_whole_value(&snap));
        }
        let v1: Snapshot = serde_json::from_str(V1_DOCUMENT).unwrap();
        assert_eq!(compute_checksum(&v1), v1.checksum.value);
    }

    #[test]
    fn a_json_export_decodes_to_the_same_snapshot() {
        let s = sample();
        let text = encode(&s, ExportFormat::Json);
        assert!(text.trim_start().starts_with('{'));
        assert_eq!(decode(&text), Ok(s));
    }

    #[test]
    fn a_yaml_export_decodes_to_the_same_snapshot_with_the_same_checksum() {
        let s = sample();
        let text = encode(&s, ExportFormat::Yaml);
        assert!(
            !text.trim_start().starts_with('{'),
            "a real YAML document: {}",
            &text[..200]
        );
        let back = decode(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.checksum.value, s.checksum.value);
        assert_eq!(compute_checksum(&back), s.checksum.value);
        assert_eq!(back, s);
    }

    #[test]
    fn every_awkward_value_survives_yaml_one_by_one() {
        for v in awkward_values() {
            let s = build(
                SnapshotSource::Server,
                None,
                "v",
                0,
                vec![entity("c", "k", v.clone(), false)],
                vec![],
            );
            let text = encode(&s, ExportFormat::Yaml);
            match decode(&text) {
                Ok(back) => assert_eq!(back.entities[0].value, v, "{text}"),
                Err(e) => panic!("{v}: {e}\n{text}"),
            }
        }
    }

    #[test]
    fn a_tampered_json_export_fails_with_a_checksum_mismatch() {
        let text = encode(&sample(), ExportFormat::Json).replacen("\"yes\"", "\"no!\"", 1);
        let err = decode(&text).unwrap_err();
        assert!(
            matches!(err, SnapshotError::ChecksumMismatch { .. }),
            "{err:?}"
        );
        assert_eq!(err.code(), "checksum_mismatch");
    }

    #[test]
    fn a_tampered_yaml_export_fails_with_a_checksum_mismatch() {
        let text = encode(&sample(), ExportFormat::Yaml).replacen("1.2.3", "1.2.4", 1);
        assert!(matches!(
            decode(&text),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn a_float_turned_into_an_integer_is_a_different_document() {
        let s = build(
            SnapshotSource::Client,
            None,
            "v",
            0,
            vec![entity("c", "k", json!(1.0), false)],
            vec![],
        );
        let text = encode(&s, ExportFormat::Json);
        assert!(text.contains("1.0"));
        let tampered = text.replacen("1.0", "1", 1);
        assert!(matches!(
            decode(&tampered),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn an_uppercase_checksum_still_verifies() {
        let mut s = sample();
        s.checksum.value = s.checksum.value.to_ascii_uppercase();
        assert_eq!(verify(&s), Ok(()));
    }

    #[test]
    fn a_foreign_format_is_refused_before_anything_else() {
        assert_eq!(
            decode(r#"{"format":"other","x":1}"#),
            Err(SnapshotError::WrongFormat("other".into()))
        );
        assert_eq!(
            decode("format: other\n"),
            Err(SnapshotError::WrongFormat("other".into()))
        );
        assert!(matches!(
            decode(r#"{"x":1}"#),
            Err(SnapshotError::WrongFormat(_))
        ));
        assert!(matches!(
            decode(r#"{"format":5}"#),
            Err(SnapshotError::WrongFormat(_))
        ));
        let mut s = sample();
        s.format = "nope".into();
        assert_eq!(verify(&s), Err(SnapshotError::WrongFormat("nope".into())));
    }

    #[test]
    fn a_newer_format_version_is_refused() {
        let text = encode(&sample(), ExportFormat::Json).replacen(
            "\"format_version\": 2",
            "\"format_version\": 3",
            1,
        );
        assert_eq!(decode(&text), Err(SnapshotError::UnsupportedVersion(3)));
        let text = encode(&sample(), ExportFormat::Json).replacen(
            "\"format_version\": 2",
            "\"format_version\": 99999999999",
            1,
        );
        assert_eq!(
            decode(&text),
            Err(SnapshotError::UnsupportedVersion(u32::MAX))
        );
        let mut s = sample();
        s.format_version = 0;
        assert_eq!(verify(&s), Err(SnapshotError::UnsupportedVersion(0)));
    }

    #[test]
    fn an_unknown_checksum_algorithm_is_refused() {
        let mut s = sample();
        s.checksum.algorithm = "md5".into();
        assert_eq!(
            verify(&s),
            Err(SnapshotError::UnsupportedAlgorithm("md5".into()))
        );
    }

    #[test]
    fn counts_that_disagree_with_the_entities_are_refused() {
        let mut s = sample();
        s.counts.insert("notes".into(), 1);
        s.checksum.value = compute_checksum(&s);
        let err = verify(&s).unwrap_err();
        assert!(
            matches!(&err, SnapshotError::CountsMismatch(m) if m.starts_with("notes: says 1, has ")),
            "{err:?}"
        );
        let mut s = sample();
        s.counts.insert("ghosts".into(), 2);
        s.checksum.value = compute_checksum(&s);
        assert!(matches!(verify(&s), Err(SnapshotError::CountsMismatch(_))));
    }

    #[test]
    fn a_zero_count_for_an_empty_collection_is_accepted() {
        let mut s = sample();
        s.counts.insert("trash".into(), 0);
        s.checksum.value = compute_checksum(&s);
        assert_eq!(verify(&s), Ok(()));
    }

    #[test]
    fn truncated_text_is_a_parse_error() {
        for format in [ExportFormat::Json, ExportFormat::Yaml] {
            let text = encode(&sample(), format);
            for cut in [text.len() / 2, text.len() - 10] {
                let mut cut = cut;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let err = decode(&text[..cut]).unwrap_err();
                assert!(
                    matches!(
                        err,
                        SnapshotError::Parse(_) | SnapshotError::ChecksumMismatch { .. }
                    ),
                    "{format:?} cut at {cut}: {err:?}"
                );
            }
        }
        let json = encode(&sample(), ExportFormat::Json);
        assert!(matches!(
            decode(&json[..json.len() / 2]),
            Err(SnapshotError::Parse(_))
        ));
    }

    #[test]
    fn garbage_is_a_parse_error_and_never_a_panic() {
        for text in [
            "",
            "   ",
            "{",
            "[1,2]",
            "42",
            "\"str\"",
            "- a\n- b\n",
            ": : :",
            "{\"format\":",
            "\u{feff}",
            "a: [",
            "\t\0",
        ] {
            let err = decode(text).unwrap_err();
            assert!(
                matches!(err, SnapshotError::Parse(_) | SnapshotError::WrongFormat(_)),
                "{text:?}: {err:?}"
            );
        }
    }

    /// A snapshot written by the version-1 format (before requests, dead letters and meta).
    const V1_DOCUMENT: &str = include_str!("../tests/fixtures/snapshot-v1.json");

    #[test]
    fn a_version_1_snapshot_still_decodes_verifies_and_plans_its_restore() {
        let snap = decode(V1_DOCUMENT).expect("a v1 snapshot is still readable");
        assert_eq!(snap.format_version, 1);
        assert_eq!(snap.entities.len(), 2);
        assert_eq!(snap.outbox.len(), 1);
        assert!(snap.requests.is_empty() && snap.dead.is_empty() && snap.meta.is_none());
        let report = plan_restore(&snap, &|_, _| None, true);
        assert_eq!(report.added.len(), 1);
        // Tampered, it is still caught.
        let tampered = V1_DOCUMENT.replacen("kept since v1", "kept since v2", 1);
        assert_eq!(decode(&tampered).unwrap_err().code(), "checksum_mismatch");
    }

    #[test]
    fn a_version_1_snapshot_carrying_version_2_fields_is_refused() {
        let mut v: Value = serde_json::from_str(V1_DOCUMENT).unwrap();
        v["problems"] = json!([{ "store": "entities", "key": "x", "reason": "y" }]);
        let mut snap: Snapshot = serde_json::from_value(v).unwrap();
        snap.checksum.value = compute_checksum(&snap);
        assert!(matches!(verify(&snap), Err(SnapshotError::Parse(_))));
    }

    fn full() -> Snapshot {
        build_with(
            SnapshotSource::Client,
            Some("c1".into()),
            "1.2.3",
            1_764_000_000_000,
            vec![entity("notes", "a", json!({"t": 1}), false)],
            vec![mutation(5, json!({"t": 2}))],
            Extras {
                requests: vec![
                    PendingRequest {
                        seq: 7,
                        created_at: 1,
                        method: "POST".into(),
                        url: "http://x/api/sync/chat".into(),
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: b"{\"m\":\"hi\"}".to_vec(),
                        redacted: Vec::new(),
                    },
                    PendingRequest {
                        seq: 6,
                        created_at: 1,
                        method: "PUT".into(),
                        url: "http://x/api/sync/settings".into(),
                        headers: vec![],
                        body: vec![0, 255, 10],
                        redacted: Vec::new(),
                    },
                ],
                dead: vec![DeadLetterCopy {
                    seq: 3,
                    reason: "rejected: too big".into(),
                    dead_at: 2,
                    attempts: 1,
                    record: json!({"seq": 3, "kind": "mutation", "value": {"deep": [1, [2]]}}),
                    redacted: Vec::new(),
                }],
                meta: Some(SnapshotMeta {
                    next_seq: 8,
                    cursor: "42".into(),
                    last_synced_at: Some(3),
                }),
                problems: vec![Problem {
                    store: "entities".into(),
                    key: "[\"notes\",\"bad\"]".into(),
                    reason: "corrupt record: missing field `updated_at`".into(),
                }],
                blobs: vec![BlobCopy::new(
                    sha256_hex(b"test"),
                    "text/plain".into(),
                    b"test",
                )],
            },
        )
    }

    #[test]
    fn a_blob_copy_whose_bytes_do_not_match_its_hash_or_size_is_refused() {
        let mut snap = full();
        assert_eq!(snap.blobs[0].bytes().unwrap(), b"test");
        assert_eq!(verify(&snap), Ok(()));
        snap.blobs[0].data = BlobCopy::new(String::new(), String::new(), b"tesT").data;
        snap.checksum.value = compute_checksum(&snap);
        assert!(matches!(verify(&snap), Err(SnapshotError::Parse(m)) if m.contains("hash")));
        let mut snap = full();
        snap.blobs[0].size = 5;
        snap.checksum.value = compute_checksum(&snap);
        assert!(matches!(verify(&snap), Err(SnapshotError::Parse(m)) if m.contains("bytes")));
        let mut snap = full();
        snap.blobs[0].data = "!!".into();
        snap.checksum.value = compute_checksum(&snap);
        assert!(matches!(verify(&snap), Err(SnapshotError::Parse(m)) if m.contains("base64")));
    }

    #[test]
    fn requests_dead_letters_meta_and_problems_round_trip_through_json_and_yaml_with_one_checksum()
    {
        let snap = full();
        assert_eq!(snap.format_version, 2);
        assert_eq!(
            snap.requests.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [6, 7],
            "in seq order"
        );
        let json = encode(&snap, ExportFormat::Json);
        assert_eq!(decode(&json).unwrap(), snap);
        #[cfg(feature = "yaml")]
        {
            let yaml = encode(&snap, ExportFormat::Yaml);
            assert!(!yaml.trim_start().starts_with('{'));
            assert_eq!(decode(&yaml).unwrap(), snap);
        }
        let tampered = json.replacen("too big", "too small", 1);
        assert_eq!(decode(&tampered).unwrap_err().code(), "checksum_mismatch");
    }

    #[test]
    fn a_document_with_an_unknown_field_is_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().insert("extra".into(), json!(1));
        assert!(matches!(
            decode(&v.to_string()),
            Err(SnapshotError::Parse(_))
        ));
    }

    #[test]
    fn text_over_the_limit_is_refused_without_parsing() {
        let text = " ".repeat(MAX_SNAPSHOT_BYTES + 1);
        assert_eq!(
            decode(&text),
            Err(SnapshotError::TooLarge {
                limit: MAX_SNAPSHOT_BYTES
            })
        );
    }

    #[test]
    fn leading_whitespace_and_a_byte_order_mark_are_ignored() {
        let s = sample();
        assert_eq!(
            decode(&format!("\u{feff}\n  {}", encode(&s, ExportFormat::Json))),
            Ok(s.clone())
        );
        assert_eq!(
            decode(&format!("\u{feff}{}", encode(&s, ExportFormat::Yaml))),
            Ok(s)
        );
    }

    fn nested(levels: usize) -> Value {
        let mut v = json!("leaf");
        for i in 0..levels {
            // Not `json!`, which would re-serialize `v` at every level.
            v = if i % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Object([("n".to_owned(), v)].into_iter().collect())
            };
        }
        v
    }

    #[test]
    fn value_depth_counts_containers() {
        assert_eq!(value_depth(&json!(1)), 0);
        assert_eq!(value_depth(&json!([])), 1);
        assert_eq!(value_depth(&json!([1, {"a": [[]]}])), 4);
        assert_eq!(value_depth(&nested(50)), 50);
    }

    #[test]
    fn a_value_nested_as_deep_as_yaml_allows_round_trips_as_yaml() {
        let s = build(
            SnapshotSource::Client,
            None,
            "v",
            0,
            vec![entity("c", "k", nested(YAML_MAX_DEPTH - 3), false)],
            vec![],
        );
        let yaml = encode(&s, ExportFormat::Yaml);
        assert!(!yaml.starts_with('{'));
        assert_eq!(decode(&yaml), Ok(s.clone()));
        assert_eq!(decode(&encode(&s, ExportFormat::Json)), Ok(s));
    }

    #[test]
    fn a_value_nested_deeper_than_yaml_allows_is_exported_as_json_and_still_restores() {
        let s = build(
            SnapshotSource::Client,
            None,
            "v",
            0,
            vec![entity("c", "k", nested(YAML_MAX_DEPTH), false)],
            vec![],
        );
        let exported = encode(&s, ExportFormat::Yaml);
        assert!(exported.starts_with('{'));
        assert_eq!(decode(&exported), Ok(s));
    }

    #[test]
    fn hostile_nesting_is_a_parse_error_and_never_a_stack_overflow() {
        let json = format!(
            "{{\"format\":\"rangersync-snapshot\",\"x\":{}",
            "[".repeat(100_000)
        );
        assert!(matches!(decode(&json), Err(SnapshotError::Parse(_))));
        let yaml = format!("format: rangersync-snapshot\nx: {}", "[".repeat(100_000));
        assert!(matches!(decode(&yaml), Err(SnapshotError::Parse(_))));
        let block: String = (1..200)
            .map(|i| format!("{}- \n", " ".repeat(i * 2)))
            .collect();
        let yaml = format!("format: rangersync-snapshot\nx:\n{block}");
        assert!(matches!(decode(&yaml), Err(SnapshotError::Parse(_))));
    }

    #[test]
    fn a_dry_run_classifies_added_replaced_unchanged_and_refused() {
        let entities = vec![
            entity("notes", "same", json!({"a": 1}), false),
            entity("notes", "changed", json!({"a": 2}), false),
            entity("notes", "new", json!("n"), false),
            entity("notes", "tomb-unknown", Value::Null, true),
            entity("notes", "tomb-live", Value::Null, true),
            entity("notes", "tomb-tomb", Value::Null, true),
            entity("notes", "float", json!(1.0), false),
            entity("Bad Collection", "k", json!(1), false),
            entity("notes", "", json!(1), false),
            entity(
                "notes",
                "big",
                Value::String("x".repeat(crate::validate::MAX_VALUE_BYTES)),
                false,
            ),
            entity("notes", "dead-with-value", json!(1), true),
        ];
        let s = build(SnapshotSource::Client, None, "v", 0, entities, vec![]);
        let current = |c: &str, k: &str| -> Option<Entity> {
            match (c, k) {
                ("notes", "same") => Some(entity(c, k, json!({"a": 1}), false)),
                ("notes", "changed") => Some(entity(c, k, json!({"a": 1}), false)),
                ("notes", "tomb-live") => Some(entity(c, k, json!(5), false)),
                ("notes", "tomb-tomb") => Some(entity(c, k, Value::Null, true)),
                ("notes", "float") => Some(entity(c, k, json!(1), false)),
                _ => None,
            }
        };
        let report = plan_restore(&s, &current, true);
        let names = |refs: &[EntityRef]| refs.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
        assert!(report.dry_run);
        assert_eq!(names(&report.added), vec!["new"]);
        assert_eq!(
            names(&report.replaced),
            vec!["changed", "float", "tomb-live"]
        );
        assert_eq!(
            names(&report.unchanged),
            vec!["same", "tomb-tomb", "tomb-unknown"]
        );
        let refused: Vec<(&str, &str)> = report
            .refused
            .iter()
            .map(|r| (r.key.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert!(
            refused.contains(&(
                "k",
                "collection \"Bad Collection\" must match [a-z0-9_-]{1,64}"
            )),
            "{refused:?}"
        );
        assert!(refused.contains(&("", "key must be 1 to 256 UTF-8 bytes (got 0)")));
        assert!(refused
            .iter()
            .any(|(k, r)| *k == "big" && r.starts_with("value exceeds 1 MiB")));
        assert!(refused.contains(&("dead-with-value", "a delete carries no value")));
    }

    #[test]
    fn a_real_restore_reports_the_same_plan_without_the_dry_run_flag() {
        let s = sample();
        let none = |_: &str, _: &str| None;
        let dry = plan_restore(&s, &none, true);
        let real = plan_restore(&s, &none, false);
        assert!(!real.dry_run);
        assert_eq!(
            RestoreReport {
                dry_run: true,
                ..real
            },
            dry
        );
        assert_eq!(dry.added.len(), awkward_values().len());
        assert_eq!(
            dry.unchanged.len(),
            2,
            "tombstones of unknown entities change nothing"
        );
    }

    #[test]
    fn an_entity_listed_twice_is_refused_the_second_time() {
        let mut s = build(
            SnapshotSource::Client,
            None,
            "v",
            0,
            vec![entity("c", "k", json!(1), false)],
            vec![],
        );
        s.entities.push(entity("c", "k", json!(2), false));
        let report = plan_restore(&s, &|_: &str, _: &str| None, true);
        assert_eq!(report.added.len(), 1);
        assert_eq!(report.refused.len(), 1);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<u64>().prop_map(|n| json!(n)),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>()
                    .prop_filter("JSON numbers are finite", |f| f.is_finite())
                    .prop_map(|f| json!(f)),
                any::<String>().prop_map(Value::String),
                "[ -~]{0,12}".prop_map(Value::String),
                prop::sample::select(vec![
                    "yes", "No", "ON", "~", "null", "True", "0x10", "0o7", "1_0", ".inf", "-.NaN",
                    "+1", "1e5", "00", "-0", "0.", "=", "<<", "? x", "!!str"
                ])
                .prop_map(|s| Value::String(s.to_owned())),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(any::<String>(), inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn json_and_yaml_exports_of_any_values_verify_to_the_same_checksum(
                values in prop::collection::vec(any_value(), 1..5)
            ) {
                let entities = values.into_iter().enumerate().map(|(i, v)| entity("c", &format!("k{i}"), v, false)).collect();
                let s = build(SnapshotSource::Client, Some("c1".into()), "v", 0, entities, vec![mutation(1, json!(0.5))]);
                let from_json = decode(&encode(&s, ExportFormat::Json));
                prop_assert_eq!(from_json.as_ref(), Ok(&s));
                let yaml = encode(&s, ExportFormat::Yaml);
                let from_yaml = decode(&yaml);
                prop_assert_eq!(from_yaml.as_ref(), Ok(&s), "{}", yaml);
                prop_assert_eq!(compute_checksum(&s), checksum_of_the_whole_value(&s));
            }

            #[test]
            fn any_float_survives_both_formats(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
                let s = build(SnapshotSource::Server, None, "v", 0, vec![entity("c", "k", json!(f), false)], vec![]);
                prop_assert_eq!(decode(&encode(&s, ExportFormat::Json)), Ok(s.clone()));
                prop_assert_eq!(decode(&encode(&s, ExportFormat::Yaml)), Ok(s));
            }

            #[test]
            fn decoding_arbitrary_text_never_panics(text in any::<String>()) {
                let _ = decode(&text);
            }
        }
    }
}
