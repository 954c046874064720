//! The rest of the fault matrix in real Chromium, against the real server: a private (incognito)
//! window, the browser's own offline state for the page and the worker, and a Shift+Reload while
//! the page is still making writes. Each scenario ends by checking what the server committed
//! (each acknowledged seq once, applied, in seq order) and what the local IndexedDB holds, and
//! adds its line to the scenario summary. (The full storage quota runs in Firefox,
//! `firefox_delivery.rs`: Chromium 156 does not enforce `Storage.overrideQuotaForOrigin` on
//! IndexedDB.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use rangersync_e2e::summary;
use rangersync_e2e::{
    bare_page_url, cdp, client_id_of, eval, register_client, serial, wait_for_controller,
    wait_until, Result, TestBrowser, TestServer, WorkerSession,
};
use serde_json::{json, Value};

/// Short backoff: a write waits seconds, not minutes, once the way is clear.
const SHORT_RETRY: &str = "retry: { baseDelayMs: 300, maxDelayMs: 2000, maxAttempts: 1000 }";

/// `n` puts of `notes/<prefix>-i` from the page, all at once; returns the acknowledged seqs.
async fn put_notes(page: &Page, prefix: &str, n: u64) -> Result<Vec<u64>> {
    let acks = eval(
        page,
        &format!(
            "Promise.all(Array.from({{ length: {n} }}, (_, i) =>
               client.put('notes', '{prefix}-' + i, {{ i, text: 'note ' + i }}))).then(acks => acks.map(a => a.seq))"
        ),
    )
    .await?;
    let seqs: Vec<u64> = acks
        .as_array()
        .ok_or("acks are not a list")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(seqs.len() as u64, n, "every write acknowledged: {acks}");
    Ok(seqs)
}

/// The keys of the local copy of `notes` (`client.list`), and how many of them are still
/// pending.
async fn local_notes(page: &Page) -> Result<(BTreeSet<String>, usize)> {
    let list = eval(page, "client.list('notes')").await?;
    let items = list.as_array().ok_or("list is not an array")?;
    let keys = items
        .iter()
        .filter_map(|item| item["key"].as_str().map(str::to_string))
        .collect();
    let pending = items.iter().filter(|item| item["pending"] == true).count();
    Ok((keys, pending))
}

/// Waits, polling the page, until its outbox is empty; returns the status.
async fn until_outbox_empty(page: &Page, timeout: Duration) -> Result<Value> {
    wait_until("the outbox is empty", timeout, || async {
        let status = eval(page, "client.status()").await?;
        let empty = status["pending"] == 0 && status["in_flight"] == 0;
        Ok(empty.then_some(status))
    })
    .await
}

async fn browser_version(browser: &TestBrowser) -> Result<String> {
    Ok(browser.browser().version().await?.product)
}

/// Whether the page's origin holds any IndexedDB database or service worker registration.
async fn origin_storage(page: &Page) -> Result<Value> {
    eval(
        page,
        "Promise.all([indexedDB.databases(), navigator.serviceWorker.getRegistrations()])
           .then(([dbs, regs]) => ({ databases: dbs.map(d => d.name), registrations: regs.length }))",
    )
    .await
}

#[tokio::test]
async fn a_private_window_syncs_its_writes_and_keeps_nothing_after_it_closes() -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let version = browser_version(&browser).await?;

    let private = browser.private_context().await?;
    let page = browser.open_in(&private, &bare_page_url(&server)).await?;
    let mode = register_client(&page, &format!("{{ {SHORT_RETRY} }}")).await?;
    assert_eq!(mode, "worker", "Chromium runs service workers in incognito");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    let acked = put_notes(&page, "private", 20).await?;
    server
        .wait_for_recorded(&client_id, acked.len(), Duration::from_secs(30))
        .await?;
    until_outbox_empty(&page, Duration::from_secs(20)).await?;
    let (keys, _) = local_notes(&page).await?;
    assert_eq!(keys.len(), 20);

    // Writes made while the server is down, then the window closes: they go with it.
    server.stop().await;
    let undelivered = put_notes(&page, "undelivered", 3).await?;
    browser.dispose_context(private).await?;
    server.restart().await?;

    // A new private window: no database, no registration.
    let fresh = browser.private_context().await?;
    let page = browser.open_in(&fresh, &bare_page_url(&server)).await?;
    let storage = origin_storage(&page).await?;
    println!("a new private window sees {storage}");
    assert_eq!(
        storage,
        json!({ "databases": [], "registrations": 0 }),
        "the closed private window left nothing behind"
    );
    // Nor does the normal profile see any of it.
    let normal = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        origin_storage(&normal).await?,
        json!({ "databases": [], "registrations": 0 })
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recorded = summary::check_server_and_record(
        &server,
        &client_id,
        &acked,
        "private window: writes synced, window closed",
        &version,
        1,
        started,
    )
    .await?;
    println!(
        "{} writes made with the server down when the private window closed: lost with it \
         (seqs {undelivered:?})",
        undelivered.len()
    );
    assert_eq!(
        recorded.len(),
        acked.len(),
        "the undelivered writes went with the window"
    );
    browser.dispose_context(fresh).await?;
    browser.close().await?;
    Ok(())
}

