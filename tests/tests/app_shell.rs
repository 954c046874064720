//! App-shell caching is opt-in and bounded: without `appShell` nothing of the app is cached;
//! with it, the listed files are cached when the worker installs, so an app that loses the
//! network right after `register` still reopens offline; refused answers (`no-store`, 404) are
//! not cached; a new version deletes the old cache at activate. And rangersync runs inside an
//! app's own service worker (`importScripts('/rangersync-worker.js')` + `rangersync.listen`).

use std::time::Duration;

use chromiumoxide::Page;
use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, client_id_of, eval, page_module_files,
    register_client, serial, wait_for_controller, wait_until, worker_page, www_with, Result,
    ServiceWorkers, TestBrowser, TestServer,
};
use serde_json::Value;

/// A page of the app that holds personal data.
const ACCOUNT_HTML: &str = r#"<!doctype html>
<meta charset="utf-8"><title>Account</title>
<p>Signed in as alice@example.com</p>
"#;

/// A small app: it imports the page module and registers with `appShell` listing `FILES`
/// (itself and the page module's files); `window.started` is the mode, or the error.
const SHELL_HTML: &str = r#"<!doctype html>
<meta charset="utf-8"><title>Shell test</title>
<h1 id="heading">The app</h1>
<script type="module">
  try {
    const { default: init, SyncClient } = await import('/pkg/rangersync_page.js');
    await init();
    window.client = await SyncClient.register({
      swUrl: '/sw.js', serverUrl: location.origin, appShell: { files: FILES },
    });
    window.started = window.client.mode;
  } catch (e) {
    window.started = `error ${e && e.code}: ${e && e.message}`;
  }
</script>
"#;

/// An app's own service worker with rangersync inside: its own route, its own messages, and
/// rangersync added by one call.
const APP_SW_JS: &str = r#"// The app's own worker.
self.addEventListener('fetch', (event) => {
  if (new URL(event.request.url).pathname === '/app-own/hello') {
    event.respondWith(new Response('hello from the app worker'));
  }
});
self.addEventListener('message', (event) => {
  if (event.data && event.data.app === 'ping') {
    event.stopImmediatePropagation(); // the app's own message: not for rangersync
    event.ports[0].postMessage('pong from the app worker');
  }
});

importScripts('/rangersync-worker.js');
rangersync.listen({ appShell: { files: ['/style.css'], version: 'app-1' } });
"#;

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the app-shell caches of the page's origin.
async fn shell_caches(page: &Page) -> Result<Vec<String>> {
    let names = eval(
        page,
        "caches.keys().then(k => k.filter(n => n.startsWith('rangersync-shell-')))",
    )
    .await?;
    Ok(strings(&names))
}

/// Every entry of Cache Storage of the page's origin, as `"<cache> <path + query>"`, sorted.
async fn cached(page: &Page) -> Result<Vec<String>> {
    let entries = eval(
        page,
        "(async () => {
            const out = [];
            for (const name of await caches.keys()) {
              for (const r of await (await caches.open(name)).keys()) {
                const u = new URL(r.url);
                out.push(name + ' ' + u.pathname + u.search);
              }
            }
            return out.sort();
        })()",
    )
    .await?;
    Ok(strings(&entries))
}

/// Waits until the shell test page has registered (`window.started`), and fails at once with its
/// error if it could not.
async fn wait_for_started(page: &Page) -> Result {
    let started = wait_until("the app registered", Duration::from_secs(30), || async {
        let started = eval(page, "window.started || null").await?;
        Ok(started.as_str().map(String::from))
    })
    .await?;
    if started != "worker" {
        return Err(format!("the app did not start in worker mode: {started}").into());
    }
    Ok(())
}

