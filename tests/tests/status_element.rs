//! `<rangersync-status>` (the package's `status-element.js`) in Chromium, on a page whose client
//! runs in worker mode against the real server: each state it shows (saved, offline with
//! pending writes, config error with its nudge, a failed backup's nudge, dead letters), each
//! button (dismiss, retry, discard), and here also the auth and storage nudges and the page-mode
//! note. The scenario is `tests/src/status_element.rs`; Firefox runs it too
//! (`firefox_status_element.rs`). Each state's screenshot is kept in `docs/status/`
//! (`RANGERSYNC_WRITE_SCREENSHOTS=1` rewrites them; otherwise they must exist, and only they).

use rangersync_e2e::status_element::{
    click, no_stale_screenshots, show_element, states_nudges_and_buttons, until_shown,
    www_with_the_element, Evaluate, OPTIONS,
};
use rangersync_e2e::{
    bare_page_url, register_client, serial, wait_for_controller, Result, TestBrowser, TestServer,
};
use serde_json::json;

#[tokio::test]
async fn the_status_element_shows_each_state_nudges_and_its_buttons_retry_and_discard_dead_letters(
) -> Result {
    let _serial = serial().await;
    let www = www_with_the_element()?;
    let mut server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, OPTIONS).await?, "worker");
    wait_for_controller(&page).await?;
    states_nudges_and_buttons(&page, &mut server).await?;

    // The server refuses the credentials (401): auth error, and the nudge to sign in again.
    server
        .add_faults(json!([{ "path": "/api/sync/push", "status": 401, "times": 100_000 }]))
        .await?;
    page.js("client.put('notes', 'auth', { t: 5 })").await?;
    let auth = until_shown(&page, "the auth nudge", |s| {
        s["pill"] == "Auth error" && s["nudge"] == "auth_error"
    })
    .await?;
    assert!(
        auth["nudgeText"]
            .as_str()
            .is_some_and(|t| t.contains("sign in again")),
        "{auth}"
    );
    page.shoot("auth-error").await?;

    // The storage nudge, for a status whose last error is `quota_exceeded`. Chromium does not
    // enforce a storage quota (see firefox_delivery.rs), so the element is given the client's
    // real statuses with that error set: what it shows for one, not how a worker gets there.
    page.js(
        "(() => { const real = window.client; window.statusElement.client = { \
           onStatus: (f) => real.onStatus((s) => f({ ...s, state: 'idle', last_error: \
             { code: 'quota_exceeded', message: 'the origin storage is full', at: Date.now() } })), \
           deadLetters: () => real.deadLetters(), \
           retryDead: (seq) => real.retryDead(seq), discardDead: (seq) => real.discardDead(seq) }; \
           return true; })()",
    )
    .await?;
    server.clear_faults().await?;
    page.js("client.flush().catch(e => e.code)").await?;
    until_shown(&page, "the storage nudge", |s| {
        s["nudge"] == "quota_exceeded"
    })
    .await?;
    page.shoot("quota-exceeded").await?;

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
    // Its panel: storage this browser may clear (headless Chromium grants no persistence).
    click(&other, "[part=pill]").await?;
    let panel = until_shown(&other, "the page-mode panel", |s| s["panel"] == true).await?;
    assert!(
        panel["storage"]
            .as_str()
            .is_some_and(|t| t.starts_with("not persistent")),
        "{panel}"
    );
    other.shoot("page-mode").await?;
    no_stale_screenshots()?;
    browser.close().await?;
    Ok(())
}
