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
//! - Closing the last window ends a WebDriver session: [`Session::close_tab`](crate::webdriver::Session::close_tab) refuses to close
//!   the last one; open another first ([`Firefox::new_tab`]).
//! - Service workers work on `http://127.0.0.1` with no prefs (a potentially trustworthy
//!   origin).
//! - A JSON document opens in Firefox's JSON viewer, a privileged page where a module import
//!   fails ("error loading dynamically imported module"): the viewer is turned off
//!   (`devtools.jsonview.enabled`), so the tests' bare page (`/api/health`) works as in Chromium.
//! - Dropping a [`Firefox`] ends its session (Firefox quits) and kills what is left; the
//!   geckodriver process is killed with it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::webdriver::Session;
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
    session: Session,
    pid: Option<u32>,
    version: String,
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
        let mut firefox_driver = Firefox {
            driver,
            session: Session::new(addr)?,
            pid: None,
            version: String::new(),
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
        firefox_driver
            .session
            .wait_for_driver("geckodriver")
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
            .session
            .start(capabilities)
            .await
            .map_err(|e| {
                format!(
                    "could not start Firefox through geckodriver: {e}\n{}",
                    firefox_driver.log_tail()
                )
            })?;
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
        crate::webdriver::log_tail(&self.log)
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
        self.session.forget();
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
        if !self.session.is_open() {
            return;
        }
        self.session.end().await;
        if let Some(pid) = self.pid.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while is_firefox(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = self.driver.kill().await;
    }
}

impl std::ops::Deref for Firefox {
    type Target = Session;

    /// The WebDriver commands (navigate, scripts, tabs) act on the session.
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Drop for Firefox {
    /// A test that failed half-way: end the session with a blocking request (Firefox quits),
    /// then kill whatever is left.
    fn drop(&mut self) {
        self.session.end_blocking();
        if let Some(pid) = self.pid.filter(|pid| is_firefox(*pid)) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}
