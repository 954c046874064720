//! Backups that outlive the browser (issue 10), in Chromium against the real server:
//! IndexedDB cleared under a running worker, scheduled backups uploaded to the server without
//! periodic sync (page open, the page's timer, worker start) and with it, a failed upload
//! shown and retried.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    bare_page_url, cdp, client_id_of, eval, register_client, serial, wait_for_controller,
    wait_until, worker_page, Result, ServiceWorkers, TestBrowser, TestServer,
};
use rangersync_shared::snapshot::Snapshot;
use serde_json::{json, Value};

/// The server's backups of `client_id`, newest first (`GET /api/backups?client_id=`).
async fn backups_of(server: &TestServer, client_id: &str) -> Result<Vec<Value>> {
    let list = server
        .get_json(&format!("/api/backups?client_id={client_id}"))
        .await?;
    Ok(list
        .as_array()
        .ok_or_else(|| format!("not a list: {list}"))?
        .clone())
}

/// Wait until the server holds at least `n` backups of `client_id`; returns them.
async fn wait_for_backups(
    server: &TestServer,
    client_id: &str,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Value>> {
    wait_until(
        &format!("the server holds {n} backups of {client_id}"),
        timeout,
        || async {
            let list = backups_of(server, client_id).await?;
            Ok((list.len() >= n).then_some(list))
        },
    )
    .await
}

/// Fetch a stored backup (`GET /api/backups/{id}`) and verify it by its checksum, as a restore
/// would; returns the decoded snapshot.
async fn verified_backup(server: &TestServer, info: &Value) -> Result<Snapshot> {
    let id = info["id"].as_str().ok_or("backup without id")?;
    let text = server.backup_text(id).await?;
    let snap = rangersync_server::export::decode_snapshot(&text)
        .map_err(|e| format!("backup {id} does not verify: {e:?}"))?;
    assert_eq!(
        snap.checksum.value.to_ascii_lowercase(),
        info["checksum"].as_str().unwrap_or_default(),
        "the listed checksum is the document's"
    );
    Ok(snap)
}

/// Make the write `put` (JS) one the server refuses (`422`, "refused by the test"), and wait
/// until it is the page's one dead letter.
async fn dead_letter(server: &TestServer, page: &Page, put: &str) -> Result {
    server
        .add_faults(json!([{ "path": "/api/sync/push", "method": "POST", "status": 422,
            "body": "{\"error\":{\"code\":\"invalid_value\",\"message\":\"refused by the test\"}}" }]))
        .await?;
    eval(page, put).await?;
    wait_until(
        "the refused write is dead",
        Duration::from_secs(30),
        || async {
            eval(page, "client.flush()").await?;
            let s = eval(page, "client.status()").await?;
            Ok((s["dead"] == 1).then_some(()))
        },
    )
    .await
}

/// `backupNow()` in `page`: the id of the backup the server confirmed.
async fn backup_now(page: &Page) -> Result<String> {
    let done = eval(page, "client.backupNow()").await?;
    Ok(done["backup"]["id"]
        .as_str()
        .ok_or_else(|| format!("no backup id: {done}"))?
        .to_owned())
}

/// Register `page` with `options` (which encrypt backups), write one note the server never
/// gets as a write (it lives only in the backup) and back up: the backup's id, checked to be
/// stored sealed, with neither the note's text nor its key readable.
async fn sealed_backup_of_one_note(
    page: &Page,
    server: &TestServer,
    options: &str,
    text: &str,
) -> Result<(String, String)> {
    assert_eq!(register_client(page, options).await?, "worker");
    wait_for_controller(page).await?;
    server.refuse_pushes().await?;
    eval(
        page,
        &format!("client.put('notes', 'diary', {{ t: {text:?} }})"),
    )
    .await?;
    let backup_id = backup_now(page).await?;
    let stored = server.backup_text(&backup_id).await?;
    assert!(stored.contains("rangersync-sealed-snapshot"), "{stored}");
    assert!(!stored.contains(text), "the server holds plain text");
    assert!(!stored.contains("diary"), "the server sees the keys");
    Ok((backup_id, stored))
}

/// A script restoring server backup `id` with `options` (`""` or `", { … }"`), answering
/// `{ ok: report }` or `{ code, message }` rather than throwing.
fn restore_from_server_js(id: &str, options: &str) -> String {
    format!(
        "client.restoreFromServer({id:?}{options}).then(r => ({{ ok: r }}), e => ({{ code: e.code, message: e.message }}))"
    )
}

/// Clear site data (everything of the origin), close `page`, let pushes through again and
/// open `url` anew, registered with `options`: the same browser as a fresh device.
async fn after_clear_site_data(
    browser: &TestBrowser,
    server: &TestServer,
    page: Page,
    url: &str,
    options: &str,
) -> Result<Page> {
    cdp(
        &page,
        "Storage.clearDataForOrigin",
        json!({ "origin": server.url(), "storageTypes": "all" }),
    )
    .await?;
    browser.close_tab(page).await?;
    server.clear_faults().await?;
    let page = browser.open(url).await?;
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    Ok(page)
}

#[tokio::test]
async fn indexeddb_cleared_under_a_running_worker_is_reopened_and_the_next_write_reaches_the_server(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(&browser, &server, "{ exportIntervalMs: 0 }").await?;
    cleared_indexeddb_is_reopened(&page, &server).await?;
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn indexeddb_cleared_under_a_page_mode_engine_is_reopened_and_the_next_write_reaches_the_server(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let mode = register_client(&page, "{ forcePageMode: true, exportIntervalMs: 0 }").await?;
    assert_eq!(mode, "page");
    // PageEngine.handle reopens the engine as the worker's on_message does.
    cleared_indexeddb_is_reopened(&page, &server).await?;
    browser.close().await?;
    Ok(())
}

/// DevTools' "Clear storage" (IndexedDB only) under a running engine: the next write goes into
/// a fresh database (a new client, seq 1) and reaches the server, which then fills it again.
async fn cleared_indexeddb_is_reopened(page: &Page, server: &TestServer) -> Result {
    let first_id = client_id_of(page).await?;
    eval(page, "client.put('notes', 'n1', { title: 'before' })").await?;
    server
        .wait_for_recorded(&first_id, 1, Duration::from_secs(30))
        .await?;

    // DevTools' "Clear storage" with only IndexedDB ticked, while the worker runs.
    cdp(
        page,
        "Storage.clearDataForOrigin",
        json!({ "origin": server.url(), "storageTypes": "indexeddb" }),
    )
    .await?;

    let ack = eval(
        page,
        "client.put('notes', 'n2', { title: 'after' })
           .then(a => a.seq, e => 'error ' + e.code + ': ' + e.message)",
    )
    .await?;
    assert_eq!(
        ack, 1,
        "the write went into a fresh database (a new client, seq 1)"
    );
    let second_id = client_id_of(page).await?;
    assert_ne!(second_id, first_id, "a wiped database is a new client");
    let recorded = server
        .wait_for_recorded(&second_id, 1, Duration::from_secs(30))
        .await?;
    assert_eq!(recorded[0]["key"], "n2");

    // The fresh database pulls what the server holds from the start.
    let back = wait_until(
        "the synced note is back from the server",
        Duration::from_secs(30),
        || async {
            eval(page, "client.flush()").await?;
            let v = eval(page, "client.get('notes', 'n1')").await?;
            Ok((!v.is_null()).then_some(v))
        },
    )
    .await?;
    assert_eq!(back["title"], "before");

    let status = eval(page, "client.status()").await?;
    assert!(
        status["persistent"].is_boolean(),
        "the status says whether storage is persistent: {status}"
    );
    Ok(())
}

#[tokio::test]
async fn scheduled_backups_reach_the_server_at_page_open_on_the_page_timer_and_at_worker_start_without_periodic_sync(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = worker_page(&browser, &server, "{ exportIntervalMs: 15000 }").await?;
    eval(&page, "client.put('notes', 'b1', { title: 'backed up' })").await?;
    let client_id = client_id_of(&page).await?;

    // Page open: the first backup is due at once.
    let first = wait_for_backups(&server, &client_id, 1, Duration::from_secs(30)).await?;
    let snap = verified_backup(&server, &first[0]).await?;
    assert_eq!(snap.client_id.as_deref(), Some(client_id.as_str()));
    let status = wait_until(
        "the status shows the confirmed backup",
        Duration::from_secs(10),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok(s["last_backup_at"].is_number().then_some(s))
        },
    )
    .await?;
    assert!(status["backup_error"].is_null(), "{status}");
    assert!(status["next_backup_at"].is_number(), "{status}");

    // The page's timer: the worker is stopped (with its own timer); the open page asks for
    // the next backup when it is due.
    let registration = workers.registration(&server.url()).await?;
    workers.stop_until_stopped(&registration.id).await?;
    let second = wait_for_backups(&server, &client_id, 2, Duration::from_secs(40)).await?;
    verified_backup(&server, &second[0]).await?;

    // Worker start with no page open: close it, let the interval pass, start the worker with
    // an event that has nothing to do with backups (a Background Sync).
    browser.close_tab(page).await?;
    workers.stop_until_stopped(&registration.id).await?;
    tokio::time::sleep(Duration::from_secs(16)).await;
    let before = backups_of(&server, &client_id).await?.len();
    workers
        .dispatch_sync(&server.url(), "rangersync-flush", false)
        .await?;
    let third = wait_for_backups(&server, &client_id, before + 1, Duration::from_secs(30)).await?;
    let snap = verified_backup(&server, &third[0]).await?;
    assert!(
        snap.entities.iter().any(|e| e.key == "b1"),
        "the backup holds the note"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_periodic_sync_event_brings_a_due_backup_with_no_page_open() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    browser.grant_periodic_sync(&server.url()).await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = worker_page(&browser, &server, "{ exportIntervalMs: 15000 }").await?;
    let client_id = client_id_of(&page).await?;
    wait_until(
        "the worker registered its periodic sync for backups",
        Duration::from_secs(30),
        || async {
            let tags = eval(
                &page,
                "navigator.serviceWorker.ready.then(r => r.periodicSync.getTags())",
            )
            .await?;
            Ok(tags
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "rangersync-periodic"))
                .then_some(()))
        },
    )
    .await?;
    wait_for_backups(&server, &client_id, 1, Duration::from_secs(30)).await?;
    browser.close_tab(page).await?;
    let registration = workers.registration(&server.url()).await?;
    workers.stop_until_stopped(&registration.id).await?;
    tokio::time::sleep(Duration::from_secs(16)).await;

    workers
        .dispatch_periodic_sync(&server.url(), "rangersync-periodic")
        .await?;
    let list = wait_for_backups(&server, &client_id, 2, Duration::from_secs(30)).await?;
    verified_backup(&server, &list[0]).await?;
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_backup_upload_is_shown_in_the_status_and_retried_until_the_server_holds_it(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    server
        .add_faults(
            json!([{ "path": "/api/backups", "method": "POST", "status": 503, "times": 2 }]),
        )
        .await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(&page, "{ retry: { baseDelayMs: 500, maxDelayMs: 2000 } }").await?,
        "worker"
    );
    let client_id = client_id_of(&page).await?;
    let failed = wait_until(
        "the status shows the failed backup",
        Duration::from_secs(30),
        || async {
            let shown = eval(&page, "window.statuses.find(s => s.backup_error) || null").await?;
            Ok((!shown.is_null()).then_some(shown))
        },
    )
    .await?;
    assert_eq!(failed["backup_error"]["code"], "unavailable", "{failed}");
    assert!(failed["last_backup_at"].is_null(), "{failed}");
    assert!(failed["next_backup_at"].is_number(), "{failed}");

    let list = wait_for_backups(&server, &client_id, 1, Duration::from_secs(60)).await?;
    verified_backup(&server, &list[0]).await?;
    let status = wait_until(
        "the status shows the backup and no error",
        Duration::from_secs(10),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok((s["last_backup_at"].is_number() && s["backup_error"].is_null()).then_some(s))
        },
    )
    .await?;
    println!("status after the retried backup: {status}");

    // And a person asking: backupNow resolves once the server holds it.
    let done = eval(&page, "client.backupNow()").await?;
    assert!(done["backup"]["id"].is_string(), "{done}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn an_export_holds_entities_pending_writes_captured_requests_dead_letters_and_meta_and_names_a_corrupt_row(
) -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(
            &page,
            "{ exportIntervalMs: 0, captureRoutes: ['/api/sync/chat'] }"
        )
        .await?,
        "worker"
    );
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    eval(&page, "client.put('notes', 'synced', { t: 1 })").await?;
    server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(30))
        .await?;

    // A write the server refuses: a dead letter.
    dead_letter(&server, &page, "client.put('notes', 'refused', { t: 2 })").await?;

    // The server goes away: a pending write and a captured request stay in the outbox.
    server.stop().await;
    eval(&page, "client.put('notes', 'pending', { t: 3 })").await?;
    let queued = eval(
        &page,
        "fetch('/api/sync/chat', { method: 'POST', headers: { 'content-type': 'application/json' },
           body: JSON.stringify({ m: 'hi' }) }).then(r => r.status)",
    )
    .await?;
    assert_eq!(queued, 202, "the chat call was queued");

    // A row this version cannot read (no updated_at), written behind the engine's back.
    eval(
        &page,
        "new Promise((ok, fail) => { const r = indexedDB.open('rangersync');
           r.onsuccess = () => { const db = r.result; const tx = db.transaction('entities', 'readwrite');
             tx.objectStore('entities').put({ collection: 'notes', key: 'broken', value: 1 });
             tx.oncomplete = () => { db.close(); ok(true); }; tx.onerror = () => fail(tx.error); };
           r.onerror = () => fail(r.error); })",
    )
    .await?;

    let text = eval(&page, "client.exportSnapshot('json')").await?;
    let text = text.as_str().ok_or("no export text")?;
    let snap: Snapshot =
        rangersync_shared::snapshot::decode(text).map_err(|e| format!("{e}: {text}"))?;
    assert_eq!(snap.format_version, 2);
    let keys: Vec<&str> = snap.entities.iter().map(|e| e.key.as_str()).collect();
    assert!(
        keys.contains(&"synced") && keys.contains(&"pending"),
        "{keys:?}"
    );
    assert_eq!(
        snap.outbox
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        ["pending"],
        "the pending write, with its (client_id, seq)"
    );
    assert_eq!(snap.outbox[0].client_id, client_id);
    assert_eq!(snap.requests.len(), 1, "the captured request");
    assert!(snap.requests[0].url.ends_with("/api/sync/chat"));
    assert_eq!(snap.requests[0].body, br#"{"m":"hi"}"#.to_vec());
    assert_eq!(snap.dead.len(), 1, "the dead letter");
    assert_eq!(snap.dead[0].record["key"], "refused");
    assert!(
        snap.dead[0].reason.contains("refused by the test"),
        "{}",
        snap.dead[0].reason
    );
    let meta = snap.meta.as_ref().ok_or("no meta")?;
    let highest = snap
        .outbox
        .iter()
        .map(|m| m.seq)
        .chain(snap.requests.iter().map(|r| r.seq))
        .max()
        .unwrap_or(0);
    assert!(meta.next_seq > highest, "{meta:?}");
    assert!(!meta.cursor.is_empty(), "{meta:?}");
    assert_eq!(snap.problems.len(), 1, "{:?}", snap.problems);
    assert_eq!(snap.problems[0].store, "entities");
    assert!(
        snap.problems[0].key.contains("broken"),
        "{:?}",
        snap.problems
    );
    browser.close().await?;
    Ok(())
}

