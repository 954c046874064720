//! Delivery in Firefox ESR (headless, through geckodriver): a browser with service workers and
//! no Background Sync, where the worker's start, the page's messages and the worker's own retry
//! timer are all that deliver. Each test writes while the server is stopped, brings it back, and
//! checks what the server committed: each acknowledged seq once, applied, in order. The last
//! three: an idle page after an outage longer than the worker's idle timeout, and RangerPlex's
//! captured API calls (queued while the API is down and replayed after the tab closed; a request
//! the API fails every time, dead-lettered, then retried and discarded by hand), with the API
//! behind a fault proxy that counts what reached it.

use std::time::{Duration, Instant};

use rangersync_e2e::driver_scenarios::{
    check_and_record, live_worker_delivers_after_an_outage,
    next_visit_delivers_after_the_tab_closed, register, register_with, wait_for_all,
    wait_for_all_or_show_log, write, WRITES,
};
use rangersync_e2e::firefox::Firefox;
use rangersync_e2e::summary;
use rangersync_e2e::{
    bare_page_url, fetch_post_js, register_client_js, serial, wait_until, FaultProxy, Result,
    TestServer,
};
use serde_json::{json, Value};

#[tokio::test]
async fn firefox_a_write_made_while_the_server_is_down_arrives_exactly_once_from_the_live_worker(
) -> Result {
    let _serial = serial().await;
    let firefox = Firefox::launch().await?;
    live_worker_delivers_after_an_outage(&firefox, firefox.version(), || firefox.log_tail())
        .await?;
    firefox.close().await
}

#[tokio::test]
async fn firefox_after_the_tab_closes_a_write_arrives_exactly_once_when_the_worker_starts_on_the_next_visit(
) -> Result {
    let _serial = serial().await;
    // Firefox stops a service worker idle for `idle_timeout` (30 s by default), or `waitUntil`
    // work after `idle_extended_timeout` (5 min): shortened here so the worker is gone within
    // seconds of the tab closing.
    let firefox = Firefox::launch_with_prefs(json!({
        "dom.serviceWorkers.idle_timeout": 1000,
        "dom.serviceWorkers.idle_extended_timeout": 3000,
    }))
    .await?;
    next_visit_delivers_after_the_tab_closed(&firefox, firefox.version()).await?;
    firefox.close().await
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

#[tokio::test]
async fn firefox_an_idle_page_delivers_once_the_server_is_back_from_an_outage_longer_than_the_worker_idle_timeout(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    // Firefox's own idle timeout (30 s): no pref changed.
    let firefox = Firefox::launch().await?;
    println!("browser: {}", firefox.version());
    // The default backoff: after a few failures the next retry is far beyond the outage.
    let client_id = register_with(&firefox, &server, "{}").await?;

    server.stop().await;
    let acked = write(&firefox, "idle").await?;
    // The page stays open and idle; the worker has nothing to do but wait for its timer, and
    // Firefox stops it once it has been idle for 30 s.
    tokio::time::sleep(Duration::from_secs(35)).await;
    server.restart().await?;
    let back = Instant::now();
    // No page call from here on: the test only watches the server.
    wait_for_all_or_show_log(|| firefox.log_tail(), &server, &client_id, back).await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "server down 35 s (past the worker's idle timeout), idle page open",
        firefox.version(),
        1,
        started,
    )
    .await?;
    firefox.close().await?;
    Ok(())
}

/// The RangerPlex API (a second server) behind a fault proxy that counts what reached it.
struct Api {
    server: TestServer,
    proxy: FaultProxy,
}

impl Api {
    async fn start() -> Result<Api> {
        let server = TestServer::start().await?;
        let proxy = FaultProxy::start(server.addr()).await?;
        Ok(Api { server, proxy })
    }

    /// `captureRoutes` for the API's `/api/sync/*`, and a short backoff.
    fn options(&self) -> String {
        format!(
            "{{ captureRoutes: ['{}/api/sync/*'], retry: {{ baseDelayMs: 200, maxDelayMs: 1000, maxAttempts: 1000 }} }}",
            self.proxy.url()
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.url())
    }

