//! The promise of the whole project: a write made while the server is down is
//! delivered later with no tab open (after the tab closes, after the browser is
//! killed), and applied exactly once.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    bare_page_url, eval, serial, wait_for_controller, wait_until, Result, ServiceWorkers,
    TestBrowser, TestServer, SYNC_TAG,
};
use serde_json::Value;

/// Registers through the page API and keeps the client in `window.client`.
const REGISTER: &str = r#"(async () => {
    const { default: init, SyncClient } = await import('/pkg/rangersync_page.js');
    await init();
    window.client = await SyncClient.register({ swUrl: '/sw.js', serverUrl: location.origin });
    return window.client.mode;
})()"#;

/// A write acknowledged by the page while the server was unreachable.
struct OfflineWrite {
    client_id: String,
    seq: Value,
}

/// Opens the app, registers, stops the server and writes `notes/n1`; returns
/// once the write is acknowledged (committed in IndexedDB).
async fn write_while_the_server_is_down(
    browser: &TestBrowser,
    server: &mut TestServer,
) -> Result<(Page, OfflineWrite)> {
    // A page of the origin without the demo on it: the demo registers its own worker URL (with
    // its app shell), and two pages registering different scripts would replace each other's
    // worker in the middle of the write.
    let page = browser.open(&bare_page_url(server)).await?;
    let mode = eval(&page, REGISTER).await?;
    assert_eq!(mode, "worker", "the outbox runs in the service worker");
    wait_for_controller(&page).await?;

    server.stop().await;
    let reachable = eval(
        &page,
        "fetch('/api/health', { cache: 'no-store' }).then(r => r.ok).catch(() => false)",
    )
    .await?;
    assert_eq!(
        reachable, false,
        "the server is down while the write is made"
    );
    let ack = eval(&page, "client.put('notes', 'n1', { title: 'hi' })").await?;
    assert!(
        ack["seq"].is_u64(),
        "the write is acknowledged with its seq, got {ack}"
    );
    // The snapshot names this browser's client id (for /api/test/mutations).
    let client_id = eval(
        &page,
        "client.exportSnapshot('json').then(s => JSON.parse(s).client_id)",
    )
    .await?;
    let client_id = client_id
        .as_str()
        .ok_or_else(|| format!("the client's snapshot names no client_id: {client_id}"))?
        .to_string();
    Ok((
        page,
        OfflineWrite {
            client_id,
            seq: ack["seq"].clone(),
        },
    ))
}

/// Waits until `notes/n1` is on the server, lets late retries land, then checks
/// it was recorded and applied exactly once.
async fn assert_delivered_exactly_once(server: &TestServer, write: &OfflineWrite) -> Result {
    let is_n1 = |c: &&Value| c["collection"] == "notes" && c["key"] == "n1";
    let arrived = wait_until(
        "the write reaches the server",
        Duration::from_secs(60),
        || async {
            let changes = server.pull_all().await?;
            Ok(changes.iter().find(is_n1).cloned())
        },
    )
    .await?;
    assert_eq!(
        arrived["value"]["title"], "hi",
        "the server holds the write: {arrived}"
    );

    // Give any late retry the chance to arrive too: it must change nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changes = server.pull_all().await?;
    assert_eq!(
        changes.iter().filter(is_n1).count(),
        1,
        "one entity n1, got {changes:?}"
    );
    let recorded = server
        .get_json(&format!(
            "/api/test/mutations?client_id={}",
            write.client_id
        ))
        .await?;
    let of_n1: Vec<&Value> = recorded["mutations"]
        .as_array()
        .ok_or_else(|| format!("no mutations list: {recorded}"))?
        .iter()
        .filter(is_n1)
        .collect();
    assert_eq!(
        of_n1.len(),
        1,
        "one recorded mutation of notes/n1: {recorded}"
    );
    assert_eq!(of_n1[0]["seq"], write.seq, "it is the acknowledged write");
    assert_eq!(
        of_n1[0]["status"], "applied",
        "and it was applied: {recorded}"
    );
    println!("server stats after delivery: {}", server.stats().await?);
    Ok(())
}

#[tokio::test]
async fn a_write_made_while_the_server_is_down_arrives_exactly_once_after_the_tab_closes() -> Result
{
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;

    let (page, write) = write_while_the_server_is_down(&browser, &mut server).await?;
    browser.close_tab(page).await?;
    server.restart().await?;
    workers
        .dispatch_sync(&server.url(), SYNC_TAG, false)
        .await?;

    assert_delivered_exactly_once(&server, &write).await?;
    browser.close().await?;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_write_made_while_the_server_is_down_arrives_exactly_once_after_the_browser_is_killed(
) -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;

    let (_page, write) = write_while_the_server_is_down(&browser, &mut server).await?;
    let browser = browser.kill_and_relaunch().await?;
    server.restart().await?;
    // No app tab: the worker starts for the sync event alone.
    let workers = ServiceWorkers::enable(&browser).await?;
    workers
        .dispatch_sync(&server.url(), SYNC_TAG, false)
        .await?;

    assert_delivered_exactly_once(&server, &write).await?;
    browser.close().await?;
    server.stop().await;
    Ok(())
}
