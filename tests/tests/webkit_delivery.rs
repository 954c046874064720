//! Delivery in WebKitGTK (Safari's engine; MiniBrowser through WebKitWebDriver under a virtual
//! display): a browser with service workers and no Background Sync, run through the same
//! scenarios as Firefox ESR (`tests/src/driver_scenarios.rs`): a live worker after an outage, a
//! next visit after the tab closed, an idle page through a 45 s outage, RangerPlex's captured
//! calls replayed after the tab closed, a poison request dead-lettered then retried and
//! discarded, and an outage in private browsing. Not here: a browser restart (MiniBrowser keeps
//! website data for one session only) and a full quota (nothing here can lower WebKit's).

use std::time::Duration;

use rangersync_e2e::driver_scenarios::{
    a_request_the_api_always_fails_is_dead_lettered_then_retried_and_discarded,
    an_idle_page_delivers_after_an_outage_past_the_idle_timeout,
    captured_calls_are_replayed_in_order_once_after_the_tab_closes,
    live_worker_delivers_after_an_outage, next_visit_delivers_after_the_tab_closed,
};
use rangersync_e2e::webkit::WebKit;
use rangersync_e2e::{serial, Result};

#[tokio::test]
async fn webkit_a_write_made_while_the_server_is_down_arrives_exactly_once_from_the_live_worker(
) -> Result {
    let _serial = serial().await;
    let webkit = WebKit::launch().await?;
    live_worker_delivers_after_an_outage(&webkit, webkit.version(), || webkit.log_tail()).await?;
    webkit.close().await
}

#[tokio::test]
async fn webkit_after_the_tab_closes_a_write_arrives_exactly_once_when_the_worker_starts_on_the_next_visit(
) -> Result {
    let _serial = serial().await;
    let webkit = WebKit::launch().await?;
    next_visit_delivers_after_the_tab_closed(&webkit, webkit.version()).await?;
    webkit.close().await
}

#[tokio::test]
async fn webkit_captured_calls_to_an_api_that_is_down_are_queued_and_replayed_in_order_once_after_the_tab_closes(
) -> Result {
    let _serial = serial().await;
    let webkit = WebKit::launch().await?;
    captured_calls_are_replayed_in_order_once_after_the_tab_closes(&webkit, webkit.version())
        .await?;
    webkit.close().await
}

#[tokio::test]
async fn webkit_a_request_the_api_fails_every_time_is_dead_lettered_and_the_others_arrive_then_retry_and_discard_work(
) -> Result {
    let _serial = serial().await;
    let webkit = WebKit::launch().await?;
    a_request_the_api_always_fails_is_dead_lettered_then_retried_and_discarded(
        &webkit,
        webkit.version(),
    )
    .await?;
    webkit.close().await
}

#[tokio::test]
async fn webkit_an_idle_page_delivers_once_the_server_is_back_from_a_45_s_outage() -> Result {
    let _serial = serial().await;
    let webkit = WebKit::launch().await?;
    an_idle_page_delivers_after_an_outage_past_the_idle_timeout(
        &webkit,
        webkit.version(),
        || webkit.log_tail(),
        Duration::from_secs(45),
        "not observable through WebDriver in WebKit",
    )
    .await?;
    webkit.close().await
}

#[tokio::test]
async fn webkit_in_private_browsing_a_write_made_while_the_server_is_down_arrives_exactly_once(
) -> Result {
    let _serial = serial().await;
    let webkit = WebKit::launch_private().await?;
    live_worker_delivers_after_an_outage(&webkit, webkit.version(), || webkit.log_tail()).await?;
    webkit.close().await
}
