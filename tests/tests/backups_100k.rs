//! A measurement, `#[ignore]`d: the worker builds a snapshot of 100,000 entities (paged reads
//! from IndexedDB, the streamed checksum) while its heap is sampled through CDP
//! (`Runtime.getHeapUsage` on the service worker target: the JS heap, and the backing stores,
//! which hold the wasm memory). Run it with
//! `cargo test -p rangersync-e2e --test backups_100k -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use rangersync_e2e::{
    eval, serial, wait_until, worker_page, Result, TestBrowser, TestServer, WorkerSession,
};
use serde_json::{json, Value};

const N: usize = 100_000;

/// `Runtime.getHeapUsage` of `origin`'s service worker, every 50 ms until `stop` fires; returns
/// the largest `usedSize` and `usedSize + backingStorageSize`, and the first sample.
async fn sample_worker_heap(
    browser: &TestBrowser,
    origin: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    started: tokio::sync::oneshot::Sender<()>,
) -> Result<(f64, f64, Value)> {
    let mut worker = WorkerSession::attach(browser, origin).await?;
    let (mut used, mut with_backing, mut first) = (0.0_f64, 0.0_f64, Value::Null);
    let mut started = Some(started);
    let mut wasm = Vec::new();
    loop {
        // Between two heap samples, read the wasm memory (it only grows: its last value is
        // its peak).
        let memory = worker
            .call(
                "Runtime.evaluate",
                json!({ "expression": "rangersync_wasm.memory_bytes()", "returnByValue": true }),
            )
            .await?;
        wasm.push(memory["result"]["value"].as_f64().unwrap_or(0.0));
        let r = worker.call("Runtime.getHeapUsage", json!({})).await?;
        let u = r["usedSize"].as_f64().unwrap_or(0.0);
        let b = r["backingStorageSize"].as_f64().unwrap_or(0.0);
        if first.is_null() {
            first = r.clone();
        }
        used = used.max(u);
        with_backing = with_backing.max(u + b);
        if let Some(s) = started.take() {
            let _ = s.send(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => break,
        }
    }
    worker.detach().await;
    let wasm_before = wasm.first().copied().unwrap_or(0.0);
    let wasm_after = wasm.last().copied().unwrap_or(0.0);
    Ok((
        used,
        with_backing,
        json!({ "first_heap": first, "wasm_memory_before": wasm_before, "wasm_memory_after": wasm_after }),
    ))
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn measure_a_worker_snapshot_of_100k_entities() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(
        &browser,
        &server,
        "{ exportIntervalMs: 0, timeoutMs: 60000 }",
    )
    .await?;
    for chunk in 0..N / 10_000 {
        eval(
            &page,
            &format!(
                "client.putMany(Array.from({{ length: 10000 }}, (_, i) => ({{ collection: 'notes',
                   key: 'note-' + ({chunk} * 10000 + i), value: {{ title: 'Note ' + i, body: 'x'.repeat(60), n: i }} }})))
                   .then(a => a.seqs.length)"
            ),
        )
        .await?;
    }
    wait_until(
        "every write is synced",
        Duration::from_secs(600),
        || async {
            let s = eval(&page, "client.status()").await?;
            Ok((s["pending"] == 0 && s["state"] == "idle").then_some(()))
        },
    )
    .await?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (started, ready) = tokio::sync::oneshot::channel();
    let origin = server.url();
    eprintln!("synced; exporting");
    // A message wakes the worker (it may have been stopped while idle) before attaching.
    eval(&page, "client.status()").await?;
    let heap = sample_worker_heap(&browser, &origin, stopped, started);
    let export = async {
        let _ = ready.await;
        let t = Instant::now();
        let size = eval(&page, "client.exportSnapshot('json').then(t => t.length)").await;
        let ms = t.elapsed().as_millis();
        let _ = stop.send(true);
        (size, ms)
    };
    let (heap, (size, ms)) = futures::join!(heap, export);
    let (used, with_backing, first) = heap?;
    let size = size?;
    println!(
        "worker snapshot of {N} entities: {ms} ms (page → worker → page), {:.1} MiB of JSON; \
         worker heap peak: JS {:.1} MiB, JS + backing stores {:.1} MiB; \
         wasm memory (its peak) and the first heap sample: {first}",
        size.as_f64().unwrap_or(0.0) / 1048576.0,
        used / 1048576.0,
        with_backing / 1048576.0
    );
    browser.close().await?;
    Ok(())
}
