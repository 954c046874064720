//! The fallback triggers browsers without Background Sync rely on, each alone: a
//! worker started by a navigation flushes, and a page event message makes the
//! worker flush. And the other side of a worker that starts on navigations: one with nothing
//! to capture or cache has no `fetch` listener, so the app's navigations never start it.
//!
//! Both tests deny the origin the `background-sync` permission
//! ([`TestBrowser::deny_background_sync`]): the worker's `sync.register()` is
//! refused, so Chrome never fires (or retries) a `sync` event that could deliver in
//! the trigger's place, and the tests never dispatch one either. Each test checks,
//! after its write, that no sync registration is pending.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::service_worker::ServiceWorkerVersionRunningStatus;
use chromiumoxide::Page;
use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, client_id_of, eval, register_client, serial,
    wait_for_controller, wait_until, worker_page, Result, ServiceWorkers, TestBrowser, TestServer,
    RAW_MESSAGE_JS,
};
use serde_json::json;

/// Checks that Background Sync is refused for the page's registration and that
/// nothing is registered (so the browser has no `sync` event to fire or retry).
async fn assert_no_background_sync(page: &Page) -> Result {
    let probe = eval(
        page,
        "navigator.serviceWorker.ready.then(r => r.sync.register('rangersync-probe').then(() => 'registered', e => e.name))",
    )
    .await?;
    assert_eq!(probe, "NotAllowedError", "Background Sync is denied");
    let tags = eval(
        page,
        "navigator.serviceWorker.ready.then(r => r.sync.getTags())",
    )
    .await?;
    assert_eq!(tags, json!([]), "no sync registration is pending");
    Ok(())
}

#[tokio::test]
async fn a_worker_started_by_a_navigation_flushes_with_no_sync_event() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    browser.deny_background_sync(&server.url()).await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    // An app shell: the worker listens for fetch (navigations), so a navigation starts it.
    let options = "{ appShell: { files: ['/'] } }";
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    assert_no_background_sync(&page).await?;
    let client_id = client_id_of(&page).await?;

    // The server refuses every push (503, no Retry-After): the write stays in the
    // outbox. (Faults rather than a stopped server, so the navigation below is
    // served and nothing but the worker's start can explain the delivery; a worker
    // started offline is covered by `worker_start_offline.rs`.)
    const TIMES: u64 = 1000;
    server
        .add_faults(json!([{ "path": "/api/sync/push", "status": 503, "times": TIMES }]))
        .await?;
    eval(&page, "client.put('notes', 'n1', { title: 'started' })").await?;
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["pending"], 1, "the write waits: {status}");
    assert_no_background_sync(&page).await?;

    // No app tab and no running worker: nothing is left to retry (no worker
    // timer, no page to send messages, and no Background Sync registration).
    // Closing the tab sends a last `pagehide` message that may start the worker
    // again: stop it until it is seen stopped.
    browser.close_tab(page).await?;
    let registration = workers.registration(&server.url()).await?;
    let all_stopped = || {
        workers
            .versions(&registration.id)
            .iter()
            .all(|v| v.running == ServiceWorkerVersionRunningStatus::Stopped)
    };
    workers.stop_all().await?;
    wait_until(
        "every worker version is stopped",
        Duration::from_secs(30),
        || async {
            if all_stopped() {
                return Ok(Some(()));
            }
            workers.stop_all().await?;
            Ok(None)
        },
    )
    .await?;
    server.clear_faults().await?;
    assert!(all_stopped(), "no worker started again");
    assert!(
        server.mutations_of(&client_id).await?.is_empty(),
        "nothing was delivered while pushes were refused"
    );

    // A page of the origin without the app: its navigation starts the worker
    // (the fetch event), and the page sends no message. Only `start()`'s
    // "on worker start" flush can deliver.
    let bare = browser.open(&bare_page_url(&server)).await?;
    let recorded = server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(30))
        .await?;
    assert_seqs_applied_once(&recorded, 1);
    assert_eq!(recorded[0]["key"], "n1");
    let running = workers
        .versions(&registration.id)
        .iter()
        .any(|v| v.running == ServiceWorkerVersionRunningStatus::Running);
    assert!(running, "the navigation started the worker");
    let no_app = eval(&bare, "typeof window.client").await?;
    assert_eq!(no_app, "undefined", "the bare page has no app on it");
    let stats = server.stats().await?;
    assert_eq!(stats["mutations_applied"], 1, "applied once: {stats}");

    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_navigation_does_not_start_a_worker_with_nothing_to_capture_or_cache() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = worker_page(&browser, &server, "{}").await?;
    browser.close_tab(page).await?;
    let registration = workers.registration(&server.url()).await?;
    workers.stop_until_stopped(&registration.id).await?;

    // Pages of the origin without the app, and a POST of the page's own (not captured): no
    // fetch event, so no worker start. Each load is awaited; then the worker has had every
    // chance to start.
    let bare = browser.open(&bare_page_url(&server)).await?;
    eval(
        &bare,
        "fetch('/api/health', { method: 'POST' }).then(r => r.status)",
    )
    .await?;
    bare.goto(bare_page_url(&server)).await?;
    bare.wait_for_navigation().await?;
    eval(&bare, "fetch('/api/health').then(r => r.status)").await?;
    let controlled = eval(&bare, "navigator.serviceWorker.controller !== null").await?;
    assert_eq!(
        controlled, true,
        "the page is in the worker's scope: {controlled}"
    );
    let versions = workers.versions(&registration.id);
    assert!(
        versions
            .iter()
            .all(|v| v.running == ServiceWorkerVersionRunningStatus::Stopped),
        "a navigation or a request started a worker with no fetch listener: {versions:?}"
    );

    // The app's page starts it (its messages), and it works as before.
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let running = workers
        .versions(&registration.id)
        .iter()
        .any(|v| v.running == ServiceWorkerVersionRunningStatus::Running);
    assert!(running, "the app's messages started the worker");
    browser.close().await?;
    Ok(())
}