    /// POSTs the API answered 2xx, by path: each delivery, resends included.
    fn delivered(&self, path: &str) -> usize {
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
async fn until_outbox_empty(firefox: &Firefox) -> Result<Value> {
    wait_until("the outbox is empty", Duration::from_secs(20), || async {
        let status = firefox.eval("client.status()").await?;
        Ok((status["pending"] == 0).then_some(status))
    })
    .await
}

/// The JSON body of a captured request the API stored (kept as JSON, or as the text sent).
fn body_of(row: &Value) -> Value {
    match row["body"].as_str() {
        Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        None => row["body"].clone(),
    }
}

/// A page `fetch` POST of `body` to `url`, which the worker must answer `202 {queued, seq}`;
/// returns the seq.
async fn post_queued(firefox: &Firefox, url: &str, body: Value) -> Result<u64> {
    let answer = firefox.eval(&fetch_post_js(url, &body)).await?;
    assert_eq!(answer["status"], 202, "queued: {answer}");
    let queued: Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())?;
    assert_eq!(queued["queued"], true, "{answer}");
    Ok(queued["seq"]
        .as_u64()
        .ok_or_else(|| format!("no seq: {answer}"))?)
}

#[tokio::test]
async fn firefox_captured_calls_to_an_api_that_is_down_are_queued_and_replayed_in_order_once_after_the_tab_closes(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let server = TestServer::start().await?;
    let mut api = Api::start().await?;
    let firefox = Firefox::launch().await?;
    println!("browser: {}", firefox.version());
    let app_tab = firefox.current_tab().await?;
    let client_id = register_with(&firefox, &server, &api.options()).await?;

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
        seqs.push(post_queued(&firefox, &api.url(path), body.clone()).await?);
    }
    let status = firefox.eval("client.status()").await?;
    assert_eq!(status["pending"], 3, "{status}");
    // The tab closes; the API comes back. No page of the app is open.
    firefox.new_tab("about:blank").await?;
    firefox.switch_to(&app_tab).await?;
    firefox.close_tab().await?;
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
        browser: firefox.version().into(),
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
    firefox.goto(&bare_page_url(&server)).await?;
    firefox.eval(&register_client_js(&api.options())).await?;
    let status = until_outbox_empty(&firefox).await?;
    assert_eq!(status["dead"], 0, "{status}");
    firefox.close().await?;
    Ok(())
}

#[tokio::test]
async fn firefox_a_request_the_api_fails_every_time_is_dead_lettered_and_the_others_arrive_then_retry_and_discard_work(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let server = TestServer::start().await?;
    let mut api = Api::start().await?;
    let firefox = Firefox::launch().await?;
    println!("browser: {}", firefox.version());
    register_with(&firefox, &server, &api.options()).await?;

    api.server.stop().await;
    let chat = api.url("/api/sync/chat");
    let settings = api.url("/api/sync/settings");
    let poison_a = post_queued(&firefox, &chat, json!({ "poison": "a" })).await?;
    let poison_b = post_queued(&firefox, &chat, json!({ "poison": "b" })).await?;
    let mut good = Vec::new();
    for theme in 0..3 {
        good.push(post_queued(&firefox, &settings, json!({ "theme": theme })).await?);
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
    let status = until_outbox_empty(&firefox).await?;
    println!("after the poison: {status}");
    assert_eq!(status["dead"], 2, "{status}");
    let dead = firefox.eval("client.deadLetters()").await?;
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
    firefox
        .eval(&format!("client.retryDead({poison_a})"))
        .await?;
    firefox
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
        browser: firefox.version().into(),
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
    let status = until_outbox_empty(&firefox).await?;
    assert_eq!(status["dead"], 0, "{status}");
    firefox.close().await?;
    Ok(())
}

/// JS defining `window.bigValue(seed)`: about 600 KB of text that does not compress
/// (xorshift, hex), so the storage it takes is about its size.
const BIG_VALUE_JS: &str =
    "(window.bigValue = (seed) => { let x = (2463534242 + seed) >>> 0, out = '';
    for (let i = 0; i < 75000; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
      out += (x >>> 0).toString(16).padStart(8, '0'); }
    return { seed, blob: out }; }, true)";

