//! Reads come from the local copy at once, and hydration merges the server's
//! changes by the conflict rule (last writer wins by `updated_at`).

use std::time::Duration;

use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, client_id_of, eval, register_client, serial,
    wait_until, Result, TestBrowser, TestServer,
};
use serde_json::{json, Value};

#[tokio::test]
async fn a_put_then_reload_shows_the_value_before_the_network_answers() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let client_id = client_id_of(&page).await?;

    // From now on every sync request is held 5 s and then refused: the network
    // never gives a useful answer while the page reloads and reads.
    server
        .add_faults(json!([
            { "path": "/api/sync/push", "status": 503, "delay_ms": 5000, "times": 1000 },
            { "path": "/api/sync/pull", "status": 503, "delay_ms": 5000, "times": 1000 },
        ]))
        .await?;
    let ack = eval(&page, "client.put('notes', 'n1', { title: 'hi' })").await?;
    assert!(ack["seq"].is_u64(), "the put is acknowledged: {ack}");

    page.reload().await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let listed = eval(&page, "client.list('notes')").await?;
    let items = listed.as_array().ok_or("list returns an array")?;
    assert_eq!(
        items.len(),
        1,
        "the reloaded page lists the write: {listed}"
    );
    assert_eq!(items[0]["key"], "n1");
    assert_eq!(items[0]["value"]["title"], "hi");
    assert_eq!(items[0]["pending"], true, "not yet on the server: {listed}");
    let got = eval(&page, "client.get('notes', 'n1')").await?;
    assert_eq!(got["title"], "hi", "get returns the local value: {got}");
    assert!(
        server.mutations_of(&client_id).await?.is_empty(),
        "the server has applied nothing yet"
    );

    // Once the network answers, it is delivered exactly once.
    server.clear_faults().await?;
    wait_until("the write is synced", Duration::from_secs(60), || async {
        let listed = eval(&page, "client.flush().then(() => client.list('notes'))").await?;
        Ok((listed[0]["pending"] == false).then_some(()))
    })
    .await?;
    assert_seqs_applied_once(&server.mutations_of(&client_id).await?, 1);

    browser.close().await?;
    Ok(())
}

/// Pushes one mutation as another client, straight over HTTP.
async fn push_as_other_client(
    server: &TestServer,
    seq: u64,
    key: &str,
    value: Value,
    updated_at: u64,
) -> Result<Value> {
    let answer = server
        .post_json(
            "/api/sync/push",
            &json!({
                "client_id": "other-client",
                "mutations": [{
                    "client_id": "other-client", "seq": seq, "collection": "notes", "key": key,
                    "op": "put", "value": value, "updated_at": updated_at,
                }],
            }),
        )
        .await?;
    Ok(answer["results"][0].clone())
}