#[tokio::test]
async fn without_app_shell_nothing_of_the_app_is_cached_and_a_personal_page_never_is() -> Result {
    let _serial = serial().await;
    let www = www_with(&[("account.html", ACCOUNT_HTML)])?;
    let server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let url = server.url();
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    // What an earlier rangersync left behind: its runtime cache of every page it saw.
    eval(
        &page,
        "caches.open('rangersync-shell-v1')
           .then(c => c.put('/account.html?x=0', new Response('old personal page')))
           .then(() => true)",
    )
    .await?;

    assert_eq!(register_client(&page, "{}").await?, "worker");
    wait_for_controller(&page).await?;
    eval(
        &page,
        "client.put('notes', 'n1', { title: 'hello' }).then(() => true)",
    )
    .await?;
    // Pages the worker controls: a personal page with a query, a file, the first page again.
    page.goto(&format!("{url}/account.html?x=1")).await?;
    assert_eq!(eval(&page, "document.title").await?, "Account");
    wait_for_controller(&page).await?;
    assert_eq!(
        eval(&page, "fetch('/style.css').then(r => r.status)").await?,
        200
    );
    page.goto(&bare_page_url(&server)).await?;
    // The worker of before wrote its copies within milliseconds of each answer.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let entries = cached(&page).await?;
    assert!(
        entries.iter().all(|e| !e.starts_with("rangersync-shell-")),
        "no app-shell cache without appShell (the old one is deleted at activate): {entries:?}"
    );
    assert!(
        entries.iter().all(|e| !e.contains("account")),
        "the personal page is in no cache: {entries:?}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn with_app_shell_an_app_that_loses_the_network_right_after_register_reopens_offline(
) -> Result {
    let _serial = serial().await;
    let mut files = vec!["/shell.html".to_string()];
    files.extend(page_module_files()?);
    let html = SHELL_HTML.replace("FILES", &serde_json::to_string(&files)?);
    let www = www_with(&[("shell.html", &html)])?;
    let mut server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let url = server.url();
    let browser = TestBrowser::launch().await?;

    let page = browser.open(&format!("{url}/shell.html")).await?;
    wait_for_started(&page).await?;
    // The network goes away the moment `register` resolved: nothing more is fetched.
    server.stop().await;
    browser.close_tab(page).await?;

    // Reopened with no server: the page, the module and its wasm come from the app shell.
    let page = browser.open(&format!("{url}/shell.html")).await?;
    wait_for_started(&page).await?;
    assert_eq!(
        eval(&page, "document.getElementById('heading').textContent").await?,
        "The app"
    );
    let ack = eval(
        &page,
        "client.put('notes', 'n1', { title: 'written offline' })",
    )
    .await?;
    assert_eq!(ack["seq"], 1, "the worker took a write offline: {ack}");
    // A file that is not listed is served from no cache.
    assert_eq!(
        eval(
            &page,
            "fetch('/style.css').then(r => 'HTTP ' + r.status, () => 'failed')"
        )
        .await?,
        "failed"
    );
    // A navigation to a page that is not listed gets the fallback, the first file.
    page.goto(&format!("{url}/notes/42?tab=2")).await?;
    assert_eq!(eval(&page, "document.title").await?, "Shell test");
    wait_for_started(&page).await?;
    assert!(!server.is_running(), "all of it with the server down");

    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_no_store_or_missing_file_in_the_app_shell_is_not_cached() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    let mode = register_client(
        &page,
        "{ appShell: { files: ['/style.css', '/api/test/no-store', '/missing.js'] } }",
    )
    .await?;
    assert_eq!(mode, "worker");

    // `register` resolves once the worker controls the page, after its install precached.
    let names = shell_caches(&page).await?;
    assert_eq!(names.len(), 1, "one app-shell cache: {names:?}");
    let entries = cached(&page).await?;
    let shell: Vec<&String> = entries
        .iter()
        .filter(|e| e.starts_with("rangersync-shell-"))
        .collect();
    assert_eq!(
        shell,
        vec![&format!("{} /style.css", names[0])],
        "only the 200 answer without no-store is cached: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| !e.contains("no-store") && !e.contains("missing")),
        "neither the no-store nor the 404 answer is in any cache: {entries:?}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_new_app_shell_version_replaces_the_old_cache_at_activate() -> Result {
    let _serial = serial().await;
    let server = TestServer::start().await?;
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    register_client(
        &page,
        "{ appShell: { files: ['/style.css'], version: 'one' } }",
    )
    .await?;
    let first = shell_caches(&page).await?;
    assert!(
        first.len() == 1 && first[0].starts_with("rangersync-shell-one-"),
        "version one's cache: {first:?}"
    );

    // The next launch of the app ships version two.
    page.goto(&bare_page_url(&server)).await?;
    register_client(
        &page,
        "{ appShell: { files: ['/style.css', '/app.js'], version: 'two' } }",
    )
    .await?;
    wait_until(
        "version two's worker controls the page",
        Duration::from_secs(60),
        || async {
            let script = eval(&page, "navigator.serviceWorker.controller.scriptURL").await?;
            if script.as_str().is_some_and(|s| s.contains("two")) {
                return Ok(Some(()));
            }
            // Where the update stands (in the error if it never lands), and a nudge: the
            // browser checks the registration's script again.
            let state = eval(
                &page,
                "navigator.serviceWorker.getRegistration().then(r => r ? ({ \
                   installing: r.installing && r.installing.scriptURL, \
                   waiting: r.waiting && r.waiting.scriptURL, \
                   active: r.active && r.active.scriptURL, \
                   update: r.update().then(() => 'checked', e => String(e)) }) : null)",
            )
            .await?;
            Err(format!("controller {script}; registration {state}").into())
        },
    )
    .await?;
    let names = wait_until(
        "only version two's cache is left",
        Duration::from_secs(30),
        || async {
            let names = shell_caches(&page).await?;
            if names.len() == 1 && names[0].starts_with("rangersync-shell-two-") {
                return Ok(Some(names));
            }
            Err(format!("app-shell caches: {names:?}").into())
        },
    )
    .await?;
    let entries = cached(&page).await?;
    let two: Vec<&String> = entries
        .iter()
        .filter(|e| e.starts_with(&names[0]))
        .collect();
    assert_eq!(
        two,
        vec![
            &format!("{} /app.js", names[0]),
            &format!("{} /style.css", names[0])
        ],
        "{entries:?}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test]
async fn an_apps_own_worker_that_imports_the_library_syncs_writes_and_keeps_its_own_routes(
) -> Result {
    let _serial = serial().await;
    let www = www_with(&[("app-sw.js", APP_SW_JS)])?;
    let server = TestServer::start_serving(www.path().to_path_buf()).await?;
    let url = server.url();
    let browser = TestBrowser::launch().await?;
    let workers = ServiceWorkers::enable(&browser).await?;
    let page = worker_page(&browser, &server, "{ swUrl: '/app-sw.js' }").await?;
    let version = workers.activated(&url).await?;
    assert!(
        version.script.ends_with("/app-sw.js"),
        "the app's worker controls the page: {}",
        version.script
    );

    // A write through put() reaches the real server.
    let client_id = client_id_of(&page).await?;
    let ack = eval(
        &page,
        "client.put('notes', 'n1', { title: 'from the app worker' })",
    )
    .await?;
    assert_eq!(ack["seq"], 1, "{ack}");
    eval(&page, "client.flush().then(() => true)").await?;
    let recorded = wait_until(
        "the server holds the write",
        Duration::from_secs(30),
        || async {
            let recorded = server.mutations_of(&client_id).await?;
            Ok((!recorded.is_empty()).then_some(recorded))
        },
    )
    .await?;
    assert_seqs_applied_once(&recorded, 1);

    // The app's own listeners still answer what is theirs.
    assert_eq!(
        eval(&page, "fetch('/app-own/hello').then(r => r.text())").await?,
        "hello from the app worker"
    );
    let replies = eval(
        &page,
        "new Promise((resolve) => {
            const replies = [];
            const channel = new MessageChannel();
            channel.port1.onmessage = (e) => replies.push(e.data);
            navigator.serviceWorker.controller.postMessage({ app: 'ping' }, [channel.port2]);
            setTimeout(() => resolve(replies), 1000);
        })",
    )
    .await?;
    assert_eq!(
        strings(&replies),
        ["pong from the app worker"],
        "one reply, the app's: rangersync left the message alone"
    );
    // And the app shell given to `listen` was cached at install.
    let names = shell_caches(&page).await?;
    assert!(
        names.len() == 1 && names[0].starts_with("rangersync-shell-app-1-"),
        "{names:?}"
    );
    assert_eq!(
        cached(&page)
            .await?
            .into_iter()
            .filter(|e| e.starts_with(&names[0]))
            .collect::<Vec<_>>(),
        [format!("{} /style.css", names[0])]
    );
    browser.close().await?;
    Ok(())
}
