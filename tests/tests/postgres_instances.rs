//! The offline → online promise when the API runs as two stateless instances on one
//! PostgreSQL database: a write made while the instance the page talks to is down is
//! delivered through it once it is back, exactly once, and the other instance serves it.

use std::time::Duration;

use rangersync_e2e::{
    bare_page_url, eval, register_client, serial, wait_for_controller, wait_until, Result,
    ServiceWorkers, TestBrowser, TestServer, SYNC_TAG,
};
use rangersync_server::{test_postgres, DbLocation};
use serde_json::Value;

#[tokio::test]
async fn a_write_made_offline_reaches_one_postgres_instance_and_is_served_once_by_the_other(
) -> Result {
    let _serial = serial().await;
    let db = test_postgres::fresh_database().await?;
    let mut front = TestServer::start_on(DbLocation::Postgres(db.clone())).await?;
    let other = TestServer::start_on(DbLocation::Postgres(db)).await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;

    // A page without the demo app: the demo registers its own worker URL (with its app shell),
    // and two scripts for one scope replace each other, failing a write in flight.
    let page = browser.open(&bare_page_url(&front)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    front.stop().await;
    let ack = eval(
        &page,
        "client.put('notes', 'pg1', { title: 'via postgres' })",
    )
    .await?;
    assert!(ack["seq"].is_u64(), "acknowledged offline: {ack}");
    let client_id = eval(
        &page,
        "client.exportSnapshot('json').then(s => JSON.parse(s).client_id)",
    )
    .await?;
    let client_id = client_id.as_str().ok_or("no client_id")?.to_string();
    browser.close_tab(page).await?;

    front.restart().await?;
    workers.dispatch_sync(&front.url(), SYNC_TAG, false).await?;
    let is_pg1 = |c: &&Value| c["collection"] == "notes" && c["key"] == "pg1";
    let arrived = wait_until(
        "the write is served by the other instance",
        Duration::from_secs(60),
        || async {
            let changes = other.pull_all().await?;
            Ok(changes.iter().find(is_pg1).cloned())
        },
    )
    .await?;
    assert_eq!(arrived["value"]["title"], "via postgres");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let recorded = other.mutations_of(&client_id).await?;
    let of_pg1: Vec<&Value> = recorded.iter().filter(is_pg1).collect();
    assert_eq!(of_pg1.len(), 1, "recorded once: {recorded:?}");
    assert_eq!(of_pg1[0]["seq"], ack["seq"]);
    assert_eq!(of_pg1[0]["status"], "applied");
    assert_eq!(
        front.pull_all().await?,
        other.pull_all().await?,
        "both instances serve the same feed"
    );
    browser.close().await?;
    front.stop().await;
    Ok(())
}