/// A page of `server` whose client runs in worker mode with Background Sync denied and a
/// 10 min backoff: the worker's own retry timer stays out of the way (its full-jitter delay is
/// uniform over 0..=600 s, so the chance it fires in the short window between a restart and a
/// delivery is tiny), so only what the test does can deliver.
async fn page_under_a_long_backoff(browser: &TestBrowser, server: &TestServer) -> Result<Page> {
    browser.deny_background_sync(&server.url()).await?;
    let page = browser.open(&bare_page_url(server)).await?;
    let options = "{ retry: { baseDelayMs: 600000, maxDelayMs: 600000 } }";
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    assert_no_background_sync(&page).await?;
    Ok(page)
}

#[tokio::test]
async fn a_page_event_makes_the_worker_flush() -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = page_under_a_long_backoff(&browser, &server).await?;
    eval(&page, RAW_MESSAGE_JS).await?;
    let client_id = client_id_of(&page).await?;

    // The server is down: the push gets no answer at all. (After a server's 5xx a page event
    // would not cut the backoff short: the retry time holds; see the hardening tests.)
    server.stop().await;
    eval(&page, "client.put('notes', 'e1', { title: 'event' })").await?;
    wait_until(
        "the worker's push got no answer",
        Duration::from_secs(30),
        || async {
            let status = eval(&page, "client.status()").await?;
            Ok((status["state"] == "offline").then_some(()))
        },
    )
    .await?;
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["pending"], 1, "the write waits: {status}");
    assert_no_background_sync(&page).await?;
    server.restart().await?;

    // From here on the page sends the worker nothing but the page event.
    assert!(
        server.mutations_of(&client_id).await?.is_empty(),
        "nothing delivered before the page event"
    );
    let reply = eval(
        &page,
        "raw({ v: 1, id: 41, request: { type: 'page_event', event: 'online' } })",
    )
    .await?;
    assert_eq!(reply["ok"], true, "the page event is answered: {reply}");
    assert_eq!(reply["id"], 41);

    let recorded = server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(20))
        .await?;
    assert_seqs_applied_once(&recorded, 1);
    assert_eq!(recorded[0]["key"], "e1");
    wait_until(
        "the page hears pending 0",
        Duration::from_secs(20),
        || async {
            let last = eval(&page, "window.statuses[window.statuses.length - 1]").await?;
            Ok((last["pending"] == 0).then_some(()))
        },
    )
    .await?;
    assert_seqs_applied_once(&server.mutations_of(&client_id).await?, 1);

    browser.close().await?;
    Ok(())
}

