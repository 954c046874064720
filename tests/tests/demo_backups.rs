//! The demo's backup controls in Chromium: Export JSON / Export YAML download files named with
//! the date (CDP download events) that verify and restore through "Restore…"; "Back up now"
//! puts a backup on the server, which the "Backups on the server" list shows and previews with
//! a dry run; after "Clear site data" the demo offers the newest backup and restores it.

use std::path::Path;
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::{
    DownloadProgressState, EventDownloadProgress, EventDownloadWillBegin,
};
use chromiumoxide::Page;
use futures::StreamExt;
use rangersync_e2e::{
    browser_cdp, cdp, demo_indicator, eval, note_list, open_demo, serial, wait_until, Result,
    TestBrowser, TestServer,
};
use serde_json::json;

/// Click `button_id` in the demo and wait for the download it starts: `(suggested file name,
/// the file's text)`.
async fn download(
    browser: &TestBrowser,
    page: &Page,
    dir: &Path,
    button_id: &str,
) -> Result<(String, String)> {
    let mut begins = browser
        .browser()
        .event_listener::<EventDownloadWillBegin>()
        .await?;
    let mut progress = browser
        .browser()
        .event_listener::<EventDownloadProgress>()
        .await?;
    eval(
        page,
        &format!("document.getElementById('{button_id}').click(); true"),
    )
    .await?;
    let begin = tokio::time::timeout(Duration::from_secs(30), begins.next())
        .await
        .map_err(|_| format!("no download began after clicking #{button_id}"))?
        .ok_or("the event stream ended")?;
    let name = begin.suggested_filename.clone();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(p) = progress.next().await {
            if p.guid == begin.guid && p.state == DownloadProgressState::Completed {
                return Ok(());
            }
            if p.guid == begin.guid && p.state == DownloadProgressState::Canceled {
                return Err(format!("the download of {name} was canceled"));
            }
        }
        Err("the event stream ended".to_owned())
    })
    .await
    .map_err(|_| format!("{name} did not complete"))??;
    let text = std::fs::read_to_string(dir.join(&name))
        .map_err(|e| format!("reading the downloaded {name}: {e}"))?;
    Ok((name, text))
}

/// Wait for the restore dialog and return its title and report, as text.
async fn restore_dialog_text(page: &Page) -> Result<String> {
    let text = wait_until(
        "the dry-run report is shown",
        Duration::from_secs(30),
        || async {
            let open = eval(page, "document.getElementById('restore-dialog').open").await?;
            if open != true {
                return Ok(None);
            }
            let text = eval(
                page,
                "document.getElementById('restore-file-name').textContent + ' | ' + document.getElementById('restore-report').textContent",
            )
            .await?;
            Ok(Some(text))
        },
    )
    .await?;
    Ok(text.as_str().unwrap_or_default().to_owned())
}

/// Press the restore dialog's Apply, and wait until the note list shows `title`.
async fn apply_restore_until_listed(page: &Page, title: &str) -> Result {
    eval(
        page,
        "document.getElementById('restore-apply').click(); true",
    )
    .await?;
    wait_until(
        &format!("the restored note {title:?} is listed"),
        Duration::from_secs(30),
        || async { Ok(note_list(page).await?.contains(title).then_some(())) },
    )
    .await
}