/// What a snapshot holds, without the parts a restore gives anew (versions, export time):
/// the entities' state, the pending writes by `(client_id, seq)`, the dead letters.
fn restorable_parts(snap: &Snapshot) -> Value {
    json!({
        "entities": snap.entities.iter()
            .map(|e| json!([e.collection, e.key, e.value, e.deleted]))
            .collect::<Vec<_>>(),
        "outbox": snap.outbox,
        "dead": snap.dead.iter()
            .map(|d| json!([d.seq, d.reason, d.record]))
            .collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn json_and_yaml_exports_restored_in_a_fresh_profile_give_back_the_same_entities_pending_writes_and_dead_letters(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(&browser, &server, "{ exportIntervalMs: 0 }").await?;
    let client_id = client_id_of(&page).await?;
    eval(&page, "client.put('notes', 'synced', { t: 1 })").await?;
    server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(30))
        .await?;
    dead_letter(&server, &page, "client.put('notes', 'refused', { t: 2 })").await?;
    server.refuse_pushes().await?;
    eval(&page, "client.put('notes', 'pending-1', { t: 3 })").await?;
    eval(&page, "client.put('notes', 'pending-2', { t: [4, 'x'] })").await?;
    let original = client_id_of(&page).await?;
    assert_eq!(original, client_id);

    for format in ["json", "yaml"] {
        let text = eval(&page, &format!("client.exportSnapshot('{format}')")).await?;
        let text = text.as_str().ok_or("no export text")?;
        let exported = rangersync_shared::snapshot::decode(text)?;
        assert_eq!(exported.outbox.len(), 2, "{format}: two pending writes");
        assert_eq!(exported.dead.len(), 1, "{format}: one dead letter");

        // A fresh profile (its own IndexedDB): restore the file there.
        let context = browser.private_context().await?;
        let fresh = browser.open_in(&context, &bare_page_url(&server)).await?;
        assert_eq!(
            register_client(&fresh, "{ exportIntervalMs: 0 }").await?,
            "worker"
        );
        wait_for_controller(&fresh).await?;
        wait_until(
            "the fresh profile pulled",
            Duration::from_secs(30),
            || async {
                let v = eval(&fresh, "client.get('notes', 'synced')").await?;
                Ok((!v.is_null()).then_some(()))
            },
        )
        .await?;
        eval(
            &fresh,
            &format!("client.restore({})", serde_json::to_string(text)?),
        )
        .await?;
        let again = eval(&fresh, "client.exportSnapshot('json')").await?;
        let again = rangersync_shared::snapshot::decode(again.as_str().ok_or("no export")?)?;
        assert_eq!(
            restorable_parts(&again),
            restorable_parts(&exported),
            "{format}: the same entities, pending writes (same ids) and dead letters"
        );
        browser.dispose_context(context).await?;
    }
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn after_clear_site_data_the_server_data_comes_back_and_the_latest_backup_restores_what_was_pending_and_dead_with_each_write_applied_once(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let url = bare_page_url(&server);
    // One write per push: the test lets exactly one of two pending writes through.
    let options = "{ exportIntervalMs: 0, batchSize: 1 }";
    let page = browser.open(&url).await?;
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    let old_id = client_id_of(&page).await?;
    eval(
        &page,
        "client.put('notes', 'synced', { t: 'on the server' })",
    )
    .await?;
    server
        .wait_for_recorded(&old_id, 1, Duration::from_secs(30))
        .await?;
    // A write the server refuses: a dead letter.
    dead_letter(
        &server,
        &page,
        "client.put('notes', 'refused', { t: 'dead' })",
    )
    .await?;
    // Two writes the server does not take yet (pushes fail), then a backup that holds them.
    server.refuse_pushes().await?;
    eval(
        &page,
        "client.put('notes', 'delivered-later', { t: 'reached the server after the backup' })",
    )
    .await?;
    eval(
        &page,
        "client.put('notes', 'unsynced', { t: 'only in the backup' })",
    )
    .await?;
    let backup_id = backup_now(&page).await?;
    // The first of them reaches the server after the backup; the second never does.
    server.clear_faults().await?;
    server
        .add_faults(json!([
            { "path": "/api/sync/push", "method": "POST", "delay_ms": 1, "times": 1 },
            { "path": "/api/sync/push", "method": "POST", "status": 503, "times": 1000 }
        ]))
        .await?;
    eval(&page, "client.flush().catch(() => null)").await?;
    let recorded = server
        .wait_for_recorded(&old_id, 2, Duration::from_secs(30))
        .await?;
    assert_eq!(recorded[1]["key"], "delivered-later", "{recorded:?}");

    // "Clear site data": every storage type, the worker registration included, before the
    // browser heard that answer for sure: the backup still lists both writes as pending.
    let page = after_clear_site_data(&browser, &server, page, &url, options).await?;
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["new_database"], true, "{status}");
    let fresh_id = client_id_of(&page).await?;
    assert_ne!(fresh_id, old_id);
    for (key, text) in [
        ("synced", "on the server"),
        ("delivered-later", "reached the server after the backup"),
    ] {
        let back = wait_until(
            "the synced notes are back from the server",
            Duration::from_secs(30),
            || async {
                eval(&page, "client.flush()").await?;
                let v = eval(&page, &format!("client.get('notes', '{key}')")).await?;
                Ok((!v.is_null()).then_some(v))
            },
        )
        .await?;
        assert_eq!(back["t"], text);
    }
    assert!(eval(&page, "client.get('notes', 'unsynced')")
        .await?
        .is_null());

    // The latest backup of this user is offered: a dry run first, which changes nothing.
    let list = eval(&page, "client.serverBackups({ allClients: true })").await?;
    assert_eq!(list[0]["id"], backup_id, "{list}");
    assert_eq!(list[0]["client_id"], old_id.as_str());
    let report = eval(
        &page,
        &format!("client.restoreFromServer({backup_id:?}, {{ dryRun: true }})"),
    )
    .await?;
    assert_eq!(report["added"][0]["key"], "unsynced", "{report}");
    assert_eq!(report["pending"]["client_id"], old_id.as_str(), "{report}");
    assert_eq!(report["pending"]["adopts_client_id"], true, "{report}");
    assert_eq!(report["pending"]["requeued"], json!([3, 4]), "{report}");
    assert_eq!(report["pending"]["dead_restored"], json!([2]), "{report}");
    let status = eval(&page, "client.status()").await?;
    assert!(
        eval(&page, "client.get('notes', 'unsynced')")
            .await?
            .is_null()
            && status["dead"] == 0
            && client_id_of(&page).await? == fresh_id,
        "a dry run writes nothing: {status}"
    );

    let stats_before = server.stats().await?;
    let report = eval(&page, &format!("client.restoreFromServer({backup_id:?})")).await?;
    assert_eq!(report["pending"]["requeued"], json!([3, 4]), "{report}");
    let value = eval(&page, "client.get('notes', 'unsynced')").await?;
    assert_eq!(value["t"], "only in the backup");
    let status = wait_until(
        "the restored writes are delivered",
        Duration::from_secs(30),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok((s["pending"] == 0).then_some(s))
        },
    )
    .await?;
    assert_eq!(status["dead"], 1, "the dead letter is back: {status}");
    let dead = eval(&page, "client.deadLetters()").await?;
    assert_eq!(dead[0]["seq"], 2, "{dead}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("refused by the test"),
        "{dead}"
    );
    assert_eq!(
        client_id_of(&page).await?,
        old_id,
        "the backup's id was adopted"
    );

    // Each write once on the server, under its own id: the one delivered after the backup
    // was answered `duplicate`, the one it never had applied now, nothing under the new id.
    let recorded = server.mutations_of(&old_id).await?;
    let keys: Vec<&str> = recorded.iter().filter_map(|m| m["key"].as_str()).collect();
    assert_eq!(
        keys,
        ["synced", "delivered-later", "unsynced"],
        "{recorded:?}"
    );
    let seqs: Vec<u64> = recorded.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 3, 4], "{recorded:?}");
    assert!(
        recorded.iter().all(|m| m["status"] == "applied"),
        "{recorded:?}"
    );
    assert!(server.mutations_of(&fresh_id).await?.is_empty());
    let stats_after = server.stats().await?;
    let grew = |field: &str| {
        stats_after[field].as_u64().unwrap_or(0) - stats_before[field].as_u64().unwrap_or(0)
    };
    assert_eq!(
        grew("mutations_applied"),
        1,
        "{stats_before} → {stats_after}"
    );
    assert_eq!(grew("duplicates"), 1, "{stats_before} → {stats_after}");

    // Later writes go on under the adopted id, past anything the old copy may have sent.
    eval(&page, "client.put('notes', 'after', { t: 'new' })").await?;
    let recorded = server
        .wait_for_recorded(&old_id, 4, Duration::from_secs(30))
        .await?;
    assert!(
        recorded[3]["seq"].as_u64().unwrap_or(0) > 1 << 32,
        "{recorded:?}"
    );
    browser.close().await?;
    Ok(())
}

