//! Options: [`ServerOptions`] for the library, [`Cli`] for the binary's flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::db_location::{DbLocation, DbLocationError};

/// PostgreSQL connections per instance when `--db-pool` is not given.
pub const DEFAULT_DB_POOL: usize = 16;

/// `--request-timeout-secs` when not given: the client's own `requestTimeoutMs` default, so a
/// request the server gives up on is one the client would have given up on too.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;

/// The most `--request-timeout-secs` accepts (an hour).
pub const MAX_REQUEST_TIMEOUT_SECS: u64 = 3600;

/// `--max-concurrent-requests` when not given. Enough that a few hundred clients syncing at
/// once are all admitted (the load benchmark runs 200), few enough that the bodies in memory
/// stay bounded (a push is at most 5 MiB) and that a request admitted waits behind at most a
/// few hundred others for the database, well inside the request timeout.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;

/// Backups kept per client when `--keep-backups` is not given.
pub const DEFAULT_KEEP_BACKUPS: usize = 14;

/// The most `--keep-backups` accepts (a backup may be 64 MiB).
pub const MAX_KEEP_BACKUPS: usize = 1000;

/// `--max-blob-bytes` when not given: 100 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 100 * 1024 * 1024;

/// `--blob-quota-bytes` when not given: 1 GiB per user.
pub const DEFAULT_BLOB_QUOTA_BYTES: u64 = 1024 * 1024 * 1024;

/// How to run the server.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port (see [`crate::RunningServer::addr`]).
    pub listen: SocketAddr,
    /// The database: a SQLite file (its parent directory is created when missing) or a
    /// PostgreSQL URL.
    pub db: DbLocation,
    /// At most this many PostgreSQL connections (unused with SQLite).
    pub db_pool: usize,
    /// How long a request to `/api/*` may take from admission to its answer, body included
    /// (see [`crate::limits`]).
    pub request_timeout: Duration,
    /// How many requests to `/api/*` (except `/api/health`) are handled at a time; one more is
    /// answered `503 overloaded` with `Retry-After` (see [`crate::limits`]).
    pub max_concurrent_requests: usize,
    /// The web app to serve at `/`; `None` serves no files.
    pub www: Option<PathBuf>,
    /// Page origins allowed by CORS (`http://127.0.0.1:8080`); `*` mirrors any origin.
    pub allow_origins: Vec<String>,
    /// Host names (or `name:port`) answered besides loopback ones when there is no auth.
    pub allow_hosts: Vec<String>,
    /// Listen beyond loopback with no auth (something in front of the server authenticates).
    pub insecure_no_auth: bool,
    /// Bearer token required on `/api/*` (except `/api/health`), as user `default`, admin;
    /// `None` or empty: none.
    pub token: Option<String>,
    /// A file of `TOKEN USER_ID [admin]` lines, re-read on SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// A file holding the HS256 secret JWTs are signed with.
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// A PEM public key (RSA, P-256 or Ed25519) JWTs are signed for.
    pub jwt_public_key_file: Option<PathBuf>,
    /// The `iss` a JWT must carry, when given.
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry, when given.
    pub jwt_audience: Option<String>,
    /// Mount the `/api/test/*` endpoints (fault injection, stats, reset). Never in production.
    pub test_endpoints: bool,
    /// A mutation stamped further ahead of the server's clock than this is stored and
    /// compared as stamped at the server's clock plus this.
    pub max_clock_skew_ms: i64,
    /// Applied mutation records, tombstones and captured requests older than this many days
    /// are pruned ([`crate::retention`]); 0 keeps everything.
    pub retain_mutations_days: u32,
    /// How many backups `POST /api/backups` keeps per `client_id` (server exports, which
    /// have none, count as one more client); storing one more deletes the oldest.
    pub keep_backups: usize,
    /// Where blob bytes live: a URL `object_store::parse_url_opts` understands (`file:///…`,
    /// `memory://`; `s3://`, `gs://`, `az://` with the `cloud-blob-stores` feature). Wins over
    /// [`ServerOptions::blob_dir`].
    pub blob_store: Option<String>,
    /// Where blob bytes live: a local directory (created when missing). When neither this
    /// nor [`ServerOptions::blob_store`] is given, a SQLite server keeps them in `blobs/`
    /// beside its database file and a PostgreSQL server has no blobs (see [`crate::blobs`]).
    pub blob_dir: Option<PathBuf>,
    /// The largest blob a client may upload, in bytes.
    pub max_blob_bytes: u64,
    /// How many bytes of blobs (complete, and uploads in progress at their full size) one
    /// user may hold.
    pub blob_quota_bytes: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            db: DbLocation::Sqlite(PathBuf::from("data/rangersync.db")),
            db_pool: DEFAULT_DB_POOL,
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            www: Some(PathBuf::from("www")),
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            insecure_no_auth: false,
            token: None,
            tokens_file: None,
            jwt_hs256_secret_file: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            test_endpoints: false,
            max_clock_skew_ms: rangersync_shared::conflict::DEFAULT_MAX_CLOCK_SKEW_MS,
            retain_mutations_days: crate::retention::DEFAULT_RETAIN_DAYS,
            keep_backups: DEFAULT_KEEP_BACKUPS,
            blob_store: None,
            blob_dir: None,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            blob_quota_bytes: DEFAULT_BLOB_QUOTA_BYTES,
        }
    }
}

