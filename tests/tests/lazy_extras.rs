//! The page module is two wasm modules: the messaging client, which every page loads, and the
//! extras (page-only fallback engine, YAML), which the client imports only when the page needs
//! them. These tests read what the page downloaded from `performance.getEntriesByType('resource')`.

use std::path::Path;

use rangersync_e2e::{
    bare_page_url, eval, register_client, serial, www_dir, Result, TestBrowser, TestServer,
};
use serde_json::Value;

/// The file names under `/pkg/` this page has requested so far (module imports, wasm fetches).
async fn downloaded(page: &chromiumoxide::Page) -> Result<Vec<String>> {
    let names = eval(
        page,
        "performance.getEntriesByType('resource')
           .map(e => new URL(e.name).pathname)
           .filter(p => p.startsWith('/pkg/'))
           .map(p => p.slice('/pkg/'.length))",
    )
    .await?;
    Ok(names
        .as_array()
        .ok_or_else(|| format!("not a list: {names}"))?
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect())
}

fn count(files: &[String], name: &str) -> usize {
    files.iter().filter(|f| f.as_str() == name).count()
}

const EXTRAS_JS: &str = "rangersync_page_extras.js";
const EXTRAS_WASM: &str = "rangersync_page_extras_bg.wasm";

#[tokio::test]
async fn registering_and_writing_in_worker_mode_never_downloads_the_extras() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    eval(
        &page,
        "(async () => {
            await client.put('notes', 'w1', { title: 'one' });
            await client.putMany([{ collection: 'notes', key: 'w2', value: 2 }]);
            await client.writeMany([{ op: 'delete', collection: 'notes', key: 'w2' }]);
            await client.delete('notes', 'w1');
            await client.get('notes', 'w1');
            await client.list('notes');
            await client.status();
            await client.flush();
            await client.deadLetters();
            await client.exportSnapshot('json');
            return true;
        })()",
    )
    .await?;
    let files = downloaded(&page).await?;
    // Loaded once: without `appShell` nothing fetches the page's files again to cache them.
    assert_eq!(
        count(&files, "rangersync_page_bg.wasm"),
        1,
        "the client loaded: {files:?}"
    );
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("rangersync_page_extras")),
        "worker mode must not download the extras: {files:?}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn page_mode_downloads_the_extras_once_and_works_as_before() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(
        register_client(&page, "{ forcePageMode: true }").await?,
        "page"
    );
    let result = eval(
        &page,
        "(async () => {
            const ack = await client.put('notes', 'p1', { title: 'in the page' });
            const value = await client.get('notes', 'p1');
            const status = await client.status();
            await new Promise((r) => setTimeout(r, 100));
            return { seq: ack.seq, title: value.title, mode: status.mode, changes: window.changes };
        })()",
    )
    .await?;
    assert!(result["seq"].as_u64() >= Some(1), "{result}");
    assert_eq!(result["title"], "in the page");
    assert_eq!(result["mode"], "page");
    assert!(
        result["changes"]
            .as_array()
            .is_some_and(|c| c.contains(&Value::from("notes/p1"))),
        "onChange heard the page engine's broadcast: {result}"
    );
    // A second client in the same page reuses the loaded module.
    assert_eq!(
        register_client(&page, "{ forcePageMode: true }").await?,
        "page"
    );
    let files = downloaded(&page).await?;
    assert_eq!(count(&files, EXTRAS_JS), 1, "{files:?}");
    assert_eq!(count(&files, EXTRAS_WASM), 1, "{files:?}");
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_yaml_export_and_restore_download_the_extras_and_round_trip() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    assert_eq!(register_client(&page, "{}").await?, "worker");
    eval(
        &page,
        "client.put('notes', 'y1', { title: 'original', n: 1.5 })",
    )
    .await?;
    assert!(
        !downloaded(&page).await?.iter().any(|f| f == EXTRAS_JS),
        "not before YAML is asked for"
    );
    let result = eval(
        &page,
        "(async () => {
            const yaml = await client.exportSnapshot('yaml');
            await client.put('notes', 'y1', { title: 'changed' });
            const report = await client.restore(yaml);
            const value = await client.get('notes', 'y1');
            return { yaml, replaced: report.replaced.map((r) => r.key), value };
        })()",
    )
    .await?;
    let yaml = result["yaml"].as_str().unwrap_or_default();
    assert!(
        yaml.contains("rangersync-snapshot") && !yaml.trim_start().starts_with('{'),
        "block YAML: {yaml:.120}"
    );
    assert_eq!(result["replaced"], serde_json::json!(["y1"]), "{result}");
    assert_eq!(result["value"]["title"], "original");
    assert_eq!(result["value"]["n"], 1.5);
    let files = downloaded(&page).await?;
    assert_eq!(count(&files, EXTRAS_JS), 1, "{files:?}");
    assert_eq!(count(&files, EXTRAS_WASM), 1, "{files:?}");
    browser.close().await?;
    Ok(())
}

