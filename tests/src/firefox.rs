//! # Firefox ESR through geckodriver: a second browser, without Background Sync
//!
//! Debian's `firefox-esr` (`$FIREFOX`, default `/usr/bin/firefox-esr`), headless, driven by
//! `geckodriver` (`$GECKODRIVER`, else `<workspace>/.tools/bin/geckodriver`, else `PATH`;
//! `cargo xtask test` installs it from crates.io) over the W3C WebDriver HTTP API, with plain
//! `reqwest` JSON calls: the few commands the tests need do not warrant a WebDriver crate.
//!
//! Caveats first, each found by trying (see `docs/TOOLCHAIN.md`):
//! - Firefox has service workers but no `SyncManager`: `registration.sync` is undefined, so the
//!   worker delivers on its start, on page messages, on `online` and on its own retry timer
//!   while it is alive. There is no DevTools-protocol `ServiceWorker` domain here: the tests
//!   act through pages only.
//! - A profile folder given as `-profile DIR` is used in place (not copied), so
//!   [`Firefox::restart`] and [`Firefox::kill_and_restart`] relaunch on the same IndexedDB,
//!   registration and config.
//! - Closing the last window ends a WebDriver session: [`Firefox::close_tab`] refuses to close
//!   the last one; open another first ([`Firefox::new_tab`]).
//! - Service workers work on `http://127.0.0.1` with no prefs (a potentially trustworthy
//!   origin).
//! - A JSON document opens in Firefox's JSON viewer, a privileged page where a module import
//!   fails ("error loading dynamically imported module"): the viewer is turned off
//!   (`devtools.jsonview.enabled`), so the tests' bare page (`/api/health`) works as in Chromium.
//! - Dropping a [`Firefox`] ends its session (Firefox quits) and kills what is left; the
//!   geckodriver process is killed with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{wait_until, workspace_root, Result};

/// The browser: `$FIREFOX`, else `/usr/bin/firefox-esr`.
pub fn firefox_path() -> Result<PathBuf> {
    let path = std::env::var_os("FIREFOX")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/firefox-esr"), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: `apt-get install -y firefox-esr` (`cargo xtask test` does so as root) \
             or set FIREFOX to a Firefox binary",
            path.display()
        )
        .into())
    }
}

/// The driver: `$GECKODRIVER`, else `<workspace>/.tools/bin/geckodriver`, else `geckodriver` on
/// `PATH`.
pub fn geckodriver_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("GECKODRIVER").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("GECKODRIVER={} is not a file", path.display()).into())
        };
    }
    let local = workspace_root().join(".tools/bin/geckodriver");
    if local.is_file() {
        return Ok(local);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("geckodriver"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "geckodriver not found: `cargo install --locked geckodriver --version 0.37.1 --root .tools` \
             (`cargo xtask test` does) or set GECKODRIVER"
                .into()
        })
}

/// Whether `pid` is (still) a running Firefox process: not a reused id, and not a zombie
/// waiting for geckodriver to reap it.
fn is_firefox(pid: u32) -> bool {
    // `PID (COMM) STATE …`
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let comm_is_firefox = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .is_some_and(|(comm, _)| comm.to_ascii_lowercase().contains("firefox"));
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim().chars().next());
        comm_is_firefox && state != Some('Z')
    })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A headless Firefox with its own profile folder, in one WebDriver session; commands act on
/// the current tab.
pub struct Firefox {
    driver: tokio::process::Child,
    addr: SocketAddr,
    session: String,
    pid: Option<u32>,
    version: String,
    http: reqwest::Client,
    profile: Arc<tempfile::TempDir>,
    prefs: Value,
    log: PathBuf,
}

impl Firefox {
    /// Launches with a fresh profile.
    pub async fn launch() -> Result<Firefox> {
        Firefox::launch_with_prefs(json!({})).await
    }

    /// Launches with a fresh profile and these extra prefs (kept across restarts), e.g.
    /// `{"dom.serviceWorkers.idle_timeout": 1000}`.
    pub async fn launch_with_prefs(prefs: Value) -> Result<Firefox> {
        let profile = tempfile::Builder::new()
            .prefix("rangersync-e2e-firefox-")
            .tempdir()?;
        Firefox::launch_with(Arc::new(profile), prefs).await
    }