/// The token is never printed, not even in debug output.
impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field("db_pool", &self.db_pool)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("www", &self.www)
            .field("allow_origins", &self.allow_origins)
            .field("allow_hosts", &self.allow_hosts)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tokens_file", &self.tokens_file)
            .field("jwt_hs256_secret_file", &self.jwt_hs256_secret_file)
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("test_endpoints", &self.test_endpoints)
            .field("max_clock_skew_ms", &self.max_clock_skew_ms)
            .field("retain_mutations_days", &self.retain_mutations_days)
            .field("keep_backups", &self.keep_backups)
            .field(
                "blob_store",
                &self
                    .blob_store
                    .as_deref()
                    .map(crate::db_location::redact_url),
            )
            .field("blob_dir", &self.blob_dir)
            .field("max_blob_bytes", &self.max_blob_bytes)
            .field("blob_quota_bytes", &self.blob_quota_bytes)
            .finish()
    }
}

/// rangersync reference sync server: stores the writes service workers deliver (exactly
/// once), serves the web app, exports snapshots and keeps backups.
#[derive(Parser, Clone, PartialEq, Eq)]
#[command(name = "rangersync-server", version, about, long_about = None)]
pub struct Cli {
    /// Address and port to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// The database: a SQLite file (created with its directory when missing), or a
    /// postgres://user:password@host:port/dbname URL shared by several instances. Prefer the
    /// RANGERSYNC_DB environment variable for a URL with a password. Never logged unredacted.
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "RANGERSYNC_DB",
        hide_env_values = true,
        default_value = "data/rangersync.db",
        value_parser = DbLocationParser
    )]
    pub db: DbLocation,

    /// PostgreSQL connections this instance may hold (unused with SQLite). Instances ×
    /// pool must stay under the server's max_connections.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DB_POOL, value_parser = parse_pool_size)]
    pub db_pool: usize,

    /// Seconds a request to /api/* may take from admission to its answer: a body still
    /// arriving then is answered 408 body_timeout, a handler still working 503 timeout (work
    /// handed to the database finishes or rolls back whole). From 1 to 3600.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=MAX_REQUEST_TIMEOUT_SECS))]
    pub request_timeout_secs: u64,

    /// Requests to /api/* handled at a time (/api/health is not counted); one more is answered
    /// at once 503 overloaded with Retry-After, never queued.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS, value_parser = parse_max_concurrent)]
    pub max_concurrent_requests: usize,

    /// Directory served at / (the demo app, sw.js and the built wasm under pkg/).
    #[arg(long, value_name = "DIR", default_value = "www")]
    pub www: PathBuf,

    /// Serve no static files (API only).
    #[arg(long, conflicts_with = "www")]
    pub no_www: bool,

    /// Page origin allowed to call the API from another origin, e.g. http://127.0.0.1:8080.
    /// Repeat for several; '*' allows (mirrors) any origin, for test runners on random ports.
    #[arg(long = "allow-origin", value_name = "URL")]
    pub allow_origins: Vec<String>,

    /// Without auth, the server answers /api/* only for a loopback Host (localhost,
    /// 127.0.0.0/8, [::1]), so a hostile domain resolving to 127.0.0.1 gets nothing. Repeat to
    /// allow other names (NAME or NAME:PORT).
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,

    /// Listen on a non-loopback address with no auth. Without this flag the server refuses
    /// to start that way; use it only when something in front of it authenticates.
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Bearer token required on every /api/* route except /api/health (one user, `default`,
    /// admin). Prefer the
    /// RANGERSYNC_TOKEN environment variable (a flag shows in the process list). Never logged.
    #[arg(
        long,
        value_name = "T",
        env = "RANGERSYNC_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Users: a file of `TOKEN USER_ID [admin]` lines (`#` comments), re-read on SIGHUP, so
    /// a token is rotated by editing the file and `kill -HUP`. Each user sees only their own
    /// data; only an admin may POST /api/restore.
    #[arg(long, value_name = "PATH", env = "RANGERSYNC_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Users from the app's own login: a file holding the HS256 secret its JWTs are signed
    /// with (at least 32 bytes). The user is `sub`; `exp` is required; an admin has
    /// "rangersync_admin": true.
    #[arg(long, value_name = "PATH")]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// Users from the app's own login: a PEM public key its JWTs are signed for (RSA → RS256,
    /// P-256 → ES256, Ed25519 → EdDSA).
    #[arg(long, value_name = "PATH")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// The `iss` every JWT must carry.
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// The `aud` every JWT must carry.
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// Mount /api/test/* (fault injection, delivery stats, recorded mutations, reset).
    /// For tests only: anyone who can reach the server can wipe it.
    #[arg(long)]
    pub test_endpoints: bool,

    /// How far ahead of this server's clock a write's updated_at may be: one stamped later
    /// is stored and compared as stamped at the server's clock plus this (the push answer
    /// says so), so a device whose clock runs ahead cannot win every later conflict.
    #[arg(long, value_name = "MS", default_value_t = rangersync_shared::conflict::DEFAULT_MAX_CLOCK_SKEW_MS, value_parser = clap::value_parser!(i64).range(0..))]
    pub max_clock_skew_ms: i64,

    /// Days the server remembers each applied (client_id, seq), tombstone and captured
    /// request; older ones are pruned hourly. A resend of a pruned seq is still answered
    /// `duplicate` (each client's highest pruned seq is kept); a pull from a cursor older
    /// than a pruned tombstone gets 410 cursor_expired and the client pulls everything again.
    /// 0 keeps everything for ever.
    #[arg(long, value_name = "DAYS", default_value_t = crate::retention::DEFAULT_RETAIN_DAYS, value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::retention::MAX_RETAIN_DAYS)))]
    pub retain_mutations_days: u32,

    /// Backups kept per client by POST /api/backups: storing one more deletes that client's
    /// oldest, in the same transaction (server exports, with no client_id, count as one
    /// client). From 1 to 1000; re-uploading a stored backup uses no slot.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_BACKUPS, value_parser = parse_keep_backups)]
    pub keep_backups: usize,

    /// Where attachment (blob) bytes live: a URL such as file:///var/lib/rangersync/blobs or
    /// memory:// (s3://, gs://, az:// in a server built with the cloud-blob-stores feature,
    /// credentials from the usual AWS_*, GOOGLE_*, AZURE_* environment variables). Several
    /// PostgreSQL instances need one store they all share.
    #[arg(
        long,
        value_name = "URL",
        env = "RANGERSYNC_BLOB_STORE",
        conflicts_with = "blob_dir"
    )]
    pub blob_store: Option<String>,

    /// Where attachment (blob) bytes live: a local directory, created when missing. Default
    /// with SQLite: `blobs` beside the database file. With PostgreSQL there is no default:
    /// without this or --blob-store the blob routes answer 501 blobs_not_configured.
    #[arg(long, value_name = "DIR")]
    pub blob_dir: Option<PathBuf>,

    /// The largest blob (attachment) a client may upload, in bytes; a larger one is
    /// 413 blob_too_large.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BLOB_BYTES, value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub max_blob_bytes: u64,

    /// Bytes of blobs one user may hold (complete ones, and uploads in progress at their full
    /// size); an upload beyond it is 413 blob_quota_exceeded.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BLOB_QUOTA_BYTES, value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub blob_quota_bytes: u64,
}

/// `--db`: clap's own error for a bad value repeats the value, which may hold a password;
/// this one says only what is wrong.
#[derive(Debug, Clone, Copy)]
struct DbLocationParser;

impl clap::builder::TypedValueParser for DbLocationParser {
    type Value = DbLocation;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<DbLocation, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{message}\n"))
                .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("--db is not valid UTF-8".to_owned()))?;
        text.parse()
            .map_err(|e: DbLocationError| invalid(e.to_string()))
    }
}

/// `--db-pool`: a whole number from 1.
fn parse_pool_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a pool size (a whole number from 1)"
        )),
    }
}

/// `--max-concurrent-requests`: a whole number from 1.
fn parse_max_concurrent(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of requests (a whole number from 1)"
        )),
    }
}

/// `--keep-backups`: a whole number from 1 to [`MAX_KEEP_BACKUPS`]. Zero is refused: a
/// server that keeps no backups would answer an upload with an id it no longer has.
fn parse_keep_backups(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_KEEP_BACKUPS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of backups to keep (a whole number from 1 to {MAX_KEEP_BACKUPS})"
        )),
    }
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.clone().into_options().fmt(f)
    }
}

impl Cli {
    /// The options these flags describe.
    pub fn into_options(self) -> ServerOptions {
        ServerOptions {
            listen: self.listen,
            db: self.db,
            db_pool: self.db_pool,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_concurrent_requests: self.max_concurrent_requests,
            www: (!self.no_www).then_some(self.www),
            allow_origins: self.allow_origins,
            allow_hosts: self.allow_hosts,
            insecure_no_auth: self.insecure_no_auth,
            token: self.token.filter(|t| !t.is_empty()),
            tokens_file: self.tokens_file,
            jwt_hs256_secret_file: self.jwt_hs256_secret_file,
            jwt_public_key_file: self.jwt_public_key_file,
            jwt_issuer: self.jwt_issuer,
            jwt_audience: self.jwt_audience,
            test_endpoints: self.test_endpoints,
            max_clock_skew_ms: self.max_clock_skew_ms,
            retain_mutations_days: self.retain_mutations_days,
            keep_backups: self.keep_backups,
            blob_store: self.blob_store.filter(|u| !u.is_empty()),
            blob_dir: self.blob_dir,
            max_blob_bytes: self.max_blob_bytes,
            blob_quota_bytes: self.blob_quota_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_options_and_the_token_never_shows_in_debug_output() {
        let cli = Cli::try_parse_from([
            "rangersync-server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            "/tmp/x.db",
            "--allow-origin",
            "http://a:1",
            "--allow-origin",
            "*",
            "--token",
            "hunter2",
            "--test-endpoints",
        ])
        .unwrap();
        let opts = cli.into_options();
        assert_eq!(opts.listen.port(), 0);
        assert_eq!(
            opts.allow_origins,
            vec!["http://a:1".to_owned(), "*".to_owned()]
        );
        assert_eq!(opts.token.as_deref(), Some("hunter2"));
        assert!(opts.test_endpoints);
        assert_eq!(opts.www, Some(PathBuf::from("www")));
        assert!(!format!("{opts:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_match_server_options_default() {
        let cli = Cli::try_parse_from(["rangersync-server"]).unwrap();
        let mut opts = cli.into_options();
        // RANGERSYNC_TOKEN and RANGERSYNC_DB may be set in the environment.
        opts.token = None;
        opts.tokens_file = None;
        opts.db = ServerOptions::default().db;
        opts.blob_store = None;
        assert_eq!(opts, ServerOptions::default());
    }

    #[test]
    fn db_takes_a_postgres_url_and_refuses_other_schemes_with_a_clear_error() {
        let cli =
            Cli::try_parse_from(["rangersync-server", "--db", "postgres://rs:pw@h/db"]).unwrap();
        assert_eq!(
            cli.into_options().db,
            DbLocation::Postgres("postgres://rs:pw@h/db".to_owned())
        );
        let err = Cli::try_parse_from(["rangersync-server", "--db", "mysql://u@h/db"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unsupported database URL scheme `mysql://`"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["rangersync-server", "--db-pool", "0"]).is_err());
    }

    #[test]
    fn db_pool_defaults_to_16_and_takes_a_whole_number_from_1() {
        let pool = |args: &[&str]| {
            Cli::try_parse_from(["rangersync-server"].iter().chain(args))
                .map(|c| c.into_options().db_pool)
                .map_err(|e| e.to_string())
        };
        assert_eq!(pool(&[]), Ok(16));
        assert_eq!(pool(&["--db-pool", "1"]), Ok(1));
        assert_eq!(pool(&["--db-pool", "64"]), Ok(64));
        for bad in ["0", "-1", "x", "1.5"] {
            assert!(pool(&["--db-pool", bad]).is_err(), "--db-pool {bad}");
        }
    }

    #[test]
    fn retain_mutations_days_defaults_to_30_and_zero_keeps_everything() {
        let days = |args: &[&str]| {
            Cli::try_parse_from(["rangersync-server"].iter().chain(args))
                .map(|c| c.into_options().retain_mutations_days)
                .map_err(|e| e.to_string())
        };
        assert_eq!(days(&[]), Ok(30));
        assert_eq!(days(&["--retain-mutations-days", "0"]), Ok(0));
        assert_eq!(days(&["--retain-mutations-days", "365"]), Ok(365));
        for bad in ["-1", "36501", "a month"] {
            assert!(days(&["--retain-mutations-days", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_limits_default_to_30_s_and_256_requests_and_refuse_zero() {
        let limits = |args: &[&str]| {
            Cli::try_parse_from(["rangersync-server"].iter().chain(args))
                .map(|c| {
                    let o = c.into_options();
                    (o.request_timeout, o.max_concurrent_requests)
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(limits(&[]), Ok((Duration::from_secs(30), 256)));
        assert_eq!(
            limits(&[
                "--request-timeout-secs",
                "5",
                "--max-concurrent-requests",
                "1"
            ]),
            Ok((Duration::from_secs(5), 1))
        );
        for bad in [
            ["--request-timeout-secs", "0"],
            ["--request-timeout-secs", "3601"],
            ["--max-concurrent-requests", "0"],
            ["--max-concurrent-requests", "many"],
        ] {
            assert!(limits(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn blob_limits_default_to_100_mib_and_1_gib_and_the_store_is_a_url_or_a_directory() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["rangersync-server"].iter().chain(args))
                .map(|c| {
                    let o = c.into_options();
                    (o.max_blob_bytes, o.blob_quota_bytes, o.blob_dir)
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(&[]), Ok((104_857_600, 1_073_741_824, None)));
        assert_eq!(
            parse(&[
                "--max-blob-bytes",
                "10",
                "--blob-quota-bytes",
                "20",
                "--blob-dir",
                "/srv/b"
            ]),
            Ok((10, 20, Some(PathBuf::from("/srv/b"))))
        );
        let store = Cli::try_parse_from([
            "rangersync-server",
            "--blob-store",
            "s3://user:hunter2@bucket/prefix",
        ])
        .unwrap()
        .into_options();
        assert_eq!(
            store.blob_store.as_deref(),
            Some("s3://user:hunter2@bucket/prefix")
        );
        assert!(!format!("{store:?}").contains("hunter2"));
        for bad in [
            &["--max-blob-bytes", "-1"][..],
            &["--blob-quota-bytes", "lots"],
            &["--blob-store", "memory://", "--blob-dir", "/srv/b"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keep_backups_defaults_to_14_and_takes_1_to_1000() {
        let keep = |args: &[&str]| {
            Cli::try_parse_from(["rangersync-server"].iter().chain(args))
                .map(|c| c.into_options().keep_backups)
                .map_err(|e| e.to_string())
        };
        assert_eq!(keep(&[]), Ok(14));
        assert_eq!(keep(&["--keep-backups", "1"]), Ok(1));
        assert_eq!(keep(&["--keep-backups", "1000"]), Ok(1000));
        for bad in ["0", "1001", "many"] {
            let err = keep(&["--keep-backups", bad]).unwrap_err();
            assert!(
                err.contains("a whole number from 1 to 1000"),
                "{bad}: {err}"
            );
        }
    }
}
