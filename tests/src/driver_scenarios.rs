//! # Delivery scenarios for the WebDriver browsers (Firefox ESR, WebKitGTK)
//!
//! Neither browser has Background Sync: the worker's start, the page's messages and the
//! worker's own retry timer are all that deliver. Each scenario writes while the server is
//! stopped, brings it back, and checks what the server committed: each acknowledged seq once,
//! applied, in order. The browser is launched and closed by the test (`firefox_delivery.rs`,
//! `webkit_delivery.rs`); a scenario only drives its [`Session`].

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::webdriver::Session;
use crate::{bare_page_url, summary, wait_until, Result, TestServer};

/// Writes per test.
pub const WRITES: u64 = 20;

/// Short backoff, so a live worker's retry timer fires within seconds of the server's return.
pub const OPTIONS: &str = "{ retry: { baseDelayMs: 300, maxDelayMs: 2000, maxAttempts: 1000 } }";

/// Opens the app's origin in the current tab, registers the client (worker mode, asserted:
/// both browsers have service workers), waits for the worker to control the page, and checks there is
/// no Background Sync. Returns the client id.
pub async fn register(browser: &Session, server: &TestServer) -> Result<String> {
    register_with(browser, server, OPTIONS).await
}

/// [`register`] with these options (a JS object literal).
pub async fn register_with(
    browser: &Session,
    server: &TestServer,
    options: &str,
) -> Result<String> {
    browser.goto(&bare_page_url(server)).await?;
    browser.register_client(options).await?;
    let sync = browser
        .eval("navigator.serviceWorker.ready.then(r => typeof r.sync)")
        .await?;
    assert_eq!(sync, "undefined", "the browser has no Background Sync");
    let id = browser
        .eval("client.exportSnapshot('json').then(s => JSON.parse(s).client_id)")
        .await?;
    Ok(id.as_str().ok_or("no client_id")?.to_string())
}

/// `WRITES` puts from the current tab; returns the acknowledged seqs.
pub async fn write(browser: &Session, prefix: &str) -> Result<Vec<u64>> {
    let acks = browser
        .eval(&format!(
            "Promise.all(Array.from({{ length: {WRITES} }}, (_, i) =>
               client.put('notes', '{prefix}-' + i, {{ i }}))).then(acks => acks.map(a => a.seq))"
        ))
        .await?;
    let seqs: Vec<u64> = acks
        .as_array()
        .ok_or("acks are not a list")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(seqs.len() as u64, WRITES, "every write acknowledged");
    Ok(seqs)
}

/// Waits for all `WRITES` and prints how long they took to arrive after `since`.
pub async fn wait_for_all(
    server: &TestServer,
    client_id: &str,
    since: Instant,
    what: &str,
) -> Result<Vec<Value>> {
    let recorded = server
        .wait_for_recorded(client_id, WRITES as usize, Duration::from_secs(30))
        .await?;
    println!(
        "delivered {} s after {what}",
        (since.elapsed().as_millis() as f64 / 1000.0)
    );
    Ok(recorded)
}

/// [`wait_for_all`] after the server came back with no page action, printing the end of
/// the browser's log when the writes do not arrive (the worker's own timer is what failed).
pub async fn wait_for_all_or_show_log(
    log_tail: impl Fn() -> String,
    server: &TestServer,
    client_id: &str,
    back: Instant,
) -> Result<Vec<Value>> {
    let delivered = wait_for_all(server, client_id, back, "the server came back").await;
    if delivered.is_err() {
        println!("{}", log_tail());
    }
    delivered
}

/// Records the summary line, then asserts each acknowledged seq is on the server once, and
/// nothing else.
pub async fn check_and_record(
    server: &TestServer,
    client_id: &str,
    acked: &[u64],
    scenario: &str,
    browser: &str,
    faults: u64,
    started: Instant,
) -> Result {
    let recorded = summary::check_server_and_record(
        server, client_id, acked, scenario, browser, faults, started,
    )
    .await?;
    assert_eq!(recorded.len(), acked.len(), "only the acknowledged writes");
    let stats = server.stats().await?;
    assert_eq!(stats["mutations_applied"], acked.len(), "stats: {stats}");
    Ok(())
}

/// The server goes down during `WRITES` writes and is back 1 s later; the page stays open and
/// sends nothing: the live worker's retry timer delivers.
pub async fn live_worker_delivers_after_an_outage(
    browser: &Session,
    version: &str,
    log_tail: impl Fn() -> String,
) -> Result {
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    println!("browser: {version}");
    let client_id = register(browser, &server).await?;

    server.stop().await;
    let acked = write(browser, "outage").await?;
    let status = browser.eval("client.status()").await?;
    assert_eq!(status["pending"], WRITES, "queued while down: {status}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await?;
    let back = Instant::now();
    // No page message from here on: the worker's retry timer delivers.
    wait_for_all_or_show_log(log_tail, &server, &client_id, back).await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "server down during the writes, back 1 s later (live worker)",
        version,
        1,
        started,
    )
    .await?;
    // The server has them; the worker may still be recording the answer.
    wait_until(
        "the page shows pending 0",
        Duration::from_secs(20),
        || async {
            let status = browser.eval("client.status()").await?;
            Ok((status["pending"] == 0).then_some(()))
        },
    )
    .await
}

/// Writes queued with the server down, the tab closed, the server back: the next visit
/// starts the worker, whose start flushes. (Whether the worker delivered while no page was
/// open is printed: it depends on how soon the browser stops an idle worker.)
pub async fn next_visit_delivers_after_the_tab_closed(browser: &Session, version: &str) -> Result {
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    println!("browser: {version}");
    let app_tab = browser.current_tab().await?;
    let client_id = register(browser, &server).await?;

    server.stop().await;
    let acked = write(browser, "closed").await?;
    browser.new_tab("about:blank").await?;
    browser.switch_to(&app_tab).await?;
    browser.close_tab().await?;
    // With no tab and no Background Sync, the worker dies once idle and nothing wakes it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    server.restart().await?;
    let stalled = server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(8))
        .await
        .is_err();
    println!(
        "after the tab closed: {} while no page was open (server back for 8 s)",
        if stalled {
            "nothing delivered"
        } else {
            "the worker delivered"
        }
    );
    let visit = Instant::now();
    browser.goto(&bare_page_url(&server)).await?;
    wait_for_all(&server, &client_id, visit, "the next visit began").await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "tab closed with writes queued, server back, next visit",
        version,
        1,
        started,
    )
    .await
}