#[tokio::test]
async fn firefox_a_write_over_the_storage_quota_is_refused_with_quota_exceeded_and_everything_saved_before_stays_and_syncs(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let mut server = TestServer::start().await?;
    // Temporary storage limited to 50 MiB: an origin may use a fifth of it, and at least
    // 10 MiB (Firefox's group limit). (Chromium 156 reports a DevTools quota override,
    // `Storage.overrideQuotaForOrigin`, as active but IndexedDB does not enforce it: 16 MB
    // were written under a 0.9 MB override.)
    let firefox = Firefox::launch_with_prefs(json!({
        "dom.quotaManager.temporaryStorage.fixedLimit": 51_200,
    }))
    .await?;
    println!("browser: {}", firefox.version());
    let client_id = register(&firefox, &server).await?;
    firefox.eval(BIG_VALUE_JS).await?;
    println!(
        "storage estimate: {}",
        firefox.eval("navigator.storage.estimate()").await?
    );

    // The server is down: twenty notes are saved and queued, then big values until the
    // storage is full.
    server.stop().await;
    let mut acked = write(&firefox, "saved").await?;
    let usage = || async {
        let estimate = firefox.eval("navigator.storage.estimate()").await?;
        Ok::<_, rangersync_e2e::Error>((
            estimate["usage"].as_f64().unwrap_or(0.0),
            estimate["quota"].as_f64().unwrap_or(0.0),
        ))
    };
    let (before_big, _) = usage().await?;
    let filled = firefox
        .eval(
            "(async () => { const seqs = [];
               for (let i = 0; i < 60; i++) {
                 try { seqs.push((await client.put('big', 'b' + i, bigValue(i))).seq); }
                 catch (e) { return { seqs, refused: i, code: e.code, message: e.message }; }
               }
               return { seqs, refused: null }; })()",
        )
        .await?;
    println!(
        "filled: {} big writes acknowledged, then {} {} ({})",
        filled["seqs"].as_array().map_or(0, Vec::len),
        filled["code"],
        filled["message"],
        firefox.eval("navigator.storage.estimate()").await?
    );
    assert_eq!(filled["code"], "quota_exceeded", "{filled}");
    let refused = filled["refused"].as_u64().ok_or("nothing was refused")?;
    let big: Vec<u64> = filled["seqs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    assert!(!big.is_empty(), "some big writes fit first: {filled}");
    acked.extend(&big);
    let (full, quota) = usage().await?;
    let per_big_write = (full - before_big) / big.len() as f64;

    // Everything saved before the refusal stays, queued; the refused write left nothing.
    let status = firefox.eval("client.status()").await?;
    assert_eq!(status["pending"], acked.len(), "{status}");
    assert_eq!(status["dead"], 0, "{status}");
    let notes = firefox.eval("client.list('notes')").await?;
    assert_eq!(notes.as_array().map_or(0, Vec::len) as u64, WRITES);
    let bigs = firefox
        .eval("client.list('big').then(l => l.map(i => i.key))")
        .await?;
    assert_eq!(bigs.as_array().map_or(0, Vec::len), big.len(), "{bigs}");
    assert!(
        !bigs
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k == &json!(format!("b{refused}"))),
        "nothing of the refused write: {bigs}"
    );

    // The server comes back: everything saved syncs, and the sync frees the outbox's copies.
    server.restart().await?;
    server
        .wait_for_recorded(&client_id, acked.len(), Duration::from_secs(60))
        .await?;
    wait_until("the outbox is empty", Duration::from_secs(30), || async {
        let status = firefox.eval("client.status()").await?;
        Ok((status["pending"] == 0).then_some(()))
    })
    .await?;
    // The sync deleted the outbox's copies; Firefox releases their space shortly after (large
    // values live in files of their own, removed in the background).
    let freed = wait_until(
        "the space of the delivered outbox entries is released",
        Duration::from_secs(60),
        || async {
            let (now, _) = usage().await?;
            Ok((quota - now > 1.5 * per_big_write).then_some(now))
        },
    )
    .await?;
    println!(
        "usage {full} B when full (quota {quota} B, {per_big_write} B per big write), {freed} B \
         once the sync had freed the outbox"
    );
    // With the space freed, the refused write succeeds and syncs. (Firefox may refuse the first
    // write after a quota abort on the old connection; the worker then opens a fresh one, so
    // the app's next try goes through.)
    let again = wait_until(
        "the refused write is accepted now that there is room",
        Duration::from_secs(30),
        || async {
            let answer = firefox
                .eval(&format!(
                    "client.put('big', 'b{refused}', bigValue({refused})).then(a => a, e => ({{ code: e.code, message: e.message }}))"
                ))
                .await?;
            if answer["seq"].is_u64() {
                return Ok(Some(answer));
            }
            println!("not yet: {answer}");
            Ok(None)
        },
    )
    .await?;
    acked.push(again["seq"].as_u64().ok_or_else(|| format!("{again}"))?);
    server
        .wait_for_recorded(&client_id, acked.len(), Duration::from_secs(30))
        .await?;
    check_and_record(
        &server,
        &client_id,
        &acked,
        "storage quota full (10 MiB origin limit): a write refused, space freed by the sync",
        firefox.version(),
        2,
        started,
    )
    .await?;
    let on_server = server.pull_all().await?;
    assert!(
        on_server
            .iter()
            .any(|c| c["key"] == format!("b{refused}").as_str() && c["value"]["seed"] == refused),
        "the write refused earlier is on the server"
    );
    wait_until(
        "the page shows pending 0",
        Duration::from_secs(20),
        || async {
            let status = firefox.eval("client.status()").await?;
            Ok((status["pending"] == 0 && status["dead"] == 0).then_some(()))
        },
    )
    .await?;
    firefox.close().await?;
    Ok(())
}
