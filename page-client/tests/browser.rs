//! The JS API in a real browser window (headless Chromium via wasm-bindgen-test-runner):
//! typed errors, page-only mode, hydration from IndexedDB, and delivery to a real server.
//!
//! Run: `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=.tools/bin/wasm-bindgen-test-runner
//! CHROMEDRIVER=/usr/bin/chromedriver cargo test -p rangersync-page --target wasm32-unknown-unknown`.
//! The delivery test needs `RANGERSYNC_TEST_SERVER=http://127.0.0.1:PORT` at compile time (a
//! server started with `--allow-origin '*' --test-endpoints`) and fails without it; `cargo xtask
//! test` starts the server and sets it.

#![cfg(target_arch = "wasm32")]

use js_sys::{Function, Promise, Reflect, JSON};
use rangersync_page::SyncClient;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// A server that never answers: Chromium refuses port 9 at once, like a closed port.
const NO_SERVER: &str = "http://127.0.0.1:9";

fn js(json: &str) -> JsValue {
    JSON::parse(json).expect("test JSON")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

async fn page_client(server: &str) -> SyncClient {
    let options = js(&format!(
        r#"{{"forcePageMode":true,"serverUrl":"{server}"}}"#
    ));
    SyncClient::register(Some(options))
        .await
        .expect("a page-mode client opens")
}

async fn ok(p: Promise) -> JsValue {
    match JsFuture::from(p).await {
        Ok(v) => v,
        Err(e) => panic!(
            "expected success, got {:?}",
            JSON::stringify(&e_with_code(&e)).ok()
        ),
    }
}

fn e_with_code(e: &JsValue) -> JsValue {
    let o = js_sys::Object::new();
    let _ = Reflect::set(
        &o,
        &"code".into(),
        &Reflect::get(e, &"code".into()).unwrap_or_default(),
    );
    let _ = Reflect::set(
        &o,
        &"message".into(),
        &Reflect::get(e, &"message".into()).unwrap_or_default(),
    );
    o.into()
}

/// Await a promise that must reject with a JS `Error` whose `code` is returned.
async fn error_code(p: Promise) -> String {
    let e = JsFuture::from(p)
        .await
        .expect_err("expected a rejected promise");
    assert!(
        e.is_instance_of::<js_sys::Error>(),
        "rejections are Error objects, got {e:?}"
    );
    assert_eq!(
        Reflect::get(&e, &"name".into())
            .unwrap()
            .as_string()
            .as_deref(),
        Some("SyncError")
    );
    let message = Reflect::get(&e, &"message".into())
        .unwrap()
        .as_string()
        .unwrap_or_default();
    assert!(!message.is_empty(), "every error says what went wrong");
    Reflect::get(&e, &"code".into())
        .unwrap()
        .as_string()
        .expect("a string code")
}

async fn register_error_code(options: &str) -> String {
    let e = SyncClient::register(Some(js(options)))
        .await
        .err()
        .expect("register must fail");
    assert!(e.is_instance_of::<js_sys::Error>());
    Reflect::get(&e, &"code".into())
        .unwrap()
        .as_string()
        .expect("a string code")
}

fn get(v: &JsValue, field: &str) -> JsValue {
    Reflect::get(v, &field.into()).unwrap()
}

/// The `ListItem` of `key` in `items`, if any.
fn find(items: &JsValue, key: &str) -> Option<JsValue> {
    js_sys::Array::from(items)
        .iter()
        .find(|i| get(i, "key").as_string().as_deref() == Some(key))
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        let w = web_sys::window().unwrap();
        w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(p).await.unwrap();
}

#[wasm_bindgen_test]
async fn an_unknown_option_key_is_refused_with_invalid_config() {
    assert_eq!(
        register_error_code(r#"{"server_url":"http://x"}"#).await,
        "invalid_config"
    );
    assert_eq!(
        register_error_code(r#"{"forcePageMode":true,"colour":"red"}"#).await,
        "invalid_config"
    );
}

#[wasm_bindgen_test]
async fn a_wrongly_typed_option_is_refused_with_invalid_config() {
    assert_eq!(
        register_error_code(r#"{"serverUrl":42}"#).await,
        "invalid_config"
    );
    assert_eq!(
        register_error_code(r#"{"batchSize":0}"#).await,
        "invalid_config"
    );
    assert_eq!(
        register_error_code(r#"{"captureRoutes":"/api/*"}"#).await,
        "invalid_config"
    );
    assert_eq!(
        register_error_code(r#""not an object""#).await,
        "invalid_config"
    );
}

#[wasm_bindgen_test]
async fn writes_with_a_bad_collection_key_or_value_are_refused_with_their_code() {
    let c = page_client(NO_SERVER).await;
    assert_eq!(
        error_code(c.put("Notes!".into(), "k".into(), js("1"))).await,
        "invalid_collection"
    );
    assert_eq!(
        error_code(c.put(String::new(), "k".into(), js("1"))).await,
        "invalid_collection"
    );
    assert_eq!(
        error_code(c.put("notes".into(), String::new(), js("1"))).await,
        "invalid_key"
    );
    assert_eq!(
        error_code(c.put("notes".into(), "x".repeat(300), js("1"))).await,
        "invalid_key"
    );
    assert_eq!(
        error_code(c.delete("no way".into(), "k".into())).await,
        "invalid_collection"
    );
    assert_eq!(
        error_code(c.list("UPPER".into())).await,
        "invalid_collection"
    );
    assert_eq!(
        error_code(c.get("notes".into(), String::new())).await,
        "invalid_key"
    );
    assert_eq!(
        error_code(c.put("notes".into(), "k".into(), JsValue::UNDEFINED)).await,
        "invalid_value"
    );
    let f: Function = Function::new_no_args("return 1");
    assert_eq!(
        error_code(c.put("notes".into(), "k".into(), f.into())).await,
        "invalid_value"
    );
}

#[wasm_bindgen_test]
async fn a_value_over_one_mib_is_refused_with_value_too_large_and_not_stored() {
    let c = page_client(NO_SERVER).await;
    let key = unique("big");
    let big = JsValue::from_str(&"x".repeat(1024 * 1024 + 10));
    assert_eq!(
        error_code(c.put("notes".into(), key.clone(), big)).await,
        "value_too_large"
    );
    assert!(ok(c.get("notes".into(), key)).await.is_undefined());
}

#[wasm_bindgen_test]
async fn restoring_garbage_is_refused_with_bad_snapshot() {
    let c = page_client(NO_SERVER).await;
    let dry = || js(r#"{"dryRun":true}"#);
    assert_eq!(
        error_code(c.restore("{ not json".into(), Some(dry()))).await,
        "bad_snapshot"
    );
    assert_eq!(
        error_code(c.restore(String::new(), Some(dry()))).await,
        "bad_snapshot"
    );
    assert_eq!(
        error_code(c.restore(r#"{"format":"zip"}"#.into(), Some(dry()))).await,
        "bad_snapshot"
    );
    assert_eq!(
        error_code(c.restore("just: [some yaml".into(), Some(dry()))).await,
        "bad_snapshot"
    );
    assert_eq!(
        error_code(c.restore("hello".into(), Some(dry()))).await,
        "bad_snapshot"
    );
}

#[wasm_bindgen_test]
async fn bad_arguments_to_export_restore_and_dead_letters_are_typed_errors() {
    let c = page_client(NO_SERVER).await;
    assert_eq!(
        error_code(c.export_snapshot("xml".into(), None)).await,
        "invalid_value"
    );
    assert_eq!(
        error_code(c.restore("{}".into(), Some(js(r#"{"dry":true}"#)))).await,
        "invalid_config"
    );
    assert_eq!(error_code(c.retry_dead(-1.0)).await, "invalid_value");
    assert_eq!(error_code(c.discard_dead(1.5)).await, "invalid_value");
    assert_eq!(error_code(c.discard_dead(987_654_321.0)).await, "not_found");
}

#[wasm_bindgen_test]
async fn in_page_mode_a_put_is_readable_at_once_and_listed_as_pending() {
    let c = page_client(NO_SERVER).await;
    assert_eq!(c.mode(), "page");
    let key = unique("n");
    let ack = ok(c.put("notes".into(), key.clone(), js(r#"{"title":"hi"}"#))).await;
    assert!(
        get(&ack, "seq").as_f64().unwrap() >= 1.0,
        "put resolves with its seq"
    );
    let value = ok(c.get("notes".into(), key.clone())).await;
    assert_eq!(get(&value, "title").as_string().as_deref(), Some("hi"));
    let item = find(&ok(c.list("notes".into())).await, &key).expect("listed");
    assert_eq!(get(&item, "pending"), JsValue::TRUE);
    assert!(get(&item, "updated_at").as_f64().unwrap() > 0.0);
    let status = ok(c.status()).await;
    assert_eq!(get(&status, "mode").as_string().as_deref(), Some("page"));
    assert!(get(&status, "pending").as_f64().unwrap() >= 1.0);
}

#[wasm_bindgen_test]
async fn a_delete_hides_the_entity_from_get_and_list() {
    let c = page_client(NO_SERVER).await;
    let key = unique("d");
    ok(c.put("notes".into(), key.clone(), js("{\"a\":1}"))).await;
    ok(c.delete("notes".into(), key.clone())).await;
    assert!(ok(c.get("notes".into(), key.clone())).await.is_undefined());
    assert!(find(&ok(c.list("notes".into())).await, &key).is_none());
}

#[wasm_bindgen_test]
async fn a_write_survives_closing_the_client_and_is_there_on_the_next_launch_before_any_network_answer(
) {
    let key = unique("reopen");
    {
        let c = page_client(NO_SERVER).await;
        ok(c.put("notes".into(), key.clone(), js(r#"{"title":"kept"}"#))).await;
        c.close();
    }
    let c = page_client(NO_SERVER).await;
    let item = find(&ok(c.list("notes".into())).await, &key).expect("the write is still there");
    assert_eq!(
        get(&get(&item, "value"), "title").as_string().as_deref(),
        Some("kept")
    );
    assert_eq!(
        get(&item, "pending"),
        JsValue::TRUE,
        "never acknowledged, so still pending"
    );
}

#[wasm_bindgen_test]
async fn status_and_change_listeners_hear_every_write_until_unsubscribed() {
    let c = page_client(NO_SERVER).await;
    let seen = js_sys::Array::new();
    let statuses = js_sys::Array::new();
    let record = Function::new_with_args("c, k", "this.push(c + '/' + k)").bind0(&seen);
    let count = Function::new_with_args("s", "this.push(s.mode)").bind0(&statuses);
    let off_change = c.on_change(record);
    let off_status = c.on_status(count);
    let key = unique("l");
    ok(c.put("notes".into(), key.clone(), js("1"))).await;
    sleep(50).await;
    let changes: Vec<String> = seen.iter().filter_map(|v| v.as_string()).collect();
    assert!(
        changes.contains(&format!("notes/{key}")),
        "onChange heard the write: {changes:?}"
    );
    assert!(statuses.length() >= 1, "onStatus heard a status");
    assert!(statuses
        .iter()
        .all(|m| m.as_string().as_deref() == Some("page")));
    off_change.call0(&JsValue::NULL).unwrap();
    off_status.call0(&JsValue::NULL).unwrap();
    let before = (seen.length(), statuses.length());
    ok(c.put("notes".into(), unique("l"), js("2"))).await;
    sleep(50).await;
    assert_eq!(
        (seen.length(), statuses.length()),
        before,
        "nothing after unsubscribing"
    );
}

#[wasm_bindgen_test]
async fn export_and_a_dry_run_restore_of_it_change_nothing() {
    let c = page_client(NO_SERVER).await;
    let key = unique("x");
    ok(c.put("notes".into(), key.clone(), js(r#"{"t":1}"#))).await;
    for format in ["json", "yaml"] {
        let text = ok(c.export_snapshot(format.into(), None))
            .await
            .as_string()
            .expect("text");
        assert!(text.contains("rangersync-snapshot"));
        let is_json = text.trim_start().starts_with('{');
        assert_eq!(
            is_json,
            format == "json",
            "{format} export is {format}: {text:.80}"
        );
        let report = ok(c.restore(text, Some(js(r#"{"dryRun":true}"#)))).await;
        assert_eq!(get(&report, "dry_run"), JsValue::TRUE);
        assert_eq!(js_sys::Array::from(&get(&report, "refused")).length(), 0);
    }
}

#[wasm_bindgen_test]
async fn with_no_worker_script_the_client_falls_back_to_page_mode() {
    let options = js(&format!(
        r#"{{"swUrl":"/no-such-worker.js","serverUrl":"{NO_SERVER}","controllerTimeoutMs":2000}}"#
    ));
    let c = SyncClient::register(Some(options))
        .await
        .expect("falls back instead of failing");
    assert_eq!(c.mode(), "page");
    let status = ok(c.status()).await;
    assert_eq!(get(&status, "mode").as_string().as_deref(), Some("page"));
}

/// Needs `RANGERSYNC_TEST_SERVER` at compile time; fails without it (never skips).
#[wasm_bindgen_test]
async fn in_page_mode_a_write_reaches_the_server_exactly_once() {
    let Some(server) = option_env!("RANGERSYNC_TEST_SERVER") else {
        panic!(
            "RANGERSYNC_TEST_SERVER was not set when these tests were compiled: start \
             `rangersync-server --listen 127.0.0.1:0 --db <tmp> --allow-origin '*' --test-endpoints` \
             and build the tests with RANGERSYNC_TEST_SERVER=<its URL> (cargo xtask test does)"
        );
    };
    let server = server.trim_end_matches('/');
    let c = page_client(server).await;
    let key = unique("srv");
    ok(c.put(
        "notes".into(),
        key.clone(),
        js(r#"{"title":"to the server"}"#),
    ))
    .await;
    let mut status = ok(c.flush()).await;
    for _ in 0..40 {
        if get(&status, "pending").as_f64() == Some(0.0) {
            break;
        }
        sleep(250).await;
        status = ok(c.flush()).await;
    }
    assert_eq!(
        get(&status, "pending").as_f64(),
        Some(0.0),
        "outbox drained: {:?}",
        JSON::stringify(&status)
    );
    let item = find(&ok(c.list("notes".into())).await, &key).unwrap();
    assert_eq!(get(&item, "pending"), JsValue::FALSE, "acknowledged");
    // Flushing again sends nothing more.
    ok(c.flush()).await;
    let snapshot = ok(c.export_snapshot("json".into(), None))
        .await
        .as_string()
        .unwrap();
    let client_id = get(&js(&snapshot), "client_id")
        .as_string()
        .expect("client_id");
    let url = format!("{server}/api/test/mutations?client_id={client_id}");
    let window = web_sys::window().unwrap();
    let fetch: Function = get(&window, "fetch").unchecked_into();
    let response = JsFuture::from(Promise::from(fetch.call1(&window, &url.into()).unwrap()))
        .await
        .unwrap();
    let json: Function = get(&response, "json").unchecked_into();
    let body = JsFuture::from(Promise::from(json.call0(&response).unwrap()))
        .await
        .unwrap();
    let rows = js_sys::Array::from(&get(&body, "mutations"));
    let mine = rows
        .iter()
        .filter(|r| get(r, "key").as_string().as_deref() == Some(key.as_str()))
        .count();
    assert_eq!(mine, 1, "the server recorded the write exactly once");
}

#[wasm_bindgen_test]
async fn page_mode_tabs_hear_each_others_writes() {
    // Two clients in one page stand in for two tabs: they share only the BroadcastChannel.
    let a = page_client(NO_SERVER).await;
    let b = page_client(NO_SERVER).await;
    let seen = js_sys::Array::new();
    let _off = b.on_change(Function::new_with_args("c, k", "this.push(c + '/' + k)").bind0(&seen));
    let key = unique("tab");
    ok(a.put("chat".into(), key.clone(), js(r#"{"text":"hello"}"#))).await;
    sleep(100).await;
    let heard: Vec<String> = seen.iter().filter_map(|v| v.as_string()).collect();
    assert!(
        heard.contains(&format!("chat/{key}")),
        "the other tab heard it: {heard:?}"
    );
    let value = ok(b.get("chat".into(), key)).await;
    assert_eq!(get(&value, "text").as_string().as_deref(), Some("hello"));
}

#[wasm_bindgen_test]
async fn a_closed_client_rejects_calls_with_worker_unavailable() {
    let c = page_client(NO_SERVER).await;
    c.close();
    assert_eq!(error_code(c.status()).await, "worker_unavailable");
    assert_eq!(
        error_code(c.put("notes".into(), "k".into(), js("1"))).await,
        "worker_unavailable"
    );
}

#[wasm_bindgen_test]
async fn restoring_a_yaml_export_brings_back_the_exported_values() {
    let c = page_client(NO_SERVER).await;
    let key = unique("y");
    ok(c.put(
        "notes".into(),
        key.clone(),
        js(r#"{"title":"original","n":1.5}"#),
    ))
    .await;
    let yaml = ok(c.export_snapshot("yaml".into(), None))
        .await
        .as_string()
        .unwrap();
    ok(c.put("notes".into(), key.clone(), js(r#"{"title":"changed"}"#))).await;
    let report = ok(c.restore(yaml, None)).await;
    assert_eq!(get(&report, "dry_run"), JsValue::FALSE);
    let replaced = js_sys::Array::from(&get(&report, "replaced"));
    assert!(replaced
        .iter()
        .any(|r| get(&r, "key").as_string().as_deref() == Some(key.as_str())));
    let value = ok(c.get("notes".into(), key)).await;
    assert_eq!(
        get(&value, "title").as_string().as_deref(),
        Some("original")
    );
    assert_eq!(get(&value, "n").as_f64(), Some(1.5));
}
