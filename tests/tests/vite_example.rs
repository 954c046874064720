//! The Vite + React example (`examples/vite-react`), built with Vite from the npm package as an
//! app installs it, run in Chromium: notes written with `put()` to the rangersync server and
//! chat calls `fetch`ed to a protocol-less Express API both survive an outage, a closed tab and
//! a browser restart, and each server ends with every write once.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::example::{free_port, Example};
use rangersync_e2e::{
    eval, noise_png_js, serial, wait_until, FaultProxy, Result, TestBrowser, TestServer,
};
use serde_json::{json, Value};

/// The page's status element: `{ state, pending, mode, text }`.
async fn status(page: &Page) -> Result<Value> {
    eval(
        page,
        "(() => { const s = document.querySelector('#status'); \
         return s ? { ...s.dataset, text: s.textContent } : null; })()",
    )
    .await
}

async fn wait_for_worker_mode(page: &Page) -> Result<Value> {
    wait_until(
        "the app runs in worker mode",
        Duration::from_secs(60),
        || async {
            let s = status(page).await?;
            Ok((s["mode"] == "worker").then_some(s))
        },
    )
    .await
}

/// Types `text` into the input `#id` the way React sees it, then clicks `#button`.
async fn type_and_click(page: &Page, id: &str, text: &str, button: &str) -> Result {
    eval(
        page,
        &format!(
            "(async () => {{ const el = document.querySelector('#{id}'); \
             Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(el, {text:?}); \
             el.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             await new Promise(r => setTimeout(r, 50)); \
             document.querySelector('#{button}').click(); }})()"
        ),
    )
    .await?;
    Ok(())
}

async fn text_of(page: &Page, selector: &str) -> Result<String> {
    Ok(eval(
        page,
        &format!("document.querySelector({selector:?})?.textContent ?? ''"),
    )
    .await?
    .as_str()
    .unwrap_or_default()
    .to_string())
}

/// Types `text` into the draft's textarea the way React sees it.
async fn type_draft(page: &Page, text: &str) -> Result {
    eval(
        page,
        &format!(
            "(() => {{ const el = document.querySelector('#draft'); \
             Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(el, {text:?}); \
             el.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()"
        ),
    )
    .await?;
    Ok(())
}

/// Sends a chat message through the app and waits for what the app reports (`sent`, `queued`).
async fn send_chat(page: &Page, text: &str, expected: &str) -> Result {
    type_and_click(page, "chat-text", text, "send-chat").await?;
    let got = wait_until(
        &format!("the app reports the message {text:?} {expected}"),
        Duration::from_secs(20),
        || async {
            let shown = eval(
                page,
                "(() => { const p = document.querySelector('#last-send'); \
                 return { message: p.dataset.message, result: p.textContent }; })()",
            )
            .await?;
            Ok((shown["message"] == text)
                .then(|| shown["result"].as_str().unwrap_or_default().to_string()))
        },
    )
    .await?;
    assert_eq!(got, expected, "sending {text:?}");
    Ok(())
}

/// What the sync server holds, once it holds something.
async fn synced_notes(sync: &TestServer) -> Result<Vec<Value>> {
    wait_until(
        "the sync server holds the note",
        Duration::from_secs(60),
        || async {
            let changes = sync.pull_all().await?;
            Ok((!changes.is_empty()).then_some(changes))
        },
    )
    .await
}

async fn api_json(api_url: &str, path: &str) -> Result<Value> {
    Ok(reqwest::get(format!("{api_url}{path}"))
        .await?
        .error_for_status()?
        .json()
        .await?)
}

