//! Delivery in Firefox ESR (headless, through geckodriver): a browser with service workers and
//! no Background Sync, where the worker's start, the page's messages and the worker's own retry
//! timer are all that deliver. Each test writes while the server is stopped, brings it back, and
//! checks what the server committed: each acknowledged seq once, applied, in order.

use std::time::{Duration, Instant};

use rangersync_e2e::firefox::Firefox;
use rangersync_e2e::summary::{self, ScenarioLine};
use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, register_client_js, serial, wait_until, Result,
    TestServer,
};
use serde_json::{json, Value};

/// Writes per test.
const WRITES: u64 = 20;

/// Short backoff, so a live worker's retry timer fires within seconds of the server's return.
const OPTIONS: &str = "{ retry: { baseDelayMs: 300, maxDelayMs: 2000, maxAttempts: 1000 } }";

/// Opens the app's origin in the current tab, registers the client (worker mode, asserted:
/// Firefox has service workers), waits for the worker to control the page, and checks there is
/// no Background Sync. Returns the client id.
async fn register(firefox: &Firefox, server: &TestServer) -> Result<String> {
    firefox.goto(&bare_page_url(server)).await?;
    let mode = firefox.eval(&register_client_js(OPTIONS)).await?;
    assert_eq!(mode, "worker", "Firefox runs the service worker");
    wait_until(
        "a service worker controls the page",
        Duration::from_secs(30),
        || async {
            let controlled = firefox
                .eval("navigator.serviceWorker.controller !== null")
                .await?;
            Ok((controlled == true).then_some(()))
        },
    )
    .await?;
    let sync = firefox
        .eval("navigator.serviceWorker.ready.then(r => typeof r.sync)")
        .await?;
    assert_eq!(sync, "undefined", "Firefox has no Background Sync");
    let id = firefox
        .eval("client.exportSnapshot('json').then(s => JSON.parse(s).client_id)")
        .await?;
    Ok(id.as_str().ok_or("no client_id")?.to_string())
}

/// `WRITES` puts from the current tab; returns the acknowledged seqs.
async fn write(firefox: &Firefox, prefix: &str) -> Result<Vec<u64>> {
    let acks = firefox
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
async fn wait_for_all(
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

/// Records the summary line, then asserts each acknowledged seq is on the server once.
async fn check_and_record(
    server: &TestServer,
    client_id: &str,
    acked: &[u64],
    scenario: &str,
    browser: &str,
    faults: u64,
    started: Instant,
) -> Result {
    let recorded = server.mutations_of(client_id).await?;
    let stats = server.stats().await?;
    let (lost, duplicated) = summary::count_lost_and_duplicated(
        &recorded,
        stats["mutations_applied"].as_u64().unwrap_or(0),
        acked.iter().copied(),
    );
    summary::record(&ScenarioLine {
        scenario: scenario.into(),
        browser: browser.into(),
        writes: acked.len() as u64,
        faults,
        lost,
        duplicated,
        seconds: started.elapsed().as_secs_f64(),
    })?;
    assert_eq!((lost, duplicated), (0, 0), "nothing lost or duplicated");
    assert_seqs_applied_once(&recorded, acked.len() as u64);
    assert_eq!(stats["mutations_applied"], acked.len(), "stats: {stats}");
    Ok(())
}

#[tokio::test]
async fn firefox_a_write_made_while_the_server_is_down_arrives_exactly_once_from_the_live_worker(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    let firefox = Firefox::launch().await?;
    println!("browser: {}", firefox.version());
    let client_id = register(&firefox, &server).await?;

    server.stop().await;
    let acked = write(&firefox, "outage").await?;
    let status = firefox.eval("client.status()").await?;
    assert_eq!(status["pending"], WRITES, "queued while down: {status}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await?;
    let back = Instant::now();
    // No page message from here on: the worker's retry timer delivers.
    let delivered = wait_for_all(&server, &client_id, back, "the server came back").await;
    if delivered.is_err() {
        println!("{}", firefox.log_tail());
    }
    delivered?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "server down during the writes, back 1 s later (live worker)",
        firefox.version(),
        1,
        started,
    )
    .await?;
    // The server has them; the worker may still be recording the answer.
    wait_until(
        "the page shows pending 0",
        Duration::from_secs(20),
        || async {
            let status = firefox.eval("client.status()").await?;
            Ok((status["pending"] == 0).then_some(()))
        },
    )
    .await?;
    firefox.close().await?;
    Ok(())
}

#[tokio::test]
async fn firefox_after_the_tab_closes_a_write_arrives_exactly_once_when_the_worker_starts_on_the_next_visit(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    // Firefox stops a service worker idle for `idle_timeout` (30 s by default), or `waitUntil`
    // work after `idle_extended_timeout` (5 min): shortened here so the worker is gone within
    // seconds of the tab closing.
    let firefox = Firefox::launch_with_prefs(json!({
        "dom.serviceWorkers.idle_timeout": 1000,
        "dom.serviceWorkers.idle_extended_timeout": 3000,
    }))
    .await?;
    println!("browser: {}", firefox.version());
    let app_tab = firefox.current_tab().await?;
    let client_id = register(&firefox, &server).await?;

    server.stop().await;
    let acked = write(&firefox, "closed").await?;
    firefox.new_tab("about:blank").await?;
    firefox.switch_to(&app_tab).await?;
    firefox.close_tab().await?;
    // With no tab and no Background Sync, the worker dies once idle (the extended timeout cuts
    // its backoff short) and nothing wakes it.
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
    // The next visit starts the worker, whose start flushes.
    let visit = Instant::now();
    firefox.goto(&bare_page_url(&server)).await?;
    wait_for_all(&server, &client_id, visit, "the next visit began").await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "tab closed with writes queued, server back, next visit",
        firefox.version(),
        1,
        started,
    )
    .await?;
    firefox.close().await?;
    Ok(())
}

#[tokio::test]
async fn firefox_after_a_browser_restart_a_write_arrives_exactly_once() -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    let firefox = Firefox::launch().await?;
    println!("browser: {}", firefox.version());
    let client_id = register(&firefox, &server).await?;

    server.stop().await;
    let acked = write(&firefox, "restart").await?;
    let quit = Instant::now();
    let firefox = firefox.restart().await?;
    println!("quit and relaunched in {:?}", quit.elapsed());
    server.restart().await?;
    // Nothing starts the worker after a restart until a page of the origin is opened.
    let visit = Instant::now();
    firefox.goto(&bare_page_url(&server)).await?;
    wait_for_all(&server, &client_id, visit, "the first visit began").await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "browser quit and relaunched with writes queued",
        firefox.version(),
        2,
        started,
    )
    .await?;
    firefox.close().await?;
    Ok(())
}

#[tokio::test]
async fn firefox_after_the_browser_is_killed_a_write_arrives_exactly_once() -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    let firefox = Firefox::launch().await?;
    println!("browser: {}", firefox.version());
    let client_id = register(&firefox, &server).await?;

    server.stop().await;
    let acked = write(&firefox, "killed").await?;
    // SIGKILL right after the acknowledgements: they came after a strict commit.
    let kill = Instant::now();
    let firefox = firefox.kill_and_restart().await?;
    println!("killed and relaunched in {:?}", kill.elapsed());
    server.restart().await?;
    let visit = Instant::now();
    firefox.goto(&bare_page_url(&server)).await?;
    wait_for_all(&server, &client_id, visit, "the first visit began").await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "browser killed (SIGKILL) with writes queued, relaunched",
        firefox.version(),
        2,
        started,
    )
    .await?;
    firefox.close().await?;
    Ok(())
}
