//! `<rangersync-status>` in Firefox ESR (geckodriver): the scenario Chromium runs
//! (`tests/src/status_element.rs`), in a browser without Background Sync.

use rangersync_e2e::firefox::Firefox;
use rangersync_e2e::status_element::{states_nudges_and_buttons, www_with_the_element, OPTIONS};
use rangersync_e2e::{bare_page_url, serial, Result, TestServer};

#[tokio::test]
async fn firefox_the_status_element_shows_each_state_nudges_and_its_buttons_retry_and_discard_dead_letters(
) -> Result {
    let _serial = serial().await;
    let www = www_with_the_element()?;
    let mut server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let firefox = Firefox::launch().await?;
    firefox.goto(&bare_page_url(&server)).await?;
    firefox.register_client(OPTIONS).await?;
    states_nudges_and_buttons(&*firefox, &mut server).await?;
    firefox.close().await
}
