//! Fast resume with a page open: after a long outage, a visible page notices the server is
//! back within seconds, however long the backoff had grown.

use std::time::{Duration, Instant};

use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, client_id_of, eval, register_client, serial,
    wait_for_controller, wait_until, Result, TestBrowser, TestServer,
};

#[tokio::test]
async fn a_visible_page_notices_a_server_back_from_a_long_outage_within_ten_seconds() -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    // Backoff up to ten minutes: what a long outage grows it to.
    let mode = register_client(
        &page,
        "{ retry: { baseDelayMs: 600000, maxDelayMs: 600000, maxAttempts: 25 } }",
    )
    .await?;
    assert_eq!(mode, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;

    server.stop().await;
    eval(
        &page,
        "client.put('notes', 'n1', { t: 'during the outage' })",
    )
    .await?;
    // Until the next retry is far away (full jitter may draw a short one: fail again).
    let far = wait_until(
        "the next retry is minutes away",
        Duration::from_secs(60),
        || async {
            let status = eval(&page, "client.flush()").await?;
            let now = eval(&page, "Date.now()").await?.as_f64().unwrap_or(0.0);
            let at = status["next_retry_at"].as_f64().unwrap_or(0.0);
            if status["state"] == "offline" && at - now > 60_000.0 {
                return Ok(Some(at - now));
            }
            Ok(None)
        },
    )
    .await?;
    println!("the next retry was {} s away", (far / 1000.0).round());
    tokio::time::sleep(Duration::from_secs(2)).await;

    server.restart().await?;
    let back = Instant::now();
    wait_until(
        "the write is delivered",
        Duration::from_secs(15),
        || async {
            let recorded = server.mutations_of(&client_id).await?;
            Ok((!recorded.is_empty()).then_some(()))
        },
    )
    .await?;
    let took = back.elapsed();
    println!(
        "delivered {} ms after the server came back",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(12),
        "noticed within ten seconds (with slack for a loaded machine): {took:?}"
    );
    assert_seqs_applied_once(&server.mutations_of(&client_id).await?, 1);
    browser.close().await?;
    Ok(())
}
