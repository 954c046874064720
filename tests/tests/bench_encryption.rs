//! The encrypted-backup half of `cargo xtask bench --encryption`: what `backupEncryption`
//! costs on a backup of 10,000 entities (`RANGERSYNC_BENCH_ENTITIES`), in headless Chromium
//! against the reference server. No peer offers encrypted backups, so the comparison is the
//! same backup without encryption, measured in the same run.
//!
//! `#[ignore]`d: CI never runs it. It measures, from the page, the time `register` takes with
//! and without the passphrase (the PBKDF2 derivation), and `await client.backupNow()` (export,
//! AES-GCM, upload, the server's check) three times each, and the size the server stores. It
//! writes JSON to `$RANGERSYNC_BENCH_RESULTS`; it asserts nothing about speed.

use std::path::PathBuf;

use chromiumoxide::Page;
use rangersync_e2e::{
    bare_page_url, browser_cdp, eval, register_client_js, wait_for_controller, workspace_root,
    Result, TestBrowser, TestServer,
};
use serde_json::{json, Value};

const RUNS: usize = 3;

fn entities() -> usize {
    std::env::var("RANGERSYNC_BENCH_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Register with `options`, fill `n` entities, back up `RUNS` times: the timings.
async fn measure(page: &Page, server: &TestServer, options: &str, n: usize) -> Result<Value> {
    let register_ms = eval(
        page,
        &format!(
            "(async () => {{ const t0 = performance.now(); await {}; return performance.now() - t0; }})()",
            register_client_js(options)
        ),
    )
    .await?;
    wait_for_controller(page).await?;
    eval(
        page,
        &format!(
            "(async () => {{
                for (let b = 0; b < {n} / 100; b++) {{
                    const items = [];
                    for (let i = b * 100; i < (b + 1) * 100; i++) {{
                        items.push({{ collection: 'notes', key: 'n' + i, value: {{ title: 'note ' + i, body: 'x'.repeat(200) }} }});
                    }}
                    await client.putMany(items);
                }}
                return true;
            }})()"
        ),
    )
    .await?;
    let mut backups = Vec::new();
    for _ in 0..RUNS {
        let run = eval(
            page,
            "(async () => { const t0 = performance.now(); const r = await client.backupNow(); return { ms: performance.now() - t0, id: r.backup.id }; })()",
        )
        .await?;
        let id = run["id"].as_str().unwrap_or_default().to_owned();
        let stored = reqwest::get(format!("{}/api/backups/{id}", server.url()))
            .await?
            .text()
            .await?;
        backups.push(json!({ "ms": run["ms"], "bytes": stored.len() }));
    }
    Ok(json!({ "register_ms": register_ms, "backups": backups }))
}

#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench --encryption"]
async fn bench_backup_encryption() -> Result {
    let n = entities();
    let browser = TestBrowser::launch().await?;
    let version = browser_cdp(browser.browser(), "Browser.getVersion", json!({})).await?;
    let mut results = json!({ "browser": version["product"], "entities": n, "runs": RUNS });
    for (name, options) in [
        ("plain", "{ exportIntervalMs: 0 }"),
        (
            "encrypted",
            "{ exportIntervalMs: 0, backupEncryption: { passphrase: 'a benchmark passphrase' } }",
        ),
    ] {
        // A server (an origin, a database) per case.
        let server = TestServer::start().await?;
        let page = browser.open(&bare_page_url(&server)).await?;
        results[name] = match measure(&page, &server, options, n).await {
            Ok(v) => v,
            Err(e) => json!({ "error": e.to_string() }),
        };
        page.close().await?;
    }
    browser.close().await?;
    let out = std::env::var_os("RANGERSYNC_BENCH_RESULTS").map_or_else(
        || {
            workspace_root()
                .join("target")
                .join("bench-encryption.json")
        },
        PathBuf::from,
    );
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
    println!("bench: results in {}", out.display());
    Ok(())
}
