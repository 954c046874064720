//! The demo app is served and the API answers from the page.

use rangersync_e2e::{eval, serial, Result, TestBrowser, TestServer};

#[tokio::test]
async fn the_demo_page_loads_and_health_answers() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&format!("{}/", server.url())).await?;

    let title = eval(&page, "document.title").await?;
    assert!(
        title.as_str().is_some_and(|t| !t.is_empty()),
        "the demo page has a title, got {title}"
    );
    let health = eval(&page, "fetch('/api/health').then(r => r.json())").await?;
    assert_eq!(health["status"], "ok", "health answered {health}");

    browser.close().await?;
    Ok(())
}