#[tokio::test]
async fn the_demo_downloads_dated_json_and_yaml_exports_that_restore_and_lists_server_backups_with_a_dry_run(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = open_demo(&browser, &server.url()).await?;
    eval(
        &page,
        "window.rangersync.put('notes', 'dl', { title: 'Downloaded', body: 'kept' })",
    )
    .await?;
    // Synced first, so both exports below hold the same version of it.
    wait_until("the note is synced", Duration::from_secs(30), || async {
        let s = eval(&page, "window.rangersync.status()").await?;
        Ok((s["pending"] == 0).then_some(()))
    })
    .await?;
    let dir = tempfile::tempdir()?;
    browser_cdp(
        browser.browser(),
        "Browser.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": dir.path(), "eventsEnabled": true }),
    )
    .await?;
    let today = eval(&page, "new Date().toISOString().slice(0, 10)").await?;
    let today = today.as_str().ok_or("no date")?.to_owned();

    let (json_name, json_text) = download(&browser, &page, dir.path(), "export-json").await?;
    assert!(
        json_name.starts_with(&format!("rangerplex-{today}")) && json_name.ends_with(".json"),
        "{json_name}"
    );
    let snap = rangersync_shared::snapshot::decode(&json_text)?;
    assert!(snap.entities.iter().any(|e| e.key == "dl"));

    let (yaml_name, yaml_text) = download(&browser, &page, dir.path(), "export-yaml").await?;
    assert!(
        yaml_name.starts_with(&format!("rangerplex-{today}")) && yaml_name.ends_with(".yaml"),
        "{yaml_name}"
    );
    assert!(!yaml_text.trim_start().starts_with('{'), "block YAML");
    let from_yaml = rangersync_shared::snapshot::decode(&yaml_text)?;
    // A second export (its own time and checksum) of the same data.
    assert_eq!(from_yaml.entities, snap.entities);

    // Both files restore: a dry run of each finds the note unchanged.
    for text in [&json_text, &yaml_text] {
        let report = eval(
            &page,
            &format!(
                "window.rangersync.restore({}, {{ dryRun: true }})",
                serde_json::to_string(text)?
            ),
        )
        .await?;
        assert!(
            report["unchanged"]
                .as_array()
                .is_some_and(|u| u.iter().any(|e| e["key"] == "dl")),
            "{report}"
        );
    }

    // "Restore…" with the downloaded file brings back a note deleted since.
    eval(&page, "window.rangersync.delete('notes', 'dl')").await?;
    wait_until(
        "the deleted note leaves the list",
        Duration::from_secs(30),
        || async { Ok((!note_list(&page).await?.contains("Downloaded")).then_some(())) },
    )
    .await?;
    let input = cdp(
        &page,
        "Runtime.evaluate",
        json!({ "expression": "document.getElementById('restore-file')" }),
    )
    .await?;
    let object_id = input["result"]["objectId"]
        .as_str()
        .ok_or("no object id for #restore-file")?;
    cdp(
        &page,
        "DOM.setFileInputFiles",
        json!({ "files": [dir.path().join(&json_name)], "objectId": object_id }),
    )
    .await?;
    let report = restore_dialog_text(&page).await?;
    assert!(
        report.contains(&json_name) && report.contains("dry run"),
        "{report}"
    );
    assert!(report.contains("1Replaced"), "{report}");
    apply_restore_until_listed(&page, "Downloaded").await?;

    // Back up now: the list shows the server's copy, and Restore… previews it.
    eval(&page, "document.getElementById('backup-now').click(); true").await?;
    wait_until(
        "the backup list shows the server's copy",
        Duration::from_secs(30),
        || async {
            let n = eval(
                &page,
                "document.querySelectorAll('#backup-list [data-backup-id]').length",
            )
            .await?;
            Ok((n.as_u64().unwrap_or(0) > 0).then_some(()))
        },
    )
    .await?;
    wait_until(
        "the indicator (its panel's Last backup) shows the last backup",
        Duration::from_secs(10),
        || async {
            let shown = demo_indicator(&page).await?;
            if shown["backup"].is_string() && shown["backup"] != "never" {
                return Ok(Some(()));
            }
            Err(format!("the element shows {shown}").into())
        },
    )
    .await?;
    eval(
        &page,
        "document.querySelector('#backup-list [data-backup-id]').click(); true",
    )
    .await?;
    let report = restore_dialog_text(&page).await?;
    assert!(
        report.contains("Backup of") && report.contains("dry run"),
        "{report}"
    );
    assert!(report.contains("Unchanged"), "{report}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn after_clear_site_data_the_demo_offers_the_newest_backup_shows_its_dry_run_and_restores_the_note_the_server_never_had(
) -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = open_demo(&browser, &server.url()).await?;
    server.refuse_pushes().await?;
    eval(
        &page,
        "window.rangersync.put('notes', 'offline', { title: 'Written while the server refused', body: 'x' })",
    )
    .await?;
    eval(&page, "document.getElementById('backup-now').click(); true").await?;
    // (The demo backed up an empty database at start already: wait for the one with the note.)
    let backup = wait_until(
        "the server holds a backup with the note",
        Duration::from_secs(30),
        || async {
            let list = server.get_json("/api/backups").await?;
            Ok(list
                .as_array()
                .and_then(|l| l.iter().find(|b| b["counts"]["notes"].as_u64() > Some(0)))
                .cloned())
        },
    )
    .await?;
    let old_id = backup["client_id"]
        .as_str()
        .ok_or("a backup names its client")?
        .to_owned();

    cdp(
        &page,
        "Storage.clearDataForOrigin",
        json!({ "origin": server.url(), "storageTypes": "all" }),
    )
    .await?;
    browser.close_tab(page).await?;
    server.clear_faults().await?;
    let page = open_demo(&browser, &server.url()).await?;
    let offer = wait_until(
        "the demo offers the newest backup",
        Duration::from_secs(30),
        || async {
            let hidden = eval(&page, "document.getElementById('backup-offer').hidden").await?;
            if hidden != false {
                return Ok(None);
            }
            let text = eval(
                &page,
                "document.getElementById('backup-offer-text').textContent",
            )
            .await?;
            Ok(Some(text.as_str().unwrap_or_default().to_owned()))
        },
    )
    .await?;
    assert!(offer.starts_with("Restore from backup of "), "{offer}");
    assert!(!note_list(&page)
        .await?
        .contains("Written while the server refused"));

    eval(
        &page,
        "document.getElementById('backup-offer-yes').click(); true",
    )
    .await?;
    let report = restore_dialog_text(&page).await?;
    assert!(report.contains("dry run"), "{report}");
    assert!(report.contains("1Unsynced writes re-sent"), "{report}");
    assert!(
        !note_list(&page)
            .await?
            .contains("Written while the server refused"),
        "the dry run changed nothing"
    );
    apply_restore_until_listed(&page, "Written while the server refused").await?;
    let recorded = server
        .wait_for_recorded(&old_id, 1, Duration::from_secs(30))
        .await?;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["key"], "offline");
    browser.close().await?;
    Ok(())
}
