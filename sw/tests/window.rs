//! The same [`Engine`] in a window (the page-only fallback): no ServiceWorkerGlobalScope.
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use rangersync_shared::messages::{Broadcast, Request};
use rangersync_shared::status::Mode;
use rangersync_sw::{delete_database, Engine};
use serde_json::json;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn the_engine_runs_in_a_window_and_reports_page_mode() {
    let _ = delete_database("w-engine").await;
    let notify: Rc<dyn Fn(&Broadcast)> = Rc::new(|_| {});
    let engine = Engine::open_named("w-engine", Mode::Page, notify)
        .await
        .expect("opens in a window");
    let ack = engine
        .handle(Request::Put {
            collection: "notes".into(),
            key: "k".into(),
            value: json!({"a": 1}),
        })
        .await
        .unwrap();
    assert_eq!(ack["seq"], json!(1));
    let got = engine
        .handle(Request::Get {
            collection: "notes".into(),
            key: "k".into(),
        })
        .await
        .unwrap();
    assert_eq!(got["value"], json!({"a": 1}));
    let status = engine.status();
    assert_eq!(status.mode, Mode::Page);
    assert_eq!(status.pending, 1);
    engine.close();
}

#[wasm_bindgen_test]
async fn an_engine_whose_database_is_deleted_under_it_reopens_a_fresh_one_and_keeps_its_config() {
    let _ = delete_database("w-reopen").await;
    let notify: Rc<dyn Fn(&Broadcast)> = Rc::new(|_| {});
    let engine = Engine::open_named("w-reopen", Mode::Page, notify)
        .await
        .expect("opens");
    let config = rangersync_shared::messages::Config {
        capture_routes: vec!["/api/sync/*".into()],
        export_interval_ms: None,
        ..Default::default()
    };
    engine
        .handle(Request::Configure {
            config: config.clone(),
        })
        .await
        .unwrap();
    let first_id = engine.client_id().to_owned();
    assert!(!engine.is_closed());
    // Another connection deletes the database (what DevTools' "Clear storage" does): the
    // engine's connection gets `versionchange` and closes so that the deletion can go ahead.
    delete_database("w-reopen").await.expect("deleted");
    assert!(engine.is_closed(), "the engine noticed");
    let fresh = engine.reopen().await.expect("reopens");
    assert!(!fresh.is_closed());
    assert_ne!(
        fresh.client_id(),
        first_id,
        "a wiped database is a new client"
    );
    assert!(fresh.status().new_database);
    assert_eq!(fresh.config(), config, "the config in force is kept");
    let ack = fresh
        .handle(Request::Put {
            collection: "notes".into(),
            key: "after".into(),
            value: json!(1),
        })
        .await;
    // Capture only (no serverUrl): a put is refused with invalid_config, which proves the
    // kept config is in force; a status read works on the new connection.
    assert_eq!(ack.unwrap_err().code, "invalid_config");
    assert_eq!(fresh.status().pending, 0);
    fresh.close();
}