#[tokio::test]
async fn the_vite_example_delivers_notes_and_queued_chat_calls_once_through_an_outage_a_closed_tab_and_a_browser_restart(
) -> Result {
    let _serial = serial().await;
    let example = Example::find()?;
    let mut sync = TestServer::start().await?;
    // The built app is served by `vite preview` behind a recording proxy, which is the page's
    // origin: it counts what the browser downloads.
    let preview_port = free_port()?;
    let site = FaultProxy::start(([127, 0, 0, 1], preview_port).into()).await?;
    let page_origin = site.url();
    let api_port = free_port()?;
    let api_url = format!("http://127.0.0.1:{api_port}");
    let api_dir = tempfile::tempdir()?;
    let api_db = api_dir.path().join("api.json");
    let mut api = example.api(api_port, &page_origin, &api_db)?;
    let dist = example.build(&sync.url(), &api_url)?;
    let sw = std::fs::read_to_string(dist.path().join("sw.js"))?;
    assert!(
        sw.starts_with("// rangersync "),
        "the plugin stamps sw.js with the package version: {}",
        sw.lines().next().unwrap_or_default()
    );
    let _preview = example.preview(dist.path(), preview_port)?;

    let browser = TestBrowser::launch().await?;
    let page = browser.open(&page_origin).await?;
    wait_for_worker_mode(&page).await?;
    let wasm_downloads = site
        .exchanges()
        .iter()
        .filter(|e| e.method == "GET" && e.path.starts_with("/rangersync_sw_bg."))
        .count();
    assert_eq!(
        wasm_downloads,
        1,
        "the worker's wasm is downloaded once at install: {:?}",
        site.exchanges().iter().map(|e| &e.path).collect::<Vec<_>>()
    );

    // Online, a chat call passes straight through to the API.
    send_chat(&page, "hello", "sent").await?;

    // Both servers go down. A note and two more messages are saved.
    sync.stop().await;
    drop(api);
    type_and_click(&page, "note-text", "written offline", "save-note").await?;
    wait_until(
        "the note shows as pending",
        Duration::from_secs(20),
        || async {
            Ok(text_of(&page, "#notes")
                .await?
                .contains("written offline (pending)")
                .then_some(()))
        },
    )
    .await?;
    send_chat(&page, "are you there?", "queued").await?;
    send_chat(&page, "still there?", "queued").await?;
    // An image attached offline: kept by putBlob, its note shown with it at once.
    eval(&page, &noise_png_js(600, 400)).await?;
    eval(
        &page,
        "const input = document.getElementById('note-image');
         const files = new DataTransfer(); files.items.add(window.image);
         input.files = files.files; input.dispatchEvent(new Event('change', { bubbles: true })); true",
    )
    .await?;
    wait_until(
        "the image note shows its image",
        Duration::from_secs(30),
        || async {
            let width = eval(
                &page,
                "document.querySelector('#notes img.attachment')?.naturalWidth ?? 0",
            )
            .await?;
            Ok((width == 600).then_some(()))
        },
    )
    .await?;

    // The tab closes, the browser restarts, then the servers come back.
    browser.close_tab(page).await?;
    let browser = browser.relaunch().await?;
    sync.restart().await?;
    api = example.api(api_port, &page_origin, &api_db)?;
    let page = browser.open(&page_origin).await?;
    wait_for_worker_mode(&page).await?;

    let chats = wait_until(
        "the API holds the whole chat",
        Duration::from_secs(60),
        || async {
            let chats = api_json(&api_url, "/api/chats").await?;
            let done = chats[0]["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 3);
            Ok(done.then_some(chats))
        },
    )
    .await?;
    assert_eq!(
        chats,
        json!([{ "id": "chat-1", "messages": ["hello", "are you there?", "still there?"] }]),
        "the newest chat wins: the replay kept the order"
    );
    let applied = api_json(&api_url, "/api/debug/applied").await?;
    let applied = applied.as_array().cloned().unwrap_or_default();
    let sizes: Vec<Value> = applied.iter().map(|a| a["messages"].clone()).collect();
    assert_eq!(
        sizes,
        [json!(1), json!(2), json!(3)],
        "each call applied once, in order: {applied:?}"
    );
    assert!(
        applied[0]["key"].is_null(),
        "the live call went through untouched"
    );
    let keys: Vec<&str> = applied[1..]
        .iter()
        .filter_map(|a| a["key"].as_str())
        .collect();
    assert!(
        keys.len() == 2 && keys[0] != keys[1],
        "each replay carries its own Idempotency-Key: {applied:?}"
    );

    wait_until("the page shows Saved", Duration::from_secs(60), || async {
        let s = status(&page).await?;
        Ok((s["pending"] == "0" && s["text"] == "Saved").then_some(()))
    })
    .await?;
    let notes = synced_notes(&sync).await?;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes.iter().all(|n| n["collection"] == "notes"),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n["value"] == json!({ "text": "written offline" })),
        "{notes:?}"
    );
    let image = notes
        .iter()
        .find(|n| n["value"]["text"] == "cat.png")
        .ok_or("the image note was delivered")?;
    let sha = image["value"]["image"]["$blob"]["sha256"]
        .as_str()
        .unwrap_or_default();
    let (code, bytes) = sync.get_bytes(&format!("/api/blobs/{sha}")).await?;
    assert_eq!(
        (code, bytes.len() as u64),
        (
            200,
            image["value"]["image"]["$blob"]["size"]
                .as_u64()
                .unwrap_or(0)
        )
    );
    let stats = sync.stats().await?;
    assert_eq!(stats["mutations_applied"], 2, "{stats}");
    // The package's <rangersync-status>, given the client in a React effect, agrees.
    let pill = eval(
        &page,
        "document.getElementById('indicator')?.shadowRoot?.querySelector('[part=state]')?.textContent ?? ''",
    )
    .await?;
    assert_eq!(
        pill, "Saved",
        "the indicator element shows the client's status"
    );
    drop(api);
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn the_vite_example_in_the_dev_server_gets_its_worker_from_the_plugin_and_saves() -> Result {
    let _serial = serial().await;
    let example = Example::find()?;
    let sync = TestServer::start().await?;
    let dev_port = free_port()?;
    let page_origin = format!("http://127.0.0.1:{dev_port}");
    let api_port = free_port()?;
    let _dev = example.dev(
        dev_port,
        &sync.url(),
        &format!("http://127.0.0.1:{api_port}"),
    )?;
    let served = reqwest::get(format!("{page_origin}/sw.js?appShell=x")).await?;
    assert_eq!(served.status(), 200, "the plugin serves sw.js in dev");

    let browser = TestBrowser::launch().await?;
    let page = browser.open(&page_origin).await?;
    wait_for_worker_mode(&page).await?;
    // A second tab: `useCollection` and `useSynced` (rangersync/react) follow the first one's
    // writes with no reload.
    let other = browser.open(&page_origin).await?;
    wait_for_worker_mode(&other).await?;
    type_and_click(&page, "note-text", "from dev", "save-note").await?;
    let changes = synced_notes(&sync).await?;
    assert_eq!(changes[0]["value"], json!({ "text": "from dev" }));
    wait_until(
        "the other tab lists the note, delivered",
        Duration::from_secs(20),
        || async {
            let list = text_of(&other, "#notes").await?;
            Ok((list == "from dev").then_some(()))
        },
    )
    .await?;
    wait_until("the draft is ready", Duration::from_secs(20), || async {
        Ok((text_of(&other, "#draft-state").await? == "saved").then_some(()))
    })
    .await?;
    type_draft(&other, "typed in the other tab").await?;
    wait_until(
        "the first tab shows the other tab's draft",
        Duration::from_secs(20),
        || async {
            let value = eval(&page, "document.querySelector('#draft')?.value ?? ''").await?;
            Ok((value == "typed in the other tab").then_some(()))
        },
    )
    .await?;
    browser.close_tab(other).await?;

    // The draft autosaves: typed, the page reloaded at once (inside the 300 ms debounce), it is
    // back in the textarea and reaches the server.
    wait_until("the draft is ready", Duration::from_secs(20), || async {
        Ok((text_of(&page, "#draft-state").await? == "saved").then_some(()))
    })
    .await?;
    type_draft(&page, "a draft typed right before a reload").await?;
    page.reload().await?;
    wait_for_worker_mode(&page).await?;
    wait_until(
        "the reloaded page shows the draft",
        Duration::from_secs(20),
        || async {
            let value = eval(&page, "document.querySelector('#draft')?.value ?? ''").await?;
            Ok((value == "a draft typed right before a reload").then_some(()))
        },
    )
    .await?;
    wait_until(
        "the draft reached the sync server",
        Duration::from_secs(30),
        || async {
            let changes = sync.pull_all().await?;
            Ok(changes
                .iter()
                .any(|c| {
                    c["collection"] == "drafts"
                        && c["value"] == json!({ "text": "a draft typed right before a reload" })
                })
                .then_some(()))
        },
    )
    .await?;
    browser.close().await?;
    Ok(())
}
