//! # rangersync-e2e: the end-to-end harness
//!
//! Drives a real headless Chromium (Debian's `/usr/bin/chromium`, or `$CHROMIUM`)
//! through the DevTools protocol with chromiumoxide, against the real reference
//! server started in-process, serving the real `www/` with the built wasm in
//! `www/pkg` (`cargo xtask build`; `cargo xtask test` does it first).
//!
//! Caveats first, each found by trying (see `docs/TOOLCHAIN.md`):
//! - Every page is opened on `about:blank` and told
//!   `Target.setAutoAttach {autoAttach:false, waitForDebuggerOnStart:false, flatten:true}`
//!   before it navigates ([`TestBrowser::open`]). chromiumoxide attaches to new
//!   targets with "wait for debugger", and a service worker started that way hangs
//!   in "starting".
//! - The `ServiceWorker.*` domain lives on a page session. [`ServiceWorkers`] keeps
//!   its own `about:blank` tab, which sees every origin's registrations, so a test can
//!   fire `sync` events with no app tab open.
//! - Commands chromiumoxide has no type for are sent raw ([`RawCommand`], [`cdp`]).
//! - One browser per test and tests one at a time ([`serial`]): 2 cores.
//!
//! | piece | what it gives a test |
//! |---|---|
//! | [`TestServer`] | the reference server on a fresh database with `/api/test/*`; stop and restart on the same port and database |
//! | [`TestBrowser`] | Chromium with a fresh profile; open and close tabs; relaunch (clean or killed) on the same profile; grant periodic sync |
//! | [`ServiceWorkers`] | registration and version ids, `dispatchSyncEvent`, `dispatchPeriodicSyncEvent`, `stopAllWorkers` |
//! | [`WorkerSession`] | a DevTools session on a running service worker (its heap, its network emulation, `Runtime.evaluate` in it) |
//! | [`eval`] | run JS in a page, await its promise, get JSON back |
//! | [`wait_until`] | poll a condition with a timeout and a useful failure message |
//! | [`www_with`], [`page_module_files`] | a temp copy of `www/` with a test's own pages and worker scripts; the files a page needs to import the page module (for an app shell) |
//! | [`firefox::Firefox`] | headless Firefox ESR through geckodriver (WebDriver): tabs, JS, restart or kill on the same profile |
//! | [`summary`] | one JSON line per fault scenario (browser, writes, faults, lost, duplicated) for the table `cargo xtask test` prints |
//! | [`example::Example`] | the Vite + React example (`examples/vite-react`): a build with the test's URLs, `vite preview`, the dev server, its Express API |
//! | [`proxy::FaultProxy`] | a loopback HTTP proxy between browser and server that resets, drops, delays, truncates or answers 429/503 per request, and records every request |

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::service_worker::{
    EventWorkerRegistrationUpdated, EventWorkerVersionUpdated, ServiceWorkerVersionRunningStatus,
    ServiceWorkerVersionStatus,
};
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams, EventReceivedMessageFromTarget,
};
use chromiumoxide::listeners::EventStream;
use chromiumoxide::{Command, Method, Page};
use futures::StreamExt;
use rangersync_server::{DbLocation, RunningServer, ServerOptions};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub mod driver_scenarios;
pub mod example;
pub mod firefox;
pub mod proxy;
pub mod status_element;
pub mod summary;
pub mod webdriver;
pub mod webkit;

pub use proxy::{Fault, FaultProxy, Rule};

/// Any error, with a message good enough to fail a test on.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What every helper and test returns.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// The Background Sync tag the worker registers after each write.
pub const SYNC_TAG: &str = "rangersync-flush";

/// How long a helper waits for the browser before giving up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Serial execution

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for the whole test: one browser at a time, whatever `--test-threads` is.
/// (Test binaries already run one after another under `cargo test`.)
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

// ---------------------------------------------------------------------------
// Paths

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives one level below the workspace root")
        .to_path_buf()
}

/// The web app to serve: `$RANGERSYNC_WWW`, else `<workspace>/www`. Fails with
/// "run cargo xtask build" when the built worker wasm is missing.
pub fn www_dir() -> Result<PathBuf> {
    let www = std::env::var_os("RANGERSYNC_WWW")
        .filter(|v| !v.is_empty())
        .map_or_else(|| workspace_root().join("www"), PathBuf::from);
    let wasm = worker_wasm(&www)?;
    if !wasm.is_file() {
        return Err(format!(
            "{} is missing: run `cargo xtask build` first (`cargo xtask test` does)",
            wasm.display()
        )
        .into());
    }
    Ok(www)
}

/// The worker's wasm in `www/pkg`: `rangersync_sw_bg.<hash>.wasm`, as the glue
/// (`rangersync_sw.js`, whose last line the build writes) names it.
pub fn worker_wasm(www: &Path) -> Result<PathBuf> {
    let glue = www.join("pkg").join("rangersync_sw.js");
    let text = std::fs::read_to_string(&glue).map_err(|e| {
        format!(
            "{}: {e}: run `cargo xtask build` first (`cargo xtask test` does)",
            glue.display()
        )
    })?;
    let name = text
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("self.rangersync_wasm_file = '")?
                .strip_suffix("';")
        })
        .ok_or_else(|| format!("{} names no wasm: run `cargo xtask build`", glue.display()))?;
    Ok(www.join("pkg").join(name))
}