/// Records every message the page posts to its worker, as JSON text, in `window.posted`
/// (the page module posts with `ServiceWorker.prototype.postMessage`).
const RECORD_POSTS_JS: &str = "(() => { window.posted = []; \
    const post = ServiceWorker.prototype.postMessage; \
    ServiceWorker.prototype.postMessage = function (...args) { \
        window.posted.push(JSON.stringify(args[0])); return post.apply(this, args); }; \
    return true; })()";

/// The `page_event`s recorded by [`RECORD_POSTS_JS`], in order.
async fn posted_page_events(page: &Page) -> Result<Vec<String>> {
    let events = eval(
        page,
        "window.posted.map(t => JSON.parse(t)).filter(m => m.request?.type === 'page_event') \
         .map(m => m.request.event)",
    )
    .await?;
    Ok(serde_json::from_value(events)?)
}

#[tokio::test]
async fn the_page_modules_own_listeners_tell_the_worker_of_pagehide_hidden_visible_online_and_offline(
) -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = page_under_a_long_backoff(&browser, &server).await?;
    let client_id = client_id_of(&page).await?;
    eval(&page, RECORD_POSTS_JS).await?;

    // The browser's own events, as the page module hears them: nothing here talks to the
    // worker but its listeners.
    eval(
        &page,
        "(() => { window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true })); \
         Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' }); \
         document.dispatchEvent(new Event('visibilitychange')); \
         delete document.visibilityState; \
         document.dispatchEvent(new Event('visibilitychange')); \
         return document.visibilityState; })()",
    )
    .await?;
    assert_eq!(
        posted_page_events(&page).await?,
        ["pagehide", "hidden", "visible"],
        "each page event is posted to the worker, in order"
    );

    // `offline`: the worker's status says so, with nothing else asked of it.
    eval(&page, "window.dispatchEvent(new Event('offline')); true").await?;
    wait_until(
        "the status says offline after the page's offline event",
        Duration::from_secs(20),
        || async {
            let status = eval(&page, "client.status()").await?;
            Ok((status["state"] == "offline").then_some(()))
        },
    )
    .await?;

    // `online` after an outage: the server down, a write waits under the 10 min backoff; back
    // up, the page's `online` event alone delivers it.
    server.stop().await;
    eval(&page, "client.put('notes', 'o1', { title: 'online' })").await?;
    wait_until(
        "the worker's push got no answer",
        Duration::from_secs(30),
        || async {
            let status = eval(&page, "client.status()").await?;
            Ok((status["pending"] == 1 && status["last_error"]["code"] == "network").then_some(()))
        },
    )
    .await?;
    server.restart().await?;
    assert!(
        server.mutations_of(&client_id).await?.is_empty(),
        "nothing delivered before the online event"
    );
    eval(&page, "window.dispatchEvent(new Event('online')); true").await?;
    let recorded = server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(20))
        .await?;
    assert_seqs_applied_once(&recorded, 1);
    assert_eq!(recorded[0]["key"], "o1");
    assert_eq!(
        posted_page_events(&page).await?,
        ["pagehide", "hidden", "visible", "offline", "online"]
    );
    browser.close().await?;
    Ok(())
}
