//! Hardening of the delivery loop, in real Chromium against the real server: a backoff that
//! survives worker restarts, one engine per outbox (Web Locks) across a Shift+Reload, and an
//! edit made right before the tab closes.

use std::time::{Duration, Instant};

use chromiumoxide::Page;
use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, cdp, client_id_of, eval, open_demo, register_client,
    serial, wait_for_controller, wait_until, Result, ServiceWorkers, TestBrowser, TestServer,
};
use serde_json::{json, Value};

async fn faults_served(server: &TestServer) -> Result<u64> {
    Ok(server.stats().await?["faults_served"].as_u64().unwrap_or(0))
}

#[tokio::test]
async fn a_worker_stopped_and_started_20_times_against_a_failing_server_sends_on_the_backoff_schedule_only(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let mode = register_client(
        &page,
        "{ retry: { baseDelayMs: 2000, maxDelayMs: 8000, maxAttempts: 25 } }",
    )
    .await?;
    assert_eq!(mode, "worker");
    wait_for_controller(&page).await?;
    let registration = workers.registration(&server.url()).await?.id;

    // The server answers 500 to every push, for ever.
    server
        .add_faults(json!([{ "path": "/api/sync/push", "status": 500, "times": 100_000 }]))
        .await?;
    eval(&page, "client.put('notes', 'n1', { t: 1 })").await?;
    wait_until("the first push failed", Duration::from_secs(20), || async {
        Ok((faults_served(&server).await? >= 1).then_some(()))
    })
    .await?;
    let before = faults_served(&server).await?;
    let mut early_sends = Vec::new();
    for restart in 0..20 {
        let status = eval(&page, "client.status()").await?;
        let retry_at = status["next_retry_at"].as_f64();
        let served = faults_served(&server).await?;
        workers.stop_until_stopped(&registration).await?;
        // A page message starts the worker again: its start and the message are triggers.
        let after = eval(&page, "client.status()").await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = eval(&page, "Date.now()").await?.as_f64().unwrap_or(0.0);
        let served_now = faults_served(&server).await?;
        if let Some(at) = retry_at {
            if now < at && served_now != served {
                early_sends.push(format!(
                    "restart {restart}: {} push(es) {} ms before the retry time ({after})",
                    served_now - served,
                    at - now
                ));
            }
        }
        assert_eq!(after["pending"], 1, "the write is kept: {after}");
    }
    let pushes = faults_served(&server).await? - before;
    println!("20 worker restarts against a failing server: {pushes} more push(es)");
    assert!(
        early_sends.is_empty(),
        "a restart sent before the persisted retry time: {early_sends:?}"
    );
    assert!(
        pushes < 10,
        "{pushes} pushes for 20 restarts: the starts, not the backoff, drove them"
    );
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["dead"], 0, "nothing dead-lettered: {status}");
    server.clear_faults().await?;
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_shift_reload_during_a_1000_write_flush_delivers_each_write_once_with_one_engine_flushing(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{ batchSize: 50 }").await?, "worker");
    wait_for_controller(&page).await?;
    let other = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(&other, "{ batchSize: 50 }").await?,
        "worker"
    );
    let client_id = client_id_of(&page).await?;

    // Every push is applied, and its answer held 300 ms: the flush of 1,000 writes in
    // batches of 50 takes about 6 s.
    server
        .add_faults(json!([{ "path": "/api/sync/push", "delay_ms": 300, "times": 1000 }]))
        .await?;
    eval(
        &page,
        "client.putMany(Array.from({ length: 1000 }, (_, i) => ({ collection: 'notes', key: 'k' + i, value: { i } }))).then(() => true)",
    )
    .await?;
    wait_until(
        "the flush is under way",
        Duration::from_secs(30),
        || async {
            let applied = server.stats().await?["mutations_applied"]
                .as_u64()
                .unwrap_or(0);
            Ok((applied >= 100).then_some(()))
        },
    )
    .await?;
    // Shift+Reload: the page comes back without the worker and runs the page engine over
    // the same outbox while the worker is still flushing it.
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
    let mode = register_client(&page, "{ batchSize: 50, controllerTimeoutMs: 500 }").await?;
    assert_eq!(
        mode, "page",
        "a hard reload is not controlled by the worker"
    );
    let done = |p: Page| async move {
        wait_until(
            "the tab shows an empty outbox",
            Duration::from_secs(90),
            || async {
                let status = eval(&p, "client.flush()").await?;
                Ok((status["pending"] == 0 && status["in_flight"] == 0).then_some(status))
            },
        )
        .await
    };
    let page_status = done(page.clone()).await?;
    let other_status = done(other.clone()).await?;
    let stats = server.stats().await?;
    println!("after the Shift+Reload: {stats}; page {page_status}; other tab {other_status}");
    assert_eq!(stats["duplicates"], 0, "no write was sent twice: {stats}");
    assert_eq!(stats["mutations_applied"], 1000, "{stats}");
    assert_seqs_applied_once(&server.mutations_of(&client_id).await?, 1000);
    // The fallback is visible, never silent: the page-mode tab says why.
    let reason = page_status["fallback_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("control"), "{page_status}");
    assert!(other_status["fallback_reason"].is_null(), "{other_status}");
    for status in [&page_status, &other_status] {
        assert_eq!(status["dead"], 0, "{status}");
        assert!(status["last_error"].is_null(), "{status}");
    }
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn an_edit_made_right_before_the_tab_closes_is_saved_and_reaches_the_server_once() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = open_demo(&browser, &server.url()).await?;
    wait_for_controller(&page).await?;
    assert_eq!(eval(&page, "rangersync.mode").await?, "worker");
    // The app selects the new note and opens it in the editor. (Its buttons are wired a
    // moment after `window.rangersync` appears: click until a note is open.)
    wait_until("a new note is open in the editor", Duration::from_secs(20), || async {
        let open = eval(
            &page,
            "(() => { const open = !!document.querySelector('#note-list button.active') && !document.getElementById('editor').hidden; \
             if (!open) document.getElementById('new-note').click(); return open; })()",
        )
        .await?;
        Ok((open == true).then_some(()))
    })
    .await?;
    let text = "typed 20 ms before closing the tab";
    eval(&page, "document.getElementById('note-body').focus(); true").await?;
    // The keystrokes (real input events), then the tab closes at once: well inside the
    // app's 350 ms debounce, so only its pagehide hand-over can save them.
    cdp(&page, "Input.insertText", json!({ "text": text })).await?;
    let typed = Instant::now();
    let close = browser.close_tab(page);
    let elapsed = typed.elapsed();
    close.await?;
    println!(
        "the tab was asked to close {} ms after the keystroke",
        elapsed.as_millis()
    );
    assert!(
        elapsed < Duration::from_millis(20),
        "precondition: the close was asked within 20 ms ({elapsed:?})"
    );

    let page = open_demo(&browser, &server.url()).await?;
    let local = wait_until(
        "the edit is in the local copy",
        Duration::from_secs(20),
        || async {
            let notes = eval(&page, "rangersync.list('notes')").await?;
            let found = notes
                .as_array()
                .and_then(|list| list.iter().find(|n| n["value"]["body"] == text).cloned());
            Ok(found)
        },
    )
    .await?;
    let key = local["key"].as_str().unwrap_or_default().to_owned();
    let client_id = eval(
        &page,
        "rangersync.exportSnapshot('json').then(s => JSON.parse(s).client_id)",
    )
    .await?;
    let client_id = client_id.as_str().unwrap_or_default().to_owned();
    wait_until(
        "the edit reached the server",
        Duration::from_secs(30),
        || async {
            let on_server = server.pull_all().await?;
            Ok(on_server
                .iter()
                .any(|c| c["key"] == key.as_str() && c["value"]["body"] == text)
                .then_some(()))
        },
    )
    .await?;
    // The note was created (empty), then edited once: two mutations of its key, each once.
    let of_key: Vec<Value> = server
        .mutations_of(&client_id)
        .await?
        .into_iter()
        .filter(|m| m["key"] == key.as_str())
        .collect();
    assert_eq!(
        of_key.len(),
        2,
        "created, then the edit, once each: {of_key:?}"
    );
    let stats = server.stats().await?;
    assert_eq!(stats["duplicates"], 0, "{stats}");
    browser.close().await?;
    Ok(())
}