/// A temp copy of [`www_dir`] with `extra` files added (a path below the root, its contents):
/// pages and worker scripts of a test's own. Serve it with [`TestServer::start_serving`] and keep
/// the folder alive as long as the server.
pub fn www_with(extra: &[(&str, &str)]) -> Result<tempfile::TempDir> {
    fn copy_dir(from: &Path, to: &Path) -> Result {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy_dir(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), target)?;
            }
        }
        Ok(())
    }
    let dir = tempfile::Builder::new()
        .prefix("rangersync-e2e-www-")
        .tempdir()?;
    copy_dir(&www_dir()?, dir.path())?;
    for (path, contents) in extra {
        let file = dir.path().join(path.trim_start_matches('/'));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, contents)?;
    }
    Ok(dir)
}

/// The files a page loads to import the page module, as served paths: its JS glue, its wasm and
/// wasm-bindgen's snippets (in a folder named by a build hash). What an app shell must list for
/// a page that imports `/pkg/rangersync_page.js` to start offline.
pub fn page_module_files() -> Result<Vec<String>> {
    fn walk(dir: &Path, served: &str, into: &mut Vec<String>) -> Result {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{served}/{name}");
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &path, into)?;
            } else if name.ends_with(".js") {
                into.push(path);
            }
        }
        Ok(())
    }
    let mut files = vec![
        "/pkg/rangersync_page.js".to_string(),
        "/pkg/rangersync_page_bg.wasm".to_string(),
    ];
    let snippets = www_dir()?.join("pkg").join("snippets");
    let mut found = Vec::new();
    walk(&snippets, "/pkg/snippets", &mut found)?;
    if found.is_empty() {
        return Err(format!("no snippet in {}", snippets.display()).into());
    }
    found.sort();
    files.extend(found);
    Ok(files)
}

/// The browser: `$CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium_path() -> Result<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: `apt-get install -y chromium` (`cargo xtask test` does so as root) \
             or set CHROMIUM to a Chromium binary",
            path.display()
        )
        .into())
    }
}

// ---------------------------------------------------------------------------
// The server

/// The reference server, in-process, on a fresh database in a temp folder,
/// serving [`www_dir`], with `/api/test/*` mounted and CORS open.
pub struct TestServer {
    running: Option<RunningServer>,
    opts: ServerOptions,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts on a free port, serving [`www_dir`].
    pub async fn start() -> Result<TestServer> {
        TestServer::start_serving(www_dir()?).await
    }

    /// Starts on a free port, serving `www` (the benchmark serves a copy with its own pages).
    pub async fn start_serving(www: PathBuf) -> Result<TestServer> {
        TestServer::start_with(www, None).await
    }

    /// Starts on a free port, serving [`www_dir`], on `db` (several instances may share a
    /// PostgreSQL database).
    pub async fn start_on(db: DbLocation) -> Result<TestServer> {
        TestServer::start_with(www_dir()?, Some(db)).await
    }

    /// Starts on a free port, serving [`www_dir`], requiring `Authorization: Bearer <token>`
    /// on `/api/*` (this handle's own requests send it).
    pub async fn start_with_token(token: &str) -> Result<TestServer> {
        TestServer::start_opts(www_dir()?, None, Some(token.to_owned())).await
    }

    /// On `db`, or on a fresh SQLite file in a temp folder.
    async fn start_with(www: PathBuf, db: Option<DbLocation>) -> Result<TestServer> {
        TestServer::start_opts(www, db, None).await
    }

