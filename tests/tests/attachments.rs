//! Attachments (`putBlob` / `getBlob`) in Chromium against the real server: an image attached
//! to a note while the server is down reaches it after a crash of the browser, and shows on a
//! second profile; bad input is refused with typed errors.

use std::time::Duration;

use rangersync_e2e::{
    eval, noise_png_js, serial, wait_until, worker_page, Result, TestBrowser, TestServer,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `sha256(blob)` in the page, hex.
const PAGE_SHA256: &str = r#"window.sha256 = async (blob) => {
    const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}; true"#;

async fn status(page: &chromiumoxide::Page) -> Result<Value> {
    eval(page, "client.status()").await
}

#[tokio::test]
async fn an_image_attached_to_a_note_offline_is_delivered_after_a_browser_crash_and_shown_on_a_second_profile(
) -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(&browser, &server, "{}").await?;
    // 1000×700: about 2.8 MB, three upload chunks.
    let size = eval(&page, &noise_png_js(1000, 700))
        .await?
        .as_u64()
        .unwrap_or(0);
    assert!(
        size > 2 * 1024 * 1024,
        "the image spans three chunks: {size} bytes"
    );
    eval(&page, PAGE_SHA256).await?;

    server.stop().await;
    let reference = eval(
        &page,
        "(async () => { const ref = await client.putBlob(window.image);
            await client.put('notes', 'n1', { title: 'A cat', attachments: [ref] });
            return ref; })()",
    )
    .await?;
    let blob = &reference["$blob"];
    let sha256 = blob["sha256"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        eval(&page, "sha256(window.image)").await?,
        Value::from(sha256.clone()),
        "the reference names the bytes' SHA-256: {reference}"
    );
    assert_eq!(blob["size"], size);
    assert_eq!(blob["type"], "image/png");
    assert_eq!(blob["name"], "cat.png");
    let waiting = status(&page).await?;
    assert_eq!(waiting["blob_bytes_pending"], size, "{waiting}");
    assert_eq!(
        waiting["pending"], 2,
        "the upload and the note wait: {waiting}"
    );
    // This device answers getBlob at once, with no server.
    assert_eq!(
        eval(
            &page,
            "client.get('notes', 'n1').then(n => client.getBlob(n.attachments[0])).then(sha256)"
        )
        .await?,
        Value::from(sha256.clone())
    );

    // The browser dies with the upload queued; it comes back, and so does the server.
    let browser = browser.kill_and_relaunch().await?;
    server.restart().await?;
    let page = worker_page(&browser, &server, "{}").await?;
    let delivered = wait_until(
        "the blob and the note are delivered",
        Duration::from_secs(60),
        || async {
            let s = status(&page).await?;
            Ok((s["pending"] == 0 && s["blob_bytes_pending"] == 0).then_some(s))
        },
    )
    .await?;
    assert_eq!(delivered["dead"], 0, "{delivered}");
    let (code, bytes) = server.get_bytes(&format!("/api/blobs/{sha256}")).await?;
    assert_eq!(code, 200);
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(
        hex(&Sha256::digest(&bytes)),
        sha256,
        "the server holds the same bytes"
    );

    // A second profile: the note comes with the pull, its image from the server.
    let other = TestBrowser::launch().await?;
    let second = worker_page(&other, &server, "{}").await?;
    eval(&second, PAGE_SHA256).await?;
    wait_until(
        "the note reaches the second profile",
        Duration::from_secs(30),
        || async {
            let n = eval(
                &second,
                "client.flush().then(() => client.get('notes', 'n1'))",
            )
            .await?;
            Ok((n["title"] == "A cat").then_some(()))
        },
    )
    .await?;
    let shown = eval(
        &second,
        "(async () => {
            const note = await client.get('notes', 'n1');
            const blob = await client.getBlob(note.attachments[0]);
            const img = new Image();
            img.src = URL.createObjectURL(blob);
            await img.decode();
            return { sha: await sha256(blob), type: blob.type, width: img.naturalWidth, height: img.naturalHeight };
        })()",
    )
    .await?;
    assert_eq!(shown["sha"], Value::from(sha256.clone()), "{shown}");
    assert_eq!(shown["type"], "image/png");
    assert_eq!(
        (shown["width"].as_u64(), shown["height"].as_u64()),
        (Some(1000), Some(700))
    );
    // Kept there now: shown again with the server down.
    server.stop().await;
    assert_eq!(
        eval(
            &second,
            "client.get('notes', 'n1').then(n => client.getBlob(n.attachments[0])).then(sha256)"
        )
        .await?,
        Value::from(sha256)
    );
    other.close().await?;
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn an_export_with_include_blobs_brings_an_attachment_back_on_a_device_that_never_had_it(
) -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(&browser, &server, "{}").await?;
    let exported = eval(
        &page,
        "(async () => {
            const ref = await client.putBlob(new File(['a pasted note'], 'n.txt', { type: 'text/plain' }));
            await client.put('notes', 'n1', { attachments: [ref] });
            const withBlobs = JSON.parse(await client.exportSnapshot('json', { includeBlobs: true }));
            const without = JSON.parse(await client.exportSnapshot('json'));
            return { text: JSON.stringify(withBlobs), blobs: withBlobs.blobs, without: without.blobs ?? null };
        })()",
    )
    .await?;
    assert_eq!(
        exported["without"],
        Value::Null,
        "references only unless asked"
    );
    assert_eq!(exported["blobs"][0]["size"], 13, "{exported}");
    assert_eq!(exported["blobs"][0]["type"], "text/plain");
    let text = exported["text"].as_str().unwrap_or_default().to_owned();

    let other = TestBrowser::launch().await?;
    let second = worker_page(&other, &server, "{}").await?;
    server.stop().await;
    let read = "client.get('notes', 'n1').then((n) => client.getBlob(n.attachments[0])).then((b) => b.text(), (e) => e.code)";
    let dry = eval(
        &second,
        &format!(
            "client.restore({}, {{ dryRun: true }})",
            Value::from(text.clone())
        ),
    )
    .await?;
    assert_eq!(dry["blobs_restored"], 1, "{dry}");
    let before = eval(
        &second,
        &format!(
            "client.restore({}, {{ dryRun: true }}).then(() => {read})",
            Value::from(text.clone())
        ),
    )
    .await?;
    assert_ne!(before, "a pasted note", "a dry run puts nothing back");
    let real = eval(&second, &format!("client.restore({})", Value::from(text))).await?;
    assert_eq!(real["blobs_restored"], 1, "{real}");
    assert_eq!(
        eval(&second, read).await?,
        "a pasted note",
        "offline, from the snapshot's bytes"
    );
    let waiting = status(&second).await?;
    assert_eq!(
        waiting["blob_bytes_pending"], 13,
        "its upload is queued: {waiting}"
    );
    other.close().await?;
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_snapshot_whose_blob_bytes_do_not_match_is_refused_and_changes_nothing() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(&browser, &server, "{}").await?;
    let refused = eval(
        &page,
        "(async () => {
            const ref = await client.putBlob(new Blob(['abc']));
            await client.put('notes', 'n1', { attachments: [ref] });
            const doc = JSON.parse(await client.exportSnapshot('json', { includeBlobs: true }));
            doc.blobs[0].data = btoa('abd');
            await client.delete('notes', 'n1');
            const code = await client.restore(JSON.stringify(doc)).then(() => 'restored', (e) => e.code);
            return { code, note: (await client.get('notes', 'n1')) ?? null };
        })()",
    )
    .await?;
    // The checksum covers the blob copies: an edited one fails it before anything is read.
    assert_eq!(refused["code"], "checksum_mismatch", "{refused}");
    assert_eq!(
        refused["note"],
        Value::Null,
        "nothing was restored: {refused}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn put_blob_and_get_blob_refuse_bad_input_with_typed_errors() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = worker_page(&browser, &server, "{}").await?;
    let codes = eval(
        &page,
        "(async () => {
            const code = (p) => p.then(() => 'resolved', (e) => e.code);
            return {
                not_a_blob: await code(client.putBlob('text')),
                bad_ref: await code(client.getBlob({ $blob: { sha256: 'xyz', size: 1 } })),
                unknown: await code(client.getBlob({ $blob: { sha256: 'ab'.repeat(32), size: 1, type: '' } })),
                pending: (await client.status()).pending,
            };
        })()",
    )
    .await?;
    assert_eq!(codes["not_a_blob"], "invalid_blob", "{codes}");
    assert_eq!(codes["bad_ref"], "invalid_blob", "{codes}");
    assert_eq!(codes["unknown"], "blob_not_found", "{codes}");
    assert_eq!(codes["pending"], 0, "nothing was queued: {codes}");
    browser.close().await?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
