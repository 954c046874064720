//! `client.autosave(collection, key)`: changes coalesce into few writes, nothing typed is lost
//! when the tab reloads or closes before the debounce, two tabs editing one key converge, and
//! bad input is refused at once.

use std::time::Duration;

use rangersync_e2e::{
    bare_page_url, eval, register_client, serial, wait_for_controller, wait_until, Result,
    TestBrowser, TestServer,
};

#[tokio::test]
async fn twenty_quick_changes_are_saved_as_one_write_of_the_last_value() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    // Nothing leaves: the outbox counts the writes.
    server.refuse_pushes().await?;
    let statuses = eval(
        &page,
        r#"(async () => {
            const draft = client.autosave('notes', 'draft', { debounceMs: 200 });
            const seen = [draft.status.state];
            draft.onStatus((s) => seen.push(s.state));
            for (let i = 0; i < 20; i++) draft.set({ body: 'typed ' + i });
            const done = await draft.flush();
            return { seen, done };
        })()"#,
    )
    .await?;
    assert_eq!(statuses["done"]["state"], "saved", "{statuses}");
    assert!(statuses["done"]["savedAt"].is_number(), "{statuses}");
    assert_eq!(statuses["seen"][0], "saved", "{statuses}");
    assert_eq!(statuses["seen"][1], "saving", "{statuses}");
    let value = eval(&page, "client.get('notes', 'draft')").await?;
    assert_eq!(value["body"], "typed 19");
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["pending"], 1, "one write for 20 changes: {status}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn typing_without_a_pause_is_saved_every_max_wait() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    // A change every 50 ms for 1.5 s, debounce 400 ms: without the max wait nothing would be
    // written until the typing stops.
    let saved_while_typing = eval(
        &page,
        r#"(async () => {
            const draft = client.autosave('notes', 'long', { debounceMs: 400, maxWaitMs: 500 });
            for (let i = 0; i < 30; i++) {
                draft.set({ body: 'x'.repeat(i) });
                await new Promise((r) => setTimeout(r, 50));
            }
            const whileTyping = draft.status.savedAt !== null;
            await draft.dispose();
            return whileTyping;
        })()"#,
    )
    .await?;
    assert_eq!(saved_while_typing, true);
    let value = eval(&page, "client.get('notes', 'long')").await?;
    assert_eq!(value["body"].as_str().map(str::len), Some(29));
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn the_last_change_survives_a_reload_and_a_closed_tab_before_the_debounce() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let url = bare_page_url(&server);
    let page = browser.open(&url).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    // A 10 s debounce: only the hand-over on pagehide can save these in time.
    let set_slowly = |body: &str| {
        format!("window.draft = client.autosave('notes', 'draft', {{ debounceMs: 10000, maxWaitMs: 10000 }}); draft.set({{ body: {body:?} }}); true")
    };
    eval(&page, &set_slowly("before the reload")).await?;
    page.reload().await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let value = eval(&page, "client.get('notes', 'draft')").await?;
    assert_eq!(value["body"], "before the reload", "{value}");

    eval(&page, &set_slowly("before the tab closed")).await?;
    browser.close_tab(page).await?;
    let page = browser.open(&url).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let value = wait_until(
        "the value typed before the tab closed is there",
        Duration::from_secs(10),
        || async {
            let value = eval(&page, "client.get('notes', 'draft')").await?;
            Ok((value["body"] == "before the tab closed").then_some(value))
        },
    )
    .await?;
    assert_eq!(value["body"], "before the tab closed");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn two_tabs_autosaving_one_key_converge_and_each_hears_the_other() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let url = bare_page_url(&server);
    let first = browser.open(&url).await?;
    assert_eq!(register_client(&first, "{}").await?, "worker");
    wait_for_controller(&first).await?;
    let second = browser.open(&url).await?;
    assert_eq!(register_client(&second, "{}").await?, "worker");
    for page in [&first, &second] {
        eval(
            page,
            "window.draft = client.autosave('notes', 'shared', { debounceMs: 50 }); true",
        )
        .await?;
    }
    eval(
        &first,
        "draft.set({ by: 'first' }); draft.flush().then(() => true)",
    )
    .await?;
    eval(
        &second,
        "draft.set({ by: 'second' }); draft.flush().then(() => true)",
    )
    .await?;
    for page in [&first, &second] {
        let value = eval(page, "client.get('notes', 'shared')").await?;
        assert_eq!(value["by"], "second", "{value}");
    }
    wait_until(
        "the first tab hears the second tab's write",
        Duration::from_secs(10),
        || async {
            let heard = eval(
                &first,
                "window.changes.filter((c) => c === 'notes/shared').length",
            )
            .await?;
            Ok((heard.as_u64() >= Some(2)).then_some(()))
        },
    )
    .await?;
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn bad_values_options_and_names_are_refused_at_once_and_change_nothing() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let code = |script: &str| {
        format!(
            "(() => {{ try {{ {script}; return 'accepted'; }} catch (e) {{ return e.code; }} }})()"
        )
    };
    let cases = [
        (
            "client.autosave('notes', 'k', { debounceMs: 60001 })",
            "invalid_config",
        ),
        (
            "client.autosave('notes', 'k', { debounce: 1 })",
            "invalid_config",
        ),
        ("client.autosave('', 'k')", "invalid_collection"),
        (
            "client.autosave('notes', 'k').set(() => 1)",
            "invalid_value",
        ),
        (
            "client.autosave('notes', 'k').set('x'.repeat(2 * 1024 * 1024))",
            "value_too_large",
        ),
    ];
    for (script, expected) in cases {
        let got = eval(&page, &code(script)).await?;
        assert_eq!(got, expected, "{script}");
    }
    let disposed = eval(
        &page,
        "(async () => { const d = client.autosave('notes', 'k'); await d.dispose(); try { d.set(1); return 'accepted'; } catch (e) { return e.code; } })()",
    )
    .await?;
    assert_eq!(disposed, "invalid_config");
    let value = eval(&page, "client.get('notes', 'k')").await?;
    assert!(value.is_null(), "nothing was written: {value}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_cancelled_draft_is_never_written_not_even_when_the_tab_reloads() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    let state = eval(
        &page,
        "(() => { const d = client.autosave('notes', 'deleted', { debounceMs: 10000 }); d.set({ body: 'a draft of a deleted note' }); d.cancel(); return d.status.state; })()",
    )
    .await?;
    assert_eq!(state, "saved", "nothing waits after cancel()");
    page.reload().await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let value = eval(&page, "client.get('notes', 'deleted')").await?;
    assert!(value.is_null(), "the cancelled draft was written: {value}");
    browser.close().await?;
    Ok(())
}