/// Every record of the `entities`, `outbox` and `dead` stores, read straight from IndexedDB.
const READ_IDB: &str = "new Promise((ok, fail) => { const r = indexedDB.open('rangersync');
  r.onsuccess = () => { const db = r.result; const tx = db.transaction(['entities', 'outbox', 'dead']);
    const out = {}; for (const s of ['entities', 'outbox', 'dead']) {
      const q = tx.objectStore(s).getAll(); q.onsuccess = () => { out[s] = q.result; }; }
    tx.oncomplete = () => { db.close(); ok(JSON.stringify(out)); }; tx.onerror = () => fail(tx.error); };
  r.onerror = () => fail(r.error); })";

#[tokio::test]
async fn a_flipped_byte_a_truncated_file_a_wrong_version_an_oversize_file_and_a_hand_edited_value_are_refused_and_change_nothing(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(&browser, &server, "{ exportIntervalMs: 0 }").await?;
    eval(&page, "client.put('notes', 'a', { title: 'original' })").await?;
    let text = eval(&page, "client.exportSnapshot('json')").await?;
    let text = text.as_str().ok_or("no export")?.to_owned();
    // The local copy moves on after the export: a restore would change it back.
    eval(&page, "client.put('notes', 'a', { title: 'newer' })").await?;
    eval(&page, "client.put('notes', 'b', { title: 'only here' })").await?;
    eval(&page, "client.flush()").await?;
    let before = eval(&page, READ_IDB).await?;

    let flipped = text.replacen("original", "originaL", 1);
    let truncated = text[..text.len() / 2].to_owned();
    let newer = text.replacen("\"format_version\": 2", "\"format_version\": 3", 1);
    assert_ne!(newer, text);
    let mut edited: Value = serde_json::from_str(&text)?;
    edited["entities"][0]["value"]["title"] = json!("hand edited");
    let edited = serde_json::to_string_pretty(&edited)?;
    let cases = [
        ("a flipped byte", flipped, "checksum_mismatch"),
        ("a truncated file", truncated, "bad_snapshot"),
        ("a wrong format version", newer, "bad_snapshot"),
        ("a hand-edited value", edited, "checksum_mismatch"),
    ];
    for (what, broken, code) in cases {
        let got = eval(
            &page,
            &format!(
                "client.restore({}).then(r => 'restored ' + JSON.stringify(r), e => e.code + ': ' + e.message)",
                serde_json::to_string(&broken)?
            ),
        )
        .await?;
        let got = got.as_str().unwrap_or_default().to_owned();
        assert!(got.starts_with(code), "{what}: {got}");
        assert_eq!(
            eval(&page, READ_IDB).await?,
            before,
            "{what} changed IndexedDB"
        );
    }
    // Over 64 MiB: refused before it is parsed.
    let got = eval(
        &page,
        "client.restore('{' + ' '.repeat(64 * 1024 * 1024 + 1) + '}')
           .then(r => 'restored', e => e.code + ': ' + e.message)",
    )
    .await?;
    let got = got.as_str().unwrap_or_default();
    assert!(
        got.starts_with("payload_too_large") || got.starts_with("bad_snapshot"),
        "{got}"
    );
    assert!(got.contains("bytes") || got.contains("MiB"), "{got}");
    assert_eq!(
        eval(&page, READ_IDB).await?,
        before,
        "oversize changed IndexedDB"
    );

    // The intact file restores: 'a' goes back to the exported value.
    eval(
        &page,
        &format!("client.restore({})", serde_json::to_string(&text)?),
    )
    .await?;
    let a = eval(&page, "client.get('notes', 'a')").await?;
    assert_eq!(a["title"], "original");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_local_only_collection_never_reaches_the_server_and_an_excluded_one_syncs_but_stays_out_of_backups(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let options = "{ localOnly: ['secrets'], excludeFromBackup: ['drafts'], exportIntervalMs: 0 }";
    assert_eq!(register_client(&page, options).await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    eval(
        &page,
        "(async () => {
            await client.put('secrets', 'openai', { key: 'sk-live-0123456789' });
            await client.put('drafts', 'd1', { text: 'half a thought' });
            await client.put('notes', 'n1', { text: 'hello' });
        })()",
    )
    .await?;
    wait_until(
        "notes and drafts are delivered",
        Duration::from_secs(20),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok(
                (s["pending"] == 0 && server.mutations_of(&client_id).await?.len() == 2)
                    .then_some(()),
            )
        },
    )
    .await?;
    let on_server = server.pull_all().await?;
    let collections: Vec<&str> = on_server
        .iter()
        .filter_map(|c| c["collection"].as_str())
        .collect();
    assert!(
        collections.contains(&"notes") && collections.contains(&"drafts"),
        "{on_server:?}"
    );
    assert!(
        !collections.contains(&"secrets"),
        "a local-only write was pushed: {on_server:?}"
    );
    // It is still there for the app.
    let secret = eval(&page, "client.get('secrets', 'openai')").await?;
    assert!(
        secret.to_string().contains("sk-live-0123456789"),
        "{secret}"
    );

    // An export leaves it out unless asked.
    let plain = eval(&page, "client.exportSnapshot('json')").await?;
    assert!(!plain.to_string().contains("sk-live-0123456789"), "{plain}");
    let asked = eval(
        &page,
        "client.exportSnapshot('json', { includeLocalOnly: true })",
    )
    .await?;
    assert!(asked.to_string().contains("sk-live-0123456789"));

    // A backup holds neither the local-only collection nor the excluded one.
    eval(&page, "client.backupNow()").await?;
    let list = backups_of(&server, &client_id).await?;
    let snap = verified_backup(&server, list.first().ok_or("no backup")?).await?;
    let backed_up: Vec<&str> = snap
        .entities
        .iter()
        .map(|e| e.collection.as_str())
        .collect();
    assert_eq!(backed_up, ["notes"], "{:?}", snap.entities);
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn an_encrypted_backup_is_ciphertext_on_the_server_and_after_clear_site_data_restores_with_the_right_passphrase_only(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let url = bare_page_url(&server);
    let page = browser.open(&url).await?;
    let options =
        "{ exportIntervalMs: 0, backupEncryption: { passphrase: 'correct horse battery staple' } }";
    let (backup_id, _) =
        sealed_backup_of_one_note(&page, &server, options, "only in the encrypted backup").await?;

    let page =
        after_clear_site_data(&browser, &server, page, &url, "{ exportIntervalMs: 0 }").await?;
    let restore = |options: &str| restore_from_server_js(&backup_id, options);
    let without = eval(&page, &restore("")).await?;
    assert_eq!(without["code"], "passphrase_required", "{without}");
    let wrong = eval(&page, &restore(", { passphrase: 'Tr0ub4dor&3' }")).await?;
    assert_eq!(wrong["code"], "wrong_passphrase", "{wrong}");
    assert!(
        eval(&page, "client.get('notes', 'diary')").await?.is_null(),
        "nothing changed"
    );
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["pending"], 0, "nothing changed: {status}");
    let right = eval(
        &page,
        &restore(", { passphrase: 'correct horse battery staple' }"),
    )
    .await?;
    assert!(right["ok"].is_object(), "{right}");
    let diary = eval(&page, "client.get('notes', 'diary')").await?;
    assert_eq!(diary["t"], "only in the encrypted backup");
    browser.close().await?;
    Ok(())
}