    async fn start_opts(
        www: PathBuf,
        db: Option<DbLocation>,
        token: Option<String>,
    ) -> Result<TestServer> {
        let dir = tempfile::Builder::new()
            .prefix("rangersync-e2e-server-")
            .tempdir()?;
        let opts = ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db: db.unwrap_or_else(|| DbLocation::Sqlite(dir.path().join("e2e.db"))),
            www: Some(www),
            allow_origins: vec!["*".to_string()],
            test_endpoints: true,
            token: token.clone(),
            ..ServerOptions::default()
        };
        let running = rangersync_server::start(opts.clone())
            .await
            .map_err(|e| format!("the server did not start: {e}"))?;
        // Later restarts reuse the port the system picked.
        let opts = ServerOptions {
            listen: running.addr(),
            ..opts
        };
        Ok(TestServer {
            running: Some(running),
            opts,
            http: {
                let mut headers = reqwest::header::HeaderMap::new();
                if let Some(token) = &token {
                    headers.insert(
                        reqwest::header::AUTHORIZATION,
                        format!("Bearer {token}").parse()?,
                    );
                }
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .default_headers(headers)
                    .build()?
            },
            _dir: dir,
        })
    }

    /// The address; the same across [`TestServer::restart`].
    pub fn addr(&self) -> SocketAddr {
        self.opts.listen
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the page origin too.
    pub fn url(&self) -> String {
        format!("http://{}", self.opts.listen)
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops it: connections are refused until [`TestServer::restart`].
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// Starts it again on the same port with the same database (retrying the
    /// bind for a few seconds while the old socket goes away).
    pub async fn restart(&mut self) -> Result {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match rangersync_server::start(self.opts.clone()).await {
                Ok(running) => {
                    self.running = Some(running);
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("the server did not restart: {e}").into()),
            }
        }
    }

    /// `GET path` → its status and body bytes (with this handle's credentials).
    pub async fn get_bytes(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let response = self
            .http
            .get(format!("{}{path}", self.url()))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    /// `GET path` → JSON; an HTTP error status is an error.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url()))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            return Err(format!("GET {path}: {status}: {body}").into());
        }
        Ok(serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: not JSON ({e}): {body}"))?)
    }

    /// `POST path` with a JSON body → JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url()))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text)
            .map_err(|e| format!("POST {path}: not JSON ({e}): {text}"))?)
    }

    /// `GET /api/test/stats`: push requests, mutations applied, duplicates, ….
    pub async fn stats(&self) -> Result<Value> {
        self.get_json("/api/test/stats").await
    }

    /// The backup `id` as the server stores it (`GET /api/backups/{id}`).
    pub async fn backup_text(&self, id: &str) -> Result<String> {
        Ok(reqwest::get(format!("{}/api/backups/{id}", self.url()))
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Every change the server holds (`GET /api/sync/pull`, following `has_more`).
    pub async fn pull_all(&self) -> Result<Vec<Value>> {
        let mut changes = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .get_json(&format!("/api/sync/pull?since={cursor}&limit=1000"))
                .await?;
            if let Some(batch) = page["changes"].as_array() {
                changes.extend(batch.iter().cloned());
            }
            if page["has_more"] != Value::Bool(true) {
                return Ok(changes);
            }
            cursor = page["cursor"].as_str().unwrap_or_default().to_string();
        }
    }
}

// ---------------------------------------------------------------------------
// Raw CDP

/// A DevTools command chromiumoxide has no type for: a method name and its
/// params as JSON; the answer comes back as JSON.
#[derive(Debug, Clone)]
pub struct RawCommand {
    method: String,
    params: Value,
}

impl RawCommand {
    /// `RawCommand::new("ServiceWorker.stopAllWorkers", json!({}))`
    pub fn new(method: impl Into<String>, params: Value) -> RawCommand {
        RawCommand {
            method: method.into(),
            params,
        }
    }
}

impl serde::Serialize for RawCommand {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.params.serialize(serializer)
    }
}

impl Method for RawCommand {
    fn identifier(&self) -> Cow<'static, str> {
        Cow::Owned(self.method.clone())
    }
}

impl Command for RawCommand {
    type Response = Value;
}

/// Sends a raw command on a page's session.
pub async fn cdp(page: &Page, method: &str, params: Value) -> Result<Value> {
    let response = page
        .execute(RawCommand::new(method, params))
        .await
        .map_err(|e| format!("{method}: {e}"))?;
    Ok(response.result)
}

/// Sends a raw command to the browser target.
pub async fn browser_cdp(browser: &Browser, method: &str, params: Value) -> Result<Value> {
    let response = browser
        .execute(RawCommand::new(method, params))
        .await
        .map_err(|e| format!("{method}: {e}"))?;
    Ok(response.result)
}

// ---------------------------------------------------------------------------
// JavaScript

/// Evaluates `expression` in the page, awaits it if it is a promise, and returns
/// its value as JSON (`null` for `undefined`). A thrown error or a rejected
/// promise is an error carrying the JS message.
///
/// ```no_run
/// # async fn f(page: chromiumoxide::Page) -> rangersync_e2e::Result {
/// let status = rangersync_e2e::eval(&page, "fetch('/api/health').then(r => r.json())").await?;
/// # Ok(()) }
/// ```
pub async fn eval(page: &Page, expression: &str) -> Result<Value> {
    let answer = cdp(
        page,
        "Runtime.evaluate",
        json!({
            "expression": expression,
            "awaitPromise": true,
            "returnByValue": true,
            "userGesture": true,
        }),
    )
    .await?;
    if let Some(details) = answer.get("exceptionDetails") {
        let message = details["exception"]["description"]
            .as_str()
            .or_else(|| details["text"].as_str())
            .unwrap_or("exception");
        return Err(format!("JS threw: {message}\n  in: {expression}").into());
    }
    Ok(answer["result"]["value"].clone())
}

