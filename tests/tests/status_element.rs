//! `<rangersync-status>` (the package's `status-element.js`) in Chromium, on a page whose client
//! runs in worker mode against the real server: each state it shows (saved, offline with
//! pending writes, config error with its nudge, a failed backup's nudge, dead letters), each
//! button (dismiss, retry, discard), and the page-mode note. The scenario is
//! `tests/src/status_element.rs`; Firefox runs it too (`firefox_status_element.rs`).

use rangersync_e2e::status_element::{
    show_element, states_nudges_and_buttons, until_shown, www_with_the_element, OPTIONS,
};
use rangersync_e2e::{
    bare_page_url, register_client, serial, wait_for_controller, Result, TestBrowser, TestServer,
};

#[tokio::test]
async fn the_status_element_shows_each_state_nudges_and_its_buttons_retry_and_discard_dead_letters(
) -> Result {
    let _serial = serial().await;
    let www = www_with_the_element()?;
    let mut server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, OPTIONS).await?, "worker");
    wait_for_controller(&page).await?;
    states_nudges_and_buttons(&page, &mut server).await?;

    // Page mode: the note says so, and why.
    let other = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(&other, "{ forcePageMode: true, exportIntervalMs: 0 }").await?,
        "page"
    );
    show_element(&other).await?;
    let page_mode = until_shown(&other, "the page-mode note", |s| s["mode"].is_string()).await?;
    assert!(
        page_mode["mode"]
            .as_str()
            .is_some_and(|m| m.contains("only while a page is open")),
        "{page_mode}"
    );
    browser.close().await?;
    Ok(())
}
