//! # `<rangersync-status>` driven through a page, in any browser
//!
//! The package's `status-element.js`, served at `/status-element.js`, shown for the page's
//! `window.client`; what it shows is read from its shadow DOM. The scenario runs in Chromium
//! (`tests/status_element.rs`) and Firefox (`tests/firefox_status_element.rs`) through
//! [`Evaluate`], the one call both harnesses have.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{wait_until, workspace_root, www_with, Result, TestServer};

/// Evaluates JS in a page and returns its (awaited) value as JSON.
#[allow(async_fn_in_trait)]
pub trait Evaluate {
    async fn js(&self, expression: &str) -> Result<Value>;
}

impl Evaluate for chromiumoxide::Page {
    async fn js(&self, expression: &str) -> Result<Value> {
        crate::eval(self, expression).await
    }
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
           const el = document.createElement('rangersync-status'); \
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
             storage: q('[data-field=storage]').textContent, \
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
async fn click(page: &impl Evaluate, selector: &str) -> Result {
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

    // The server down: offline, with the pending count.
    server.stop().await;
    page.js("client.put('notes', 'n2', { t: 2 })").await?;
    until_shown(page, "offline with one pending", |s| {
        s["pill"] == "Offline · 1 pending" && s["look"] == "offline"
    })
    .await?;
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
