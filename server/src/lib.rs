//! # rangersync-server
//!
//! The reference sync server of rangersync: it receives the writes that the service worker
//! delivers and applies each `(client_id, seq)` at most once, so that every write is stored
//! exactly once; it answers pulls, exports snapshots, keeps backups, and serves the web app.
//! It implements `PROTOCOL.md` (version 1) with axum on embedded SQLite (one process) or on
//! PostgreSQL (any number of stateless instances behind a load balancer); another backend
//! can implement the same protocol instead.
//!
//! ```no_run
//! # async fn run() -> Result<(), rangersync_server::ServerError> {
//! use rangersync_server::{start, ServerOptions};
//! let server = start(ServerOptions {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     db: std::env::temp_dir().join("rangersync-doc.db").into(),
//!     test_endpoints: true,
//!     ..ServerOptions::default()
//! })
//! .await?;
//! println!("listening on {}", server.url());
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! | route | module |
//! |---|---|
//! | `POST /api/sync/push` | [`push`] |
//! | `GET /api/sync/pull` | [`pull`] |
//! | `GET /api/health` | here |
//! | `GET /api/export`, `POST/GET /api/backups`, `GET /api/backups/{id}` | [`export`] |
//! | `POST /api/restore` | [`restore`] |
//! | `POST /api/sync/chat`, `POST /api/sync/settings` | [`captured`] |
//! | `PUT /api/blobs/{sha256}`, `GET /api/blobs/{sha256}`, `GET /api/blobs/{sha256}/upload` | [`blobs`] (bytes in a [`blob_store`]) |
//! | `/api/test/*` (only with `test_endpoints`) | [`testing`] |
//! | everything else | [`static_files`] |
//!
//! Cross-cutting: [`limits`] (how many requests at a time, how long each may take),
//! [`guard`] (content type, `Origin`, `Host`: no CSRF, no DNS rebinding),
//! [`auth`] (who is calling: [`tokens`], [`jwt`]), [`cors`], [`error`] (every error body is
//! `{"error":{"code","message"}}`), [`storage`] (the seam the protocol is written against),
//! [`sqlite`] and [`postgres`] (the only modules that know a schema), [`db_location`]
//! (`--db`: a path or a `postgres://` URL).
//!
//! Architecture invariant: the server holds no protocol rule of its own. Validation, the
//! conflict rule and the snapshot format come from `rangersync-shared`, the same code the
//! worker runs.

#![warn(missing_docs)]

pub mod auth;
pub mod blob_store;
pub mod blobs;
pub mod body;
pub mod captured;
pub mod config;
pub mod cors;
pub mod db_location;
pub mod error;
pub mod export;
pub mod guard;
pub mod jwt;
pub mod limits;
pub mod postgres;
pub mod pull;
pub mod push;
pub mod restore;
pub mod retention;
pub mod sqlite;
pub mod static_files;
pub mod storage;
pub mod test_postgres;
pub mod testing;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{middleware, Json, Router};
use rangersync_shared::protocol::{Health, Millis};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

pub use config::{Cli, ServerOptions};
pub use db_location::DbLocation;
pub use error::{ApiError, ServerError};

/// How long [`RunningServer::stop`] waits for requests in flight before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: storage::Db,
    /// Who may call, and as whom.
    pub auth: Arc<auth::Authenticator>,
    /// Pending fault rules (used only with test endpoints).
    pub faults: Arc<testing::Faults>,
    /// Backups kept per client ([`ServerOptions::keep_backups`]).
    pub keep_backups: usize,
    /// How far ahead of the server's clock a stamp may be ([`ServerOptions::max_clock_skew_ms`]).
    pub max_clock_skew_ms: Millis,
    /// What a request to `/api/*` must look like ([`guard`]).
    pub guard: Arc<guard::Guard>,
    /// Where blob bytes live, and the blob limits ([`blobs`]).
    pub blobs: Arc<blobs::Blobs>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        time: now_ms(),
    })
}

async fn api_not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        error::codes::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}

