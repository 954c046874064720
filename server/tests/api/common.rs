//! Helpers: a server on a free port with its own fresh database (a SQLite file in a temp
//! folder, or a new PostgreSQL database, as the test binary's [`crate::BACKEND`] says), and
//! request builders.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rangersync_server::{start, test_postgres, DbLocation, RunningServer, ServerOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The database a test binary runs the protocol tests against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A new empty database of the test binary's backend (`dir` holds a SQLite file).
pub async fn fresh_db(dir: &TempDir) -> DbLocation {
    match crate::BACKEND {
        // A directory that does not exist yet: start() must create it.
        Backend::Sqlite => DbLocation::Sqlite(dir.path().join("data").join("rangersync.db")),
        Backend::Postgres => DbLocation::Postgres(
            test_postgres::fresh_database()
                .await
                .unwrap_or_else(|e| panic!("the PostgreSQL protocol tests need PostgreSQL: {e}")),
        ),
    }
}

/// A fresh directory under the system temp dir; removed when the [`TempDir`] drops.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir()
            .join("rangersync-server-tests")
            .join(format!("{name}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server with its own database.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub opts: ServerOptions,
    pub url: String,
    pub http: reqwest::Client,
    /// Holds the database until the test ends.
    pub _dir: TempDir,
    /// Holds the key files of [`TestServer::with_users`].
    pub keys: Option<TempDir>,
}

impl TestServer {
    /// Test endpoints on, no www, no auth, no CORS; `tweak` changes anything.
    pub async fn start(name: &str, tweak: impl FnOnce(&mut ServerOptions)) -> Self {
        let dir = TempDir::new(name);
        let mut opts = ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: fresh_db(&dir).await,
            db_pool: 4,
            www: None,
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            insecure_no_auth: false,
            token: None,
            test_endpoints: true,
            max_clock_skew_ms: rangersync_shared::conflict::DEFAULT_MAX_CLOCK_SKEW_MS,
            keep_backups: rangersync_server::config::DEFAULT_KEEP_BACKUPS,
            // SQLite keeps blobs beside its file by default; PostgreSQL needs a store (one
            // directory, which a second instance of the same options shares).
            blob_dir: match crate::BACKEND {
                Backend::Sqlite => None,
                Backend::Postgres => Some(dir.path().join("blobs")),
            },
            // No tokens file, no JWT keys (RANGERSYNC_TOKENS_FILE is read only by the CLI).
            ..ServerOptions::default()
        };
        tweak(&mut opts);
        let server = start(opts.clone()).await.expect("server starts");
        let url = server.url();
        Self {
            server: Some(server),
            opts,
            url,
            http: reqwest::Client::new(),
            _dir: dir,
            keys: None,
        }
    }

    pub async fn default(name: &str) -> Self {
        Self::start(name, |_| {}).await
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Another server on the same database, as a second instance behind a load balancer.
    pub async fn another_instance(&self) -> Self {
        let mut opts = self.opts.clone();
        opts.listen = "127.0.0.1:0".parse().unwrap();
        let server = start(opts.clone()).await.expect("a second instance starts");
        Self {
            url: server.url(),
            server: Some(server),
            opts,
            http: reqwest::Client::new(),
            _dir: TempDir::new("instance"),
            keys: None,
        }
    }

    /// Stop, then start again on the same address with the same database.
    pub async fn restart(&mut self) {
        let old = self.server.take().unwrap();
        let addr = old.addr();
        old.stop().await;
        let mut opts = self.opts.clone();
        opts.listen = addr;
        let server = start(opts).await.expect("server restarts on the same port");
        assert_eq!(server.addr(), addr);
        self.url = server.url();
        self.server = Some(server);
        self.http = reqwest::Client::new();
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.at(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.at(path)).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Push and expect a 200; returns the results.
    pub async fn push_ok(&self, client_id: &str, mutations: Vec<Value>) -> Vec<Value> {
        let (status, body) = self.push(client_id, mutations).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["server_time"].as_i64().unwrap() > 0);
        body["results"].as_array().unwrap().clone()
    }

    pub async fn push(&self, client_id: &str, mutations: Vec<Value>) -> (StatusCode, Value) {
        self.post_json(
            "/api/sync/push",
            &json!({ "client_id": client_id, "mutations": mutations }),
        )
        .await
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.get_json("/api/test/stats").await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    pub async fn mutations_of(&self, client_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&format!("/api/test/mutations?client_id={client_id}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        body["mutations"].as_array().unwrap().clone()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}

/// A put mutation.
pub fn put(client: &str, seq: u64, key: &str, value: Value, updated_at: i64) -> Value {
    json!({ "client_id": client, "seq": seq, "collection": "notes", "key": key,
            "op": "put", "value": value, "updated_at": updated_at })
}

/// A delete mutation.
pub fn delete(client: &str, seq: u64, key: &str, updated_at: i64) -> Value {
    json!({ "client_id": client, "seq": seq, "collection": "notes", "key": key,
            "op": "delete", "value": null, "updated_at": updated_at })
}

/// The `status` of each result.
pub fn statuses(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

/// The `error.code` of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

pub const T0: i64 = 1_764_000_000_000;

/// An entity of a snapshot in collection `notes`.
pub fn snap_entity(key: &str, value: Value, deleted: bool) -> rangersync_shared::protocol::Entity {
    rangersync_shared::protocol::Entity {
        collection: "notes".to_owned(),
        key: key.to_owned(),
        value,
        deleted,
        updated_at: T0,
        version: 1,
    }
}

/// A client's snapshot (with `pending` outbox entries of that client), as its worker builds it.
pub fn client_snapshot(
    client_id: &str,
    exported_at: i64,
    entities: Vec<rangersync_shared::protocol::Entity>,
    pending: usize,
) -> rangersync_shared::snapshot::Snapshot {
    let outbox = (1..=pending as u64)
        .map(|seq| {
            serde_json::from_value(put(client_id, seq, &format!("p{seq}"), json!(seq), T0)).unwrap()
        })
        .collect();
    rangersync_shared::snapshot::build(
        rangersync_shared::snapshot::SnapshotSource::Client,
        Some(client_id.to_owned()),
        "test",
        exported_at,
        entities,
        outbox,
    )
}

/// The JSON text of a snapshot.
pub fn json_of(snap: &rangersync_shared::snapshot::Snapshot) -> String {
    rangersync_shared::snapshot::encode(snap, rangersync_shared::messages::ExportFormat::Json)
}

/// The YAML text of a snapshot.
pub fn yaml_of(snap: &rangersync_shared::snapshot::Snapshot) -> String {
    rangersync_shared::snapshot::encode(snap, rangersync_shared::messages::ExportFormat::Yaml)
}

impl TestServer {
    /// POST a text body with a content type; the status, the headers and the JSON answer.
    pub async fn post_text(
        &self,
        path: &str,
        text: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .post(self.at(path))
            .header("content-type", content_type)
            .body(text)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    /// Upload a backup as JSON; the status and the answer.
    pub async fn upload(&self, text: String) -> (StatusCode, Value) {
        let (status, _, body) = self
            .post_text("/api/backups", text, "application/json")
            .await;
        (status, body)
    }

    /// The backup list at `query` (`""` for all), expecting a 200.
    pub async fn backups(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.get_json(&format!("/api/backups{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().unwrap().clone()
    }

    /// Every change after `since`, following `has_more`; with the final cursor.
    pub async fn pull_all(&self, since: &str) -> (Vec<Value>, String) {
        let mut cursor = since.to_owned();
        let mut changes = Vec::new();
        loop {
            let (status, page) = self
                .get_json(&format!("/api/sync/pull?since={cursor}&limit=1000"))
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            changes.extend(page["changes"].as_array().unwrap().iter().cloned());
            cursor = page["cursor"].as_str().unwrap().to_owned();
            if !page["has_more"].as_bool().unwrap() {
                return (changes, cursor);
            }
        }
    }
}

/// The tokens file of the users tests: two users and an admin.
pub const TOKENS_FILE: &str = "# test users\n\
    alice-token-0123456789 alice\n\
    bob-token-0123456789 bob\n\
    root-token-0123456789 root admin\n";

/// The HS256 secret of the JWT tests (at least 32 bytes).
pub const HS256_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

/// The Ed25519 key pair of the JWT tests (`tests/fixtures`), and another one.
pub const ED25519_PRIVATE: &str = include_str!("../fixtures/ed25519-private.pem");
pub const ED25519_PUBLIC: &str = include_str!("../fixtures/ed25519-public.pem");
pub const ED25519_OTHER_PRIVATE: &str = include_str!("../fixtures/ed25519-other-private.pem");

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 JWT with these claims.
pub fn hs256_jwt(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// An EdDSA JWT with these claims, signed with a PEM private key.
pub fn eddsa_jwt(claims: &Value, private_pem: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Claims of a user's JWT valid for an hour.
pub fn user_claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": unix_now() + 3600 })
}

impl TestServer {
    /// A server whose users come from [`TOKENS_FILE`] and from JWTs ([`HS256_SECRET`] and
    /// [`ED25519_PUBLIC`]); `tweak` changes anything else.
    pub async fn with_users(name: &str, tweak: impl FnOnce(&mut ServerOptions)) -> Self {
        let keys = TempDir::new(&format!("{name}-keys"));
        let tokens = keys.path().join("tokens");
        std::fs::write(&tokens, TOKENS_FILE).unwrap();
        let secret = keys.path().join("hs256.secret");
        std::fs::write(&secret, format!("{HS256_SECRET}\n")).unwrap();
        let public = keys.path().join("ed25519.pem");
        std::fs::write(&public, ED25519_PUBLIC).unwrap();
        let mut s = Self::start(name, |o| {
            o.tokens_file = Some(tokens);
            o.jwt_hs256_secret_file = Some(secret);
            o.jwt_public_key_file = Some(public);
            tweak(o);
        })
        .await;
        // The key files live as long as the server.
        s.keys = Some(keys);
        s
    }

    /// The same server, every request carrying `Authorization: Bearer <token>`.
    pub fn as_user(&self, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        Self {
            server: None,
            opts: self.opts.clone(),
            url: self.url.clone(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            _dir: TempDir::new("as-user"),
            keys: None,
        }
    }
}

/// A backup's id, checked to be 32 lower-case hex digits (128 random bits).
pub fn id_of(backup: &Value) -> String {
    let id = backup["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {backup}"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{id}"
    );
    id.to_owned()
}

/// A backup id no backup has.
pub const NO_SUCH_BACKUP: &str = "00000000000000000000000000000000";
