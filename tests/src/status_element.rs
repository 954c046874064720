//! # `<rangersync-status>` driven through a page, in any browser
//!
//! The package's `status-element.js`, served at `/status-element.js`, shown for the page's
//! `window.client`; what it shows is read from its shadow DOM. The scenario runs in Chromium
//! (`tests/status_element.rs`) and Firefox (`tests/firefox_status_element.rs`) through
//! [`Evaluate`], the one call both harnesses have.
//!
//! Chromium also keeps a screenshot of the element per state under `docs/status/` (the user
//! guide shows them): with `RANGERSYNC_WRITE_SCREENSHOTS=1` it writes them (a CDP screenshot of
//! the element's bounding box), else it checks that each state it drives has its PNG and that
//! no PNG there is left over from a state it no longer drives.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{wait_until, workspace_root, www_with, Result, TestServer};

/// Evaluates JS in a page and returns its (awaited) value as JSON.
#[allow(async_fn_in_trait)]
pub trait Evaluate {
    async fn js(&self, expression: &str) -> Result<Value>;

    /// The element's screenshot for `state` (see [`SCREENSHOT_DIR`]); only Chromium keeps
    /// them, other browsers do nothing.
    async fn shoot(&self, _state: &str) -> Result {
        Ok(())
    }
}

impl Evaluate for chromiumoxide::Page {
    async fn js(&self, expression: &str) -> Result<Value> {
        crate::eval(self, expression).await
    }

    async fn shoot(&self, state: &str) -> Result {
        shoot(self, state).await
    }
}

/// Where the screenshots of the element are kept, one `<state>.png` each.
pub const SCREENSHOT_DIR: &str = "docs/status";

/// Set to `1` to (re)write the screenshots instead of checking they exist.
pub const WRITE_SCREENSHOTS_ENV: &str = "RANGERSYNC_WRITE_SCREENSHOTS";

/// The states shot (or checked) in this process.
static SHOT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn screenshot_path(state: &str) -> PathBuf {
    workspace_root()
        .join(SCREENSHOT_DIR)
        .join(format!("{state}.png"))
}