/// Polls `probe` every 100 ms until it yields `Some`, for at most `timeout`.
/// Errors from the probe count as "not yet"; the last one is in the timeout message.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e.to_string()),
        }
        if Instant::now() >= deadline {
            let last = last_error.map_or(String::new(), |e| format!(" (last error: {e})"));
            return Err(format!("timed out after {timeout:?} waiting until {what}{last}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// The browser

/// Headless Chromium with its own profile folder.
pub struct TestBrowser {
    browser: Browser,
    handler: JoinHandle<()>,
    profile: Arc<tempfile::TempDir>,
}

impl TestBrowser {
    /// Launches with a fresh profile.
    pub async fn launch() -> Result<TestBrowser> {
        let profile = tempfile::Builder::new()
            .prefix("rangersync-e2e-profile-")
            .tempdir()?;
        TestBrowser::launch_with(Arc::new(profile)).await
    }

    async fn launch_with(profile: Arc<tempfile::TempDir>) -> Result<TestBrowser> {
        let config = BrowserConfig::builder()
            .chrome_executable(chromium_path()?)
            .no_sandbox()
            .user_data_dir(profile.path())
            .launch_timeout(Duration::from_secs(60))
            .request_timeout(Duration::from_secs(60))
            // Keys without dashes: chromiumoxide adds them.
            .args([
                "disable-quic",
                "no-first-run",
                "disable-component-update",
                "disable-background-networking",
                "disable-sync",
                "disable-gpu",
            ])
            // Background Sync retries at +5 s and +15 s instead of +5 min.
            .arg(("force-fieldtrials", "BackgroundSync/Test/"))
            .arg((
                "force-fieldtrial-params",
                "BackgroundSync.Test:initial_retry_delay_sec/5/retry_delay_factor/2/max_sync_attempts/3/min_periodic_sync_events_interval_sec/2",
            ))
            .build()?;
        let (browser, mut handler) = Browser::launch(config)
            .await
            .map_err(|e| format!("could not launch Chromium: {e}"))?;
        // The handler must be polled for anything to happen. Errors are
        // per-message (an event chromiumoxide cannot parse); keep going.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Ok(TestBrowser {
            browser,
            handler,
            profile,
        })
    }

    /// The chromiumoxide browser, for anything the helpers do not cover.
    pub fn browser(&self) -> &Browser {
        &self.browser
    }

    /// The profile folder (IndexedDB, the registration, pending syncs live here).
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// A new `about:blank` tab, ready for service workers (see the crate docs).
    pub async fn blank(&self) -> Result<Page> {
        let page = self.browser.new_page("about:blank").await?;
        TestBrowser::ready_for_workers(page).await
    }

    /// A new private browser context (`Target.createBrowserContext`, what an incognito window
    /// is): its own IndexedDB, registrations and caches, kept in memory and gone when it is
    /// disposed ([`TestBrowser::dispose_context`]).
    pub async fn private_context(&self) -> Result<BrowserContextId> {
        Ok(self
            .browser
            .create_browser_context(CreateBrowserContextParams::default())
            .await
            .map_err(|e| format!("Target.createBrowserContext: {e}"))?)
    }

    /// A new tab in `context` showing `url`, loaded (as [`TestBrowser::open`]).
    pub async fn open_in(&self, context: &BrowserContextId, url: &str) -> Result<Page> {
        let params = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(context.clone())
            .build()?;
        let page = TestBrowser::ready_for_workers(self.browser.new_page(params).await?).await?;
        page.goto(url)
            .await
            .map_err(|e| format!("navigating to {url}: {e}"))?;
        Ok(page)
    }

    /// Closes a private context and everything in it, as closing the last incognito window does.
    pub async fn dispose_context(&self, context: BrowserContextId) -> Result {
        self.browser
            .dispose_browser_context(context)
            .await
            .map_err(|e| format!("Target.disposeBrowserContext: {e}"))?;
        Ok(())
    }

    async fn ready_for_workers(page: Page) -> Result<Page> {
        cdp(
            &page,
            "Target.setAutoAttach",
            json!({ "autoAttach": false, "waitForDebuggerOnStart": false, "flatten": true }),
        )
        .await?;
        Ok(page)
    }

    /// A new tab showing `url`, loaded.
    pub async fn open(&self, url: &str) -> Result<Page> {
        let page = self.blank().await?;
        page.goto(url)
            .await
            .map_err(|e| format!("navigating to {url}: {e}"))?;
        Ok(page)
    }

    /// Closes a tab (`beforeunload`/`pagehide` run as for a user closing it).
    pub async fn close_tab(&self, page: Page) -> Result {
        page.close().await?;
        Ok(())
    }

    /// `Browser.grantPermissions periodicBackgroundSync` for `origin`
    /// (else `periodicSync.register` is `NotAllowedError`).
    pub async fn grant_periodic_sync(&self, origin: &str) -> Result {
        browser_cdp(
            &self.browser,
            "Browser.grantPermissions",
            json!({ "origin": origin, "permissions": ["periodicBackgroundSync", "backgroundSync"] }),
        )
        .await?;
        Ok(())
    }

    /// Closes the browser cleanly and launches it again on the same profile.
    pub async fn relaunch(mut self) -> Result<TestBrowser> {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
        let profile = self.profile.clone();
        drop(self);
        TestBrowser::launch_with(profile).await
    }

    /// Kills the browser (SIGKILL, no shutdown) and launches it again on the same profile.
    pub async fn kill_and_relaunch(mut self) -> Result<TestBrowser> {
        let _ = self.browser.kill().await;
        self.handler.abort();
        let profile = self.profile.clone();
        drop(self);
        TestBrowser::launch_with(profile).await
    }

    /// Closes the browser and waits for it to exit.
    pub async fn close(mut self) -> Result {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
        Ok(())
    }
}

impl Drop for TestBrowser {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

// ---------------------------------------------------------------------------
// Service workers

/// What the `ServiceWorker` domain reported about one registration.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// `registrationId`
    pub id: String,
    /// `scopeURL`
    pub scope: String,
    /// Unregistered.
    pub deleted: bool,
}

/// What the `ServiceWorker` domain reported about one worker version.
#[derive(Debug, Clone)]
pub struct Version {
    /// `versionId`
    pub id: String,
    /// `registrationId`
    pub registration_id: String,
    /// `scriptURL`
    pub script: String,
    /// `running`, `stopped`, …
    pub running: ServiceWorkerVersionRunningStatus,
    /// `activated`, `redundant`, …
    pub status: ServiceWorkerVersionStatus,
}

#[derive(Default)]
struct Seen {
    registrations: HashMap<String, Registration>,
    versions: HashMap<String, Version>,
}

/// A control tab with `ServiceWorker.enable`: sees every origin's registrations
/// and versions and can fire events at them with no app tab open.
pub struct ServiceWorkers {
    page: Page,
    seen: Arc<Mutex<Seen>>,
    listeners: Vec<JoinHandle<()>>,
}

impl ServiceWorkers {
    /// Opens the control tab and starts listening.
    pub async fn enable(browser: &TestBrowser) -> Result<ServiceWorkers> {
        let page = browser.blank().await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut registrations = page
            .event_listener::<EventWorkerRegistrationUpdated>()
            .await?;
        let mut versions = page.event_listener::<EventWorkerVersionUpdated>().await?;
        let into = seen.clone();
        let on_registration = tokio::spawn(async move {
            while let Some(event) = registrations.next().await {
                let mut seen = into.lock().unwrap_or_else(|e| e.into_inner());
                for r in &event.registrations {
                    let id = r.registration_id.inner().clone();
                    seen.registrations.insert(
                        id.clone(),
                        Registration {
                            id,
                            scope: r.scope_url.clone(),
                            deleted: r.is_deleted,
                        },
                    );
                }
            }
        });
        let into = seen.clone();
        let on_version = tokio::spawn(async move {
            while let Some(event) = versions.next().await {
                let mut seen = into.lock().unwrap_or_else(|e| e.into_inner());
                for v in &event.versions {
                    seen.versions.insert(
                        v.version_id.clone(),
                        Version {
                            id: v.version_id.clone(),
                            registration_id: v.registration_id.inner().clone(),
                            script: v.script_url.clone(),
                            running: v.running_status.clone(),
                            status: v.status.clone(),
                        },
                    );
                }
            }
        });
        cdp(&page, "ServiceWorker.enable", json!({})).await?;
        Ok(ServiceWorkers {
            page,
            seen,
            listeners: vec![on_registration, on_version],
        })
    }

    /// The live registration whose scope is on `origin`, once one exists.
    pub async fn registration(&self, origin: &str) -> Result<Registration> {
        let prefix = format!("{}/", origin.trim_end_matches('/'));
        wait_until(
            &format!("a service worker is registered for {origin}"),
            DEFAULT_TIMEOUT,
            || {
                let found = self
                    .lock()
                    .registrations
                    .values()
                    .find(|r| !r.deleted && r.scope.starts_with(&prefix))
                    .cloned();
                async move { Ok(found) }
            },
        )
        .await
    }

    /// Every version seen so far of a registration.
    pub fn versions(&self, registration_id: &str) -> Vec<Version> {
        self.lock()
            .versions
            .values()
            .filter(|v| v.registration_id == registration_id)
            .cloned()
            .collect()
    }

    /// The activated version of `origin`'s registration, once there is one.
    pub async fn activated(&self, origin: &str) -> Result<Version> {
        let registration = self.registration(origin).await?;
        wait_until(
            &format!("{origin}'s service worker is activated"),
            DEFAULT_TIMEOUT,
            || {
                let found = self
                    .versions(&registration.id)
                    .into_iter()
                    .find(|v| v.status == ServiceWorkerVersionStatus::Activated);
                async move { Ok(found) }
            },
        )
        .await
    }

    /// `ServiceWorker.dispatchSyncEvent` at `origin`'s worker: fires at once.
    pub async fn dispatch_sync(&self, origin: &str, tag: &str, last_chance: bool) -> Result {
        let registration = self.registration(origin).await?;
        cdp(
            &self.page,
            "ServiceWorker.dispatchSyncEvent",
            json!({ "origin": origin, "registrationId": registration.id, "tag": tag, "lastChance": last_chance }),
        )
        .await?;
        Ok(())
    }

    /// `ServiceWorker.dispatchPeriodicSyncEvent` at `origin`'s worker.
    pub async fn dispatch_periodic_sync(&self, origin: &str, tag: &str) -> Result {
        let registration = self.registration(origin).await?;
        cdp(
            &self.page,
            "ServiceWorker.dispatchPeriodicSyncEvent",
            json!({ "origin": origin, "registrationId": registration.id, "tag": tag }),
        )
        .await?;
        Ok(())
    }

    /// `ServiceWorker.stopAllWorkers`: kills every worker, even mid-fetch.
    pub async fn stop_all(&self) -> Result {
        cdp(&self.page, "ServiceWorker.stopAllWorkers", json!({})).await?;
        Ok(())
    }

    /// Stops every worker of `registration_id` and waits until each version is seen stopped
    /// (a message or event may start one again meanwhile: stop it again).
    pub async fn stop_until_stopped(&self, registration_id: &str) -> Result {
        self.stop_all().await?;
        wait_until(
            "every worker version is stopped",
            Duration::from_secs(30),
            || async {
                let stopped = self.versions(registration_id).iter().all(|v| {
                    v.running
                        == chromiumoxide::cdp::browser_protocol::service_worker::ServiceWorkerVersionRunningStatus::Stopped
                });
                if stopped {
                    return Ok(Some(()));
                }
                self.stop_all().await?;
                Ok(None)
            },
        )
        .await
    }

    /// `ServiceWorker.stopWorker` for one version.
    pub async fn stop(&self, version_id: &str) -> Result {
        cdp(
            &self.page,
            "ServiceWorker.stopWorker",
            json!({ "versionId": version_id }),
        )
        .await?;
        Ok(())
    }

    /// The control tab, for raw commands.
    pub fn page(&self) -> &Page {
        &self.page
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ServiceWorkers {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// A DevTools session on a service worker

/// A non-flat session on `origin`'s running service worker: commands go out with
/// `Target.sendMessageToTarget`, answers come back as `Target.receivedMessageFromTarget`
/// (chromiumoxide has no handle for worker targets and detaches from the ones it sees).
pub struct WorkerSession<'a> {
    browser: &'a TestBrowser,
    session_id: String,
    answers: EventStream<EventReceivedMessageFromTarget>,
    next_id: u64,
}

impl<'a> WorkerSession<'a> {
    /// Attaches to `origin`'s service worker target (listed once it runs).
    pub async fn attach(browser: &'a TestBrowser, origin: &str) -> Result<WorkerSession<'a>> {
        let prefix = format!("{origin}/");
        let target_id = wait_until(
            &format!("{origin}'s service worker target is listed"),
            Duration::from_secs(30),
            || async {
                let targets =
                    browser_cdp(browser.browser(), "Target.getTargets", json!({})).await?;
                Ok(targets["targetInfos"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| {
                        t["type"] == "service_worker"
                            && t["url"].as_str().is_some_and(|u| u.starts_with(&prefix))
                    })
                    .and_then(|t| t["targetId"].as_str().map(str::to_string)))
            },
        )
        .await?;
        let answers = browser
            .browser()
            .event_listener::<EventReceivedMessageFromTarget>()
            .await?;
        let attached = browser_cdp(
            browser.browser(),
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": false }),
        )
        .await?;
        let session_id = attached["sessionId"]
            .as_str()
            .ok_or("Target.attachToTarget gave no sessionId")?
            .to_string();
        Ok(WorkerSession {
            browser,
            session_id,
            answers,
            next_id: 0,
        })
    }

    /// Sends `method` with `params` to the worker and waits (10 s) for its answer.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        browser_cdp(
            self.browser.browser(),
            "Target.sendMessageToTarget",
            json!({ "sessionId": self.session_id, "message": message }),
        )
        .await?;
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = self.answers.next().await {
                if event.session_id.inner() != &self.session_id {
                    continue;
                }
                let Ok(answer) = serde_json::from_str::<Value>(&event.message) else {
                    continue;
                };
                if answer["id"] == id {
                    return Some(answer);
                }
            }
            None
        })
        .await
        .map_err(|_| format!("{method}: no answer from the worker in 10 s"))?
        .ok_or("the worker session ended")?;
        if let Some(error) = answer.get("error") {
            return Err(format!("{method}: {error}").into());
        }
        Ok(answer["result"].clone())
    }

    /// Ends the session.
    pub async fn detach(self) {
        let _ = browser_cdp(
            self.browser.browser(),
            "Target.detachFromTarget",
            json!({ "sessionId": self.session_id }),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// The app, from the page

/// Waits until a service worker controls `page` (`navigator.serviceWorker.controller`).
pub async fn wait_for_controller(page: &Page) -> Result {
    wait_until(
        "a service worker controls the page",
        DEFAULT_TIMEOUT,
        || async {
            let controlled = eval(page, "navigator.serviceWorker.controller !== null").await?;
            Ok((controlled == Value::Bool(true)).then_some(()))
        },
    )
    .await
}

// ---------------------------------------------------------------------------
// The page API, from a test

/// A page of the app's origin without the demo app on it (`/api/health`, a JSON
/// document): tests drive `SyncClient` themselves with [`register_client`].
pub fn bare_page_url(server: &TestServer) -> String {
    format!("{}/api/health", server.url())
}

/// A page of `server` without the demo app, whose client is registered with `options` (see
/// [`register_client`]) in worker mode and controlled by the worker.
pub async fn worker_page(
    browser: &TestBrowser,
    server: &TestServer,
    options: &str,
) -> Result<Page> {
    let page = browser.open(&bare_page_url(server)).await?;
    let mode = register_client(&page, options).await?;
    if mode != "worker" {
        return Err(format!("register with {options} gave mode {mode}, not worker").into());
    }
    wait_for_controller(&page).await?;
    Ok(page)
}

/// Imports the page module, registers `SyncClient` with `{ swUrl: '/sw.js',
/// serverUrl: location.origin, ...extra }` (`extra` is a JS object literal, e.g.
/// `"{ forcePageMode: true }"`), keeps it in `window.client`, and records every
/// status in `window.statuses` and every change in `window.changes`
/// (`"collection/key"`). Returns `client.mode`.
pub async fn register_client(page: &Page, extra: &str) -> Result<Value> {
    eval(page, &register_client_js(extra)).await
}

/// The script [`register_client`] evaluates (any browser's harness runs the same one).
pub fn register_client_js(extra: &str) -> String {
    format!(
        r#"(async () => {{
    const {{ default: init, SyncClient }} = await import('/pkg/rangersync_page.js');
    await init();
    window.statuses = window.statuses || [];
    window.changes = window.changes || [];
    window.client = await SyncClient.register({{ swUrl: '/sw.js', serverUrl: location.origin, ...({extra}) }});
    window.client.onStatus((s) => window.statuses.push(s));
    window.client.onChange((c, k) => window.changes.push(c + '/' + k));
    return window.client.mode;
}})()"#
    )
}

