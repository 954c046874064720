//! # One W3C WebDriver session over HTTP
//!
//! What the Firefox (geckodriver) and WebKit (WebKitWebDriver) harnesses share: plain `reqwest`
//! JSON calls for the few commands the tests need (navigate, run a script, tabs), acting on
//! the session's current tab. The harnesses start the driver and the browser; this module
//! only talks to a driver that runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{wait_until, Result};

/// The last 40 lines of a driver's log file, headed by its path (for a failure's message).
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!(
        "--- {} (last lines) ---\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}

/// A driver at `addr`, and the session it started (`id` empty before and after).
pub struct Session {
    http: reqwest::Client,
    addr: SocketAddr,
    id: String,
}

impl Session {
    /// A driver listening on `addr`, with no session yet.
    pub fn new(addr: SocketAddr) -> Result<Session> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(180))
            .build()?;
        Ok(Session {
            http,
            addr,
            id: String::new(),
        })
    }

    /// Waits until the driver answers `/status` with `ready`.
    pub async fn wait_for_driver(&self, what: &str) -> Result {
        let url = format!("http://{}/status", self.addr);
        wait_until(
            &format!("{what} answers /status"),
            Duration::from_secs(30),
            || async {
                let status: Value = self.http.get(&url).send().await?.json().await?;
                Ok((status["value"]["ready"] == true).then_some(()))
            },
        )
        .await
    }

    /// `POST /session` with these capabilities; returns what the driver answered
    /// (`sessionId`, `capabilities`).
    pub async fn start(&mut self, capabilities: Value) -> Result<Value> {
        let started = self.command("POST", "/session", capabilities).await?;
        self.id = started["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {started}"))?
            .to_string();
        Ok(started)
    }

    /// Whether a session is open.
    pub fn is_open(&self) -> bool {
        !self.id.is_empty()
    }

    /// Ends the session (the browser quits), if one is open.
    pub async fn end(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let path = self.path("");
        let _ = self.command("DELETE", &path, Value::Null).await;
        self.id.clear();
    }

    /// Forgets the session without asking the driver (its browser was killed).
    pub fn forget(&mut self) {
        self.id.clear();
    }

    /// [`Session::end`] with a blocking request, for a `Drop` (a test that failed half-way).
    pub fn end_blocking(&mut self) {
        if self.id.is_empty() {
            return;
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.id, self.addr
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        self.id.clear();
    }

    /// One WebDriver command: `method path` with a JSON body; returns `value`, or an error
    /// carrying WebDriver's error and message.
    pub async fn command(&self, method: &str, path: &str, body: Value) -> Result<Value> {
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

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    /// Navigates the current tab to `url` and waits for it to load.
    pub async fn goto(&self, url: &str) -> Result {
        self.command("POST", &self.path("/url"), json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// WebDriver "Execute Async Script": `script` is a function body whose last argument is the
    /// callback; returns what it was called with.
    pub async fn execute_async(&self, script: &str, args: Value) -> Result<Value> {
        self.command(
            "POST",
            &self.path("/execute/async"),
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
    /// page set up, a key say, stays), asserts worker mode (both browsers have service workers)
    /// and waits until the worker controls the page.
    pub async fn register_client(&self, options: &str) -> Result {
        let mode = self.eval(&crate::register_client_js(options)).await?;
        assert_eq!(mode, "worker", "the browser runs the service worker");
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
            .command("GET", &self.path("/window"), Value::Null)
            .await?;
        Ok(handle.as_str().unwrap_or_default().to_string())
    }

    /// Opens a new tab showing `url`, makes it current, and returns its handle.
    pub async fn new_tab(&self, url: &str) -> Result<String> {
        let opened = self
            .command("POST", &self.path("/window/new"), json!({ "type": "tab" }))
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
        self.command("POST", &self.path("/window"), json!({ "handle": handle }))
            .await?;
        Ok(())
    }

    /// Closes the current tab (as a user would: `pagehide` runs) and makes another one current.
    /// Refuses to close the last tab (that would end the session).
    pub async fn close_tab(&self) -> Result {
        let handles = self
            .command("GET", &self.path("/window/handles"), Value::Null)
            .await?;
        if handles.as_array().map_or(0, Vec::len) < 2 {
            return Err("close_tab: this is the last tab; open another first".into());
        }
        let left = self
            .command("DELETE", &self.path("/window"), Value::Null)
            .await?;
        let next = left
            .as_array()
            .and_then(|h| h.first())
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no tab left after closing: {left}"))?
            .to_string();
        self.switch_to(&next).await
    }
}