/// `navigator.onLine` in the worker, and how many `online`/`offline` events it saw since
/// [`count_worker_events`].
async fn worker_online(session: &mut WorkerSession<'_>) -> Result<Value> {
    let answer = session
        .call(
            "Runtime.evaluate",
            json!({
                "expression": "JSON.stringify({ onLine: navigator.onLine, events: self.__events || null })",
                "returnByValue": true,
            }),
        )
        .await?;
    let text = answer["result"]["value"].as_str().unwrap_or("null");
    Ok(serde_json::from_str(text)?)
}

async fn count_worker_events(session: &mut WorkerSession<'_>) -> Result {
    session
        .call(
            "Runtime.evaluate",
            json!({ "expression": "self.__events = []; \
                   self.addEventListener('online', () => self.__events.push('online')); \
                   self.addEventListener('offline', () => self.__events.push('offline')); true" }),
        )
        .await?;
    Ok(())
}

/// DevTools offline emulation for the page (`Network.emulateNetworkConditions`) and, on its own
/// session, for the service worker (`Network.emulateNetworkConditionsByRule` with
/// `emulateOfflineServiceWorker`): page emulation alone does not reach the worker.
async fn set_offline(page: &Page, worker: &mut WorkerSession<'_>, offline: bool) -> Result {
    cdp(
        page,
        "Network.emulateNetworkConditions",
        json!({ "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
    )
    .await?;
    worker
        .call(
            "Network.emulateNetworkConditionsByRule",
            json!({
                "emulateOfflineServiceWorker": offline,
                "matchedNetworkConditions": [{
                    "urlPattern": "", "offline": offline, "latency": 0,
                    "downloadThroughput": -1, "uploadThroughput": -1,
                }],
            }),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn with_the_browser_offline_writes_queue_and_going_online_delivers_them_with_no_page_action(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let version = browser_version(&browser).await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    // A backoff of up to ten minutes: the worker's own retry timer is (almost always) out of
    // the picture, so going online is what delivers.
    let mode = register_client(
        &page,
        "{ retry: { baseDelayMs: 600000, maxDelayMs: 600000, maxAttempts: 25 } }",
    )
    .await?;
    assert_eq!(mode, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    cdp(&page, "Network.enable", json!({})).await?;
    let mut worker = WorkerSession::attach(&browser, &server.url()).await?;
    worker.call("Network.enable", json!({})).await?;
    count_worker_events(&mut worker).await?;

    set_offline(&page, &mut worker, true).await?;
    assert_eq!(eval(&page, "navigator.onLine").await?, false);
    let acked = put_notes(&page, "offline", 20).await?;
    let queued = wait_until(
        "the status says offline with 20 pending",
        Duration::from_secs(20),
        || async {
            let status = eval(&page, "client.status()").await?;
            Ok((status["state"] == "offline" && status["pending"] == 20).then_some(status))
        },
    )
    .await?;
    println!(
        "offline: {queued}; the next retry in {} s",
        (queued["next_retry_at"].as_f64().unwrap_or(0.0)
            - eval(&page, "Date.now()").await?.as_f64().unwrap_or(0.0))
            / 1000.0
    );
    assert_eq!(
        queued["last_error"]["code"], "network",
        "the worker's fetches failed: {queued}"
    );
    let in_worker = worker_online(&mut worker).await?;
    println!("in the worker while offline: {in_worker}");
    // Nothing reached the server while offline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.mutations_of(&client_id).await?.is_empty());

    // Online again; from here on the test only watches the server (a page call would itself
    // be a flush trigger).
    set_offline(&page, &mut worker, false).await?;
    let online = Instant::now();
    server
        .wait_for_recorded(&client_id, acked.len(), Duration::from_secs(30))
        .await?;
    println!(
        "delivered {} ms after going online",
        online.elapsed().as_millis()
    );
    let in_worker = worker_online(&mut worker).await?;
    println!("in the worker after going online: {in_worker}");
    worker.detach().await;

    summary::check_server_and_record(
        &server,
        &client_id,
        &acked,
        "browser offline (DevTools, page and worker), back online",
        &version,
        1,
        started,
    )
    .await?;
    let status = until_outbox_empty(&page, Duration::from_secs(20)).await?;
    assert!(status["last_error"].is_null(), "{status}");
    let (keys, pending) = local_notes(&page).await?;
    assert_eq!((keys.len(), pending), (20, 0));
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_shift_reload_in_the_middle_of_a_1000_write_burst_delivers_every_resolved_write_once(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let version = browser_version(&browser).await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let options = format!("{{ batchSize: 50, {SHORT_RETRY} }}");
    assert_eq!(register_client(&page, &options).await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    // Pushes are applied, their answers held 200 ms: the flush runs beside the burst.
    server
        .add_faults(json!([{ "path": "/api/sync/push", "delay_ms": 200, "times": 1000 }]))
        .await?;

    // The burst: 1,000 puts, 10 in flight at a time. Each resolved promise is noted in
    // localStorage at once, which outlives the reload.
    eval(
        &page,
        "localStorage.clear(); window.burst = (async () => {
            let next = 0;
            const worker = async () => {
                while (next < 1000) {
                    const i = next++;
                    const ack = await client.put('notes', 'b' + i, { i });
                    localStorage.setItem('ack-' + ack.seq, 'b' + i);
                }
            };
            await Promise.all(Array.from({ length: 10 }, worker));
        })(); true",
    )
    .await?;
    let before_reload = wait_until(
        "a third of the burst is acknowledged",
        Duration::from_secs(60),
        || async {
            let n = eval(&page, "localStorage.length")
                .await?
                .as_u64()
                .unwrap_or(0);
            Ok((n >= 300).then_some(n))
        },
    )
    .await?;
    cdp(&page, "Page.reload", json!({ "ignoreCache": true })).await?;
    wait_until(
        "the reloaded page is up",
        Duration::from_secs(20),
        || async {
            let ready = eval(&page, "document.readyState").await?;
            Ok((ready == "complete").then_some(()))
        },
    )
    .await?;
    let acks = eval(
        &page,
        "Object.fromEntries(Object.keys(localStorage).filter(k => k.startsWith('ack-')).map(k => [k.slice(4), localStorage.getItem(k)]))",
    )
    .await?;
    let acks = acks.as_object().ok_or("no acks")?.clone();
    let mut acked: Vec<u64> = acks.keys().filter_map(|k| k.parse().ok()).collect();
    acked.sort_unstable();
    println!(
        "reloaded with {before_reload} writes acknowledged; {} by the time the page went",
        acked.len()
    );
    assert!(
        acked.len() < 1000,
        "precondition: the reload came in the middle of the burst ({} acknowledged)",
        acked.len()
    );
    // The hard-reloaded page is not controlled: it runs the page engine over the same outbox,
    // beside the worker.
    let mode = register_client(&page, "{ batchSize: 50, controllerTimeoutMs: 500 }").await?;
    assert_eq!(
        mode, "page",
        "a hard reload is not controlled by the worker"
    );
    let status = until_outbox_empty(&page, Duration::from_secs(90)).await?;
    let recorded = server
        .wait_for_recorded(&client_id, acked.len(), Duration::from_secs(30))
        .await?;
    println!(
        "the server recorded {} writes ({} acknowledged); page status {status}",
        recorded.len(),
        acked.len()
    );
    let recorded = summary::check_server_and_record(
        &server,
        &client_id,
        &acked,
        "Shift+Reload in the middle of a 1,000-write burst",
        &version,
        1,
        started,
    )
    .await?;
    // Each acknowledged write holds its own key and value on the server.
    let on_server = server.pull_all().await?;
    for (seq, key) in &acks {
        let key = key.as_str().unwrap_or_default();
        let i: u64 = key.trim_start_matches('b').parse()?;
        let change = on_server
            .iter()
            .find(|c| c["key"] == key)
            .ok_or_else(|| format!("seq {seq} ({key}) is not on the server"))?;
        assert_eq!(change["value"]["i"], i, "{change}");
    }
    assert_eq!(on_server.len(), recorded.len(), "one entity per write");
    // The local copy: every write the server has, nothing pending, nothing dead.
    assert_eq!(status["dead"], 0, "{status}");
    let (keys, pending) = local_notes(&page).await?;
    assert_eq!((keys.len(), pending), (recorded.len(), 0));
    let stats = server.stats().await?;
    assert_eq!(stats["duplicates"], 0, "no write was sent twice: {stats}");
    server.clear_faults().await?;
    browser.close().await?;
    Ok(())
}