/// Copies `from` into `to`, leaving out files whose name starts with `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &str) -> Result {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(skip) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(&name), skip)?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn when_the_extras_cannot_be_downloaded_page_mode_and_yaml_fail_with_worker_unavailable(
) -> Result {
    let _serial = serial().await;
    let www = tempfile::Builder::new()
        .prefix("rangersync-e2e-www-")
        .tempdir()?;
    copy_tree(&www_dir()?, www.path(), "rangersync_page_extras")?;
    let server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let failure = |call: &str| {
        format!(
            "{call}.then(() => ({{ ok: true }}), (e) => ({{ name: e.name, code: e.code, message: e.message }}))"
        )
    };

    assert_eq!(register_client(&page, "{}").await?, "worker");
    eval(&page, "client.put('notes', 'k', 1)").await?;
    let yaml = eval(&page, &failure("client.exportSnapshot('yaml')")).await?;
    assert_eq!(yaml["code"], "worker_unavailable", "{yaml}");
    assert!(
        yaml["message"]
            .as_str()
            .is_some_and(|m| m.contains("/pkg/rangersync_page_extras.js")),
        "the message names the URL: {yaml}"
    );

    let page_mode = eval(
        &page,
        &failure(
            "import('/pkg/rangersync_page.js').then((m) => \
             m.SyncClient.register({ forcePageMode: true, serverUrl: location.origin }))",
        ),
    )
    .await?;
    assert_eq!(page_mode["name"], "SyncError", "{page_mode}");
    assert_eq!(page_mode["code"], "worker_unavailable", "{page_mode}");
    assert!(
        page_mode["message"]
            .as_str()
            .is_some_and(|m| m.contains("/pkg/rangersync_page_extras.js")),
        "the message names the URL: {page_mode}"
    );
    browser.close().await?;
    Ok(())
}

/// The YAML library leaves its source paths in a wasm that holds its code (the locations of its
/// panics): the extras must have them, the worker and the messaging client must not.
#[test]
fn only_the_extras_wasm_holds_yaml_code() -> Result {
    const MARKER: &[u8] = b"serde-saphyr";
    let www = www_dir()?;
    let pkg = www.join("pkg");
    let worker_wasm = rangersync_e2e::worker_wasm(&www)?;
    let worker_wasm = worker_wasm
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let holds = |file: &str| -> Result<bool> {
        let bytes = std::fs::read(pkg.join(file))?;
        Ok(bytes.windows(MARKER.len()).any(|w| w == MARKER))
    };
    assert!(
        holds("rangersync_page_extras_bg.wasm")?,
        "the marker is in the extras (else this check proves nothing)"
    );
    assert!(
        !holds(worker_wasm)?,
        "YAML code crept into the worker's wasm"
    );
    assert!(
        !holds("rangersync_page_bg.wasm")?,
        "YAML code crept into the page's messaging client"
    );
    Ok(())
}
