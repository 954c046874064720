//! Scale-out under fire: three `rangersync-server` processes on one PostgreSQL database,
//! 20 clients pushing 10,000 mutations in batches, each request to a random instance, with
//! deliberate resends and one instance killed (SIGKILL) and restarted mid-run.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangersync_server::test_postgres;
use rangersync_shared::conflict::Stamp;
use rangersync_shared::retry::{RandomSource, SplitMix64};
use serde_json::{json, Value};
use support::{whole_feed, Instance};

const INSTANCES: usize = 3;
const CLIENTS: u64 = 20;
const PER_CLIENT: usize = 500;
const OWN_KEYS: f64 = 50.0;
const SHARED_KEYS: f64 = 20.0;
const T0: i64 = 1_764_000_000_000;

/// One mutation a client made, as the checks need it.
#[derive(Clone)]
struct Made {
    body: Value,
    key: String,
    stamp: Stamp,
}

/// A random index below `n`.
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((rng.next_unit() * n as f64) as usize).min(n - 1)
}

fn make_mutations(client: &str, rng: &mut SplitMix64) -> Vec<Made> {
    (1..=PER_CLIENT as u64)
        .map(|seq| {
            // Mostly the client's own notes; one write in ten to notes every client writes.
            let key = if rng.next_unit() < 0.1 {
                format!("shared-{}", (rng.next_unit() * SHARED_KEYS) as u64)
            } else {
                format!("{client}-{}", (rng.next_unit() * OWN_KEYS) as u64)
            };
            // Few distinct times, so client_id and seq often break the tie.
            let updated_at = T0 + (rng.next_unit() * 300.0) as i64;
            let delete = rng.next_unit() < 0.1;
            let body = json!({
                "client_id": client, "seq": seq, "collection": "notes", "key": key,
                "op": if delete { "delete" } else { "put" },
                "value": if delete { Value::Null } else { json!({ "by": client, "seq": seq }) },
                "updated_at": updated_at,
            });
            Made {
                body,
                key,
                stamp: Stamp {
                    updated_at,
                    client_id: client.to_owned(),
                    seq,
                },
            }
        })
        .collect()
}

/// What a client saw: every per-mutation answer it got, by seq.
type Answers = BTreeMap<u64, Vec<String>>;

