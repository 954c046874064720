//! The fault matrix through a real proxy, in Chromium: a fault proxy (`tests/src/proxy.rs`)
//! between the service worker and the real server resets connections before and after
//! forwarding, drops answers the server committed, holds an answer past the client's request
//! timeout, truncates answers, and injects 503/429 with `Retry-After`, all during one 2,000-write
//! flush. What is asserted is what the server committed (each acknowledged seq once, applied, in
//! order) and the proxy's own record of when each request arrived (`Retry-After` respected).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rangersync_e2e::proxy::{Exchange, Outcome};
use rangersync_e2e::summary::{self, ScenarioLine};
use rangersync_e2e::{
    assert_seqs_applied_once, bare_page_url, client_id_of, eval, register_client, serial,
    wait_for_controller, wait_until, Fault, FaultProxy, Result, Rule, TestBrowser, TestServer,
};
use serde_json::Value;

const PUSH: &str = "/api/sync/push";
const PULL: &str = "/api/sync/pull";

/// Writes in the scenario, and per `putMany` call.
const WRITES: u64 = 2_000;
const PER_CALL: u64 = 100;

/// The client's `requestTimeoutMs` in the scenario, and an answer held longer than it.
const REQUEST_TIMEOUT_MS: u64 = 1_500;
const LATE_ANSWER_MS: u64 = 2_500;

/// The pushes after an injected `Retry-After`: the next push must arrive no sooner. (The proxy
/// stamps a request when it has arrived and answers it after, so the client, which counts from
/// the answer, can only be later; a few ms of slack covers the browser's wall clock against the
/// proxy's monotonic one.)
fn retry_after_violations(pushes: &[Exchange]) -> Vec<String> {
    let slack = Duration::from_millis(5);
    let mut violations = Vec::new();
    for pair in pushes.windows(2) {
        if let Some(Fault::Inject {
            status,
            retry_after: Some(seconds),
            ..
        }) = &pair[0].fault
        {
            let waited = pair[1].at.saturating_sub(pair[0].at);
            if waited + slack < Duration::from_secs(*seconds) {
                violations.push(format!(
                    "push #{} was answered {status} with Retry-After: {seconds}, and push #{} came {} ms later",
                    pair[0].index,
                    pair[1].index,
                    waited.as_millis()
                ));
            }
        }
    }
    violations
}

