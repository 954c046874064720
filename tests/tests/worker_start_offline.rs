//! A worker started while the server is down still runs: `sw.js` keeps a copy of its wasm in
//! Cache Storage, and a failed load is retried by the next event instead of leaving the worker
//! answering `worker_unavailable` until the browser stops it.

use std::time::Duration;

use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, client_id_of, eval, register_client, serial,
    wait_for_controller, wait_until, Result, ServiceWorkers, TestBrowser, TestServer,
};

#[tokio::test]
async fn a_worker_started_while_the_server_is_down_runs_from_its_cached_wasm() -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    eval(&page, "client.put('notes', 'n1', { title: 'online' })").await?;
    eval(&page, "client.flush()").await?;
    wait_until(
        "the first write is delivered",
        Duration::from_secs(30),
        || async { Ok((server.mutations_of(&client_id).await?.len() == 1).then_some(())) },
    )
    .await?;

    // The server goes down, and the worker is stopped: the next message starts a new worker,
    // which cannot fetch its wasm from the network.
    server.stop().await;
    let registration = workers.registration(&server.url()).await?;
    workers.stop_until_stopped(&registration.id).await?;

    let ack = eval(
        &page,
        "client.put('notes', 'n2', { title: 'offline' })
           .then(a => a.seq, e => 'error ' + e.code + ': ' + e.message)",
    )
    .await?;
    assert_eq!(ack, 2, "the restarted worker took the write");
    let mode = eval(&page, "client.status().then(s => s.mode)").await?;
    assert_eq!(
        mode, "worker",
        "the write went through the worker, not the page fallback"
    );

    // Back up: the same worker delivers.
    server.restart().await?;
    let recorded = wait_until(
        "the offline write is delivered",
        Duration::from_secs(60),
        || async {
            eval(&page, "client.flush()").await?;
            let recorded = server.mutations_of(&client_id).await?;
            Ok((recorded.len() >= 2).then_some(recorded))
        },
    )
    .await?;
    assert_seqs_applied_once(&recorded, 2);

    browser.close().await?;
    Ok(())
}