    async fn launch_with(profile: Arc<tempfile::TempDir>, prefs: Value) -> Result<Firefox> {
        let launched = Instant::now();
        let firefox = firefox_path()?;
        let geckodriver = geckodriver_path()?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Inside the profile folder (Firefox ignores the file), so it goes with the profile.
        let log = profile.path().join("geckodriver.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let driver = tokio::process::Command::new(&geckodriver)
            // Marionette's port is left to the system (geckodriver's default).
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", geckodriver.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(180))
            .build()?;
        let mut firefox_driver = Firefox {
            driver,
            addr,
            session: String::new(),
            pid: None,
            version: String::new(),
            http,
            profile,
            prefs,
            log,
        };
        let mut all_prefs = json!({
            // Quiet: no first-run pages, no update or telemetry traffic.
            "app.update.enabled": false,
            "browser.shell.checkDefaultBrowser": false,
            "datareporting.policy.dataSubmissionEnabled": false,
            "toolkit.telemetry.enabled": false,
            // A JSON document (the tests' bare page, `/api/health`) would open in the JSON
            // viewer, a privileged page where the app's module import fails; show it as text.
            "devtools.jsonview.enabled": false,
        });
        if let (Some(all), Some(extra)) =
            (all_prefs.as_object_mut(), firefox_driver.prefs.as_object())
        {
            all.extend(extra.clone());
        }
        wait_until(
            "geckodriver answers /status",
            Duration::from_secs(30),
            || async {
                let status: Value = firefox_driver
                    .http
                    .get(format!("http://{addr}/status"))
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok((status["value"]["ready"] == true).then_some(()))
            },
        )
        .await?;
        let driver_ready = launched.elapsed();
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "firefox",
                "timeouts": { "script": 120_000, "pageLoad": 60_000 },
                "moz:firefoxOptions": {
                    "binary": firefox.to_string_lossy(),
                    "args": ["-headless", "-profile", firefox_driver.profile.path().to_string_lossy()],
                    "prefs": all_prefs,
                },
            }},
        });
        let started = firefox_driver
            .command("POST", "/session", capabilities)
            .await
            .map_err(|e| {
                format!(
                    "could not start Firefox through geckodriver: {e}\n{}",
                    firefox_driver.log_tail()
                )
            })?;
        firefox_driver.session = started["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {started}"))?
            .to_string();
        let caps = &started["capabilities"];
        firefox_driver.pid = caps["moz:processID"].as_u64().map(|p| p as u32);
        firefox_driver.version = format!(
            "{} {}",
            caps["browserName"].as_str().unwrap_or("firefox"),
            caps["browserVersion"].as_str().unwrap_or("?")
        );
        println!(
            "{} started in {:.1} s (geckodriver ready after {:.1} s)",
            firefox_driver.version,
            launched.elapsed().as_secs_f64(),
            driver_ready.as_secs_f64()
        );
        Ok(firefox_driver)
    }

    /// `firefox 153.8.0`, as the browser reported it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The profile folder (IndexedDB and the registration live here).
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// The end of geckodriver's log (Firefox's console output goes there too).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- {} (last lines) ---\n{}",
            self.log.display(),
            lines[start..].join("\n")
        )
    }

    /// One WebDriver command: `method path` with a JSON body; returns `value`, or an error
    /// carrying WebDriver's error and message.
    async fn command(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let url = format!("http://{}{path}", self.addr);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| format!("{method} {path}: {status}, not JSON: {e}"))?;
        let value = answer["value"].clone();
        if !status.is_success() {
            return Err(format!(
                "{method} {path}: {status} {}: {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("?")
            )
            .into());
        }
        Ok(value)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Navigates the current tab to `url` and waits for it to load.
    pub async fn goto(&self, url: &str) -> Result {
        self.command("POST", &self.session_path("/url"), json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// WebDriver "Execute Async Script": `script` is a function body whose last argument is the
    /// callback; returns what it was called with.
    pub async fn execute_async(&self, script: &str, args: Value) -> Result<Value> {
        self.command(
            "POST",
            &self.session_path("/execute/async"),
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Evaluates `expression` in the current tab, awaits it if it is a promise, and returns its
    /// value as JSON (`null` for `undefined`); a throw or a rejection is an error with the JS
    /// message (as [`crate::eval`] does in Chromium).
    pub async fn eval(&self, expression: &str) -> Result<Value> {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             Promise.resolve().then(() => ({expression})).then(
               (v) => done({{ ok: v === undefined ? null : v }}),
               (e) => done({{ err: String((e && (e.stack ? e.message + '\\n' + e.stack : e.message)) || e) }}));"
        );
        let answer = self.execute_async(&script, json!([])).await?;
        if let Some(err) = answer.get("err") {
            return Err(format!(
                "JS threw: {}\n  in: {expression}",
                err.as_str().unwrap_or("?")
            )
            .into());
        }
        Ok(answer["ok"].clone())
    }

    /// Registers the client in the page open now with `options` (a JS object literal; what the
    /// page set up, a key say, stays), asserts worker mode (Firefox has service workers) and
    /// waits until the worker controls the page.
    pub async fn register_client(&self, options: &str) -> Result {
        let mode = self.eval(&crate::register_client_js(options)).await?;
        assert_eq!(mode, "worker", "Firefox runs the service worker");
        wait_until(
            "a service worker controls the page",
            Duration::from_secs(30),
            || async {
                let controlled = self
                    .eval("navigator.serviceWorker.controller !== null")
                    .await?;
                Ok((controlled == true).then_some(()))
            },
        )
        .await
    }

    /// The current tab's handle.
    pub async fn current_tab(&self) -> Result<String> {
        let handle = self
            .command("GET", &self.session_path("/window"), Value::Null)
            .await?;
        Ok(handle.as_str().unwrap_or_default().to_string())
    }

    /// Opens a new tab showing `url`, makes it current, and returns its handle.
    pub async fn new_tab(&self, url: &str) -> Result<String> {
        let opened = self
            .command(
                "POST",
                &self.session_path("/window/new"),
                json!({ "type": "tab" }),
            )
            .await?;
        let handle = opened["handle"]
            .as_str()
            .ok_or_else(|| format!("no handle in {opened}"))?
            .to_string();
        self.switch_to(&handle).await?;
        self.goto(url).await?;
        Ok(handle)
    }

    /// Makes `handle` the current tab.
    pub async fn switch_to(&self, handle: &str) -> Result {
        self.command(
            "POST",
            &self.session_path("/window"),
            json!({ "handle": handle }),
        )
        .await?;
        Ok(())
    }

    /// Closes the current tab (as a user would: `pagehide` runs) and makes another one current.
    /// Refuses to close the last tab (that would end the session).
    pub async fn close_tab(&self) -> Result {
        let handles = self
            .command("GET", &self.session_path("/window/handles"), Value::Null)
            .await?;
        if handles.as_array().map_or(0, Vec::len) < 2 {
            return Err("close_tab: this is the last tab; open another first".into());
        }
        let left = self
            .command("DELETE", &self.session_path("/window"), Value::Null)
            .await?;
        let next = left
            .as_array()
            .and_then(|h| h.first())
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no tab left after closing: {left}"))?
            .to_string();
        self.switch_to(&next).await
    }

    /// Ends the session (Firefox quits cleanly) and launches again on the same profile.
    pub async fn restart(mut self) -> Result<Firefox> {
        self.quit().await;
        let (profile, prefs) = (self.profile.clone(), self.prefs.clone());
        drop(self);
        Firefox::launch_with(profile, prefs).await
    }

    /// Kills Firefox (SIGKILL, no shutdown) and launches again on the same profile.
    pub async fn kill_and_restart(mut self) -> Result<Firefox> {
        let pid = self.pid.ok_or("Firefox reported no moz:processID")?;
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        // Let the parent go before its children notice; then the driver goes too.
        wait_until("Firefox is gone", Duration::from_secs(10), || async {
            Ok((!is_firefox(pid)).then_some(()))
        })
        .await
        .ok();
        self.pid = None;
        self.session.clear();
        let _ = self.driver.kill().await;
        let (profile, prefs) = (self.profile.clone(), self.prefs.clone());
        drop(self);
        // A killed Firefox leaves its profile lock behind; the next start takes it over as the
        // lock's process is gone.
        Firefox::launch_with(profile, prefs).await
    }

    /// Ends the session: Firefox quits.
    pub async fn close(mut self) -> Result {
        self.quit().await;
        Ok(())
    }

    async fn quit(&mut self) {
        if self.session.is_empty() {
            return;
        }
        let path = self.session_path("");
        let _ = self.command("DELETE", &path, Value::Null).await;
        self.session.clear();
        if let Some(pid) = self.pid.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while is_firefox(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = self.driver.kill().await;
    }
}

impl Drop for Firefox {
    /// A test that failed half-way: end the session with a blocking request (Firefox quits),
    /// then kill whatever is left.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            if let Ok(mut stream) =
                TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))
            {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let request = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session, self.addr
                );
                if stream.write_all(request.as_bytes()).is_ok() {
                    let _ = stream.read_to_end(&mut Vec::new());
                }
            }
        }
        if let Some(pid) = self.pid.filter(|pid| is_firefox(*pid)) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}
