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
    a_request_the_api_always_fails_is_dead_lettered_then_retried_and_discarded,
    an_idle_page_delivers_after_an_outage_past_the_idle_timeout,
    captured_calls_are_replayed_in_order_once_after_the_tab_closes, check_and_record,
    live_worker_delivers_after_an_outage, next_visit_delivers_after_the_tab_closed, register,
    wait_for_all, write, WRITES,
};
use rangersync_e2e::firefox::Firefox;
use rangersync_e2e::{serial, wait_until, Result, TestServer};
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
    // Nothing starts the worker after a restart until a page of the app is opened (its
    // messages start it: with nothing to capture or cache it has no fetch listener).
    let visit = Instant::now();
    assert_eq!(
        register(&firefox, &server).await?,
        client_id,
        "the same outbox"
    );
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
    assert_eq!(
        register(&firefox, &server).await?,
        client_id,
        "the same outbox"
    );
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
    // Firefox's own idle timeout: no pref changed.
    let firefox = Firefox::launch().await?;
    an_idle_page_delivers_after_an_outage_past_the_idle_timeout(
        &firefox,
        firefox.version(),
        || firefox.log_tail(),
        Duration::from_secs(35),
        "30 s in Firefox",
    )
    .await?;
    firefox.close().await
}

#[tokio::test]
async fn firefox_captured_calls_to_an_api_that_is_down_are_queued_and_replayed_in_order_once_after_the_tab_closes(
) -> Result {
    let _serial = serial().await;
    let firefox = Firefox::launch().await?;
    captured_calls_are_replayed_in_order_once_after_the_tab_closes(&firefox, firefox.version())
        .await?;
    firefox.close().await
}

#[tokio::test]
async fn firefox_a_request_the_api_fails_every_time_is_dead_lettered_and_the_others_arrive_then_retry_and_discard_work(
) -> Result {
    let _serial = serial().await;
    let firefox = Firefox::launch().await?;
    a_request_the_api_always_fails_is_dead_lettered_then_retried_and_discarded(
        &firefox,
        firefox.version(),
    )
    .await?;
    firefox.close().await
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
