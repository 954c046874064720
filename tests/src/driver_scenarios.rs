//! # Delivery scenarios for the WebDriver browsers (Firefox ESR, WebKitGTK)
//!
//! Neither browser has Background Sync: the worker's start, the page's messages and the
//! worker's own retry timer are all that deliver. Each scenario writes while the server is
//! stopped, brings it back, and checks what the server committed: each acknowledged seq once,
//! applied, in order. The last two are RangerPlex's captured API calls (queued while the API
//! is down and replayed after the tab closed; a request the API fails every time,
//! dead-lettered, then retried and discarded by hand), with the API behind a fault proxy that
//! counts what reached it. The browser is launched and closed by the test
//! (`firefox_delivery.rs`, `webkit_delivery.rs`); a scenario only drives its [`Session`].

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::webdriver::Session;
use crate::{
    bare_page_url, fetch_post_js, register_client_js, summary, wait_until, FaultProxy, Result,
    TestServer,
};

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

/// Writes queued with the server down for `outage` (longer than the browser's idle timeout
/// for a service worker, `idle` says how long that is) with the default backoff, so the next
/// retry is far beyond the outage; the page stays open and idle, and the test only watches
/// the server: whatever wakes the worker (its timer, a restart) delivers each write once.
pub async fn an_idle_page_delivers_after_an_outage_past_the_idle_timeout(
    browser: &Session,
    version: &str,
    log_tail: impl Fn() -> String,
    outage: Duration,
    idle: &str,
) -> Result {
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    println!("browser: {version}");
    let client_id = register_with(browser, &server, "{}").await?;

    server.stop().await;
    let acked = write(browser, "idle").await?;
    tokio::time::sleep(outage).await;
    server.restart().await?;
    let back = Instant::now();
    wait_for_all_or_show_log(log_tail, &server, &client_id, back).await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        &format!(
            "server down {} s (past the worker's idle timeout, {idle}), idle page open",
            outage.as_secs()
        ),
        version,
        1,
        started,
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
    // The app's next visit: its messages start the worker (with nothing to capture or cache it
    // has no fetch listener, so a navigation alone would not).
    let visit = Instant::now();
    assert_eq!(
        register(browser, &server).await?,
        client_id,
        "the same outbox"
    );
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

/// The RangerPlex API (a second server) behind a fault proxy that counts what reached it.
pub struct Api {
    pub server: TestServer,
    pub proxy: FaultProxy,
}

impl Api {
    pub async fn start() -> Result<Api> {
        let server = TestServer::start().await?;
        let proxy = FaultProxy::start(server.addr()).await?;
        Ok(Api { server, proxy })
    }

    /// `captureRoutes` for the API's `/api/sync/*`, and a short backoff.
    pub fn options(&self) -> String {
        format!(
            "{{ captureRoutes: ['{}/api/sync/*'], retry: {{ baseDelayMs: 200, maxDelayMs: 1000, maxAttempts: 1000 }} }}",
            self.proxy.url()
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.url())
    }

    /// POSTs the API answered 2xx, by path: each delivery, resends included.
    pub fn delivered(&self, path: &str) -> usize {
        self.proxy
            .exchanges()
            .iter()
            .filter(|e| e.method == "POST" && e.path == path)
            .filter(|e| e.upstream_status.is_some_and(|s| (200..300).contains(&s)))
            .count()
    }
}

/// Polls the page until its outbox is empty (the API has a request before the worker has
/// recorded the answer); returns the status.
pub async fn until_outbox_empty(browser: &Session) -> Result<Value> {
    wait_until("the outbox is empty", Duration::from_secs(20), || async {
        let status = browser.eval("client.status()").await?;
        Ok((status["pending"] == 0).then_some(status))
    })
    .await
}

/// The JSON body of a captured request the API stored (kept as JSON, or as the text sent).
pub fn body_of(row: &Value) -> Value {
    match row["body"].as_str() {
        Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        None => row["body"].clone(),
    }
}

/// A page `fetch` POST of `body` to `url`, which the worker must answer `202 {queued, seq}`;
/// returns the seq.
pub async fn post_queued(browser: &Session, url: &str, body: Value) -> Result<u64> {
    let answer = browser.eval(&fetch_post_js(url, &body)).await?;
    assert_eq!(answer["status"], 202, "queued: {answer}");
    let queued: Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())?;
    assert_eq!(queued["queued"], true, "{answer}");
    Ok(queued["seq"]
        .as_u64()
        .ok_or_else(|| format!("no seq: {answer}"))?)
}

