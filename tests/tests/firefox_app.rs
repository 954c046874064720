//! What an app builds on, in Firefox ESR (headless, through geckodriver): `client.autosave`
//! handing over what waits when the page goes, and server backups encrypted with the app's own
//! `CryptoKey` (structured-cloned to Firefox's worker beside the request's text).

use std::time::Duration;

use rangersync_e2e::firefox::Firefox;
use rangersync_e2e::{bare_page_url, serial, wait_until, Result, TestServer};

/// Opens the app's origin in the current tab and registers the client with `options`.
async fn register(firefox: &Firefox, server: &TestServer, options: &str) -> Result {
    firefox.goto(&bare_page_url(server)).await?;
    firefox.register_client(options).await
}

#[tokio::test]
async fn firefox_autosave_keeps_the_last_change_across_a_reload_and_a_closed_tab() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let firefox = Firefox::launch().await?;
    println!("browser: {}", firefox.version());
    register(&firefox, &server, "{}").await?;
    // A 10 s debounce: only the hand-over when the page goes can save these in time.
    let set = |text: &str| {
        format!("(() => {{ window.draft = client.autosave('notes', 'draft', {{ debounceMs: 10000, maxWaitMs: 10000 }}); draft.set({{ body: {text:?} }}); return true; }})()")
    };
    firefox.eval(&set("before the reload")).await?;
    register(&firefox, &server, "{}").await?;
    let value = firefox.eval("client.get('notes', 'draft')").await?;
    assert_eq!(value["body"], "before the reload", "{value}");

    let app_tab = firefox.current_tab().await?;
    firefox.eval(&set("before the tab closed")).await?;
    let other = firefox.new_tab("about:blank").await?;
    firefox.switch_to(&app_tab).await?;
    firefox.close_tab().await?;
    firefox.switch_to(&other).await?;
    register(&firefox, &server, "{}").await?;
    let value = wait_until(
        "the value typed before the tab closed is there",
        Duration::from_secs(10),
        || async {
            let value = firefox.eval("client.get('notes', 'draft')").await?;
            Ok((value["body"] == "before the tab closed").then_some(value))
        },
    )
    .await?;
    assert_eq!(value["body"], "before the tab closed");
    firefox.close().await?;
    Ok(())
}

#[tokio::test]
async fn firefox_a_backup_encrypted_with_the_apps_crypto_key_opens_with_that_key_only() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let firefox = Firefox::launch().await?;
    firefox.goto(&bare_page_url(&server)).await?;
    let import = |name: &str, byte: u8| {
        format!("crypto.subtle.importKey('raw', new Uint8Array(32).fill({byte}), 'AES-GCM', false, ['encrypt', 'decrypt']).then(k => {{ window.{name} = k; return true; }})")
    };
    firefox.eval(&import("appKey", 7)).await?;
    firefox
        .register_client("{ exportIntervalMs: 0, backupEncryption: { key: window.appKey } }")
        .await?;
    server.refuse_pushes().await?;
    firefox
        .eval("client.put('notes', 'diary', { t: 'sealed in Firefox' })")
        .await?;
    let done = firefox.eval("client.backupNow()").await?;
    let backup_id = done["backup"]["id"]
        .as_str()
        .ok_or("no backup id")?
        .to_owned();
    let stored = server.backup_text(&backup_id).await?;
    assert!(stored.contains("rangersync-sealed-snapshot"), "{stored}");
    assert!(!stored.contains("sealed in Firefox") && !stored.contains("diary"));

    firefox.eval(&import("sameKey", 7)).await?;
    firefox.eval(&import("otherKey", 8)).await?;
    let restore = |key: &str| {
        format!("client.restoreFromServer({backup_id:?}, {{ dryRun: true, key: window.{key} }}).then(r => ({{ ok: r }}), e => ({{ code: e.code }}))")
    };
    let wrong = firefox.eval(&restore("otherKey")).await?;
    assert_eq!(wrong["code"], "wrong_passphrase", "{wrong}");
    let right = firefox.eval(&restore("sameKey")).await?;
    assert!(right["ok"].is_object(), "{right}");
    firefox.close().await?;
    Ok(())
}
