//! A panic in the worker's wasm (a trap: `WebAssembly.RuntimeError`) is never a silent death:
//! the request it struck is answered `worker_unavailable`, every page hears a worker error,
//! switches to page mode and says why in its status, and writes go on.
//!
//! No input makes the worker panic (its bad-input tests check that), so the test puts a trap
//! where the wasm would raise one: through DevTools, the worker's `on_message` export is
//! replaced by one that throws `RuntimeError: unreachable`, which is what a panic compiled to
//! wasm throws into the worker script.

use std::time::Duration;

use rangersync_e2e::{
    bare_page_url, client_id_of, eval, register_client, serial, wait_for_controller, wait_until,
    Result, TestBrowser, TestServer, WorkerSession,
};
use serde_json::json;

#[tokio::test]
async fn a_panic_in_the_workers_wasm_answers_the_request_and_the_page_says_so_in_page_mode(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    eval(&page, "client.put('notes', 'before', { t: 0 })").await?;
    server
        .wait_for_recorded(&client_id, 1, Duration::from_secs(30))
        .await?;

    let mut worker = WorkerSession::attach(&browser, &server.url()).await?;
    let patched = worker
        .call(
            "Runtime.evaluate",
            json!({ "expression": "rangersync_wasm.on_message = () => \
                Promise.reject(new WebAssembly.RuntimeError('unreachable')); true",
                "returnByValue": true }),
        )
        .await?;
    assert_eq!(patched["result"]["value"], true, "{patched}");
    worker.detach().await;

    let struck = eval(
        &page,
        "client.put('notes', 'struck', { t: 1 }).then(ack => ({ ack }), e => ({ code: e.code, message: e.message }))",
    )
    .await?;
    assert_eq!(struck["code"], "worker_unavailable", "{struck}");
    assert!(
        struck["message"]
            .as_str()
            .is_some_and(|m| m.contains("panic")),
        "{struck}"
    );
    let status = wait_until(
        "the page works in page mode and says why",
        Duration::from_secs(30),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok((s["mode"] == "page").then_some(s))
        },
    )
    .await?;
    let reason = status["fallback_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("worker_unavailable") && reason.contains("panic"),
        "the status names the panic: {status}"
    );

    // Writes go on, from the page, over the same outbox.
    eval(&page, "client.put('notes', 'after', { t: 2 })").await?;
    let recorded = wait_until(
        "the write made in page mode reaches the server",
        Duration::from_secs(30),
        || async {
            let recorded = server.mutations_of(&client_id).await?;
            Ok(recorded
                .iter()
                .any(|m| m["key"] == "after")
                .then_some(recorded))
        },
    )
    .await?;
    assert!(
        recorded.iter().all(|m| m["key"] != "struck"),
        "the struck write was never stored: {recorded:?}"
    );
    browser.close().await?;
    Ok(())
}