/// RangerPlex's calls while its API is down are answered 202 and kept; the tab closes, the
/// API comes back: the worker replays them in order, each once, with no page open.
pub async fn captured_calls_are_replayed_in_order_once_after_the_tab_closes(
    browser: &Session,
    version: &str,
) -> Result {
    let started = Instant::now();
    let server = TestServer::start().await?;
    let mut api = Api::start().await?;
    println!("browser: {version}");
    let app_tab = browser.current_tab().await?;
    let client_id = register_with(browser, &server, &api.options()).await?;

    // RangerPlex's calls while its API is down: the worker answers 202 and keeps them.
    api.server.stop().await;
    let calls = [
        (
            "/api/sync/chat",
            json!({ "id": "c1", "text": "first message" }),
        ),
        ("/api/sync/settings", json!({ "theme": "dark" })),
        (
            "/api/sync/chat",
            json!({ "id": "c2", "text": "second message" }),
        ),
    ];
    let mut seqs = Vec::new();
    for (path, body) in &calls {
        seqs.push(post_queued(browser, &api.url(path), body.clone()).await?);
    }
    let status = browser.eval("client.status()").await?;
    assert_eq!(status["pending"], 3, "{status}");
    // The tab closes; the API comes back. No page of the app is open.
    browser.new_tab("about:blank").await?;
    browser.switch_to(&app_tab).await?;
    browser.close_tab().await?;
    api.server.restart().await?;
    let back = Instant::now();
    let stored = wait_until(
        "the three calls reached the API",
        Duration::from_secs(30),
        || async {
            let stats = api.server.stats().await?;
            let all = stats["captured"].as_array().cloned().unwrap_or_default();
            Ok((all.len() >= 3).then_some(all))
        },
    )
    .await?;
    println!(
        "replayed {} ms after the API came back, with no tab open",
        back.elapsed().as_millis()
    );
    // In order, once each, with `Idempotency-Key: <client_id>:<seq>`.
    let expected_keys: Vec<String> = seqs.iter().map(|s| format!("{client_id}:{s}")).collect();
    let keys: Vec<String> = stored
        .iter()
        .map(|c| {
            c["idempotency_key"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let delivered = api.delivered("/api/sync/chat") + api.delivered("/api/sync/settings");
    let lost = expected_keys.iter().filter(|k| !keys.contains(k)).count() as u64;
    summary::record(&summary::ScenarioLine {
        scenario: "captured API calls, API down, tab closed, API back".into(),
        browser: version.into(),
        writes: seqs.len() as u64,
        faults: 2,
        lost,
        duplicated: delivered.saturating_sub(stored.len()) as u64,
        seconds: started.elapsed().as_secs_f64(),
    })?;
    assert_eq!(keys, expected_keys, "in seq order, once each: {stored:?}");
    for ((path, body), row) in calls.iter().zip(&stored) {
        assert_eq!(row["path"], *path, "{row}");
        assert_eq!(body_of(row), *body, "{row}");
    }
    assert_eq!(delivered, 3, "each call reached the API once");
    // The next visit finds an empty outbox (once the worker has recorded the last answer).
    browser.goto(&bare_page_url(&server)).await?;
    browser.eval(&register_client_js(&api.options())).await?;
    let status = until_outbox_empty(browser).await?;
    assert_eq!(status["dead"], 0, "{status}");
    Ok(())
}

/// Two chat calls the API fails every time among three settings calls: the settings arrive in
/// order once each, the two are dead-lettered with the API's words; once the API is fixed,
/// one retried arrives once and the other, discarded, never goes.
pub async fn a_request_the_api_always_fails_is_dead_lettered_then_retried_and_discarded(
    browser: &Session,
    version: &str,
) -> Result {
    let started = Instant::now();
    let server = TestServer::start().await?;
    let mut api = Api::start().await?;
    println!("browser: {version}");
    register_with(browser, &server, &api.options()).await?;

    api.server.stop().await;
    let chat = api.url("/api/sync/chat");
    let settings = api.url("/api/sync/settings");
    let poison_a = post_queued(browser, &chat, json!({ "poison": "a" })).await?;
    let poison_b = post_queued(browser, &chat, json!({ "poison": "b" })).await?;
    let mut good = Vec::new();
    for theme in 0..3 {
        good.push(post_queued(browser, &settings, json!({ "theme": theme })).await?);
    }
    api.server.restart().await?;
    // The API fails every chat request, with its own words.
    api.server
        .add_faults(json!([{
            "path": "/api/sync/chat", "status": 500,
            "body": "Error: SQLITE_CONSTRAINT: NOT NULL constraint failed: chats.title",
            "times": 1000
        }]))
        .await?;
    let arrived = wait_until(
        "the good requests arrived",
        Duration::from_secs(60),
        || async {
            let rows = api.server.captured("/api/sync/settings").await?;
            Ok((rows.len() >= 3).then_some(rows))
        },
    )
    .await?;
    // The API has the last one before the worker has recorded its answer.
    let status = until_outbox_empty(browser).await?;
    println!("after the poison: {status}");
    assert_eq!(status["dead"], 2, "{status}");
    let dead = browser.eval("client.deadLetters()").await?;
    let dead_seqs: Vec<u64> = dead
        .as_array()
        .ok_or("no dead letters")?
        .iter()
        .filter_map(|d| d["seq"].as_u64())
        .collect();
    assert_eq!(dead_seqs, [poison_a, poison_b], "{dead}");
    for letter in dead.as_array().into_iter().flatten() {
        let reason = letter["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("SQLITE_CONSTRAINT"), "{letter}");
        assert!(reason.contains("5 times"), "{letter}");
    }

    // The API is fixed: retry one by hand, discard the other.
    api.server.clear_faults().await?;
    browser
        .eval(&format!("client.retryDead({poison_a})"))
        .await?;
    browser
        .eval(&format!("client.discardDead({poison_b})"))
        .await?;
    let chats = wait_until(
        "the retried request arrived",
        Duration::from_secs(30),
        || async {
            let rows = api.server.captured("/api/sync/chat").await?;
            Ok((!rows.is_empty()).then_some(rows))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let chats_later = api.server.captured("/api/sync/chat").await?;
    let settings_delivered = api.delivered("/api/sync/settings");
    let chat_delivered = api.delivered("/api/sync/chat");
    let expected: usize = 4; // three good ones and the retried one; the discarded one never goes
    let got = arrived.len() + chats_later.len();
    summary::record(&summary::ScenarioLine {
        scenario: "two poison API calls among 3 good ones; one retried, one discarded".into(),
        browser: version.into(),
        writes: 5,
        faults: 1 + api.server.stats().await?["faults_served"]
            .as_u64()
            .unwrap_or(0),
        lost: expected.saturating_sub(got) as u64,
        duplicated: (settings_delivered + chat_delivered).saturating_sub(got) as u64,
        seconds: started.elapsed().as_secs_f64(),
    })?;
    let themes: Vec<Value> = arrived
        .iter()
        .map(|row| body_of(row)["theme"].clone())
        .collect();
    assert_eq!(
        themes,
        [json!(0), json!(1), json!(2)],
        "in order, once each"
    );
    assert_eq!(
        settings_delivered, 3,
        "each good request reached the API once"
    );
    assert_eq!(chats, chats_later, "nothing more after the retried one");
    assert_eq!(
        chats_later.len(),
        1,
        "the retried one, once: {chats_later:?}"
    );
    assert_eq!(
        body_of(&chats_later[0]),
        json!({ "poison": "a" }),
        "the discarded request never went"
    );
    assert_eq!(chat_delivered, 1);
    let status = until_outbox_empty(browser).await?;
    assert_eq!(status["dead"], 0, "{status}");
    Ok(())
}
