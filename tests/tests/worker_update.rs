//! Requests in flight when a new worker takes control of the page: a write fails with
//! `worker_unavailable` (it may or may not have been saved, so the app reads it back), a read
//! is sent again to the new worker and answers, and the page goes on writing through it.
//!
//! The old worker is held mid-request by DevTools: paused in its debugger, it has the
//! requests' messages and answers none of them. Chromium activates a new worker only once the
//! old one has finished its events (even with `skipWaiting`), so the new one waits until the
//! old one is stopped mid-request, as the browser does to a worker whose event runs too long.
//! (Holding the worker's IndexedDB from the page does not do: the new worker's start opens
//! the same stores and would wait too, so it never installs.)

use std::time::Duration;

use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, client_id_of, eval, register_client, serial,
    wait_for_controller, wait_until, Result, ServiceWorkers, TestBrowser, TestServer,
    WorkerSession,
};
use serde_json::json;

/// Registers this page's worker script again with another app-shell version: a new worker
/// that installs, skips waiting and claims the page.
const NEW_WORKER_VERSION_JS: &str = "(async () => { \
    const url = new URL(navigator.serviceWorker.controller.scriptURL); \
    const shell = JSON.parse(url.searchParams.get('appShell')); \
    shell.version = 'two'; \
    url.searchParams.set('appShell', JSON.stringify(shell)); \
    await navigator.serviceWorker.register(url.pathname + url.search, { scope: '/' }); \
    return url.href; \
})()";

#[tokio::test]
async fn a_write_in_flight_when_a_new_worker_takes_control_fails_with_worker_unavailable_and_a_read_is_sent_again(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let options = "{ timeoutMs: 60000, exportIntervalMs: 0, appShell: { files: ['/style.css'], version: 'one' } }";
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    eval(&page, "client.put('notes', 'before', { t: 0 })").await?;
    // The old worker must be quiet when it is paused: paused inside one of its own IndexedDB
    // transactions (a flush recording its ack), it would hold the stores the new worker's
    // start opens, and the new worker would never install.
    server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(30))
        .await?;
    wait_until(
        "the old worker is idle",
        Duration::from_secs(30),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok((s["pending"] == 0 && s["in_flight"] == 0 && s["state"] != "syncing").then_some(()))
        },
    )
    .await?;

    let old_version = workers.activated(&server.url()).await?;
    let mut old_worker = WorkerSession::attach(&browser, &server.url()).await?;
    old_worker.call("Debugger.enable", json!({})).await?;
    old_worker.call("Debugger.pause", json!({})).await?;
    eval(
        &page,
        "window.write = client.put('notes', 'in-flight', { t: 1 }) \
           .then(ack => ({ ack }), e => ({ code: e.code, message: e.message })); \
         window.read = client.get('notes', 'before') \
           .then(value => ({ value }), e => ({ code: e.code, message: e.message })); \
         window.controllers = 0; \
         navigator.serviceWorker.addEventListener('controllerchange', () => window.controllers++); \
         true",
    )
    .await?;
    let script = eval(&page, NEW_WORKER_VERSION_JS).await?;
    wait_until(
        "the new worker is installed and waits for the old one",
        Duration::from_secs(60),
        || async {
            let waiting = eval(
                &page,
                "navigator.serviceWorker.getRegistration().then(r => r?.waiting?.scriptURL ?? null)",
            )
            .await?;
            Ok((waiting == script).then_some(()))
        },
    )
    .await?;
    workers.stop(&old_version.id).await?;
    wait_until(
        "the new worker controls the page",
        Duration::from_secs(60),
        || async {
            let controller = eval(&page, "navigator.serviceWorker.controller.scriptURL").await?;
            if controller == script {
                return Ok(Some(()));
            }
            let state = eval(
                &page,
                "navigator.serviceWorker.getRegistration().then(r => r ? ({ \
                   installing: r.installing && r.installing.scriptURL, \
                   waiting: r.waiting && r.waiting.scriptURL, \
                   active: r.active && r.active.scriptURL }) : null)",
            )
            .await?;
            Err(format!("controller {controller}, registration {state}, wanted {script}").into())
        },
    )
    .await?;

    let write = wait_until(
        "the write in flight is answered",
        Duration::from_secs(30),
        || async {
            // `window.write` settles only once the page module has an answer for it.
            let settled = eval(
                &page,
                "Promise.race([window.write, new Promise(r => setTimeout(() => r(null), 200))])",
            )
            .await?;
            Ok((!settled.is_null()).then_some(settled))
        },
    )
    .await?;
    assert_eq!(write["code"], "worker_unavailable", "{write}");
    assert!(
        write["message"]
            .as_str()
            .is_some_and(|m| m.contains("may or may not have been saved")),
        "{write}"
    );

    // The read was sent again to the new worker, which answers it.
    let read = eval(&page, "window.read").await?;
    assert_eq!(read["value"], json!({ "t": 0 }), "{read}");
    old_worker.detach().await;
    assert_eq!(eval(&page, "window.controllers").await?, 1);

    // The page goes on through the new worker; what was written reaches the server once each.
    eval(&page, "client.put('notes', 'after', { t: 2 })").await?;
    // The old worker may have committed it after the test let go: either way it is applied
    // once at most, and nothing else is lost or doubled.
    let kept = eval(
        &page,
        "client.get('notes', 'in-flight').then(v => v !== undefined)",
    )
    .await?;
    let expected: u64 = if kept == true { 3 } else { 2 };
    let recorded = server
        .wait_for_recorded(&client_id, expected as usize, Duration::from_secs(30))
        .await?;
    assert_seqs_applied_once(&recorded, expected);
    browser.close().await?;
    Ok(())
}