/// Writes (with [`WRITE_SCREENSHOTS_ENV`]) or checks `docs/status/<state>.png`: the element's
/// bounding box with a margin, taken when its pill reads the same before and after the shot.
async fn shoot(page: &chromiumoxide::Page, state: &str) -> Result {
    use chromiumoxide::cdp::browser_protocol::page::{CaptureScreenshotFormat, Viewport};
    use chromiumoxide::page::ScreenshotParams;

    SHOT.lock()
        .map_err(|e| e.to_string())?
        .insert(state.to_string());
    let path = screenshot_path(state);
    if std::env::var(WRITE_SCREENSHOTS_ENV).as_deref() != Ok("1") {
        if !path.is_file() {
            return Err(format!(
                "{} is missing: the state {state:?} has no screenshot; write them with \
                 {WRITE_SCREENSHOTS_ENV}=1 cargo test -p rangersync-e2e --test status_element",
                path.display()
            )
            .into());
        }
        return Ok(());
    }
    let pill = "window.statusElement.shadowRoot.querySelector('[part=state]').textContent";
    for _ in 0..20 {
        let before = page.js(pill).await?;
        let rect = page
            .js(
                "(() => { const r = window.statusElement.getBoundingClientRect(); \
                   return { x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height }; })()",
            )
            .await?;
        let number = |k: &str| rect[k].as_f64().unwrap_or(0.0);
        let margin = 12.0;
        let png = page
            .screenshot(
                ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .capture_beyond_viewport(true)
                    .clip(Viewport {
                        x: (number("x") - margin).max(0.0),
                        y: (number("y") - margin).max(0.0),
                        width: number("w") + 2.0 * margin,
                        height: number("h") + 2.0 * margin,
                        scale: 1.0,
                    })
                    .build(),
            )
            .await
            .map_err(|e| format!("screenshot of {state}: {e}"))?;
        if page.js(pill).await? == before {
            std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
            std::fs::write(&path, png)?;
            println!("wrote {}", path.display());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the element never held still for the screenshot of {state}").into())
}

/// Every PNG under [`SCREENSHOT_DIR`] is the screenshot of a state shot in this process (none
/// is left over from a state no test drives any more), and some state was shot.
pub fn no_stale_screenshots() -> Result {
    let shot = SHOT.lock().map_err(|e| e.to_string())?.clone();
    if shot.is_empty() {
        return Err("no state of the element was shot".into());
    }
    let dir = workspace_root().join(SCREENSHOT_DIR);
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(state) = name.strip_suffix(".png") {
            if !shot.contains(state) {
                return Err(format!(
                    "{}/{name} is the screenshot of no state the test drives: delete it",
                    dir.display()
                )
                .into());
            }
        }
    }
    Ok(())
}

impl Evaluate for crate::webdriver::Session {
    async fn js(&self, expression: &str) -> Result<Value> {
        self.eval(expression).await
    }
}

/// The client options the scenario registers with: short retries, no scheduled backups.
pub const OPTIONS: &str =
    "{ exportIntervalMs: 0, retry: { baseDelayMs: 200, maxDelayMs: 1000, maxAttempts: 1000 } }";

/// The element's file as the package ships it, served at `/status-element.js`.
pub fn www_with_the_element() -> Result<tempfile::TempDir> {
    let source = workspace_root().join("page-client/npm/status-element.js");
    www_with(&[("status-element.js", &std::fs::read_to_string(source)?)])
}

/// Imports the element and shows `window.client` in it.
pub async fn show_element(page: &impl Evaluate) -> Result {
    page.js("import('/status-element.js').then(() => { \
           document.body.style.cssText = 'margin: 0; padding: 16px; background: #fff; \
             font: 14px/1.4 system-ui, sans-serif'; \
           const el = document.createElement('rangersync-status'); el.style.maxWidth = '460px'; \
           document.body.append(el); el.client = window.client; window.statusElement = el; \
           return true; })")
        .await?;
    Ok(())
}

/// What the element shows now, read from its shadow DOM.
async fn shown(page: &impl Evaluate) -> Result<Value> {
    page.js("(() => { const r = window.statusElement.shadowRoot; \
           const q = (s) => r.querySelector(s); \
           return { pill: q('[part=state]').textContent, look: q('[part=pill]').dataset.look, \
             nudge: q('[part=nudge]').hidden ? null : q('[part=nudge]').dataset.kind, \
             nudgeText: q('[part=nudge] span').textContent, \
             live: q('[part=state]').closest('[aria-live]') ? q('[part=state]').getAttribute('aria-live') : null, \
             mode: q('[part=mode]').hidden ? null : q('[part=mode]').textContent, \
             storage: q('[data-field=storage]').textContent, panel: !q('[part=panel]').hidden, \
             dead: [...r.querySelectorAll('[part=dead-letter]')].map(li => li.dataset.seq) }; })()",
    )
    .await
}

/// Waits until the element shows what `ok` accepts; the error names the last thing shown.
pub async fn until_shown(
    page: &impl Evaluate,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_until(what, Duration::from_secs(30), || async {
        let now = shown(page).await?;
        if ok(&now) {
            return Ok(Some(now));
        }
        Err(format!("the element shows {now}").into())
    })
    .await
}

/// Clicks the element's part `selector` (inside its shadow root).
pub async fn click(page: &impl Evaluate, selector: &str) -> Result {
    page.js(&format!(
            "(() => {{ window.statusElement.shadowRoot.querySelector({selector:?}).click(); return true; }})()"
        ),
    )
    .await?;
    Ok(())
}

/// On a page whose client is registered with [`OPTIONS`] in worker mode against `server` (which
/// serves [`www_with_the_element`]): each state the element shows, its nudges, and its Retry,
/// Discard and Dismiss buttons.
pub async fn states_nudges_and_buttons(page: &impl Evaluate, server: &mut TestServer) -> Result {
    show_element(page).await?;
    page.js("client.put('notes', 'n1', { t: 1 })").await?;
    wait_until("the server has n1", Duration::from_secs(30), || async {
        let changes = server.pull_all().await?;
        Ok(changes.iter().any(|c| c["key"] == "n1").then_some(()))
    })
    .await?;
    let saved = until_shown(page, "Saved", |s| s["pill"] == "Saved").await?;
    assert_eq!(saved["look"], "saved");
    assert_eq!(saved["live"], "polite", "changes are announced: {saved}");
    assert_eq!(
        saved["mode"],
        Value::Null,
        "worker mode has no page-mode note"
    );
    assert_eq!(saved["nudge"], Value::Null);
    page.shoot("saved").await?;

    // The server refuses pushes (503): the write waits, "Pending 1".
    server
        .add_faults(json!([{ "path": "/api/sync/push", "status": 503, "times": 100_000 }]))
        .await?;
    page.js("client.put('notes', 'n1b', { t: 1 })").await?;
    until_shown(page, "Pending 1", |s| {
        s["pill"] == "Pending 1" && s["look"] == "pending"
    })
    .await?;
    page.shoot("pending").await?;
    server.clear_faults().await?;
    until_shown(page, "Saved after the refusals", |s| s["pill"] == "Saved").await?;

    // A push the server holds for 4 s: "Syncing…".
    server
        .add_faults(json!([{ "path": "/api/sync/push", "delay_ms": 4000 }]))
        .await?;
    page.js("client.put('notes', 'n1c', { t: 1 })").await?;
    until_shown(page, "Syncing…", |s| {
        s["pill"] == "Syncing…" && s["look"] == "syncing"
    })
    .await?;
    page.shoot("syncing").await?;
    until_shown(page, "Saved after the slow push", |s| s["pill"] == "Saved").await?;

    // The server down: offline, with the pending count.
    server.stop().await;
    page.js("client.put('notes', 'n2', { t: 2 })").await?;
    until_shown(page, "offline with one pending", |s| {
        s["pill"] == "Offline · 1 pending" && s["look"] == "offline"
    })
    .await?;
    page.shoot("offline").await?;
    server.restart().await?;
    page.js("client.flush()").await?;
    until_shown(page, "Saved again", |s| s["pill"] == "Saved").await?;

    // A push route that answers 404: config error, and a nudge saying what to do; dismissed,
    // it stays away for that error.
    server
        .add_faults(json!([{ "path": "/api/sync/push", "status": 404, "times": 100_000 }]))
        .await?;
    page.js("client.put('notes', 'n3', { t: 3 })").await?;
    let config = until_shown(page, "the config error nudge", |s| {
        s["pill"] == "Config error" && s["nudge"] == "config_error"
    })
    .await?;
    assert!(
        config["nudgeText"]
            .as_str()
            .is_some_and(|t| t.contains("Tell whoever runs the app")),
        "the nudge says what to do: {config}"
    );
    page.shoot("config-error").await?;
    click(page, "[part=dismiss]").await?;
    until_shown(page, "the nudge dismissed, the error still shown", |s| {
        s["nudge"].is_null() && s["pill"] == "Config error"
    })
    .await?;
    server.clear_faults().await?;
    page.js("client.flush()").await?;
    until_shown(page, "Saved after the fix", |s| s["pill"] == "Saved").await?;

    // A failed backup: its nudge.
    server
        .add_faults(
            json!([{ "path": "/api/backups", "method": "POST", "status": 503, "times": 100 }]),
        )
        .await?;
    page.js("client.backupNow().catch(e => e.code)").await?;
    until_shown(page, "the backup nudge", |s| s["nudge"] == "backup_error").await?;
    page.shoot("backup-failed").await?;
    server.clear_faults().await?;
    page.js("client.backupNow()").await?;
    until_shown(page, "the backup nudge gone after a backup", |s| {
        s["nudge"].is_null()
    })
    .await?;

    // Two writes the server refuses: two dead letters; Retry delivers one, Discard drops the
    // other.
    let refuse = json!({ "path": "/api/sync/push", "method": "POST", "status": 422,
        "body": "{\"error\":{\"code\":\"invalid_value\",\"message\":\"refused by the test\"}}" });
    for key in ["bad-1", "bad-2"] {
        server.add_faults(json!([refuse.clone()])).await?;
        page.js(&format!("client.put('notes', '{key}', {{ t: 4 }})"))
            .await?;
        page.js("client.flush()").await?;
    }
    let dead = until_shown(page, "two dead letters listed", |s| {
        s["dead"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await?;
    assert_eq!(dead["pill"], "2 failed", "{dead}");
    assert_eq!(dead["look"], "error", "{dead}");
    // The panel open on them.
    click(page, "[part=pill]").await?;
    until_shown(page, "the panel open", |s| s["panel"] == true).await?;
    page.shoot("failed-panel").await?;
    click(page, "[part=pill]").await?;
    until_shown(page, "the panel closed", |s| s["panel"] == false).await?;
    let first = dead["dead"][0].as_str().unwrap_or_default().to_string();
    let second = dead["dead"][1].as_str().unwrap_or_default().to_string();
    click(page, &format!("[data-seq='{first}'] [data-action=retry]")).await?;
    click(
        page,
        &format!("[data-seq='{second}'] [data-action=discard]"),
    )
    .await?;
    until_shown(page, "no dead letter left", |s| {
        s["dead"].as_array().is_some_and(Vec::is_empty)
    })
    .await?;
    page.js("client.flush()").await?;
    until_shown(page, "Saved at the end", |s| s["pill"] == "Saved").await?;
    let keys: Vec<String> = server
        .pull_all()
        .await?
        .iter()
        .filter_map(|c| c["key"].as_str().map(str::to_string))
        .collect();
    assert!(keys.contains(&"bad-1".to_string()), "retried: {keys:?}");
    assert!(!keys.contains(&"bad-2".to_string()), "discarded: {keys:?}");

    Ok(())
}
