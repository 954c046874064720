//! The demo app's status indicator (the package's `<rangersync-status>`, read from its shadow
//! DOM) tells the truth: pending while the server refuses, the note is there at once after
//! reopening, and "Saved" once delivered.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    demo_indicator, demo_pill, eval, note_list, open_demo, serial, wait_until, Result, TestBrowser,
    TestServer,
};
use serde_json::{json, Value};

/// Waits until the pill's text satisfies `ok`.
async fn wait_for_pill(page: &Page, what: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
    wait_until(
        &format!("the pill shows {what}"),
        Duration::from_secs(60),
        || async {
            let text = demo_pill(page).await?;
            if ok(&text) {
                return Ok(Some(text));
            }
            let status = eval(page, "rangersync.status()").await?;
            Err(format!("the pill shows {text:?}; status {status}").into())
        },
    )
    .await
}

/// Waits until the pill shows the worker's pending count N ≥ 1 ("Pending N" or
/// "Offline · N pending", in the pending or offline look, the element's `data-pending` N; a new
/// write of the same note may coalesce queued ones).
async fn wait_for_pending_pill(page: &Page) -> Result<String> {
    wait_until(
        "the pill shows the pending count",
        Duration::from_secs(60),
        || async {
            let shown = demo_indicator(page).await?;
            let text = shown["pill"].as_str().unwrap_or_default().to_string();
            let status = eval(page, "rangersync.status()").await?;
            let n = status["pending"].as_u64().unwrap_or(0);
            let worded = (text == format!("Pending {n}") && shown["look"] == "pending")
                || (text == format!("Offline · {n} pending") && shown["look"] == "offline");
            let attribute = shown["pending"]
                .as_str()
                .and_then(|p| p.parse::<u64>().ok());
            if n >= 1 && worded && attribute == Some(n) {
                return Ok(Some(text));
            }
            Err(format!("the element shows {shown}; status {status}").into())
        },
    )
    .await
}

#[tokio::test]
async fn the_status_indicator_goes_from_pending_to_synced() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = open_demo(&browser, &server.url()).await?;
    wait_for_pill(&page, "Saved", |t| t == "Saved").await?;
    let client_id = eval(
        &page,
        "rangersync.exportSnapshot('json').then(s => JSON.parse(s).client_id)",
    )
    .await?;
    let client_id = client_id.as_str().ok_or("a client id")?.to_string();

    // The server refuses every sync from now on (a reload still needs it for the page).
    server
        .add_faults(json!([
            { "path": "/api/sync/push", "status": 503, "times": 10000 },
            { "path": "/api/sync/pull", "status": 503, "times": 10000 },
        ]))
        .await?;
    // Create a note and edit its title through the UI.
    eval(&page, "document.getElementById('new-note').click(); true").await?;
    wait_until("the editor opens", Duration::from_secs(30), || async {
        let open = eval(&page, "!document.getElementById('editor').hidden").await?;
        Ok((open == true).then_some(()))
    })
    .await?;
    eval(
        &page,
        "(() => { const t = document.getElementById('note-title'); t.value = 'Ranger log';
                  t.dispatchEvent(new Event('input', { bubbles: true })); return true; })()",
    )
    .await?;
    // The editor saves 350 ms after typing stops: wait until the edit is committed.
    wait_until("the edit is committed", Duration::from_secs(30), || async {
        let notes = eval(&page, "rangersync.list('notes')").await?;
        let saved = notes
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["value"]["title"] == "Ranger log"));
        Ok(saved.then_some(()))
    })
    .await?;
    let text = wait_for_pending_pill(&page).await?;
    println!("pill while the server refuses: {text}");

    // Reopen: the note is there from the local copy, still pending.
    browser.close_tab(page).await?;
    let page = open_demo(&browser, &server.url()).await?;
    wait_until(
        "the reopened page lists the note as pending",
        Duration::from_secs(30),
        || async {
            let list = note_list(&page).await?;
            if list.contains("Ranger log") && list.contains("pending") {
                return Ok(Some(()));
            }
            Err(format!("the note list reads {list:?}").into())
        },
    )
    .await?;
    let text = wait_for_pending_pill(&page).await?;
    println!("pill after reopening: {text}");
    assert!(
        server.mutations_of(&client_id).await?.is_empty(),
        "nothing reached the server yet"
    );

    // The server answers again: "Sync now" syncs, and the pill says "Saved".
    server.clear_faults().await?;
    eval(&page, "document.getElementById('sync-now').click(); true").await?;
    wait_for_pill(&page, "Saved", |t| t == "Saved").await?;
    wait_until(
        "the pending tag is gone",
        Duration::from_secs(30),
        || async {
            let list = note_list(&page).await?;
            Ok((list.contains("Ranger log") && !list.contains("pending")).then_some(()))
        },
    )
    .await?;

    let recorded = server.mutations_of(&client_id).await?;
    let notes: Vec<&Value> = recorded
        .iter()
        .filter(|m| m["collection"] == "notes")
        .collect();
    // Create and edit may be coalesced into one mutation; whatever was sent, each seq once.
    assert!(
        (1..=2).contains(&notes.len()),
        "create + edit, each at most once: {recorded:?}"
    );
    assert!(
        notes.iter().all(|m| m["status"] == "applied"),
        "applied: {recorded:?}"
    );
    let mut seqs: Vec<&Value> = notes.iter().map(|m| &m["seq"]).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), notes.len(), "no seq twice: {recorded:?}");
    let on_server = server.pull_all().await?;
    let titles: Vec<&Value> = on_server
        .iter()
        .filter(|c| c["collection"] == "notes")
        .map(|c| &c["value"]["title"])
        .collect();
    assert_eq!(
        titles,
        vec!["Ranger log"],
        "the server holds the edit: {on_server:?}"
    );

    browser.close().await?;
    Ok(())
}
