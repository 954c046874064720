//! # WebKitGTK through WebKitWebDriver: Safari's engine, without Background Sync
//!
//! Debian's `webkit2gtk-driver` (`$WEBKIT_WEBDRIVER`, default `/usr/bin/WebKitWebDriver`)
//! drives MiniBrowser, WebKitGTK's own browser, over the W3C WebDriver HTTP API
//! ([`Session`]). `cargo xtask test` installs it with `xvfb` when missing.
//!
//! Caveats first, each found by trying (see `docs/TOOLCHAIN.md`):
//! - It needs a display: the driver runs under `xvfb-run -a` (`$XVFB_RUN`, default
//!   `/usr/bin/xvfb-run`), in a process group of its own that is killed as a whole when the
//!   browser is dropped (the X server, the driver and MiniBrowser's processes).
//! - MiniBrowser has no profile option: an automation session keeps its website data for the
//!   session's length only. A browser restart cannot be tested; a tab closed and a later
//!   visit in the same session can. Every session is in effect a private window: nothing is
//!   left behind when it ends.
//! - No `SyncManager`: the worker delivers on its start, on page messages and on its own
//!   retry timer, as in Firefox. There is no DevTools protocol: the tests act through pages.
//! - Service workers run on `http://127.0.0.1` (a potentially trustworthy origin).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use serde_json::json;

use crate::webdriver::Session;
use crate::Result;

/// An executable from `$var`, else `default`; an error saying how to install it.
fn tool(var: &str, default: &str) -> Result<PathBuf> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.is_file() {
        return Err(format!(
            "{} is missing: install Debian's webkit2gtk-driver and xvfb \
             (`apt-get install -y webkit2gtk-driver xvfb`; `cargo xtask test` does so as root) \
             or set {var}",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// WebKitGTK's MiniBrowser in one WebDriver session; commands act on the current tab.
pub struct WebKit {
    driver: tokio::process::Child,
    /// The driver's process group (xvfb-run, Xvfb, WebKitWebDriver, MiniBrowser).
    group: Option<u32>,
    session: Session,
    version: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WebKit {
    /// Starts the driver under a virtual display and opens a session.
    pub async fn launch() -> Result<WebKit> {
        Self::launch_with(&[]).await
    }

    /// [`WebKit::launch`] in private browsing (MiniBrowser's `--private`).
    pub async fn launch_private() -> Result<WebKit> {
        Self::launch_with(&["--private"]).await
    }

    async fn launch_with(browser_args: &[&str]) -> Result<WebKit> {
        let launched = Instant::now();
        let driver_path = tool("WEBKIT_WEBDRIVER", "/usr/bin/WebKitWebDriver")?;
        let xvfb_run = tool("XVFB_RUN", "/usr/bin/xvfb-run")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::Builder::new()
            .prefix("rangersync-e2e-webkit-")
            .tempdir()?;
        let log = dir.path().join("webkitwebdriver.log");
        let log_file = std::fs::File::create(&log)?;
        let driver = tokio::process::Command::new(&xvfb_run)
            .arg("-a")
            .arg(&driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", xvfb_run.display()))?;
        let group = driver.id();
        let mut webkit = WebKit {
            driver,
            group,
            session: Session::new(SocketAddr::from(([127, 0, 0, 1], port)))?,
            version: String::new(),
            log,
            _dir: dir,
        };
        webkit
            .session
            .wait_for_driver("WebKitWebDriver")
            .await
            .map_err(|e| format!("{e}\n{}", webkit.log_tail()))?;
        let args: Vec<&str> = std::iter::once("--automation")
            .chain(browser_args.iter().copied())
            .collect();
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "timeouts": { "script": 120_000, "pageLoad": 60_000 },
                "webkitgtk:browserOptions": { "args": args },
            }},
        });
        let started = webkit.session.start(capabilities).await.map_err(|e| {
            format!(
                "could not start MiniBrowser through WebKitWebDriver: {e}\n{}",
                webkit.log_tail()
            )
        })?;
        let caps = &started["capabilities"];
        webkit.version = format!(
            "WebKitGTK {} ({})",
            caps["browserVersion"].as_str().unwrap_or("?"),
            caps["browserName"].as_str().unwrap_or("MiniBrowser")
        );
        println!(
            "{} started in {:.1} s",
            webkit.version,
            launched.elapsed().as_secs_f64()
        );
        Ok(webkit)
    }

    /// `WebKitGTK 2.50.6 (MiniBrowser)`, as the driver reported it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The end of the driver's log.
    pub fn log_tail(&self) -> String {
        crate::webdriver::log_tail(&self.log)
    }

    /// Ends the session (MiniBrowser quits), then the driver and its display.
    pub async fn close(mut self) -> Result {
        self.session.end().await;
        self.kill_group();
        let _ = self.driver.wait().await;
        Ok(())
    }

    fn kill_group(&mut self) {
        if let Some(group) = self
            .group
            .take()
            .and_then(|g| libc::pid_t::try_from(g).ok())
        {
            // The group the driver leads (`process_group(0)`), never 0 or 1: a negative pid
            // of -1 would signal every process.
            if group > 1 {
                // SAFETY: kill(2) with a negative pid signals that process group only.
                unsafe {
                    libc::kill(-group, libc::SIGKILL);
                }
            }
        }
    }
}

impl std::ops::Deref for WebKit {
    type Target = Session;

    /// The WebDriver commands (navigate, scripts, tabs) act on the session.
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Drop for WebKit {
    /// A test that failed half-way: end the session, then kill the whole process group.
    fn drop(&mut self) {
        self.session.end_blocking();
        self.kill_group();
        let _ = self.driver.start_kill();
    }
}