/// This profile's client id, from a snapshot of `window.client`.
pub async fn client_id_of(page: &Page) -> Result<String> {
    let id = eval(
        page,
        "client.exportSnapshot('json').then(s => JSON.parse(s).client_id)",
    )
    .await?;
    Ok(id
        .as_str()
        .ok_or_else(|| format!("the snapshot names no client_id: {id}"))?
        .to_string())
}

impl TestServer {
    /// `POST /api/test/faults` with these rules.
    pub async fn add_faults(&self, rules: Value) -> Result<Value> {
        self.post_json("/api/test/faults", &json!({ "rules": rules }))
            .await
    }

    /// Answer every push `503` until [`TestServer::clear_faults`]: writes stay queued.
    pub async fn refuse_pushes(&self) -> Result {
        self.add_faults(
            json!([{ "path": "/api/sync/push", "method": "POST", "status": 503, "times": 1000 }]),
        )
        .await?;
        Ok(())
    }

    /// `DELETE /api/test/faults`.
    pub async fn clear_faults(&self) -> Result {
        let response = self
            .http
            .delete(format!("{}/api/test/faults", self.url()))
            .header("content-type", "application/json")
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("DELETE /api/test/faults: {}", response.status()).into());
        }
        Ok(())
    }

    /// Polls the server (not a page: a page message would itself make the worker flush) until
    /// it recorded at least `n` mutations of `client_id`, or `timeout`; returns them.
    pub async fn wait_for_recorded(
        &self,
        client_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        wait_until(
            &format!("the server recorded {n} mutations of {client_id}"),
            timeout,
            || async {
                let recorded = self.mutations_of(client_id).await?;
                Ok((recorded.len() >= n).then_some(recorded))
            },
        )
        .await
    }

    /// `GET /api/test/mutations?client_id=X` → the recorded mutations, in seq order.
    pub async fn mutations_of(&self, client_id: &str) -> Result<Vec<Value>> {
        let answer = self
            .get_json(&format!("/api/test/mutations?client_id={client_id}"))
            .await?;
        Ok(answer["mutations"]
            .as_array()
            .ok_or_else(|| format!("no mutations list: {answer}"))?
            .clone())
    }
}