/// The whole application, for a given state and options (no listener).
pub fn router(state: AppState, opts: &ServerOptions) -> Result<Router, ServerError> {
    let mut api = Router::new()
        .route("/api/health", get(health))
        .route("/api/sync/push", post(push::push))
        .route("/api/sync/pull", get(pull::pull))
        .route("/api/export", get(export::export))
        .route(
            "/api/backups",
            post(export::create_backup).get(export::list_backups),
        )
        .route("/api/backups/{id}", get(export::get_backup))
        .route("/api/restore", post(restore::restore))
        .route(
            "/api/blobs/{sha256}",
            put(blobs::put_chunk).get(blobs::download),
        )
        .route("/api/blobs/{sha256}/upload", get(blobs::upload_status));
    for path in captured::CAPTURED_ROUTES {
        api = api.route(path, post(captured::store));
    }
    if opts.test_endpoints {
        api = api
            .route(
                "/api/test/faults",
                post(testing::add_faults)
                    .get(testing::list_faults)
                    .delete(testing::clear_faults),
            )
            .route("/api/test/stats", get(testing::stats))
            .route("/api/test/mutations", get(testing::mutations))
            .route("/api/test/reset", post(testing::reset))
            .route("/api/test/prune", post(testing::prune))
            .route("/api/test/no-store", get(testing::no_store));
    }
    let mut app = api
        .route("/api", any(api_not_found))
        .route("/api/{*rest}", any(api_not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback_service(static_files::service(opts.www.as_deref()));
    if opts.test_endpoints {
        app = app.layer(middleware::from_fn_with_state(
            state.clone(),
            testing::inject_faults,
        ));
    }
    app = app
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard::check))
        .layer(CatchPanicLayer::custom(panic_response))
        // Outside everything but CORS: an overloaded server refuses before any work (auth
        // checks a JWT's signature), and the refusal still carries the CORS headers a page
        // needs to read its Retry-After.
        .layer(middleware::from_fn_with_state(
            Arc::new(limits::Limits::new(
                opts.max_concurrent_requests,
                opts.request_timeout,
            )),
            limits::bound,
        ));
    if let Some(cors) = cors::layer(&opts.allow_origins)? {
        app = app.layer(cors);
    }
    Ok(app.with_state(state))
}

/// The credentials `opts` configure (files read now).
fn authenticator(opts: &ServerOptions) -> Result<auth::Authenticator, ServerError> {
    let tokens = tokens::Tokens::open(opts.token.as_deref(), opts.tokens_file.as_deref())
        .map_err(ServerError::Config)?
        .map(Arc::new);
    let jwt_opts = jwt::JwtOptions {
        hs256_secret: opts
            .jwt_hs256_secret_file
            .as_deref()
            .map(jwt::read_secret)
            .transpose()
            .map_err(ServerError::Config)?,
        public_key_pem: opts
            .jwt_public_key_file
            .as_deref()
            .map(|p| {
                std::fs::read(p)
                    .map_err(|e| format!("cannot read JWT public key file {}: {e}", p.display()))
            })
            .transpose()
            .map_err(ServerError::Config)?,
        issuer: opts.jwt_issuer.clone(),
        audience: opts.jwt_audience.clone(),
    };
    let jwt = jwt::Jwt::new(&jwt_opts).map_err(ServerError::Config)?;
    Ok(auth::Authenticator { tokens, jwt })
}

/// Re-read the tokens file on every SIGHUP (a bad file keeps the tokens in use; the error
/// names the line, never a token).
#[cfg(unix)]
fn reload_on_sighup(tokens: Arc<tokens::Tokens>) -> Result<(), ServerError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match tokens.reload() {
                Ok(n) => eprintln!("rangersync-server: SIGHUP: tokens file re-read ({n} tokens)"),
                Err(e) => eprintln!("rangersync-server: SIGHUP: {e}; the tokens in use stay"),
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(_: Arc<tokens::Tokens>) -> Result<(), ServerError> {
    Ok(())
}

/// A server started by [`start`].
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting connections, let requests in flight finish (at most
    /// [`SHUTDOWN_GRACE`]), close the database. The port can be bound again afterwards.
    pub async fn stop(mut self) {
        self.shutdown_now().await;
    }

    async fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for RunningServer {
    /// A server dropped without [`RunningServer::stop`] is told to shut down in the background.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Open the database (creating a SQLite file's directory) and migrate it, bind
/// `opts.listen` and serve until [`RunningServer::stop`].
pub async fn start(opts: ServerOptions) -> Result<RunningServer, ServerError> {
    if !(1..=config::MAX_KEEP_BACKUPS).contains(&opts.keep_backups) {
        return Err(ServerError::Config(format!(
            "keep_backups must be from 1 to {} (got {})",
            config::MAX_KEEP_BACKUPS,
            opts.keep_backups
        )));
    }
    let authenticator = authenticator(&opts)?;
    let auth = authenticator.required();
    guard::check_listen(opts.listen, auth, opts.insecure_no_auth)?;
    let db = storage::Db::open(&opts.db, opts.db_pool)
        .await
        .map_err(|message| ServerError::Database {
            location: opts.db.to_string(),
            message,
        })?;
    let blobs = blobs::open(&opts).await.map_err(ServerError::Config)?;
    let state = AppState {
        blobs: Arc::new(blobs),
        db,
        auth: Arc::new(authenticator),
        faults: Arc::new(testing::Faults::default()),
        keep_backups: opts.keep_backups,
        max_clock_skew_ms: opts.max_clock_skew_ms,
        guard: Arc::new(guard::Guard::new(
            &opts.allow_origins,
            &opts.allow_hosts,
            auth,
        )),
    };
    let tokens = state.auth.tokens.clone();
    let pruner = retention::spawn_pruner(state.db.clone(), opts.retain_mutations_days);
    let app = router(state, &opts)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    if let Some(tokens) = tokens.filter(|t| t.has_file()) {
        reload_on_sighup(tokens)?;
    }
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            eprintln!("rangersync-server: server error: {e}");
        }
        if let Some(pruner) = pruner {
            pruner.abort();
        }
    });
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}