/// Pushes `batch` to random instances until one answers 200; `errors` counts other answers
/// (a 5xx is a failure of the test; a refused connection is the killed instance).
async fn deliver(
    http: &reqwest::Client,
    urls: &[String],
    rng: &Mutex<SplitMix64>,
    client: &str,
    batch: &[Made],
    answers: &mut Answers,
    server_errors: &AtomicUsize,
) {
    let body = json!({
        "client_id": client,
        "mutations": batch.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
    });
    loop {
        let url = &urls[below(&mut rng.lock().unwrap(), urls.len())];
        match http
            .post(format!("{url}/api/sync/push"))
            .json(&body)
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                let answer: Value = resp.json().await.expect("a push answer");
                for r in answer["results"].as_array().expect("results") {
                    answers
                        .entry(r["seq"].as_u64().unwrap())
                        .or_default()
                        .push(r["status"].as_str().unwrap().to_owned());
                }
                return;
            }
            Ok(resp) => {
                server_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("push answered {}", resp.status());
            }
            // The instance was killed (refused, or cut mid-answer): send it again elsewhere.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_apply_10000_resent_mutations_exactly_once_through_a_crash() {
    let db = test_postgres::fresh_database()
        .await
        .unwrap_or_else(|e| panic!("the multi-instance test needs PostgreSQL: {e}"));
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|_| Instance::start(&db, &["--test-endpoints", "--db-pool", "8"]))
        .collect();
    let urls: Arc<Vec<String>> = Arc::new(instances.iter().map(Instance::url).collect());
    let instances = Arc::new(Mutex::new(instances));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let server_errors = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let total = CLIENTS as usize * PER_CLIENT;
    let chaos = {
        let (instances, acknowledged) = (instances.clone(), acknowledged.clone());
        tokio::spawn(async move {
            while acknowledged.load(Ordering::Relaxed) < total * 3 / 10 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let killed_at = acknowledged.load(Ordering::Relaxed);
            instances.lock().unwrap()[1].kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let restarting = instances.clone();
            tokio::task::spawn_blocking(move || restarting.lock().unwrap()[1].restart())
                .await
                .unwrap();
            killed_at
        })
    };

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, urls, acknowledged, server_errors) = (
            http.clone(),
            urls.clone(),
            acknowledged.clone(),
            server_errors.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = format!("client-{c:02}");
            let rng = Mutex::new(SplitMix64(c + 1));
            let made = make_mutations(&client, &mut rng.lock().unwrap());
            let mut answers = Answers::new();
            let mut next = 0;
            while next < made.len() {
                let size = (1 + below(&mut rng.lock().unwrap(), 25)).min(made.len() - next);
                let batch = &made[next..next + size];
                deliver(
                    &http,
                    &urls,
                    &rng,
                    &client,
                    batch,
                    &mut answers,
                    &server_errors,
                )
                .await;
                // A lost answer, as the outbox sees it: the same batch goes again.
                if rng.lock().unwrap().next_unit() < 0.25 {
                    deliver(
                        &http,
                        &urls,
                        &rng,
                        &client,
                        batch,
                        &mut answers,
                        &server_errors,
                    )
                    .await;
                }
                next += size;
                acknowledged.fetch_add(size, Ordering::Relaxed);
            }
            (client, made, answers)
        }));
    }
    let mut all_made = Vec::new();
    let mut all_answers = HashMap::new();
    for client in clients {
        let (client, made, answers) = client.await.unwrap();
        all_made.extend(made);
        all_answers.insert(client, answers);
    }
    let killed_at = chaos.await.unwrap();
    assert!(killed_at < total, "the instance was killed mid-run");
    assert_eq!(
        server_errors.load(Ordering::Relaxed),
        0,
        "no push answered anything but 200"
    );

    // Every (client_id, seq) has one first outcome, and no answer said `applied` twice.
    let stats: Value = http
        .get(format!("{}/api/test/stats", urls[2]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["rejected"], 0);
    let applied_total = stats["mutations_applied"].as_u64().unwrap();
    assert_eq!(
        applied_total + stats["conflicts"].as_u64().unwrap(),
        total as u64,
        "{stats}"
    );
    let mut recorded: HashMap<(String, u64), String> = HashMap::new();
    for (client, answers) in &all_answers {
        let url = &urls[client.len() % INSTANCES];
        let rows: Value = http
            .get(format!("{url}/api/test/mutations?client_id={client}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = rows["mutations"].as_array().unwrap();
        assert_eq!(rows.len(), PER_CLIENT, "{client}: every seq recorded once");
        for row in rows {
            let seq = row["seq"].as_u64().unwrap();
            let status = row["status"].as_str().unwrap().to_owned();
            let said = &answers[&seq];
            let applied_answers = said.iter().filter(|s| *s == "applied").count();
            assert!(
                applied_answers <= 1,
                "{client}/{seq} applied twice: {said:?}"
            );
            if applied_answers == 1 {
                assert_eq!(status, "applied", "{client}/{seq}: {said:?}");
            }
            recorded.insert((client.clone(), seq), status);
        }
    }
    let applied_rows = recorded.values().filter(|s| *s == "applied").count();
    assert_eq!(applied_rows as u64, applied_total);

    // The conflict rule: each entity holds its greatest stamp; that write was applied;
    // every write that lost had a smaller stamp.
    let mut greatest: HashMap<&str, &Made> = HashMap::new();
    for m in &all_made {
        let slot = greatest.entry(&m.key).or_insert(m);
        if m.stamp > slot.stamp {
            *slot = m;
        }
    }
    let feeds = feeds_of(&http, &urls).await;
    for feed in &feeds[1..] {
        assert_eq!(feed, &feeds[0], "every instance serves the same feed");
    }
    assert_eq!(feeds[0].len(), greatest.len(), "one row per entity");
    for entity in &feeds[0] {
        let winner = greatest[entity["key"].as_str().unwrap()];
        assert_eq!(entity["updated_at"], winner.stamp.updated_at);
        let deleted = winner.body["op"] == "delete";
        assert_eq!(entity["deleted"], deleted);
        assert_eq!(entity["value"], winner.body["value"]);
        assert_eq!(
            recorded[&(winner.stamp.client_id.clone(), winner.stamp.seq)],
            "applied"
        );
    }
    for m in &all_made {
        if recorded[&(m.stamp.client_id.clone(), m.stamp.seq)] == "conflict" {
            assert!(m.stamp < greatest[m.key.as_str()].stamp);
        }
    }
}

async fn feeds_of(http: &reqwest::Client, urls: &[String]) -> Vec<Vec<Value>> {
    let mut feeds = Vec::new();
    for url in urls {
        feeds.push(whole_feed(http, url).await);
    }
    feeds
}