/// A script that keeps, as `window[name]`, a non-extractable AES-GCM key of 32 `byte`s: the
/// key an app would derive from its login, made again the same on the next visit.
fn import_key_js(name: &str, byte: u8, algorithm: &str) -> String {
    format!(
        "crypto.subtle.importKey('raw', new Uint8Array(32).fill({byte}), '{algorithm}', false, ['encrypt', 'decrypt']).then(k => {{ window.{name} = k; return true; }})"
    )
}

#[tokio::test]
async fn a_backup_encrypted_with_the_apps_crypto_key_restores_after_clear_site_data_with_that_key_only(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let url = bare_page_url(&server);
    let page = browser.open(&url).await?;
    // What is not an AES-256-GCM key for encrypt and decrypt is refused at register.
    eval(&page, &import_key_js("cbc", 7, "AES-CBC")).await?;
    for bad in ["'not a key'", "window.cbc"] {
        let refused = eval(
            &page,
            &format!(
                "({}).then(() => 'registered', e => e.code)",
                rangersync_e2e::register_client_js(&format!(
                    "{{ exportIntervalMs: 0, backupEncryption: {{ key: {bad} }} }}"
                ))
            ),
        )
        .await?;
        assert_eq!(refused, "invalid_config", "backupEncryption.key {bad}");
    }
    eval(&page, &import_key_js("appKey", 7, "AES-GCM")).await?;
    let options = "{ exportIntervalMs: 0, backupEncryption: { key: window.appKey } }";
    let (backup_id, stored) =
        sealed_backup_of_one_note(&page, &server, options, "sealed under the app key").await?;
    assert!(
        !stored.contains("\"kdf\""),
        "a given key has no derivation: {stored}"
    );

    let page =
        after_clear_site_data(&browser, &server, page, &url, "{ exportIntervalMs: 0 }").await?;
    eval(&page, &import_key_js("sameKey", 7, "AES-GCM")).await?;
    eval(&page, &import_key_js("otherKey", 8, "AES-GCM")).await?;
    let restore = |options: &str| restore_from_server_js(&backup_id, options);
    let without = eval(&page, &restore("")).await?;
    assert_eq!(without["code"], "passphrase_required", "{without}");
    assert!(
        without["message"]
            .as_str()
            .unwrap_or("")
            .contains("{ key }"),
        "{without}"
    );
    let wrong = eval(&page, &restore(", { key: window.otherKey }")).await?;
    assert_eq!(wrong["code"], "wrong_passphrase", "{wrong}");
    let not_a_key = eval(&page, &restore(", { key: 'sk-1234' }")).await?;
    assert_eq!(not_a_key["code"], "invalid_config", "{not_a_key}");
    assert!(
        eval(&page, "client.get('notes', 'diary')").await?.is_null(),
        "nothing changed"
    );
    let right = eval(&page, &restore(", { key: window.sameKey }")).await?;
    assert!(right["ok"].is_object(), "{right}");
    let diary = eval(&page, "client.get('notes', 'diary')").await?;
    assert_eq!(diary["t"], "sealed under the app key");

    // A client that keeps the key opens its backups without being given it again.
    eval(&page, "client.close()").await?;
    let options = "{ exportIntervalMs: 0, backupEncryption: { key: window.sameKey } }";
    assert_eq!(register_client(&page, options).await?, "worker");
    let kept = eval(&page, &restore(", { dryRun: true }")).await?;
    assert!(kept["ok"].is_object(), "{kept}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_dead_letter_older_than_the_retention_leaves_the_device_only_into_a_stored_backup(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(
            &page,
            "{ exportIntervalMs: 0, deadLetterRetentionDays: 30 }"
        )
        .await?,
        "worker"
    );
    let client_id = client_id_of(&page).await?;
    for (n, key) in ["old", "recent"].iter().enumerate() {
        server
            .add_faults(json!([{ "path": "/api/sync/push", "method": "POST", "status": 422,
                "body": "{\"error\":{\"code\":\"invalid_value\",\"message\":\"refused by the test\"}}" }]))
            .await?;
        eval(
            &page,
            &format!("client.put('notes', '{key}', {{ n: {n} }})"),
        )
        .await?;
        wait_until(
            "the refused write is dead",
            Duration::from_secs(30),
            || async {
                eval(&page, "client.flush()").await?;
                let s = eval(&page, "client.status()").await?;
                Ok((s["dead"] == n + 1).then_some(()))
            },
        )
        .await?;
    }
    // `old` died 31 days ago (its record aged in the worker's own IndexedDB).
    let aged = eval(
        &page,
        "new Promise((resolve, reject) => {
           const open = indexedDB.open('rangersync');
           open.onerror = () => reject(open.error);
           open.onsuccess = () => {
             const db = open.result;
             const tx = db.transaction('dead', 'readwrite');
             const store = tx.objectStore('dead');
             const all = store.getAll();
             let seq = null;
             all.onsuccess = () => {
               for (const d of all.result) {
                 if (d.record.key === 'old') {
                   d.dead_at = Date.now() - 31 * 86400000;
                   seq = d.seq;
                   store.put(d);
                 }
               }
             };
             tx.oncomplete = () => { db.close(); resolve(seq); };
             tx.onerror = () => reject(tx.error);
           };
         })",
    )
    .await?;
    let old_seq = aged
        .as_u64()
        .ok_or_else(|| format!("no dead letter of old: {aged}"))?;

    // A backup the server does not store lets nothing go.
    server
        .add_faults(json!([{ "path": "/api/backups", "method": "POST", "status": 500 }]))
        .await?;
    let failed = eval(
        &page,
        "client.backupNow().then(() => 'stored', e => e.code)",
    )
    .await?;
    assert_ne!(failed, "stored");
    assert_eq!(eval(&page, "client.status()").await?["dead"], 2);

    // A stored one holds both; then only the old one leaves the device.
    let id = backup_now(&page).await?;
    let list = backups_of(&server, &client_id).await?;
    let info = list
        .iter()
        .find(|b| b["id"] == id.as_str())
        .ok_or("the backup is listed")?;
    let snap = verified_backup(&server, info).await?;
    let in_backup: Vec<u64> = snap.dead.iter().map(|d| d.seq).collect();
    assert!(
        in_backup.contains(&old_seq),
        "the backup holds it: {in_backup:?}"
    );
    assert_eq!(in_backup.len(), 2, "{in_backup:?}");
    let dead = wait_until(
        "the old dead letter is let go",
        Duration::from_secs(10),
        || async {
            let dead = eval(&page, "client.deadLetters()").await?;
            let left = dead.as_array().cloned().unwrap_or_default();
            Ok((left.len() == 1).then_some(left))
        },
    )
    .await?;
    assert_eq!(dead[0]["key"], "recent", "{dead:?}");
    assert_eq!(eval(&page, "client.status()").await?["dead"], 1);
    browser.close().await?;
    Ok(())
}