/// Chromium's last `sync` attempt (`lastChance`) can land a moment after a failure that earned
/// `config_error` (a push route answering 404): the status must keep saying what to fix, not
/// turn into `network`.
#[tokio::test]
async fn a_last_chance_sync_after_a_404_keeps_the_config_error_and_the_write() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let mode = register_client(&page, "{ retry: { maxAttempts: 3 } }").await?;
    assert_eq!(mode, "worker");
    wait_for_controller(&page).await?;

    server
        .add_faults(json!([{ "path": "/api/sync/push", "status": 404, "body": "no such route", "times": 100_000 }]))
        .await?;
    eval(&page, "client.put('notes', 'n1', { t: 1 })").await?;
    let status = wait_until(
        "the status is config_error",
        Duration::from_secs(20),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok((s["state"] == "config_error").then_some(s))
        },
    )
    .await?;
    assert_eq!(status["last_error"]["code"], "config_error", "{status}");

    workers
        .dispatch_sync(&server.url(), "rangersync-flush", true)
        .await?;
    let status = wait_until(
        "the worker recorded the given-up sync",
        Duration::from_secs(20),
        || async {
            let s = eval(&page, "client.status()").await?;
            let told = s["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("gave up background sync"));
            if told {
                return Ok(Some(s));
            }
            Err(format!("status {s}").into())
        },
    )
    .await?;
    assert_eq!(status["state"], "config_error", "{status}");
    assert_eq!(status["last_error"]["code"], "config_error", "{status}");
    assert!(
        status["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("404")),
        "the cause is still named: {status}"
    );
    assert_eq!(status["pending"], 1, "the write is kept: {status}");
    assert_eq!(status["dead"], 0, "nothing is dead-lettered: {status}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_token_function_is_asked_again_after_a_refusal_and_until_it_gives_a_good_token_the_write_waits_under_auth_error(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start_with_token("the-right-token").await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    // The app's login gives a stale token first.
    eval(&page, "window.appToken = 'a-stale-token'; window.asked = 0").await?;
    let options =
        "{ exportIntervalMs: 0, token: async () => { window.asked++; return window.appToken; } }";
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    eval(&page, "client.put('notes', 'a', { v: 1 })").await?;
    let refused = wait_until(
        "the write waits under auth_error",
        Duration::from_secs(20),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok((s["state"] == "auth_error" && s["pending"] == 1).then_some(s))
        },
    )
    .await?;
    assert!(
        server.mutations_of(&client_id).await?.is_empty(),
        "{refused}"
    );
    let asked = eval(&page, "window.asked").await?.as_u64().unwrap_or(0);
    assert!(
        asked >= 2,
        "asked at register and again after the 401: {asked}"
    );

    // The login refreshes; the next time the token is asked for, the write goes through, once.
    eval(&page, "window.appToken = 'the-right-token'").await?;
    eval(&page, "client.flush()").await?;
    wait_until(
        "the write is delivered",
        Duration::from_secs(20),
        || async { Ok((server.mutations_of(&client_id).await?.len() == 1).then_some(())) },
    )
    .await?;
    let status = wait_until("the status is idle", Duration::from_secs(10), || async {
        let s = eval(&page, "client.status()").await?;
        Ok((s["pending"] == 0 && s["state"] == "idle").then_some(s))
    })
    .await?;
    assert!(status["last_error"].is_null(), "{status}");
    browser.close().await?;
    Ok(())
}
