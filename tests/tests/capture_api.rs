//! Captured calls to another API origin (RangerPlex's Express API beside the rangersync
//! server), through a real page `fetch` and the worker's fetch handler: a newer call never
//! overtakes a queued one, and a request the API fails every time does not hold the queue.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    bare_page_url, cdp, client_id_of, eval, fetch_post_js, register_client, serial,
    wait_for_controller, wait_until, Result, TestBrowser, TestServer,
};
use serde_json::{json, Value};

/// `fetch(url, POST json body)` from the page: `{ status, body }`.
async fn post_from_page(page: &Page, url: &str, body: Value) -> Result<Value> {
    eval(page, &fetch_post_js(url, &body)).await
}

/// The bodies the API stored for `path`, in arrival order.
async fn stored(api: &TestServer, path: &str) -> Result<Vec<Value>> {
    Ok(api
        .captured(path)
        .await?
        .into_iter()
        .map(|c| c["body"].clone())
        .collect())
}

async fn app_with_api(
    browser: &TestBrowser,
    server: &TestServer,
    api: &TestServer,
    extra: &str,
) -> Result<Page> {
    let page = browser.open(&bare_page_url(server)).await?;
    let options = format!("{{ captureRoutes: ['{}/api/sync/*'], {extra} }}", api.url());
    assert_eq!(register_client(&page, &options).await?, "worker");
    wait_for_controller(&page).await?;
    Ok(page)
}

#[tokio::test]
async fn a_newer_call_to_a_route_waits_behind_a_queued_one_so_the_api_ends_with_the_newer_value(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let mut api = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = app_with_api(&browser, &server, &api, "").await?;
    let chat = format!("{}/api/sync/chat", api.url());

    // Chat A v1 while the API is down: queued.
    api.stop().await;
    let v1 = post_from_page(&page, &chat, json!({ "id": "A", "v": 1 })).await?;
    assert_eq!(v1["status"], 202, "queued: {v1}");
    // The API comes back; the app sends A v2 at once.
    api.restart().await?;
    let v2 = post_from_page(&page, &chat, json!({ "id": "A", "v": 2 })).await?;
    assert_eq!(
        v2["status"], 202,
        "queued behind v1, not passed through: {v2}"
    );
    let arrived = wait_until("both reached the API", Duration::from_secs(30), || async {
        let bodies = stored(&api, "/api/sync/chat").await?;
        Ok((bodies.len() >= 2).then_some(bodies))
    })
    .await?;
    let versions: Vec<Value> = arrived
        .iter()
        .map(|b| match b.as_str() {
            Some(text) => serde_json::from_str::<Value>(text).unwrap_or(Value::Null)["v"].clone(),
            None => b["v"].clone(),
        })
        .collect();
    assert_eq!(
        versions,
        [json!(1), json!(2)],
        "in order, once each: {arrived:?}"
    );
    // Nothing queued any more: the next call passes straight through.
    wait_until("the outbox is empty", Duration::from_secs(20), || async {
        let s = eval(&page, "client.status()").await?;
        Ok((s["pending"] == 0).then_some(()))
    })
    .await?;
    let v3 = post_from_page(&page, &chat, json!({ "id": "A", "v": 3 })).await?;
    assert_eq!(v3["status"], 200, "{v3}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_request_the_api_fails_every_time_is_dead_lettered_with_its_error_and_the_others_arrive(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let mut api = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = app_with_api(
        &browser,
        &server,
        &api,
        "retry: { baseDelayMs: 200, maxDelayMs: 1000 }",
    )
    .await?;
    let chat = format!("{}/api/sync/chat", api.url());
    let settings = format!("{}/api/sync/settings", api.url());

    api.stop().await;
    assert_eq!(
        post_from_page(&page, &chat, json!({ "poison": true })).await?["status"],
        202
    );
    for i in 0..3 {
        let r = post_from_page(&page, &settings, json!({ "theme": i })).await?;
        assert_eq!(r["status"], 202, "{r}");
    }
    api.restart().await?;
    // The API fails the chat request every time, with its own words.
    api.add_faults(json!([{
        "path": "/api/sync/chat", "status": 500,
        "body": "Error: SQLITE_CONSTRAINT: NOT NULL constraint failed: chats.title",
        "times": 1000
    }]))
    .await?;
    let arrived = wait_until(
        "the other requests arrived",
        Duration::from_secs(40),
        || async {
            let bodies = stored(&api, "/api/sync/settings").await?;
            Ok((bodies.len() >= 3).then_some(bodies))
        },
    )
    .await?;
    assert_eq!(arrived.len(), 3, "once each: {arrived:?}");
    // The API has the last one before the worker has recorded its answer.
    let status = wait_until("the outbox is empty", Duration::from_secs(20), || async {
        let status = eval(&page, "client.status()").await?;
        Ok((status["pending"] == 0).then_some(status))
    })
    .await?;
    assert_eq!(status["dead"], 1, "{status}");
    let dead = eval(&page, "client.deadLetters()").await?;
    let reason = dead[0]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("SQLITE_CONSTRAINT"),
        "the API's own words: {dead}"
    );
    assert!(
        reason.contains("5 times"),
        "after 5 server errors: {reason}"
    );
    browser.close().await?;
    Ok(())
}