/// JS for a page's own `fetch(url, { method: 'POST', json body })`: resolves with
/// `{ status, body }` (the body as text), or `{ status: 0, body: error }` when the fetch fails.
pub fn fetch_post_js(url: &str, body: &Value) -> String {
    format!(
        "fetch({url:?}, {{ method: 'POST', headers: {{ 'content-type': 'application/json' }}, body: JSON.stringify({body}) }})\
         .then(async r => ({{ status: r.status, body: await r.text() }}), e => ({{ status: 0, body: String(e) }}))"
    )
}

impl TestServer {
    /// The captured requests this server stored for `path` (`/api/test/stats`), in arrival
    /// order: `{ path, idempotency_key, body }`, the body as the text that was sent.
    pub async fn captured(&self, path: &str) -> Result<Vec<Value>> {
        let stats = self.stats().await?;
        Ok(stats["captured"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["path"] == path)
            .collect())
    }
}

/// Checks that `recorded` (from [`TestServer::mutations_of`]) holds seqs
/// `1..=n`, each exactly once, strictly increasing, all `applied`.
pub fn assert_seqs_applied_once(recorded: &[Value], n: u64) {
    let seqs: Vec<u64> = recorded.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<u64>>(),
        "seqs 1..={n}, each once, in order: {recorded:?}"
    );
    for m in recorded {
        assert_eq!(m["status"], "applied", "every mutation applied: {m}");
    }
}

