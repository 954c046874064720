//! Attachments in Firefox ESR (geckodriver), a browser without Background Sync: an image
//! attached while the server is down is uploaded after the browser was killed and restarted,
//! and a second profile reads the same bytes back with `getBlob`.

use std::time::Duration;

use rangersync_e2e::firefox::Firefox;
use rangersync_e2e::{bare_page_url, noise_png_js, serial, wait_until, Result, TestServer};
use serde_json::Value;

/// `sha256(blob)` in the page, hex.
const PAGE_SHA256: &str = "window.sha256 = async (blob) => {
    const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}, true";

#[tokio::test]
async fn firefox_an_image_attached_offline_is_uploaded_after_a_browser_kill_and_read_back_on_a_second_profile(
) -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let firefox = Firefox::launch().await?;
    firefox.goto(&bare_page_url(&server)).await?;
    firefox.register_client("{}").await?;
    // 700×500: about 1.4 MB, two upload chunks.
    let size = firefox.eval(&noise_png_js(700, 500)).await?;
    firefox.eval(PAGE_SHA256).await?;

    server.stop().await;
    let reference = firefox
        .eval(
            "client.putBlob(window.image).then(async (ref) => {
                await client.put('notes', 'n1', { title: 'A cat', attachments: [ref] });
                return ref; })",
        )
        .await?;
    let sha = reference["$blob"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        firefox.eval("sha256(window.image)").await?,
        Value::from(sha.clone())
    );
    assert_eq!(
        firefox
            .eval("client.status().then((s) => s.blob_bytes_pending)")
            .await?,
        size
    );

    let firefox = firefox.kill_and_restart().await?;
    server.restart().await?;
    firefox.goto(&bare_page_url(&server)).await?;
    firefox.register_client("{}").await?;
    wait_until(
        "the image and its note are delivered",
        Duration::from_secs(60),
        || async {
            let s = firefox.eval("client.flush()").await?;
            Ok((s["pending"] == 0 && s["blob_bytes_pending"] == 0).then_some(()))
        },
    )
    .await?;
    let (code, bytes) = server.get_bytes(&format!("/api/blobs/{sha}")).await?;
    assert_eq!((code, Value::from(bytes.len())), (200, size));

    let second = Firefox::launch().await?;
    second.goto(&bare_page_url(&server)).await?;
    second.register_client("{}").await?;
    second.eval(PAGE_SHA256).await?;
    let read = wait_until("the second profile reads the image", Duration::from_secs(30), || async {
        let got = second
            .eval(
                "client.flush().then(() => client.get('notes', 'n1')).then((n) =>
                    n ? client.getBlob(n.attachments[0]).then(async (b) => ({ sha: await sha256(b), type: b.type })) : null)",
            )
            .await?;
        Ok((!got.is_null()).then_some(got))
    })
    .await?;
    assert_eq!(read["sha"], Value::from(sha), "{read}");
    assert_eq!(read["type"], "image/png");
    second.close().await?;
    firefox.close().await
}
