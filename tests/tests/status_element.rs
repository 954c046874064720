//! `<rangersync-status>` (the package's `status-element.js`) in Chromium, on a page whose client
//! runs in worker mode against the real server: each state it shows (saved, offline with
//! pending writes, config error with its nudge, a failed backup's nudge, dead letters), each
//! button (dismiss, retry, discard), and the page-mode and non-persistent-storage notes.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    bare_page_url, eval, register_client, serial, wait_for_controller, wait_until, workspace_root,
    www_with, Result, TestBrowser, TestServer,
};
use serde_json::{json, Value};

/// The element's file as the package ships it, served at `/status-element.js`.
fn www_with_the_element() -> Result<tempfile::TempDir> {
    let source = workspace_root().join("page-client/npm/status-element.js");
    www_with(&[("status-element.js", &std::fs::read_to_string(source)?)])
}

/// Imports the element and shows `window.client` in it.
async fn show_element(page: &Page) -> Result {
    eval(
        page,
        "import('/status-element.js').then(() => { \
           const el = document.createElement('rangersync-status'); \
           document.body.append(el); el.client = window.client; window.statusElement = el; \
           return true; })",
    )
    .await?;
    Ok(())
}

/// What the element shows now, read from its shadow DOM.
async fn shown(page: &Page) -> Result<Value> {
    eval(
        page,
        "(() => { const r = window.statusElement.shadowRoot; \
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
async fn until_shown(page: &Page, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
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
async fn click(page: &Page, selector: &str) -> Result {
    eval(
        page,
        &format!(
            "(() => {{ window.statusElement.shadowRoot.querySelector({selector:?}).click(); return true; }})()"
        ),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_status_element_shows_each_state_nudges_and_its_buttons_retry_and_discard_dead_letters(
) -> Result {
    let _serial = serial().await;
    let www = www_with_the_element()?;
    let mut server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let options =
        "{ exportIntervalMs: 0, retry: { baseDelayMs: 200, maxDelayMs: 1000, maxAttempts: 1000 } }";
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    show_element(&page).await?;

    eval(&page, "client.put('notes', 'n1', { t: 1 })").await?;
    wait_until("the server has n1", Duration::from_secs(30), || async {
        let changes = server.pull_all().await?;
        Ok(changes.iter().any(|c| c["key"] == "n1").then_some(()))
    })
    .await?;
    let saved = until_shown(&page, "Saved", |s| s["pill"] == "Saved").await?;
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
    eval(&page, "client.put('notes', 'n2', { t: 2 })").await?;
    until_shown(&page, "offline with one pending", |s| {
        s["pill"] == "Offline · 1 pending" && s["look"] == "offline"
    })
    .await?;
    server.restart().await?;
    eval(&page, "client.flush()").await?;
    until_shown(&page, "Saved again", |s| s["pill"] == "Saved").await?;

    // A push route that answers 404: config error, and a nudge saying what to do; dismissed,
    // it stays away for that error.
    server
        .add_faults(json!([{ "path": "/api/sync/push", "status": 404, "times": 100_000 }]))
        .await?;
    eval(&page, "client.put('notes', 'n3', { t: 3 })").await?;
    let config = until_shown(&page, "the config error nudge", |s| {
        s["pill"] == "Config error" && s["nudge"] == "config_error"
    })
    .await?;
    assert!(
        config["nudgeText"]
            .as_str()
            .is_some_and(|t| t.contains("Tell whoever runs the app")),
        "the nudge says what to do: {config}"
    );
    click(&page, "[part=dismiss]").await?;
    until_shown(&page, "the nudge dismissed, the error still shown", |s| {
        s["nudge"].is_null() && s["pill"] == "Config error"
    })
    .await?;
    server.clear_faults().await?;
    eval(&page, "client.flush()").await?;
    until_shown(&page, "Saved after the fix", |s| s["pill"] == "Saved").await?;

    // A failed backup: its nudge.
    server
        .add_faults(
            json!([{ "path": "/api/backups", "method": "POST", "status": 503, "times": 100 }]),
        )
        .await?;
    eval(&page, "client.backupNow().catch(e => e.code)").await?;
    until_shown(&page, "the backup nudge", |s| s["nudge"] == "backup_error").await?;
    server.clear_faults().await?;
    eval(&page, "client.backupNow()").await?;
    until_shown(&page, "the backup nudge gone after a backup", |s| {
        s["nudge"].is_null()
    })
    .await?;

    // Two writes the server refuses: two dead letters; Retry delivers one, Discard drops the
    // other.
    let refuse = json!({ "path": "/api/sync/push", "method": "POST", "status": 422,
        "body": "{\"error\":{\"code\":\"invalid_value\",\"message\":\"refused by the test\"}}" });
    for key in ["bad-1", "bad-2"] {
        server.add_faults(json!([refuse.clone()])).await?;
        eval(&page, &format!("client.put('notes', '{key}', {{ t: 4 }})")).await?;
        eval(&page, "client.flush()").await?;
    }
    let dead = until_shown(&page, "two dead letters listed", |s| {
        s["dead"].as_array().is_some_and(|d| d.len() == 2)
    })
    .await?;
    let first = dead["dead"][0].as_str().unwrap_or_default().to_string();
    let second = dead["dead"][1].as_str().unwrap_or_default().to_string();
    click(&page, &format!("[data-seq='{first}'] [data-action=retry]")).await?;
    click(
        &page,
        &format!("[data-seq='{second}'] [data-action=discard]"),
    )
    .await?;
    until_shown(&page, "no dead letter left", |s| {
        s["dead"].as_array().is_some_and(Vec::is_empty)
    })
    .await?;
    eval(&page, "client.flush()").await?;
    until_shown(&page, "Saved at the end", |s| s["pill"] == "Saved").await?;
    let keys: Vec<String> = server
        .pull_all()
        .await?
        .iter()
        .filter_map(|c| c["key"].as_str().map(str::to_string))
        .collect();
    assert!(keys.contains(&"bad-1".to_string()), "retried: {keys:?}");
    assert!(!keys.contains(&"bad-2".to_string()), "discarded: {keys:?}");

    // Page mode: the note says so, and why.
    let other = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(&other, "{ forcePageMode: true, exportIntervalMs: 0 }").await?,
        "page"
    );
    show_element(&other).await?;
    let page_mode = until_shown(&other, "the page-mode note", |s| s["mode"].is_string()).await?;
    assert!(
        page_mode["mode"]
            .as_str()
            .is_some_and(|m| m.contains("only while a page is open")),
        "{page_mode}"
    );
    browser.close().await?;
    Ok(())
}