// ---------------------------------------------------------------------------
// A browser without Background Sync

impl TestBrowser {
    /// `Browser.setPermission background-sync: denied` for `origin`: from then on
    /// `registration.sync.register()` rejects (`NotAllowedError`), so nothing is
    /// registered and the browser never fires or retries a `sync` event on its own,
    /// as in browsers without Background Sync. (Blink has no switch that removes
    /// `registration.sync`; `--disable-blink-features=BackgroundSync` leaves it.)
    pub async fn deny_background_sync(&self, origin: &str) -> Result {
        browser_cdp(
            &self.browser,
            "Browser.setPermission",
            json!({
                "origin": origin,
                "permission": { "name": "background-sync" },
                "setting": "denied",
            }),
        )
        .await?;
        Ok(())
    }
}

/// JS that defines `window.raw(data)`: posts `data` to the controller with a reply port and
/// resolves with the reply (parsed when it came back as text), or `{ no_reply: true }` after 10 s.
pub const RAW_MESSAGE_JS: &str = r#"window.raw = (data) => new Promise((resolve) => {
    const channel = new MessageChannel();
    const timer = setTimeout(() => resolve({ no_reply: true }), 10000);
    channel.port1.onmessage = (e) => {
        clearTimeout(timer);
        resolve(typeof e.data === 'string' ? JSON.parse(e.data) : e.data);
    };
    navigator.serviceWorker.controller.postMessage(data, [channel.port2]);
}); true"#;