fn describe(exchanges: &[Exchange]) -> String {
    exchanges
        .iter()
        .map(|e| {
            format!(
                "  #{:<3} {:>6} ms {:<7} {:<32} {:>7} B  {:?}{}",
                e.index,
                e.at.as_millis(),
                e.method,
                e.path.chars().take(32).collect::<String>(),
                e.body_bytes,
                e.outcome,
                e.fault
                    .as_ref()
                    .map_or(String::new(), |f| format!("  ← {f:?}")),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn proxy_faults_during_a_2000_write_flush_lose_and_duplicate_nothing_and_respect_retry_after(
) -> Result {
    let _serial = serial().await;
    let started = Instant::now();
    let server = TestServer::start().await?;
    let proxy = FaultProxy::start(server.addr()).await?;
    let push = |fault: Fault, nth: u64| Rule::new("POST", PUSH, fault).nth(nth);
    // The script, by push number. Pushes are sequential (one flush at a time per worker), so
    // the Nth push is well defined; resends count too.
    let script = vec![
        push(Fault::ResetBeforeForwarding, 1),
        push(Fault::ResetAfterForwarding, 2),
        push(Fault::DropResponse, 3),
        push(Fault::delay_answer(LATE_ANSWER_MS), 4),
        push(Fault::Truncate { bytes: 40 }, 5),
        push(Fault::inject(503, Some(2)), 6),
        push(Fault::TruncateBody { bytes: 30 }, 7),
        push(Fault::inject(429, Some(1)), 8),
        push(Fault::delay_forwarding(300), 9),
        push(Fault::inject(503, None), 10),
        push(Fault::DropResponse, 12),
        push(Fault::inject(503, Some(1)), 14),
        push(Fault::DropResponse, 15),
        Rule::new("GET", PULL, Fault::ResetBeforeForwarding),
        Rule::new("GET", PULL, Fault::DropResponse).nth(2),
    ];
    let scripted = script.len();
    proxy.set_rules(script);

    let browser = TestBrowser::launch().await?;
    let version = browser.browser().version().await?.product;
    println!("browser: {version}");
    let page = browser.open(&bare_page_url(&server)).await?;
    let options = format!(
        "{{ serverUrl: '{}', batchSize: {PER_CALL}, requestTimeoutMs: {REQUEST_TIMEOUT_MS}, \
         retry: {{ baseDelayMs: 100, maxDelayMs: 400, maxAttempts: 1000 }} }}",
        proxy.url()
    );
    assert_eq!(register_client(&page, &options).await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;

    // 2,000 writes, 100 per `putMany`, each acknowledged; the flush runs (and fails) meanwhile.
    let write_js = format!(
        "(async () => {{
            const seqs = [];
            for (let call = 0; call < {WRITES} / {PER_CALL}; call++) {{
                const items = Array.from({{ length: {PER_CALL} }}, (_, i) => {{
                    const n = call * {PER_CALL} + i;
                    return {{ collection: 'notes', key: 'n' + n, value: {{ n }} }};
                }});
                const ack = await client.putMany(items);
                seqs.push(...ack.seqs);
            }}
            return seqs;
        }})()"
    );
    let acked: Vec<u64> = eval(&page, &write_js)
        .await?
        .as_array()
        .ok_or("putMany acks are not a list")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(acked.len() as u64, WRITES, "every write acknowledged");
    let written_at = started.elapsed();

    // Wait for the outbox to empty. Each status poll is a page message, and every page message
    // is a flush trigger: ten a second, and none may cut a Retry-After short.
    let status = wait_until("the outbox is empty", Duration::from_secs(45), || async {
        let status = eval(&page, "client.status()").await?;
        let done = status["pending"] == 0 && status["in_flight"].as_u64().unwrap_or(0) == 0;
        Ok(done.then_some(status))
    })
    .await;
    let exchanges = proxy.exchanges();
    println!(
        "{} requests through the proxy (writes acknowledged after {written_at:?}):\n{}",
        exchanges.len(),
        describe(&exchanges)
    );
    let status = status?;

    let recorded = server.mutations_of(&client_id).await?;
    let stats = server.stats().await?;
    let pushes = proxy.exchanges_to("POST", PUSH);
    let faults = proxy.faults_injected() as u64;
    let (lost, duplicated) = summary::count_lost_and_duplicated(
        &recorded,
        stats["mutations_applied"].as_u64().unwrap_or(0),
        acked.iter().copied(),
    );
    summary::record(&ScenarioLine {
        scenario: "proxy faults during a 2,000-write flush".into(),
        browser: version.clone(),
        writes: WRITES,
        faults,
        lost,
        duplicated,
        seconds: started.elapsed().as_secs_f64(),
    })?;
    println!("server stats: {stats}");
    println!("local status: {status}");

    // Every scripted fault happened.
    assert!(
        proxy.unfired_rules().is_empty(),
        "faults never applied: {:?}",
        proxy.unfired_rules()
    );
    assert_eq!(faults as usize, scripted, "each rule fired once");
    // The server holds each acknowledged write exactly once, applied, in seq order.
    assert_eq!(
        acked.iter().copied().collect::<BTreeSet<u64>>().len() as u64,
        WRITES,
        "distinct seqs acknowledged"
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "nothing lost, nothing duplicated"
    );
    assert_seqs_applied_once(&recorded, WRITES);
    assert_eq!(stats["mutations_applied"], WRITES, "stats: {stats}");
    // The faults that let the server commit made the client resend: answered `duplicate`.
    assert!(
        stats["duplicates"].as_u64().unwrap_or(0) >= 1,
        "a dropped or late answer was resent and deduplicated: {stats}"
    );
    // Each entity holds its value.
    let changes = server.pull_all().await?;
    let mut keys = BTreeSet::new();
    for change in &changes {
        let key = change["key"].as_str().unwrap_or_default();
        let n: u64 = key.trim_start_matches('n').parse()?;
        assert_eq!(change["value"]["n"], n, "{change}");
        keys.insert(n);
    }
    assert_eq!(keys, (0..WRITES).collect::<BTreeSet<u64>>());
    // Retry-After respected: no push sooner than the injected header said.
    let violations = retry_after_violations(&pushes);
    assert!(violations.is_empty(), "{violations:?}");
    // The late answer: the client gave up on it and resent.
    let late = pushes
        .iter()
        .find(|e| {
            matches!(e.fault, Some(Fault::Delay { before_answering, .. }) if !before_answering.is_zero())
        })
        .ok_or("no delayed push")?;
    assert_eq!(late.upstream_status, Some(200), "the server committed it");
    let resent = pushes
        .iter()
        .find(|e| e.index > late.index)
        .ok_or("no push after the late one")?;
    assert!(
        resent.at < late.at + Duration::from_millis(LATE_ANSWER_MS),
        "the client gave up after requestTimeoutMs ({REQUEST_TIMEOUT_MS} ms) and resent before \
         the late answer came: next push {} ms later",
        (resent.at - late.at).as_millis()
    );
    assert!(pushes.iter().any(|e| e.outcome == Outcome::DroppedResponse));
    // The local IndexedDB: nothing pending, nothing dead-lettered.
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(status["dead"], 0, "{status}");
    println!(
        "{} pushes, {faults} faults, done in {:?}",
        pushes.len(),
        started.elapsed()
    );
    browser.close().await?;
    Ok(())
}

/// How long the proxy holds every request in the hang scenario.
const HANG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_server_that_hangs_every_request_for_20_s_never_wedges_the_flusher_every_write_arrives_once_within_10_s_of_recovery(
) -> Result {
    hang_scenario(true, false).await
}

#[tokio::test]
async fn on_postgresql_a_server_that_hangs_every_request_for_20_s_never_wedges_the_flusher_every_write_arrives_once_within_10_s_of_recovery(
) -> Result {
    hang_scenario(true, true).await
}

#[tokio::test]
async fn preflights_pulls_and_backup_uploads_hung_from_the_first_request_never_wedge_the_flusher(
) -> Result {
    hang_scenario(false, false).await
}

/// A server that accepts every connection and answers nothing for [`HANG`]: pushes and their
/// preflights, pulls, backup uploads. (A held request is forwarded after the hang; the client
/// gave up on it long before.)
fn start_hang(proxy: &FaultProxy) {
    let hang = |method: &str, path: &str| {
        Rule::new(
            method,
            path,
            Fault::delay_forwarding(HANG.as_millis() as u64),
        )
        .always()
    };
    proxy.set_rules(vec![
        hang("OPTIONS", PUSH),
        hang("POST", PUSH),
        hang("GET", PULL),
        hang("OPTIONS", PULL),
        hang("OPTIONS", "/api/backups"),
        hang("POST", "/api/backups"),
    ]);
}

/// The hang: `synced_first`: a write syncs before (its preflight cached, as in a running app),
/// else the hang starts before the first request, preflights included. `on_postgres`: the
/// server runs on a fresh PostgreSQL database, else on SQLite.
async fn hang_scenario(synced_first: bool, on_postgres: bool) -> Result {
    let _serial = serial().await;
    let server = if on_postgres {
        let db = rangersync_server::test_postgres::fresh_database().await?;
        TestServer::start_on(rangersync_server::DbLocation::Postgres(db)).await?
    } else {
        TestServer::start().await?
    };
    let proxy = FaultProxy::start(server.addr()).await?;
    let hang_started = (!synced_first).then(|| {
        start_hang(&proxy);
        Instant::now()
    });
    let browser = TestBrowser::launch().await?;
    let page = browser.open(&bare_page_url(&server)).await?;
    // An app's own settings: the default retry policy, a 2 s request timeout.
    let options = format!("{{ serverUrl: '{}', requestTimeoutMs: 2000 }}", proxy.url());
    assert_eq!(register_client(&page, &options).await?, "worker");
    wait_for_controller(&page).await?;
    let client_id = client_id_of(&page).await?;
    let before = u64::from(synced_first);
    if synced_first {
        eval(&page, "client.put('notes', 'first', { n: -1 })").await?;
        wait_until(
            "the first write is delivered",
            Duration::from_secs(20),
            || async { Ok((server.mutations_of(&client_id).await?.len() == 1).then_some(())) },
        )
        .await?;
    }

    if synced_first {
        start_hang(&proxy);
    }
    let hang_started = hang_started.unwrap_or_else(Instant::now);
    let acked: Vec<u64> = eval(
        &page,
        "(async () => {
            const items = Array.from({ length: 20 }, (_, n) => ({ collection: 'notes', key: 'h' + n, value: { n } }));
            const ack = await client.putMany(items);
            // The page asks for a flush and a backup every 5 s, as an app's timer would.
            client.backupNow().catch(() => {});
            window.nudges = setInterval(() => { client.flush().catch(() => {}); client.backupNow().catch(() => {}); }, 5000);
            return ack.seqs;
        })()",
    )
    .await?
    .as_array()
    .ok_or("putMany acks are not a list")?
    .iter()
    .filter_map(Value::as_u64)
    .collect();
    assert_eq!(acked.len(), 20);

    tokio::time::sleep(HANG.saturating_sub(hang_started.elapsed())).await;
    proxy.clear_rules();
    let recovered = proxy.now();
    let arrived = wait_until(
        "every write reaches the server within 10 s of the recovery",
        Duration::from_secs(10),
        || async {
            let recorded = server.mutations_of(&client_id).await?;
            Ok((recorded.len() as u64 >= acked.len() as u64 + before).then_some(recorded))
        },
    )
    .await;
    let exchanges = proxy.exchanges();
    let status = eval(&page, "client.status()").await?;
    let report = format!(
        "recovered at {} ms; status {status}\n{}",
        recovered.as_millis(),
        describe(&exchanges)
    );
    println!("{report}");
    let recorded = arrived.map_err(|e| format!("{e}\n{report}"))?;
    assert_seqs_applied_once(&recorded, acked.len() as u64 + before);
    // The hang was real: requests were held while the client went on asking.
    let held = exchanges.iter().filter(|e| e.fault.is_some()).count();
    assert!(held >= 3, "the proxy held {held} requests\n{report}");
    browser.close().await?;
    Ok(())
}
