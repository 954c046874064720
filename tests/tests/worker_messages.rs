//! The worker answers every malformed message with a typed error on its reply
//! port, echoes the request id when it can, and changes nothing.

use rangersync_e2e::{
    bare_page_url, eval, register_client, serial, wait_for_controller, Result, TestBrowser,
    TestServer, RAW_MESSAGE_JS,
};
use serde_json::{json, Value};

#[tokio::test]
async fn malformed_messages_get_typed_errors() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    eval(&page, RAW_MESSAGE_JS).await?;

    // (what is sent, as JS, the id the reply must carry, the error code)
    let cases: &[(&str, u64, &str)] = &[
        ("'not json {'", 0, "invalid_message"),
        ("JSON.stringify({ v: 1, id: 5 })", 5, "invalid_message"),
        (
            "{ v: 2, id: 7, request: { type: 'status' } }",
            7,
            "unsupported_version",
        ),
        (
            "{ v: 1, id: 8, request: { type: 'drop_all_tables' } }",
            8,
            "invalid_message",
        ),
        (
            "{ v: 1, id: 9, request: { type: 'status' }, extra: true }",
            9,
            "invalid_message",
        ),
        (
            "{ v: 1, id: 10, request: { type: 'put', collection: 'Bad Name!', key: 'k', value: 1 } }",
            10,
            "invalid_collection",
        ),
        (
            "{ v: 1, id: 11, request: { type: 'put', collection: 'notes', key: '', value: 1 } }",
            11,
            "invalid_key",
        ),
        (
            "{ v: 1, id: 12, request: { type: 'put', collection: 'notes', key: 'k' } }",
            12,
            "invalid_message",
        ),
        (
            "{ v: 1, id: 13, request: { type: 'retry_dead', seq: 424242 } }",
            13,
            "not_found",
        ),
        (
            "{ v: 1, id: 14, request: { type: 'restore', text: 'not a snapshot', dry_run: false } }",
            14,
            "bad_snapshot",
        ),
    ];
    let mut wrong = Vec::new();
    for (data, id, code) in cases {
        let reply = eval(&page, &format!("raw({data})")).await?;
        let ok = reply["ok"] == false
            && reply["v"] == 1
            && reply["id"] == json!(id)
            && reply["error"]["code"] == *code
            && reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty());
        if !ok {
            wrong.push(format!("{data} → {reply} (wanted id {id}, code {code})"));
        }
    }
    assert!(
        wrong.is_empty(),
        "typed errors expected:\n{}",
        wrong.join("\n")
    );

    // A well-formed request still works, and nothing was written.
    let reply = eval(
        &page,
        "raw({ v: 1, id: 20, request: { type: 'list', collection: 'notes' } })",
    )
    .await?;
    assert_eq!(reply["ok"], true, "a good request is answered: {reply}");
    assert_eq!(reply["id"], 20);
    assert_eq!(reply["result"], json!([]), "nothing was written: {reply}");
    let status = eval(&page, "client.status()").await?;
    assert_eq!(status["pending"], 0, "the outbox is empty: {status}");
    assert_eq!(status["dead"], 0, "no dead letters: {status}");
    let stats = server.stats().await?;
    assert_eq!(stats["mutations_applied"], Value::from(0), "stats: {stats}");

    browser.close().await?;
    Ok(())
}
