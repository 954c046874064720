//! Delivery in WebKitGTK (Safari's engine; MiniBrowser through WebKitWebDriver under a virtual
//! display): a browser with service workers and no Background Sync, run through the same
//! scenarios as Firefox ESR (`tests/src/driver_scenarios.rs`).

use rangersync_e2e::driver_scenarios::{
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
