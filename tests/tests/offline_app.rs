//! The acceptance test of the offline app: a person opens the demo, the server goes down, they
//! edit notes, close the tab, reopen it (the page comes from the app shell the worker cached at
//! install, from the list the demo passes as `appShell`), see
//! the edits at once and "Pending N", the server comes back, and the pill says "Saved" with the
//! server holding each edit once. The pill is the demo's `<rangersync-status>` (the package's
//! `status-element.js`, in the app shell too), read from its shadow DOM.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    assert_seqs_applied_once, demo_pill, eval, note_list, open_demo, serial, wait_for_controller,
    wait_until, Result, TestBrowser, TestServer,
};

/// Waits until the pill reads `want`.
async fn wait_for_pill(page: &Page, want: &str) -> Result {
    wait_until(
        &format!("the pill shows {want:?}"),
        Duration::from_secs(60),
        || async {
            let text = demo_pill(page).await?;
            if text == want {
                return Ok(Some(()));
            }
            let status = eval(page, "window.rangersync ? rangersync.status() : null").await?;
            Err(format!("the pill shows {text:?}; status {status}").into())
        },
    )
    .await
}

/// Waits until `rangersync.list('notes')` holds a note titled `title`.
async fn wait_for_committed(page: &Page, title: &str) -> Result {
    wait_until(
        &format!("the note {title:?} is committed"),
        Duration::from_secs(30),
        || async {
            let notes = eval(page, "rangersync.list('notes')").await?;
            let saved = notes
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["value"]["title"] == title));
            Ok(saved.then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn the_demo_reopens_with_the_server_down_and_shows_pending_edits() -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let url = server.url();
    let browser = TestBrowser::launch().await?;

    // First visit: the worker caches the demo's app shell as it installs, then takes control.
    let page = open_demo(&browser, &url).await?;
    wait_for_controller(&page).await?;
    wait_for_pill(&page, "Saved").await?;
    let shell = wait_until(
        "the app shell is cached",
        Duration::from_secs(30),
        || async {
            let keys = eval(
                &page,
                "caches.keys()
                   .then(names => names.filter(n => n.startsWith('rangersync-shell-')))
                   .then(names => Promise.all(names.map(n => caches.open(n).then(c => c.keys()))))
                   .then(lists => lists.flat().map(r => r.url))",
            )
            .await?;
            let urls: Vec<String> = keys
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let has = |path: &str| urls.iter().any(|u| u == &format!("{url}{path}"));
            if has("/")
                && has("/app.js")
                && has("/pkg/rangersync_page_bg.wasm")
                && has("/pkg/status-element.js")
            {
                return Ok(Some(urls));
            }
            Err(format!("cached so far: {urls:?}").into())
        },
    )
    .await?;
    assert!(
        shell
            .iter()
            .all(|u| !u.contains("/api/") && !u.ends_with("/sw.js")),
        "no API answer and not the worker script in the shell cache: {shell:?}"
    );

    // One note, delivered while the server is up.
    let ack = eval(
        &page,
        "rangersync.put('notes', 'n-a', { title: 'Alpha', body: '' })",
    )
    .await?;
    assert_eq!(ack["seq"], 1, "the first write: {ack}");
    eval(&page, "document.getElementById('sync-now').click(); true").await?;
    wait_for_pill(&page, "Saved").await?;
    let client_id = eval(
        &page,
        "rangersync.exportSnapshot('json').then(s => JSON.parse(s).client_id)",
    )
    .await?;
    let client_id = client_id.as_str().ok_or("a client id")?.to_string();
    wait_until(
        "the server holds the first write",
        Duration::from_secs(30),
        || async { Ok((server.mutations_of(&client_id).await?.len() == 1).then_some(())) },
    )
    .await?;

    // The server goes down. A new note through the API, an edit through the editor.
    server.stop().await;
    let ack = eval(
        &page,
        "rangersync.put('notes', 'n-b', { title: 'Bravo offline', body: '' })",
    )
    .await?;
    assert_eq!(ack["seq"], 2, "the second write: {ack}");
    wait_for_committed(&page, "Bravo offline").await?;
    // Open the first note in the editor, once the list has rendered its button (the list
    // redraws after each change broadcast, so the button may not be there yet).
    wait_until(
        "the note list shows Alpha's button, and it is clicked",
        Duration::from_secs(15),
        || async {
            let clicked = eval(
                &page,
                "(() => { const b = [...document.querySelectorAll('#note-list button')]
                            .find(b => b.textContent.includes('Alpha'));
                          if (!b) return false; b.click(); return true; })()",
            )
            .await?;
            if clicked == true {
                return Ok(Some(()));
            }
            Err(format!("the note list reads {:?}", note_list(&page).await?).into())
        },
    )
    .await?;
    wait_until(
        "the editor holds Alpha",
        Duration::from_secs(15),
        || async {
            let title = eval(&page, "document.getElementById('note-title').value").await?;
            Ok((title == "Alpha").then_some(()))
        },
    )
    .await?;
    // Type, and wait until the edit is committed before closing the tab. (The demo also saves
    // on `pagehide`, but a tab closed in the same instant may die before that message reaches
    // the worker: what this test proves is that committed edits survive an offline reopen.)
    eval(
        &page,
        "(() => { const t = document.getElementById('note-title'); t.value = 'Alpha edited offline';
                  t.dispatchEvent(new Event('input', { bubbles: true })); return true; })()",
    )
    .await?;
    wait_for_committed(&page, "Alpha edited offline").await?;
    browser.close_tab(page).await?;

    // Reopen with the server still down: the page comes from the cache, the edits are there.
    let page = open_demo(&browser, &url).await?;
    wait_until(
        "the reopened page lists both edits as pending",
        Duration::from_secs(15),
        || async {
            let list = note_list(&page).await?;
            if list.contains("Alpha edited offline")
                && list.contains("Bravo offline")
                && list.matches("pending").count() >= 2
            {
                return Ok(Some(()));
            }
            let notes = eval(&page, "rangersync.list('notes')").await?;
            Err(format!("the note list reads {list:?}; list {notes}").into())
        },
    )
    .await?;
    // A refused connection reads as "offline" to the worker: either wording carries the count.
    wait_until(
        "the pill shows 2 pending",
        Duration::from_secs(30),
        || async {
            let text = demo_pill(&page).await?;
            if text == "Pending 2" || text == "Offline · 2 pending" {
                return Ok(Some(()));
            }
            let status = eval(&page, "rangersync.status()").await?;
            Err(format!("the pill shows {text:?}; status {status}").into())
        },
    )
    .await?;
    assert!(
        !server.is_running(),
        "the page was opened with the server down"
    );

    // The server comes back on the same port and database: the pill goes to "Saved".
    server.restart().await?;
    eval(&page, "document.getElementById('sync-now').click(); true").await?;
    wait_for_pill(&page, "Saved").await?;
    let recorded = server.mutations_of(&client_id).await?;
    assert_seqs_applied_once(&recorded, 3);
    let on_server = server.pull_all().await?;
    let mut titles: Vec<&str> = on_server
        .iter()
        .filter(|c| c["collection"] == "notes")
        .filter_map(|c| c["value"]["title"].as_str())
        .collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        vec!["Alpha edited offline", "Bravo offline"],
        "the server holds each edit: {on_server:?}"
    );

    browser.close().await?;
    Ok(())
}
