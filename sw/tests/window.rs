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