#[tokio::test]
async fn hydration_merges_server_changes_by_the_conflict_rule() -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    let client_id = client_id_of(&page).await?;

    // Two local writes the server has not seen.
    server.stop().await;
    eval(&page, "client.put('notes', 'a', { by: 'local' })").await?;
    eval(&page, "client.put('notes', 'b', { by: 'local' })").await?;
    let listed = eval(&page, "client.list('notes')").await?;
    let local_updated_at = |key: &str| {
        listed
            .as_array()
            .and_then(|items| items.iter().find(|i| i["key"] == key))
            .and_then(|i| i["updated_at"].as_u64())
            .ok_or_else(|| format!("no local {key} in {listed}"))
    };
    let (a_at, b_at) = (local_updated_at("a")?, local_updated_at("b")?);

    // Another client wrote a later (newer than local), b earlier (older) and c.
    server.restart().await?;
    let a = push_as_other_client(&server, 1, "a", json!({ "by": "other" }), a_at + 60_000).await?;
    let b = push_as_other_client(&server, 2, "b", json!({ "by": "other" }), b_at - 60_000).await?;
    let c = push_as_other_client(&server, 3, "c", json!({ "by": "other" }), a_at).await?;
    // Our client may already have pushed a and b on its own retry: either way the
    // server keeps the newer a and the newer b (LWW), and holds c.
    for r in [&a, &b, &c] {
        assert!(
            r["status"] == "applied" || r["status"] == "conflict",
            "other client's push answered {r}"
        );
    }

    let by_key = wait_until(
        "the local copy holds the merged state, all synced",
        Duration::from_secs(60),
        || async {
            let listed = eval(&page, "client.flush().then(() => client.list('notes'))").await?;
            let items = listed.as_array().cloned().unwrap_or_default();
            let ready = items.len() == 3
                && items.iter().all(|i| i["pending"] == false)
                && items
                    .iter()
                    .any(|i| i["key"] == "a" && i["value"]["by"] == "other");
            Ok(ready.then_some(items))
        },
    )
    .await?;
    let value_of = |key: &str| {
        by_key
            .iter()
            .find(|i| i["key"] == key)
            .map(|i| i["value"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(value_of("a")["by"], "other", "the server's newer a wins");
    assert_eq!(value_of("b")["by"], "local", "the local newer b is kept");
    assert_eq!(value_of("c")["by"], "other", "the new key c arrives");

    let on_server = server.pull_all().await?;
    let server_value = |key: &str| {
        on_server
            .iter()
            .find(|c| c["collection"] == "notes" && c["key"] == key)
            .map(|c| c["value"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(server_value("a")["by"], "other", "server: {on_server:?}");
    assert_eq!(server_value("b")["by"], "local", "server: {on_server:?}");
    assert_eq!(server_value("c")["by"], "other", "server: {on_server:?}");

    // Our two writes were each recorded once (a as a conflict or applied-then-overwritten).
    let recorded = server.mutations_of(&client_id).await?;
    let seqs: Vec<u64> = recorded.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, vec![1, 2], "each local write once: {recorded:?}");

    let changes = wait_until(
        "onChange fired for the pulled keys",
        Duration::from_secs(10),
        || async {
            let changes = eval(&page, "window.changes").await?;
            let has = |k: &str| changes.as_array().is_some_and(|c| c.iter().any(|x| x == k));
            Ok((has("notes/a") && has("notes/c")).then_some(changes))
        },
    )
    .await?;
    println!("changes seen: {changes}");

    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_write_that_loses_a_conflict_takes_the_servers_value_and_tells_the_page_through_on_change(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(&page, "{ exportIntervalMs: 0 }").await?,
        "worker"
    );
    // Another device wrote x a minute ahead of this one's clock.
    let now = eval(&page, "Date.now()")
        .await?
        .as_u64()
        .ok_or("no clock")?;
    let other =
        push_as_other_client(&server, 1, "x", json!({ "by": "other" }), now + 60_000).await?;
    assert_eq!(other["status"], "applied", "{other}");
    // This page's write of x is held on the wire a moment, so that its own change notice has
    // come and gone before the server's answer.
    server
        .add_faults(
            json!([{ "path": "/api/sync/push", "method": "POST", "delay_ms": 1000, "times": 1 }]),
        )
        .await?;
    eval(&page, "client.put('notes', 'x', { by: 'local' })").await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    eval(&page, "window.changes = []").await?;
    let told = wait_until(
        "the page is told x changed",
        Duration::from_secs(20),
        || async {
            let changes = eval(&page, "window.changes").await?;
            let listed = changes.as_array().cloned().unwrap_or_default();
            Ok(listed.iter().any(|c| c == "notes/x").then_some(changes))
        },
    )
    .await?;
    let x = eval(&page, "client.get('notes', 'x')").await?;
    assert_eq!(
        x["by"], "other",
        "the newer server value is kept: {x} (told {told})"
    );
    let stats = server.stats().await?;
    assert!(
        stats["conflicts"].as_u64().unwrap_or(0) >= 1,
        "the server answered a conflict: {stats}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn after_the_server_pruned_a_delete_the_next_pull_starts_over_and_drops_what_the_server_no_longer_holds(
) -> Result {
    let _serial = serial().await;
    pruned_delete_scenario(TestServer::start().await?).await
}

#[tokio::test]
async fn on_postgresql_after_the_server_pruned_a_delete_the_next_pull_starts_over_and_drops_what_the_server_no_longer_holds(
) -> Result {
    let _serial = serial().await;
    let db = rangersync_server::test_postgres::fresh_database().await?;
    pruned_delete_scenario(TestServer::start_on(rangersync_server::DbLocation::Postgres(db)).await?)
        .await
}

/// A delete the page never pulled is pruned by `server`; the page's next pull is `410`, so it
/// pulls everything again and drops the deleted entity, keeping its local-only record.
async fn pruned_delete_scenario(server: TestServer) -> Result {
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(&page, "{ exportIntervalMs: 0, localOnly: ['secrets'] }").await?,
        "worker"
    );
    // A local-only record: the server never holds it, and the re-pull must keep it.
    eval(&page, "client.put('secrets', 'api-key', { v: 'k' })").await?;
    eval(&page, "client.put('notes', 'kept', { n: 1 })").await?;
    eval(&page, "client.put('notes', 'gone', { n: 2 })").await?;
    wait_until("both are delivered", Duration::from_secs(30), || async {
        let listed = eval(&page, "client.flush().then(() => client.list('notes'))").await?;
        let items = listed.as_array().cloned().unwrap_or_default();
        Ok((items.len() == 2 && items.iter().all(|i| i["pending"] == false)).then_some(()))
    })
    .await?;

    // The page pulls nothing more while another device deletes `gone` and writes `fresh`,
    // and the server prunes: the tombstone of `gone` is forgotten.
    server
        .add_faults(json!([{ "path": "/api/sync/pull", "status": 503, "times": 100000 }]))
        .await?;
    let now = eval(&page, "Date.now()")
        .await?
        .as_u64()
        .ok_or("no clock")?;
    let other = server
        .post_json(
            "/api/sync/push",
            &json!({
                "client_id": "other-client",
                "mutations": [
                    { "client_id": "other-client", "seq": 1, "collection": "notes", "key": "gone",
                      "op": "delete", "value": null, "updated_at": now + 1000 },
                    { "client_id": "other-client", "seq": 2, "collection": "notes", "key": "fresh",
                      "op": "put", "value": { "n": 3 }, "updated_at": now + 1000 },
                ],
            }),
        )
        .await?;
    assert_eq!(other["results"][0]["status"], "applied", "{other}");
    let pruned = server.post_json("/api/test/prune", &json!({})).await?;
    assert_eq!(pruned["tombstones"], 1, "{pruned}");
    // A write of this page goes out (pushes still work) while its pulls fail.
    eval(&page, "client.put('notes', 'mine', { n: 4 })").await?;
    wait_until("mine is delivered", Duration::from_secs(30), || async {
        let listed = eval(&page, "client.flush().then(() => client.list('notes'))").await?;
        let items = listed.as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .any(|i| i["key"] == "mine" && i["pending"] == false)
            .then_some(()))
    })
    .await?;
    eval(&page, "window.changes = []").await?;

    // Pulls work again: the stored cursor is before the pruned delete (410), so the worker
    // pulls everything again and drops `gone`, which the server no longer holds.
    server.clear_faults().await?;
    let keys = wait_until(
        "the local copy is the server's",
        Duration::from_secs(30),
        || async {
            let listed = eval(&page, "client.flush().then(() => client.list('notes'))").await?;
            let mut keys: Vec<String> = listed
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i["key"].as_str().map(str::to_owned))
                .collect();
            keys.sort();
            Ok((keys == ["fresh", "kept", "mine"]).then_some(keys))
        },
    )
    .await?;
    println!("after the re-pull: {keys:?}");
    let gone = eval(
        &page,
        "client.get('notes', 'gone').then(v => v ?? 'absent')",
    )
    .await?;
    assert_eq!(gone, "absent");
    let secret = eval(&page, "client.get('secrets', 'api-key')").await?;
    assert_eq!(secret["v"], "k", "the local-only record stays: {secret}");
    wait_until(
        "the page is told gone changed",
        Duration::from_secs(10),
        || async {
            let changes = eval(&page, "window.changes").await?;
            let told = changes
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == "notes/gone"));
            Ok(told.then_some(()))
        },
    )
    .await?;
    let status = eval(&page, "client.status()").await?;
    assert!(
        status["last_error"].is_null(),
        "the 410 is no error for the app: {status}"
    );
    browser.close().await?;
    Ok(())
}
