//! The worker installs, activates and takes control on the first visit.

use rangersync_e2e::{
    serial, wait_for_controller, Result, ServiceWorkers, TestBrowser, TestServer,
};

#[tokio::test]
async fn a_service_worker_controls_the_page_after_first_visit() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = browser.open(&format!("{}/", server.url())).await?;

    wait_for_controller(&page).await?;
    let version = workers.activated(&server.url()).await?;
    // The demo passes `appShell`, which travels in the script's query.
    let (path, query) = version
        .script
        .split_once('?')
        .unwrap_or((&version.script, ""));
    assert!(
        path.ends_with("/sw.js") && query.starts_with("appShell="),
        "the controlling worker is /sw.js?appShell=…, got {}",
        version.script
    );

    browser.close().await?;
    Ok(())
}