/// The API's credential, sent by the app on every call.
const API_TOKEN: &str = "s3cret-api-token-4f1c";

#[tokio::test]
async fn a_captured_calls_authorization_is_in_no_export_and_no_server_backup_and_its_replay_still_authenticates_once(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let mut api = TestServer::start_with_token(API_TOKEN).await?;
    let browser = TestBrowser::launch().await?;
    let page = app_with_api(&browser, &server, &api, "").await?;
    let client_id = client_id_of(&page).await?;
    let chat = format!("{}/api/sync/chat", api.url());

    // The API is down: the call, with its credential, is queued.
    api.stop().await;
    let queued = eval(
        &page,
        &format!(
            "fetch({chat:?}, {{ method: 'POST', headers: {{ 'content-type': 'application/json', \
             'authorization': 'Bearer {API_TOKEN}' }}, body: JSON.stringify({{ id: 'A', v: 1 }}) }})\
             .then(async r => ({{ status: r.status, body: await r.text() }}))"
        ),
    )
    .await?;
    assert_eq!(queued["status"], 202, "queued: {queued}");

    // The export names the header it left out, and holds no trace of the secret.
    let export = eval(&page, "client.exportSnapshot('json')").await?;
    let export = export.as_str().ok_or("export is not text")?;
    assert!(
        !export.contains(API_TOKEN),
        "the export holds the credential"
    );
    let snapshot: Value = serde_json::from_str(export)?;
    let request = &snapshot["requests"][0];
    assert_eq!(request["url"], chat.as_str(), "{snapshot}");
    assert_eq!(request["redacted"], json!(["authorization"]), "{request}");

    // A backup on the sync server: the same.
    let done = eval(&page, "client.backupNow()").await?;
    let list = server
        .get_json(&format!("/api/backups?client_id={client_id}"))
        .await?;
    let backups = list.as_array().cloned().unwrap_or_default();
    assert!(
        !backups.is_empty(),
        "backupNow answered {done}, list {list}"
    );
    // Newest first: the one backupNow made holds the call; none holds the credential.
    for (i, b) in backups.iter().enumerate() {
        let id = b["id"].to_string().trim_matches('"').to_owned();
        let text = reqwest::get(format!("{}/api/backups/{id}", server.url()))
            .await?
            .text()
            .await?;
        if i == 0 {
            assert!(
                text.contains("/api/sync/chat"),
                "backup {id} holds the call"
            );
        }
        assert!(
            !text.contains(API_TOKEN),
            "backup {id} holds the credential"
        );
    }

    // The API is back: the replay carries the credential the outbox kept, once.
    api.restart().await?;
    let arrived = wait_until(
        "the call reached the API",
        Duration::from_secs(30),
        || async {
            let bodies = stored(&api, "/api/sync/chat").await?;
            Ok((!bodies.is_empty()).then_some(bodies))
        },
    )
    .await?;
    wait_until("the outbox is empty", Duration::from_secs(20), || async {
        let s = eval(&page, "client.status()").await?;
        Ok((s["pending"] == 0).then_some(()))
    })
    .await?;
    assert_eq!(
        stored(&api, "/api/sync/chat").await?.len(),
        1,
        "{arrived:?}"
    );
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["dead"], 0, "not refused: {status}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_captured_call_over_capture_max_body_bytes_is_answered_413_and_nothing_is_queued(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let mut api = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = app_with_api(&browser, &server, &api, "captureMaxBodyBytes: 1000").await?;
    let chat = format!("{}/api/sync/chat", api.url());
    api.stop().await;
    let big = post_from_page(&page, &chat, json!({ "text": "x".repeat(2_000) })).await?;
    assert_eq!(big["status"], 413, "{big}");
    let body: Value = serde_json::from_str(big["body"].as_str().unwrap_or("{}"))?;
    assert_eq!(body["error"]["code"], "capture_too_large", "{body}");
    let small = post_from_page(&page, &chat, json!({ "text": "hi" })).await?;
    assert_eq!(small["status"], 202, "{small}");
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["pending"], 1, "only the small call waits: {status}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_captured_call_restored_from_an_export_waits_for_its_credential_and_is_replayed_once_with_the_one_capture_credentials_gives(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let mut api = TestServer::start_with_token(API_TOKEN).await?;
    let browser = TestBrowser::launch().await?;
    let page = app_with_api(&browser, &server, &api, "exportIntervalMs: 0").await?;
    let chat = format!("{}/api/sync/chat", api.url());
    api.stop().await;
    let queued = eval(
        &page,
        &format!(
            "fetch({chat:?}, {{ method: 'POST', headers: {{ 'content-type': 'application/json', \
             'authorization': 'Bearer {API_TOKEN}' }}, body: JSON.stringify({{ id: 'B', v: 1 }}) }})\
             .then(r => r.status)"
        ),
    )
    .await?;
    assert_eq!(queued, 202);
    let export = eval(&page, "client.exportSnapshot('json')").await?;
    let export = export.as_str().ok_or("export is not text")?.to_owned();

    // The browser's data is cleared; the API is back; the export is restored.
    cdp(
        &page,
        "Storage.clearDataForOrigin",
        json!({ "origin": server.url(), "storageTypes": "all" }),
    )
    .await?;
    browser.close_tab(page).await?;
    api.restart().await?;
    let page = app_with_api(&browser, &server, &api, "exportIntervalMs: 0").await?;
    let report = eval(
        &page,
        &format!("client.restore({})", serde_json::to_string(&export)?),
    )
    .await?;
    assert_eq!(
        report["pending"]["requeued"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    // Without a credential the call waits, and says for what.
    let waiting = wait_until(
        "the restored call waits",
        Duration::from_secs(20),
        || async {
            let s = eval(&page, "client.flush()").await?;
            let message = s["last_error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Ok(message.contains("authorization").then_some(s))
        },
    )
    .await?;
    assert_eq!(waiting["pending"], 1, "{waiting}");
    assert!(
        stored(&api, "/api/sync/chat").await?.is_empty(),
        "sent without its credential"
    );

    // A page that can give it: the call is replayed, authenticated, once.
    let app = app_with_api(
        &browser,
        &server,
        &api,
        &format!("exportIntervalMs: 0, captureCredentials: async () => ({{ authorization: 'Bearer {API_TOKEN}' }})"),
    )
    .await?;
    let arrived = wait_until(
        "the call reached the API",
        Duration::from_secs(30),
        || async {
            let bodies = stored(&api, "/api/sync/chat").await?;
            Ok((!bodies.is_empty()).then_some(bodies))
        },
    )
    .await?;
    wait_until("the outbox is empty", Duration::from_secs(20), || async {
        let s = eval(&app, "client.status()").await?;
        Ok((s["pending"] == 0).then_some(()))
    })
    .await?;
    assert_eq!(
        stored(&api, "/api/sync/chat").await?.len(),
        1,
        "{arrived:?}"
    );
    browser.close().await?;
    Ok(())
}
