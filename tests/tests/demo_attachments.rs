//! The demo app's attachments: an image attached to a note through its file input while the
//! server is down is shown at once, reaches the server after the browser crashed, and shows on
//! a second browser profile.

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    eval, noise_png_js, note_list, open_demo, serial, wait_until, Result, TestBrowser, TestServer,
};
use serde_json::Value;

/// The open note's attachment images: `[{ sha, width, missing }]`.
const SHOWN: &str = "[...document.querySelectorAll('#note-attachments li')].map((li) => {
    const img = li.querySelector('img');
    return { sha: img.dataset.sha256, width: img.complete ? img.naturalWidth : 0, missing: li.dataset.missing ?? null };
})";

async fn wait_for_image(page: &Page, what: &str, width: u64) -> Result<Value> {
    wait_until(what, Duration::from_secs(60), || async {
        let shown = eval(page, SHOWN).await?;
        let first = &shown[0];
        if first["width"].as_u64() == Some(width) {
            return Ok(Some(first.clone()));
        }
        Err(format!("the note shows {shown}").into())
    })
    .await
}

/// The README's picture of the demo (`docs/screenshot.png`): the second profile with the note
/// and its image, written with `RANGERSYNC_WRITE_SCREENSHOTS=1`, else it must exist.
async fn demo_screenshot(page: &Page) -> Result {
    use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
    use chromiumoxide::page::ScreenshotParams;

    let path = rangersync_e2e::workspace_root().join("docs/screenshot.png");
    if std::env::var(rangersync_e2e::status_element::WRITE_SCREENSHOTS_ENV).as_deref() != Ok("1") {
        return if path.is_file() {
            Ok(())
        } else {
            Err(format!("{} is missing", path.display()).into())
        };
    }
    // The indicator settled on Saved, the image decoded.
    wait_until(
        "the indicator says Saved",
        Duration::from_secs(30),
        || async { Ok((rangersync_e2e::demo_pill(page).await? == "Saved").then_some(())) },
    )
    .await?;
    let png = page
        .screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .full_page(true)
                .build(),
        )
        .await
        .map_err(|e| format!("screenshot of the demo: {e}"))?;
    std::fs::write(&path, png)?;
    println!("wrote {}", path.display());
    Ok(())
}

#[tokio::test]
async fn an_image_attached_in_the_demo_offline_survives_a_browser_crash_and_shows_on_a_second_profile(
) -> Result {
    let _serial = serial().await;
    let mut server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = open_demo(&browser, &server.url()).await?;
    eval(&page, "document.getElementById('new-note').click(); true").await?;
    wait_until("the editor opens", Duration::from_secs(30), || async {
        let open = eval(&page, "!document.getElementById('editor').hidden").await?;
        Ok((open == true).then_some(()))
    })
    .await?;
    eval(
        &page,
        "const t = document.getElementById('note-title'); t.value = 'Cat picture';
         t.dispatchEvent(new Event('input')); true",
    )
    .await?;
    eval(&page, &noise_png_js(600, 400)).await?;

    server.stop().await;
    // Chosen in the file input, as a person would.
    eval(
        &page,
        "const input = document.getElementById('attach-file');
         const files = new DataTransfer(); files.items.add(window.image);
         input.files = files.files; input.dispatchEvent(new Event('change')); true",
    )
    .await?;
    let shown = wait_for_image(&page, "the image shows from this browser", 600).await?;
    let sha = shown["sha"].as_str().unwrap_or_default().to_owned();
    wait_until(
        "the note with its image is saved here",
        Duration::from_secs(30),
        || async {
            let s = eval(&page, "rangersync.status()").await?;
            Ok(
                (s["blob_bytes_pending"].as_u64() > Some(0) && s["pending"].as_u64() >= Some(2))
                    .then_some(()),
            )
        },
    )
    .await?;

    // The indicator's panel says how much waits.
    wait_until("the indicator counts the attachment's bytes", Duration::from_secs(30), || async {
        let pending = eval(
            &page,
            "document.getElementById('sync-status').shadowRoot.querySelector('[data-field=pending]').textContent",
        )
        .await?;
        let text = pending.as_str().unwrap_or_default().to_owned();
        if text.contains("KiB of attachments to upload") {
            return Ok(Some(()));
        }
        Err(format!("the panel's Pending reads {text:?}").into())
    })
    .await?;

    let browser = browser.kill_and_relaunch().await?;
    server.restart().await?;
    let page = open_demo(&browser, &server.url()).await?;
    wait_until(
        "the image and the note are delivered",
        Duration::from_secs(60),
        || async {
            let s = eval(&page, "rangersync.flush()").await?;
            Ok((s["pending"] == 0 && s["blob_bytes_pending"] == 0 && s["dead"] == 0).then_some(()))
        },
    )
    .await?;
    let (code, bytes) = server.get_bytes(&format!("/api/blobs/{sha}")).await?;
    assert_eq!(code, 200, "the server holds the image");
    assert!(bytes.len() > 500_000, "{} bytes", bytes.len());

    let other = TestBrowser::launch().await?;
    let second = open_demo(&other, &server.url()).await?;
    wait_until(
        "the note reaches the second profile",
        Duration::from_secs(30),
        || async {
            Ok(note_list(&second)
                .await?
                .contains("Cat picture")
                .then_some(()))
        },
    )
    .await?;
    eval(
        &second,
        "document.querySelector('#note-list button').click(); true",
    )
    .await?;
    let there = wait_for_image(&second, "the image shows on the second profile", 600).await?;
    assert_eq!(there["sha"], Value::from(sha), "{there}");
    demo_screenshot(&second).await?;
    other.close().await?;
    browser.close().await?;
    Ok(())
}