/// Opens the demo app at `origin` (a server's URL) and waits until it has started
/// (`window.rangersync`); a page that never starts fails with what it reads.
pub async fn open_demo(browser: &TestBrowser, origin: &str) -> Result<Page> {
    let page = browser.open(&format!("{origin}/")).await?;
    wait_until("the demo app started", Duration::from_secs(30), || async {
        let started = eval(&page, "!!window.rangersync").await?;
        if started == true {
            return Ok(Some(()));
        }
        let text = eval(
            &page,
            "document.body ? document.body.innerText.slice(0, 200) : ''",
        )
        .await?;
        Err(format!("not started; the page reads {text}").into())
    })
    .await?;
    Ok(page)
}

/// A script that makes `window.image`: a `width`×`height` PNG of random noise (about
/// 4 bytes a pixel: it does not compress), drawn on a canvas, as a `File` named `cat.png`;
/// it evaluates to the file's size.
pub fn noise_png_js(width: u32, height: u32) -> String {
    format!(
        r#"(async () => {{
    const canvas = new OffscreenCanvas({width}, {height});
    const ctx = canvas.getContext('2d');
    const pixels = ctx.createImageData({width}, {height});
    for (let at = 0; at < pixels.data.length; at += 65536) {{
        crypto.getRandomValues(pixels.data.subarray(at, at + 65536));
    }}
    for (let i = 3; i < pixels.data.length; i += 4) pixels.data[i] = 255;
    ctx.putImageData(pixels, 0, 0);
    const png = await canvas.convertToBlob({{ type: 'image/png' }});
    window.image = new File([png], 'cat.png', {{ type: 'image/png' }});
    return window.image.size;
}})()"#
    )
}

/// The demo app's note list, as text.
pub async fn note_list(page: &Page) -> Result<String> {
    Ok(
        eval(page, "document.getElementById('note-list').textContent")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The words of the demo app's status pill: its `<rangersync-status>` element (`#sync-status`),
/// read from the element's shadow DOM; "" before the element is defined.
pub async fn demo_pill(page: &Page) -> Result<String> {
    Ok(demo_indicator(page).await?["pill"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// What the demo's `<rangersync-status>` shows: `pill` (its words), `look` (the pill's
/// `data-look`), and the host's `data-state` and `data-pending` (the status it last showed), as
/// `state` and `pending`; the Last backup line of its panel as `backup`.
pub async fn demo_indicator(page: &Page) -> Result<Value> {
    eval(
        page,
        "(() => { const el = document.getElementById('sync-status'); \
           const r = el && el.shadowRoot; if (!r) return {}; \
           return { pill: r.querySelector('[part=state]').textContent, \
             look: r.querySelector('[part=pill]').dataset.look, \
             state: el.dataset.state, pending: el.dataset.pending, \
             backup: r.querySelector('[data-field=backup]').textContent }; })()",
    )
    .await
}
