//! The outbox machine on a virtual clock, with a deterministic SplitMix64 and no IO.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::*;
use crate::protocol::{Op, PushResponse};
use crate::retry::SplitMix64;

const T0: Millis = 1_764_000_000_000;

fn policy() -> RetryPolicy {
    RetryPolicy {
        base_delay_ms: 1_000,
        max_delay_ms: 60_000,
        max_attempts: 5,
        max_age_ms: 0,
        max_server_errors: 0,
    }
}

fn flusher(batch: u32) -> Flusher {
    Flusher::new("c1", batch, policy())
}

fn mutation(seq: u64, key: &str) -> QueuedEntry {
    QueuedEntry {
        seq,
        created_at: T0,
        attempts: 0,
        item: Item::Mutation(Mutation {
            client_id: "c1".into(),
            seq,
            collection: "notes".into(),
            key: key.into(),
            op: Op::Put,
            value: json!({"n": seq}),
            updated_at: T0,
        }),
    }
}

fn captured(seq: u64) -> QueuedEntry {
    QueuedEntry {
        seq,
        created_at: T0,
        attempts: 0,
        item: Item::Request(CapturedRequest {
            method: "POST".into(),
            url: "http://127.0.0.1/api/sync/chat".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
            redacted: Vec::new(),
        }),
    }
}

fn blob(seq: u64) -> QueuedEntry {
    QueuedEntry {
        seq,
        created_at: T0,
        attempts: 0,
        item: Item::Blob(BlobUpload {
            sha256: "ab".repeat(32),
            size: 3,
        }),
    }
}

fn respond(status: u16, retry_after: Option<&str>, body: &str) -> HttpOutcome {
    HttpOutcome::Response {
        status,
        retry_after: retry_after.map(str::to_owned),
        body: body.to_owned(),
    }
}

fn ok_results(results: Vec<MutationResult>) -> HttpOutcome {
    let body = serde_json::to_string(&PushResponse {
        results,
        server_time: T0,
    })
    .unwrap();
    respond(200, None, &body)
}

fn applied(seqs: &[u64]) -> HttpOutcome {
    ok_results(
        seqs.iter()
            .map(|&seq| MutationResult::Applied {
                seq,
                version: seq,
                stamped_at: None,
            })
            .collect(),
    )
}

fn drain(f: &mut Flusher) -> Vec<Action> {
    std::iter::from_fn(|| f.poll_action()).collect()
}

fn sent_seqs(action: &Action) -> Vec<u64> {
    match action {
        Action::Send(SendRequest::Push(p)) => p.mutations.iter().map(|m| m.seq).collect(),
        Action::Send(SendRequest::Captured { seq, .. } | SendRequest::Blob { seq, .. }) => {
            vec![*seq]
        }
        other => panic!("expected a send, got {other:?}"),
    }
}

fn record_plan(actions: &[Action]) -> RecordPlan {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Record(p) => Some(p.clone()),
            _ => None,
        })
        .expect("a record action")
}

/// Start a flush and feed it `entries`; returns the send action.
fn start_and_load(f: &mut Flusher, now: Millis, entries: Vec<QueuedEntry>) -> Action {
    assert!(f.handle_trigger(now, Trigger::Manual));
    assert!(matches!(drain(f).as_slice(), [Action::LoadBatch { .. }]));
    f.handle_batch_loaded(now, entries);
    let mut actions = drain(f);
    assert_eq!(actions.len(), 1, "{actions:?}");
    actions.remove(0)
}

#[test]
fn a_trigger_when_idle_asks_for_a_batch_after_the_last_acked_seq() {
    let mut f = flusher(100);
    assert!(f.handle_trigger(T0, Trigger::Write));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 0,
            limit: 100
        }]
    );
    assert_eq!(f.state(), FlusherState::Loading);
}

#[test]
fn triggers_during_a_flush_start_no_second_flush_but_one_more_round() {
    let mut f = flusher(100);
    f.handle_trigger(T0, Trigger::Write);
    drain(&mut f);
    for t in [
        Trigger::Write,
        Trigger::Sync { last_chance: false },
        Trigger::PeriodicSync,
        Trigger::PageEvent,
    ] {
        assert!(!f.handle_trigger(T0, t), "no second flush for {t:?}");
        assert!(drain(&mut f).is_empty());
    }
    assert_eq!(f.flushes_started(), 1);
    // The flush finds nothing, pulls, then runs once more because of the "again" flag.
    f.handle_batch_loaded(T0, vec![]);
    assert_eq!(drain(&mut f), vec![Action::Pull]);
    f.handle_pulled(T0, Ok(()));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 0,
            limit: 100
        }]
    );
    assert_eq!(f.flushes_started(), 2);
    f.handle_batch_loaded(T0, vec![]);
    drain(&mut f);
    f.handle_pulled(T0, Ok(()));
    assert!(drain(&mut f).is_empty());
    assert_eq!(f.state(), FlusherState::Idle);
}

#[test]
fn an_empty_outbox_ends_the_flush_with_a_pull_and_goes_idle() {
    let mut f = flusher(10);
    f.handle_trigger(T0, Trigger::WorkerStart);
    drain(&mut f);
    f.handle_batch_loaded(T0, vec![]);
    assert_eq!(drain(&mut f), vec![Action::Pull]);
    assert!(f.is_busy());
    f.handle_pulled(T0, Ok(()));
    assert_eq!(f.state(), FlusherState::Idle);
    assert!(!f.is_busy());
}

#[test]
fn a_batch_is_capped_at_the_batch_size_in_seq_order() {
    let mut f = flusher(3);
    let send = start_and_load(
        &mut f,
        T0,
        (1..=5).map(|s| mutation(s, &format!("k{s}"))).collect(),
    );
    assert_eq!(sent_seqs(&send), vec![1, 2, 3]);
    let Action::Send(SendRequest::Push(p)) = send else {
        unreachable!()
    };
    assert_eq!(p.client_id, "c1");
    assert_eq!(f.in_flight(), vec![1, 2, 3]);
}

#[test]
fn a_batch_stops_before_a_captured_request() {
    let mut f = flusher(10);
    let send = start_and_load(
        &mut f,
        T0,
        vec![
            mutation(1, "a"),
            mutation(2, "b"),
            captured(3),
            mutation(4, "c"),
        ],
    );
    assert_eq!(sent_seqs(&send), vec![1, 2]);
}

#[test]
fn a_captured_request_at_the_head_is_sent_alone_with_an_idempotency_key() {
    let mut f = flusher(10);
    let send = start_and_load(&mut f, T0, vec![captured(7), mutation(8, "a")]);
    match send {
        Action::Send(SendRequest::Captured {
            seq,
            idempotency_key,
            request,
        }) => {
            assert_eq!(seq, 7);
            assert_eq!(idempotency_key, "c1:7");
            assert_eq!(request.method, "POST");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn applied_duplicate_and_conflict_are_acknowledged_and_rejected_goes_dead() {
    let mut f = flusher(10);
    start_and_load(
        &mut f,
        T0,
        vec![
            mutation(1, "a"),
            mutation(2, "b"),
            mutation(3, "c"),
            mutation(4, "d"),
        ],
    );
    let current = CurrentEntity {
        value: json!({"server": true}),
        deleted: false,
        updated_at: T0 + 5,
        version: 9,
    };
    f.handle_push_outcome(
        T0,
        &ok_results(vec![
            MutationResult::Applied {
                seq: 1,
                version: 3,
                stamped_at: None,
            },
            MutationResult::Duplicate { seq: 2 },
            MutationResult::Conflict {
                seq: 3,
                current: current.clone(),
            },
            MutationResult::Rejected {
                seq: 4,
                reason: "value exceeds 1 MiB".into(),
            },
        ]),
        &mut SplitMix64(1),
    );
    let plan = record_plan(&drain(&mut f));
    assert_eq!(plan.ack, vec![1, 2, 3]);
    assert_eq!(plan.applied, vec![(1, 3)]);
    assert_eq!(plan.adopt, vec![("notes".into(), "c".into(), current)]);
    assert_eq!(plan.dead, vec![(4, "value exceeds 1 MiB".into())]);
    assert!(plan.bump_attempts.is_empty());
    assert_eq!(
        plan.remove_range,
        Some((1, 4)),
        "the whole batch leaves with one range delete"
    );
    assert_eq!(f.last_synced_at(), Some(T0));
    // After the record, the next batch is read after the last removed seq.
    f.handle_recorded(T0, Ok(()));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 4,
            limit: 10
        }]
    );
}

#[test]
fn results_that_do_not_match_the_batch_back_off_with_bad_response() {
    for results in [
        vec![MutationResult::Applied {
            seq: 1,
            version: 1,
            stamped_at: None,
        }],
        vec![
            MutationResult::Applied {
                seq: 2,
                version: 1,
                stamped_at: None,
            },
            MutationResult::Applied {
                seq: 1,
                version: 1,
                stamped_at: None,
            },
        ],
        vec![
            MutationResult::Applied {
                seq: 1,
                version: 1,
                stamped_at: None,
            },
            MutationResult::Applied {
                seq: 2,
                version: 1,
                stamped_at: None,
            },
            MutationResult::Applied {
                seq: 3,
                version: 1,
                stamped_at: None,
            },
        ],
    ] {
        let mut f = flusher(10);
        start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
        f.handle_push_outcome(T0, &ok_results(results), &mut SplitMix64(2));
        let plan = record_plan(&drain(&mut f));
        assert!(
            plan.ack.is_empty() && plan.dead.is_empty(),
            "nothing leaves the outbox"
        );
        assert_eq!(plan.bump_attempts, vec![1, 2]);
        assert_eq!(f.last_error().unwrap().code, codes::BAD_RESPONSE);
        f.handle_recorded(T0, Ok(()));
        assert!(matches!(f.state(), FlusherState::WaitingRetry { .. }));
    }
}

#[test]
fn a_503_with_retry_after_waits_at_least_that_long_even_for_explicit_triggers() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(
        T0,
        &respond(
            503,
            Some("30"),
            r#"{"error":{"code":"x","message":"busy"}}"#,
        ),
        &mut SplitMix64(3),
    );
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    drain(&mut f);
    let until = f.poll_timeout().expect("a wake-up");
    assert!(until >= T0 + 30_000, "Retry-After honoured: {until}");
    for t in [
        Trigger::Manual,
        Trigger::Sync { last_chance: false },
        Trigger::Online,
        Trigger::Write,
    ] {
        assert!(
            !f.handle_trigger(T0 + 29_000, t),
            "{t:?} must not jump Retry-After"
        );
    }
    assert!(!f.handle_timeout(until - 1));
    assert!(f.handle_timeout(until));
    assert!(matches!(
        drain(&mut f).as_slice(),
        [Action::LoadBatch { .. }]
    ));
}

#[test]
fn a_429_with_retry_after_is_honoured_like_a_503() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, &respond(429, Some("5"), "{}"), &mut SplitMix64(3));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    assert!(f.poll_timeout().unwrap() >= T0 + 5_000);
}

#[test]
fn a_failed_attempt_bumps_attempts_schedules_a_wake_and_asks_for_background_sync() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
    f.handle_push_outcome(T0, &respond(500, None, "{}"), &mut SplitMix64(4));
    let plan = record_plan(&drain(&mut f));
    assert_eq!(plan.bump_attempts, vec![1, 2]);
    assert_eq!(plan.tried, vec![1, 2]);
    assert!(f.last_attempt_failed());
    f.handle_recorded(T0, Ok(()));
    let actions = drain(&mut f);
    let until = f.poll_timeout().unwrap();
    assert_eq!(
        actions,
        vec![Action::ScheduleWake { at: until }, Action::RegisterSync]
    );
    assert!(
        (T0..=T0 + 1_000).contains(&until),
        "first retry within the base delay: {until}"
    );
    assert_eq!(f.last_error().unwrap().code, codes::SERVER_ERROR);
}

#[test]
fn backoff_uses_full_jitter_within_an_exponential_cap() {
    let mut f = flusher(10);
    let mut rng = SplitMix64(42);
    let mut now = T0;
    let mut delays = Vec::new();
    for attempt in 1..=8u32 {
        assert!(f.handle_trigger(now, Trigger::Manual) || f.handle_timeout(now));
        drain(&mut f);
        f.handle_batch_loaded(now, vec![mutation(1, "a")]);
        drain(&mut f);
        f.handle_push_outcome(now, &respond(500, None, "{}"), &mut rng);
        drain(&mut f);
        f.handle_recorded(now, Ok(()));
        drain(&mut f);
        let until = f.poll_timeout().unwrap();
        let delay = (until - now) as u64;
        let cap = (1_000u64 << (attempt - 1)).min(60_000);
        assert!(delay <= cap, "attempt {attempt}: {delay} > {cap}");
        delays.push(delay);
        now = until;
    }
    // Full jitter: not every delay sits on the cap.
    assert!(delays.iter().any(|&d| d < 30_000), "{delays:?}");
}

#[test]
fn success_resets_the_backoff() {
    let mut f = flusher(10);
    let mut rng = SplitMix64(5);
    for _ in 0..6 {
        let now = f.poll_timeout().unwrap_or(T0);
        assert!(f.handle_timeout(now) || f.handle_trigger(now, Trigger::Manual));
        drain(&mut f);
        f.handle_batch_loaded(now, vec![mutation(1, "a")]);
        drain(&mut f);
        f.handle_push_outcome(now, &respond(500, None, "{}"), &mut rng);
        drain(&mut f);
        f.handle_recorded(now, Ok(()));
        drain(&mut f);
    }
    let now = f.poll_timeout().unwrap();
    f.handle_timeout(now);
    drain(&mut f);
    f.handle_batch_loaded(now, vec![mutation(1, "a")]);
    drain(&mut f);
    f.handle_push_outcome(now, &applied(&[1]), &mut rng);
    drain(&mut f);
    f.handle_recorded(now, Ok(()));
    drain(&mut f);
    f.handle_batch_loaded(now, vec![mutation(2, "b")]);
    drain(&mut f);
    f.handle_push_outcome(now, &respond(500, None, "{}"), &mut rng);
    drain(&mut f);
    f.handle_recorded(now, Ok(()));
    assert!(
        f.poll_timeout().unwrap() <= now + 1_000,
        "back to the first delay"
    );
}

#[test]
fn an_explicit_trigger_cuts_a_plain_backoff_short_but_a_write_does_not() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(
        T0,
        &HttpOutcome::Network {
            message: "down".into(),
        },
        &mut SplitMix64(99),
    );
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    drain(&mut f);
    let until = f.poll_timeout().unwrap();
    if until > T0 {
        assert!(!f.handle_trigger(T0, Trigger::Write));
        assert!(!f.handle_trigger(T0, Trigger::PageEvent));
        assert!(!f.handle_trigger(T0, Trigger::Timer));
    }
    assert!(f.handle_trigger(T0, Trigger::Online));
}

#[test]
fn a_413_halves_the_batch_down_to_one_then_dead_letters_it() {
    let mut f = flusher(8);
    let entries: Vec<QueuedEntry> = (1..=8).map(|s| mutation(s, &format!("k{s}"))).collect();
    let mut send = start_and_load(&mut f, T0, entries.clone());
    let mut sizes = vec![sent_seqs(&send).len()];
    loop {
        f.handle_push_outcome(
            T0,
            &respond(
                413,
                None,
                r#"{"error":{"code":"too_large","message":"big"}}"#,
            ),
            &mut SplitMix64(6),
        );
        let actions = drain(&mut f);
        match actions.as_slice() {
            [Action::LoadBatch { after: 0, limit }] => {
                f.handle_batch_loaded(T0, entries.clone());
                send = drain(&mut f).remove(0);
                assert_eq!(sent_seqs(&send).len(), *limit);
                sizes.push(*limit);
            }
            [Action::Record(plan)] => {
                assert_eq!(plan.dead.len(), 1);
                assert_eq!(plan.dead[0].0, 1);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sizes, vec![8, 4, 2, 1]);
}

#[test]
fn a_400_for_a_single_mutation_dead_letters_it_and_the_flush_goes_on() {
    let mut f = flusher(1);
    start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
    f.handle_push_outcome(
        T0,
        &respond(
            400,
            None,
            r#"{"error":{"code":"invalid","message":"bad key"}}"#,
        ),
        &mut SplitMix64(7),
    );
    let plan = record_plan(&drain(&mut f));
    assert_eq!(plan.dead.iter().map(|d| d.0).collect::<Vec<_>>(), vec![1]);
    f.handle_recorded(T0, Ok(()));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch { after: 1, limit: 1 }]
    );
}

#[test]
fn a_401_or_403_stops_everything_until_the_configuration_changes() {
    for status in [401u16, 403] {
        let mut f = flusher(10);
        start_and_load(&mut f, T0, vec![mutation(1, "a")]);
        f.handle_push_outcome(
            T0,
            &respond(status, None, r#"{"error":{"code":"auth","message":"no"}}"#),
            &mut SplitMix64(8),
        );
        let plan = record_plan(&drain(&mut f));
        assert!(
            plan.ack.is_empty() && plan.dead.is_empty(),
            "nothing is lost"
        );
        f.handle_recorded(T0, Ok(()));
        assert_eq!(f.state(), FlusherState::AuthStopped);
        assert_eq!(f.last_error().unwrap().code, codes::AUTH);
        for t in [
            Trigger::Manual,
            Trigger::Sync { last_chance: true },
            Trigger::Online,
            Trigger::Timer,
        ] {
            assert!(!f.handle_trigger(T0 + 1_000_000, t));
        }
        let st = f.status(
            &StoreCounts {
                pending: 1,
                ..StoreCounts::default()
            },
            Mode::Worker,
        );
        assert_eq!(st.state, SyncState::AuthError);
        f.handle_config_changed(10, policy());
        assert_eq!(f.state(), FlusherState::Idle);
        assert!(f.last_error().is_none());
        assert!(f.handle_trigger(T0, Trigger::Manual));
    }
}

#[test]
fn entries_out_of_attempts_are_dead_lettered_before_anything_is_sent() {
    let mut f = flusher(10);
    let mut tired = mutation(1, "a");
    tired.attempts = 5;
    assert!(f.handle_trigger(T0, Trigger::Manual));
    drain(&mut f);
    f.handle_batch_loaded(T0, vec![tired, mutation(2, "b")]);
    let actions = drain(&mut f);
    let plan = record_plan(&actions);
    assert_eq!(plan.dead.len(), 1);
    assert_eq!(plan.dead[0].0, 1);
    assert!(!actions.iter().any(|a| matches!(a, Action::Send(_))));
    f.handle_recorded(T0, Ok(()));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 1,
            limit: 10
        }]
    );
    f.handle_batch_loaded(T0, vec![mutation(2, "b")]);
    assert_eq!(sent_seqs(&drain(&mut f)[0]), vec![2]);
}

#[test]
fn entries_older_than_the_max_age_are_dead_lettered() {
    let mut f = Flusher::new(
        "c1",
        10,
        RetryPolicy {
            max_age_ms: 60_000,
            ..policy()
        },
    );
    f.handle_trigger(T0, Trigger::Manual);
    drain(&mut f);
    f.handle_batch_loaded(T0 + 61_000, vec![mutation(1, "a")]);
    assert_eq!(record_plan(&drain(&mut f)).dead[0].0, 1);
}

#[test]
fn a_captured_request_is_acked_on_2xx_dead_on_404_and_retried_on_500() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![captured(1)]);
    f.handle_captured_outcome(T0, &respond(201, None, ""), &mut SplitMix64(9));
    assert_eq!(record_plan(&drain(&mut f)).ack, vec![1]);

    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![captured(1)]);
    f.handle_captured_outcome(T0, &respond(404, None, ""), &mut SplitMix64(9));
    assert_eq!(record_plan(&drain(&mut f)).dead[0].0, 1);

    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![captured(1)]);
    f.handle_captured_outcome(T0, &respond(500, None, ""), &mut SplitMix64(9));
    assert_eq!(record_plan(&drain(&mut f)).bump_attempts, vec![1]);
    f.handle_recorded(T0, Ok(()));
    assert!(matches!(f.state(), FlusherState::WaitingRetry { .. }));
}

#[test]
fn a_blob_upload_is_sent_alone_in_seq_order_before_the_write_that_references_it() {
    let mut f = flusher(10);
    let send = start_and_load(&mut f, T0, vec![blob(1), mutation(2, "a")]);
    assert_eq!(
        send,
        Action::Send(SendRequest::Blob {
            seq: 1,
            upload: BlobUpload {
                sha256: "ab".repeat(32),
                size: 3
            }
        })
    );
    f.handle_blob_outcome(
        T0,
        &respond(200, None, r#"{"complete":true}"#),
        &mut SplitMix64(1),
    );
    assert_eq!(record_plan(&drain(&mut f)).ack, vec![1]);
    f.handle_recorded(T0, Ok(()));
    let next = drain(&mut f);
    assert!(
        matches!(next.as_slice(), [Action::LoadBatch { after: 1, .. }]),
        "{next:?}"
    );
}

#[test]
fn a_blob_refused_for_auth_stops_the_outbox_and_one_over_quota_goes_dead() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![blob(1)]);
    f.handle_blob_outcome(T0, &respond(401, None, ""), &mut SplitMix64(2));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    assert_eq!(f.state(), FlusherState::AuthStopped);

    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![blob(1)]);
    let quota = r#"{"error":{"code":"blob_quota_exceeded","message":"over quota"}}"#;
    f.handle_blob_outcome(T0, &respond(413, None, quota), &mut SplitMix64(2));
    let plan = record_plan(&drain(&mut f));
    assert_eq!(plan.dead.len(), 1);
    assert!(plan.dead[0].1.contains("blob_quota_exceeded"), "{plan:?}");
}

#[test]
fn a_server_without_a_blob_endpoint_is_retried_without_counting_toward_max_attempts() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![blob(1)]);
    f.handle_blob_outcome(T0, &respond(404, None, ""), &mut SplitMix64(3));
    let plan = record_plan(&drain(&mut f));
    assert!(
        plan.dead.is_empty() && plan.bump_attempts.is_empty(),
        "{plan:?}"
    );
    f.handle_recorded(T0, Ok(()));
    assert_eq!(f.last_error().unwrap().code, codes::CONFIG_ERROR);
    assert!(matches!(f.state(), FlusherState::WaitingRetry { .. }));
}

#[test]
fn a_failed_record_keeps_everything_and_retries_later() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, &applied(&[1]), &mut SplitMix64(10));
    drain(&mut f);
    f.handle_recorded(T0, Err("QuotaExceededError".into()));
    assert_eq!(f.last_error().unwrap().code, codes::STORAGE_ERROR);
    assert!(matches!(f.state(), FlusherState::WaitingRetry { .. }));
}

#[test]
fn offline_shows_in_the_status_and_online_flushes() {
    let mut f = flusher(10);
    assert!(!f.handle_trigger(T0, Trigger::Offline));
    let st = f.status(
        &StoreCounts {
            pending: 2,
            ..StoreCounts::default()
        },
        Mode::Page,
    );
    assert_eq!(st.state, SyncState::Offline);
    assert_eq!(st.mode, Mode::Page);
    assert!(f.handle_trigger(T0, Trigger::Online));
    assert!(f.is_online());
}

#[test]
fn the_status_shows_syncing_with_the_batch_in_flight_and_the_next_retry_when_waiting() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
    let counts = StoreCounts {
        pending: 5,
        dead: 1,
        last_saved_at: Some(T0),
        last_exported_at: None,
        saving: false,
        blob_bytes_pending: 7,
    };
    let st = f.status(&counts, Mode::Worker);
    assert_eq!(st.blob_bytes_pending, 7);
    assert_eq!(
        (st.state, st.in_flight, st.pending, st.dead),
        (SyncState::Syncing, 2, 5, 1)
    );
    f.handle_push_outcome(T0, &respond(500, None, "{}"), &mut SplitMix64(11));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    let st = f.status(&counts, Mode::Worker);
    assert_eq!(st.state, SyncState::WaitingRetry);
    assert_eq!(st.next_retry_at, f.poll_timeout());
    assert_eq!(st.last_error.unwrap().code, codes::SERVER_ERROR);
    assert_eq!(st.last_saved_at, Some(T0));
}

#[test]
fn the_status_is_saving_while_a_write_commits_and_idle_after() {
    let f = flusher(10);
    let st = f.status(
        &StoreCounts {
            saving: true,
            ..StoreCounts::default()
        },
        Mode::Worker,
    );
    assert_eq!(st.state, SyncState::Saving);
    let st = f.status(&StoreCounts::default(), Mode::Worker);
    assert_eq!(st.state, SyncState::Idle);
    assert!(st.last_error.is_none());
}

#[test]
fn coalescing_keeps_the_newest_write_of_each_entity_in_seq_order() {
    let queue = vec![
        mutation(1, "a"),
        mutation(2, "b"),
        captured(3),
        mutation(4, "a"),
        mutation(5, "c"),
        mutation(6, "a"),
    ];
    let kept: Vec<u64> = coalesce(queue.clone(), &[]).iter().map(|e| e.seq).collect();
    // 1 is queued before the captured request 3, which may depend on it: it stays.
    assert_eq!(kept, vec![1, 2, 3, 5, 6]);
    // An entry on the wire is never dropped.
    let kept: Vec<u64> = coalesce(queue, &[4]).iter().map(|e| e.seq).collect();
    assert_eq!(kept, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_new_write_supersedes_only_queued_entries_that_are_not_in_flight() {
    assert_eq!(superseded(&[3, 7, 9], &[7]), vec![3, 9]);
    assert!(superseded(&[], &[1]).is_empty());
}

/// A fake shell: an outbox in a BTreeMap, a server that applies each (client, seq) once and
/// sometimes fails (before or after applying), a virtual clock. Whatever happens, every entry
/// reaches the server exactly once, in seq order, and the outbox ends empty.
#[test]
fn a_flaky_server_still_gets_every_entry_exactly_once_in_seq_order() {
    for seed in 0..40u64 {
        let mut rng = SplitMix64(seed);
        let mut chaos = SplitMix64(seed.wrapping_mul(7919) + 1);
        let mut f = Flusher::new(
            "c1",
            4,
            RetryPolicy {
                max_attempts: 0,
                ..policy()
            },
        );
        let mut outbox: BTreeMap<u64, QueuedEntry> = (1..=30)
            .map(|s| (s, mutation(s, &format!("k{}", s % 7))))
            .collect();
        let mut applied_order: Vec<u64> = Vec::new();
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        let mut now = T0;
        f.handle_trigger(now, Trigger::WorkerStart);
        for _ in 0..10_000 {
            let Some(action) = f.poll_action() else {
                match f.poll_timeout() {
                    Some(at) => {
                        now = now.max(at);
                        f.handle_timeout(now);
                        continue;
                    }
                    None if outbox.is_empty() => break,
                    None => {
                        f.handle_trigger(now, Trigger::Manual);
                        continue;
                    }
                }
            };
            match action {
                Action::LoadBatch { after, limit } => {
                    let batch = outbox
                        .range(after + 1..)
                        .take(limit)
                        .map(|(_, e)| e.clone())
                        .collect();
                    f.handle_batch_loaded(now, batch);
                }
                Action::Send(SendRequest::Push(p)) => {
                    let roll = chaos.next_unit();
                    let outcome = if roll < 0.2 {
                        HttpOutcome::Network {
                            message: "refused".into(),
                        }
                    } else if roll < 0.3 {
                        respond(503, Some("1"), "{}")
                    } else {
                        let results = p
                            .mutations
                            .iter()
                            .map(|m| {
                                if seen.insert(m.seq) {
                                    applied_order.push(m.seq);
                                    MutationResult::Applied {
                                        seq: m.seq,
                                        version: 1,
                                        stamped_at: None,
                                    }
                                } else {
                                    MutationResult::Duplicate { seq: m.seq }
                                }
                            })
                            .collect();
                        if roll < 0.45 {
                            // Applied, but the answer is lost.
                            HttpOutcome::Network {
                                message: "reset".into(),
                            }
                        } else {
                            ok_results(results)
                        }
                    };
                    f.handle_push_outcome(now, &outcome, &mut rng);
                }
                Action::Send(SendRequest::Captured { .. } | SendRequest::Blob { .. }) => {
                    unreachable!()
                }
                Action::Record(plan) => {
                    for s in plan.removed() {
                        outbox.remove(&s);
                    }
                    for s in plan.bump_attempts {
                        if let Some(e) = outbox.get_mut(&s) {
                            e.attempts += 1;
                        }
                    }
                    f.handle_recorded(now, Ok(()));
                }
                Action::Pull => f.handle_pulled(now, Ok(())),
                Action::ScheduleWake { .. } | Action::RegisterSync => {}
            }
            now += 1;
        }
        assert!(outbox.is_empty(), "seed {seed}: outbox not drained");
        assert_eq!(applied_order, (1..=30).collect::<Vec<_>>(), "seed {seed}");
    }
}

#[test]
fn a_write_during_a_send_is_picked_up_by_the_same_flush_without_an_extra_round() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    assert!(!f.handle_trigger(T0, Trigger::Write));
    f.handle_push_outcome(T0, &applied(&[1]), &mut SplitMix64(12));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 1,
            limit: 10
        }]
    );
    f.handle_batch_loaded(T0, vec![mutation(2, "b")]);
    drain(&mut f);
    f.handle_push_outcome(T0, &applied(&[2]), &mut SplitMix64(12));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    drain(&mut f);
    f.handle_batch_loaded(T0, vec![]);
    assert_eq!(drain(&mut f), vec![Action::Pull]);
    f.handle_pulled(T0, Ok(()));
    assert!(
        drain(&mut f).is_empty(),
        "no second flush: the write went out in this one"
    );
    assert_eq!(f.flushes_started(), 1);
}

#[test]
fn a_config_change_during_a_backoff_retries_at_once() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, &respond(503, Some("600"), "{}"), &mut SplitMix64(13));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    drain(&mut f);
    f.handle_config_changed(10, policy());
    assert!(
        f.handle_trigger(T0, Trigger::Manual),
        "a new config (new server?) is tried now"
    );
}

fn network() -> HttpOutcome {
    HttpOutcome::Network {
        message: "connection refused".into(),
    }
}

#[test]
fn network_rate_limited_and_unavailable_failures_never_count_toward_max_attempts() {
    for outcome in [
        network(),
        respond(429, None, "{}"),
        respond(429, Some("1"), "{}"),
        respond(503, None, "{}"),
        respond(503, Some("1"), "{}"),
        respond(502, None, "<html>Bad Gateway</html>"),
        respond(504, None, ""),
    ] {
        let mut f = flusher(10);
        start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
        f.handle_push_outcome(T0, &outcome, &mut SplitMix64(20));
        let plan = record_plan(&drain(&mut f));
        assert!(plan.bump_attempts.is_empty(), "{outcome:?}: {plan:?}");
        assert_eq!(plan.tried, vec![1, 2], "{outcome:?}: still a delivery try");
        f.handle_recorded(T0, Ok(()));
        assert!(matches!(f.state(), FlusherState::WaitingRetry { .. }));
    }
    // The same for a captured request.
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![captured(1)]);
    f.handle_captured_outcome(T0, &network(), &mut SplitMix64(20));
    assert!(record_plan(&drain(&mut f)).bump_attempts.is_empty());
    // A server that fails (500) does count.
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, &respond(500, None, "{}"), &mut SplitMix64(20));
    assert_eq!(record_plan(&drain(&mut f)).bump_attempts, vec![1]);
}

#[test]
fn an_outage_longer_than_max_attempts_dead_letters_nothing() {
    let mut f = flusher(10); // max_attempts 5
    let mut outbox: BTreeMap<u64, QueuedEntry> = (1..=3)
        .map(|s| (s, mutation(s, &format!("k{s}"))))
        .collect();
    let mut now = T0;
    for _ in 0..40 {
        if !f.handle_trigger(now, Trigger::WorkerStart) {
            now = f.poll_timeout().unwrap_or(now);
            assert!(f.handle_timeout(now) || f.handle_trigger(now, Trigger::Manual));
        }
        let Some(Action::LoadBatch { after, limit }) = f.poll_action() else {
            panic!("a load")
        };
        let batch = outbox
            .range(after + 1..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect();
        f.handle_batch_loaded(now, batch);
        let actions = drain(&mut f);
        assert!(
            matches!(actions.as_slice(), [Action::Send(_)]),
            "sent again, not dead-lettered: {actions:?}"
        );
        f.handle_push_outcome(now, &network(), &mut SplitMix64(21));
        let plan = record_plan(&drain(&mut f));
        for s in plan.bump_attempts {
            outbox.get_mut(&s).unwrap().attempts += 1;
        }
        f.handle_recorded(now, Ok(()));
        drain(&mut f);
        now += 1;
    }
    assert!(outbox.values().all(|e| e.attempts == 0));
}

#[test]
fn a_new_write_never_coalesces_across_a_captured_request() {
    // seq 1 put X, seq 2 captured POST /share/X, then a write of X: seq 1 must stay.
    let guard = CoalesceGuard {
        in_flight: vec![],
        loading_after: None,
        barrier: 2,
    };
    assert!(coalescable(&[1], &guard).is_empty());
    assert_eq!(coalescable(&[1, 3, 4], &guard), vec![3, 4]);
    assert_eq!(
        coalescable(&[1, 3], &CoalesceGuard::default()),
        vec![1, 3],
        "no captured request: as before"
    );
}

#[test]
fn entries_loaded_or_being_recorded_are_never_coalesced_away() {
    let mut f = flusher(10);
    // While the batch is being read, nothing it may read is coalesced.
    assert!(f.handle_trigger(T0, Trigger::Manual));
    drain(&mut f);
    let guard = f.coalesce_guard();
    assert_eq!(guard.loading_after, Some(0));
    assert!(coalescable(&[1, 2], &guard).is_empty());
    // An expired entry being dead-lettered is protected until the record commits.
    let mut tired = mutation(1, "a");
    tired.attempts = 5;
    f.handle_batch_loaded(T0, vec![tired, mutation(2, "b")]);
    drain(&mut f);
    assert_eq!(f.state(), FlusherState::Recording);
    assert!(f.in_flight().contains(&1), "{:?}", f.in_flight());
    assert!(coalescable(&[1], &f.coalesce_guard()).is_empty());
    f.handle_recorded(T0, Ok(()));
    drain(&mut f);
    // A sent batch stays protected while its (rejected) result is recorded.
    f.handle_batch_loaded(T0, vec![mutation(2, "b")]);
    drain(&mut f);
    f.handle_push_outcome(
        T0,
        &ok_results(vec![MutationResult::Rejected {
            seq: 2,
            reason: "no".into(),
        }]),
        &mut SplitMix64(22),
    );
    drain(&mut f);
    assert_eq!(f.state(), FlusherState::Recording);
    assert_eq!(f.in_flight(), vec![2]);
    f.handle_recorded(T0, Ok(()));
    assert!(f.in_flight().is_empty() || f.state() == FlusherState::Loading);
}

#[test]
fn the_read_position_moves_only_after_the_record_commits() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
    f.handle_push_outcome(T0, &applied(&[1, 2]), &mut SplitMix64(23));
    drain(&mut f);
    f.handle_recorded(T0, Err("QuotaExceededError".into()));
    drain(&mut f);
    let until = f.poll_timeout().unwrap();
    assert!(f.handle_timeout(until));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 0,
            limit: 10
        }],
        "the entries are still queued: read them again"
    );
}

#[test]
fn an_expired_entry_behind_a_live_one_does_not_move_the_read_position_past_it() {
    let mut f = flusher(10);
    let mut tired = mutation(2, "b");
    tired.attempts = 5;
    assert!(f.handle_trigger(T0, Trigger::Manual));
    drain(&mut f);
    f.handle_batch_loaded(T0, vec![mutation(1, "a"), tired]);
    let plan = record_plan(&drain(&mut f));
    assert_eq!(plan.dead.iter().map(|d| d.0).collect::<Vec<_>>(), vec![2]);
    f.handle_recorded(T0, Ok(()));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 0,
            limit: 10
        }],
        "seq 1 is still queued"
    );
    f.handle_batch_loaded(T0, vec![mutation(1, "a"), mutation(3, "c")]);
    assert_eq!(sent_seqs(&drain(&mut f)[0]), vec![1, 3]);
    f.handle_push_outcome(T0, &applied(&[1, 3]), &mut SplitMix64(24));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    assert_eq!(
        drain(&mut f),
        vec![Action::LoadBatch {
            after: 3,
            limit: 10
        }]
    );
}

#[test]
fn a_conflict_followed_by_an_applied_write_of_the_same_entity_adopts_nothing() {
    let current = CurrentEntity {
        value: json!({"server": "old"}),
        deleted: false,
        updated_at: T0 + 1,
        version: 4,
    };
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "a")]);
    f.handle_push_outcome(
        T0,
        &ok_results(vec![
            MutationResult::Conflict {
                seq: 1,
                current: current.clone(),
            },
            MutationResult::Applied {
                seq: 2,
                version: 5,
                stamped_at: None,
            },
        ]),
        &mut SplitMix64(25),
    );
    let plan = record_plan(&drain(&mut f));
    assert!(plan.adopt.is_empty(), "{plan:?}");
    assert_eq!(plan.applied, vec![(2, 5)]);
    // The other way round, the later conflict's current is the truth.
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "a")]);
    f.handle_push_outcome(
        T0,
        &ok_results(vec![
            MutationResult::Applied {
                seq: 1,
                version: 3,
                stamped_at: None,
            },
            MutationResult::Conflict {
                seq: 2,
                current: current.clone(),
            },
        ]),
        &mut SplitMix64(25),
    );
    assert_eq!(
        record_plan(&drain(&mut f)).adopt,
        vec![("notes".into(), "a".into(), current)]
    );
}

#[test]
fn a_retry_after_floor_is_persisted_and_survives_a_config_update_a_restart_and_a_failed_record() {
    let floor = T0 + 30_000;
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, &respond(503, Some("30"), "{}"), &mut SplitMix64(26));
    let plan = record_plan(&drain(&mut f));
    assert_eq!(
        plan.backoff.map(|b| b.not_before),
        Some(floor),
        "persisted with the attempt"
    );
    f.handle_recorded(T0, Ok(()));
    drain(&mut f);
    // Same server, same token: the page's Configure on load keeps the floor.
    f.handle_config_update(10, policy(), false);
    assert!(!f.handle_trigger(T0 + 1_000, Trigger::Manual));
    assert!(!f.handle_trigger(T0 + 1_000, Trigger::WorkerStart));
    assert_eq!(f.poll_timeout(), Some(floor));
    assert!(f.handle_trigger(floor, Trigger::Manual));
    // A new server lifts it.
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, &respond(503, Some("30"), "{}"), &mut SplitMix64(26));
    drain(&mut f);
    f.handle_recorded(T0, Ok(()));
    f.handle_config_update(10, policy(), true);
    assert!(f.handle_trigger(T0 + 1_000, Trigger::Manual));
    // A restarted worker restores it.
    let mut f = flusher(10);
    f.restore_backoff(
        T0,
        Some(Backoff {
            attempt: 1,
            retry_at: floor,
            not_before: floor,
            unreachable: false,
        }),
    );
    assert!(!f.handle_trigger(T0, Trigger::WorkerStart));
    assert!(!f.handle_trigger(T0, Trigger::Sync { last_chance: false }));
    assert_eq!(f.poll_timeout(), Some(floor));
    let mut f = flusher(10);
    f.restore_backoff(
        T0,
        Some(Backoff {
            attempt: 1,
            retry_at: T0 - 1,
            not_before: T0 - 1,
            unreachable: false,
        }),
    );
    assert!(
        f.handle_trigger(T0, Trigger::WorkerStart),
        "a past floor is void"
    );
    // A failed record of the attempt keeps the floor.
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, &respond(503, Some("30"), "{}"), &mut SplitMix64(26));
    drain(&mut f);
    f.handle_recorded(T0, Err("QuotaExceededError".into()));
    assert!(f.poll_timeout().unwrap() >= floor);
    assert!(!f.handle_trigger(T0 + 2_000, Trigger::Manual));
}

#[test]
fn a_batch_read_error_backs_off_instead_of_ending_the_flush() {
    let mut f = flusher(10);
    assert!(f.handle_trigger(T0, Trigger::Manual));
    drain(&mut f);
    f.handle_batch_failed(
        T0,
        codes::STORAGE_ERROR,
        "UnknownError",
        &mut SplitMix64(27),
    );
    let actions = drain(&mut f);
    assert!(
        !actions.contains(&Action::Pull),
        "no pull over an unread outbox: {actions:?}"
    );
    assert!(matches!(f.state(), FlusherState::WaitingRetry { .. }));
    assert_eq!(f.last_error().unwrap().code, codes::STORAGE_ERROR);
    let st = f.status(
        &StoreCounts {
            pending: 3,
            ..StoreCounts::default()
        },
        Mode::Worker,
    );
    assert_eq!(st.state, SyncState::WaitingRetry);
    assert!(st.next_retry_at.is_some());
    let until = f.poll_timeout().unwrap();
    assert!(f.handle_timeout(until));
}

#[test]
fn a_dead_letter_counts_the_attempt_that_killed_it() {
    let mut f = flusher(10);
    start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
    f.handle_push_outcome(
        T0,
        &ok_results(vec![
            MutationResult::Applied {
                seq: 1,
                version: 1,
                stamped_at: None,
            },
            MutationResult::Rejected {
                seq: 2,
                reason: "bad".into(),
            },
        ]),
        &mut SplitMix64(28),
    );
    let plan = record_plan(&drain(&mut f));
    assert_eq!(plan.tried, vec![1, 2]);
    let mut f = flusher(1);
    start_and_load(&mut f, T0, vec![captured(1)]);
    f.handle_captured_outcome(T0, &respond(403, None, ""), &mut SplitMix64(28));
    let plan = record_plan(&drain(&mut f));
    assert_eq!(plan.dead[0].0, 1);
    assert_eq!(plan.tried, vec![1]);
    // Expired before sending: not tried again.
    let mut f = flusher(10);
    let mut tired = mutation(1, "a");
    tired.attempts = 5;
    f.handle_trigger(T0, Trigger::Manual);
    drain(&mut f);
    f.handle_batch_loaded(T0, vec![tired]);
    let plan = record_plan(&drain(&mut f));
    assert!(plan.tried.is_empty());
    assert!(
        plan.dead[0].1.contains("5 failed attempts"),
        "{}",
        plan.dead[0].1
    );
}

/// Fail one attempt of `mutation(1, "a")` with `outcome` at T0 and commit the record; returns
/// the persisted backoff.
fn fail_once(f: &mut Flusher, outcome: &HttpOutcome, seed: u64) -> Option<Backoff> {
    start_and_load(f, T0, vec![mutation(1, "a")]);
    f.handle_push_outcome(T0, outcome, &mut SplitMix64(seed));
    let plan = record_plan(&drain(f));
    f.handle_recorded(T0, Ok(()));
    drain(f);
    plan.backoff
}

#[test]
fn after_a_server_error_neither_a_worker_start_a_page_event_nor_a_sync_event_sends_before_the_retry_time(
) {
    // Seeds whose first backoff is not 0 ms (full jitter may draw 0).
    for seed in 1..40 {
        let mut f = flusher(10);
        let backoff = fail_once(&mut f, &respond(500, None, "{}"), seed).expect("persisted");
        let until = f.poll_timeout().unwrap();
        assert_eq!(backoff.retry_at, until);
        if until == T0 {
            continue;
        }
        for trigger in [
            Trigger::WorkerStart,
            Trigger::PageEvent,
            Trigger::Write,
            Trigger::Sync { last_chance: false },
            Trigger::Sync { last_chance: true },
            Trigger::Online,
        ] {
            assert!(!f.handle_trigger(until - 1, trigger), "{trigger:?}");
        }
        assert!(f.handle_trigger(until - 1, Trigger::Manual), "a person may");
        return;
    }
    panic!("no seed drew a non-zero backoff");
}

#[test]
fn after_no_answer_at_all_a_sync_event_or_online_may_cut_the_backoff_short() {
    for trigger in [Trigger::Sync { last_chance: false }, Trigger::Online] {
        let mut f = flusher(10);
        let b = fail_once(
            &mut f,
            &HttpOutcome::Network {
                message: "refused".into(),
            },
            3,
        )
        .unwrap();
        assert!(b.unreachable);
        assert!(!f.handle_trigger(T0, Trigger::WorkerStart) || b.retry_at == T0);
        assert!(f.handle_trigger(T0, trigger), "{trigger:?}");
    }
}

#[test]
fn every_failure_persists_its_backoff_and_a_success_clears_it() {
    let mut f = flusher(10);
    let first = fail_once(&mut f, &respond(500, None, "{}"), 5).unwrap();
    assert_eq!(first.attempt, 1);
    assert!(!first.unreachable);
    assert_eq!(first.not_before, T0, "no Retry-After: no floor");
    let until = f.poll_timeout().unwrap();
    assert!(f.handle_timeout(until));
    drain(&mut f);
    f.handle_batch_loaded(until, vec![mutation(1, "a")]);
    drain(&mut f);
    f.handle_push_outcome(until, &respond(500, None, "{}"), &mut SplitMix64(6));
    let second = record_plan(&drain(&mut f)).backoff.unwrap();
    assert_eq!(second.attempt, 2);
    f.handle_recorded(until, Ok(()));
    drain(&mut f);
    let t = f.poll_timeout().unwrap();
    assert!(f.handle_timeout(t));
    drain(&mut f);
    f.handle_batch_loaded(t, vec![mutation(1, "a")]);
    drain(&mut f);
    f.handle_push_outcome(t, &applied(&[1]), &mut SplitMix64(7));
    assert_eq!(record_plan(&drain(&mut f)).backoff, None, "cleared");
}

#[test]
fn a_restored_backoff_carries_the_attempt_count_on_and_waits_for_its_retry_time() {
    let mut f = flusher(10);
    f.restore_backoff(
        T0,
        Some(Backoff {
            attempt: 7,
            retry_at: T0 + 40_000,
            not_before: T0,
            unreachable: false,
        }),
    );
    assert_eq!(f.poll_timeout(), Some(T0 + 40_000));
    assert!(!f.handle_trigger(T0 + 1, Trigger::WorkerStart));
    assert!(!f.handle_trigger(T0 + 1, Trigger::Sync { last_chance: false }));
    assert!(f.handle_timeout(T0 + 40_000));
    drain(&mut f);
    f.handle_batch_loaded(T0 + 40_000, vec![mutation(1, "a")]);
    drain(&mut f);
    f.handle_push_outcome(T0 + 40_000, &respond(500, None, "{}"), &mut SplitMix64(8));
    let b = record_plan(&drain(&mut f)).backoff.unwrap();
    assert_eq!(b.attempt, 8, "the exponent carries on across the restart");
    // An elapsed one lets the start flush at once, still counting attempts on.
    let mut f = flusher(10);
    f.restore_backoff(
        T0,
        Some(Backoff {
            attempt: 3,
            retry_at: T0 - 1,
            not_before: T0 - 1,
            unreachable: false,
        }),
    );
    assert!(f.handle_trigger(T0, Trigger::WorkerStart));
}

#[test]
fn a_page_load_sending_the_same_config_keeps_the_whole_backoff() {
    for seed in 1..40 {
        let mut f = flusher(10);
        fail_once(&mut f, &respond(500, None, "{}"), seed);
        let until = f.poll_timeout().unwrap();
        if until == T0 {
            continue;
        }
        f.handle_config_update(10, policy(), false);
        assert_eq!(f.poll_timeout(), Some(until));
        assert!(!f.handle_trigger(T0, Trigger::PageEvent));
        // Another server: its backoff does not apply.
        f.handle_config_update(10, policy(), true);
        assert!(f.handle_trigger(T0, Trigger::PageEvent));
        return;
    }
    panic!("no seed drew a non-zero backoff");
}

#[test]
fn a_404_405_415_or_html_answer_is_a_config_error_that_counts_nothing_and_dead_letters_nothing() {
    for outcome in [
        respond(404, None, "<!DOCTYPE html><title>Not Found</title>"),
        respond(405, None, ""),
        respond(415, None, "Unsupported"),
        respond(200, None, "<html><body>Vite</body></html>"),
    ] {
        let mut f = flusher(10);
        f.set_endpoint("http://127.0.0.1:3000/api/sync/push");
        start_and_load(&mut f, T0, vec![mutation(1, "a"), mutation(2, "b")]);
        f.handle_push_outcome(T0, &outcome, &mut SplitMix64(9));
        let plan = record_plan(&drain(&mut f));
        assert!(plan.bump_attempts.is_empty(), "{outcome:?}");
        assert!(plan.dead.is_empty() && plan.ack.is_empty(), "{outcome:?}");
        assert!(plan.backoff.is_some());
        f.handle_recorded(T0, Ok(()));
        drain(&mut f);
        let e = f.last_error().unwrap();
        assert_eq!(e.code, codes::CONFIG_ERROR);
        assert!(
            e.message
                .contains("POST http://127.0.0.1:3000/api/sync/push answered HTTP"),
            "{}",
            e.message
        );
        let status = f.status(
            &StoreCounts {
                pending: 2,
                ..StoreCounts::default()
            },
            crate::status::Mode::Worker,
        );
        assert_eq!(status.state, crate::status::SyncState::ConfigError);
        // It keeps checking at the normal backoff, and resumes when the server answers.
        let until = f.poll_timeout().unwrap();
        assert!(f.handle_timeout(until));
        drain(&mut f);
        f.handle_batch_loaded(until, vec![mutation(1, "a"), mutation(2, "b")]);
        drain(&mut f);
        f.handle_push_outcome(until, &applied(&[1, 2]), &mut SplitMix64(10));
        assert_eq!(record_plan(&drain(&mut f)).ack, vec![1, 2]);
        f.handle_recorded(until, Ok(()));
        assert!(f.last_error().is_none(), "cleared when it recovers");
    }
}

#[test]
fn a_config_error_never_exhausts_max_attempts() {
    let mut f = flusher(10);
    let mut now = T0;
    start_and_load(&mut f, now, vec![mutation(1, "a")]);
    for i in 0..50 {
        f.handle_push_outcome(now, &respond(404, None, ""), &mut SplitMix64(i));
        let plan = record_plan(&drain(&mut f));
        assert!(plan.dead.is_empty() && plan.bump_attempts.is_empty());
        f.handle_recorded(now, Ok(()));
        drain(&mut f);
        now = f.poll_timeout().unwrap();
        assert!(f.handle_timeout(now));
        drain(&mut f);
        // The entry's stored attempts stay 0: it is never given up.
        f.handle_batch_loaded(now, vec![mutation(1, "a")]);
        assert!(matches!(drain(&mut f).as_slice(), [Action::Send(_)]));
    }
}

#[test]
fn a_visible_page_probes_a_server_that_did_not_answer_at_most_every_ten_seconds_and_never_a_failing_one(
) {
    // Seeds whose backoff is long enough to see the probes.
    let down = HttpOutcome::Network {
        message: "refused".into(),
    };
    for seed in 1..40 {
        let mut f = flusher(10);
        f.handle_config_update(
            10,
            RetryPolicy {
                base_delay_ms: 600_000,
                max_delay_ms: 600_000,
                ..policy()
            },
            true,
        );
        fail_once(&mut f, &down, seed);
        let until = f.poll_timeout().unwrap();
        if until < T0 + 60_000 {
            continue;
        }
        assert!(
            f.handle_trigger(T0 + 1, Trigger::PageVisible),
            "the first probe"
        );
        drain(&mut f);
        f.handle_batch_loaded(T0 + 1, vec![mutation(1, "a")]);
        drain(&mut f);
        f.handle_push_outcome(T0 + 1, &down, &mut SplitMix64(seed));
        drain(&mut f);
        f.handle_recorded(T0 + 1, Ok(()));
        drain(&mut f);
        assert!(
            !f.handle_trigger(T0 + 5_000, Trigger::PageVisible),
            "too soon"
        );
        assert!(
            f.handle_trigger(T0 + 10_001, Trigger::PageVisible),
            "ten seconds on"
        );
        // A server that answered 500 is not probed by a visible page.
        let mut g = flusher(10);
        fail_once(&mut g, &respond(500, None, "{}"), seed);
        if g.poll_timeout().unwrap() > T0 + 1 {
            assert!(!g.handle_trigger(T0 + 1, Trigger::PageVisible));
        }
        return;
    }
    panic!("no seed drew a long backoff");
}

/// A flusher that dead-letters a captured request after 5 server errors.
fn poison_flusher() -> Flusher {
    Flusher::new(
        "c1",
        10,
        RetryPolicy {
            max_server_errors: 5,
            ..policy()
        },
    )
}

#[test]
fn a_captured_request_the_api_fails_every_time_is_dead_lettered_after_max_server_errors_with_its_words(
) {
    let mut f = poison_flusher();
    let poison = |attempts: u32| QueuedEntry {
        attempts,
        ..captured(1)
    };
    let fail = respond(
        500,
        None,
        "Error: SQLITE_CONSTRAINT: NOT NULL constraint failed",
    );
    // Four failures: retried with backoff, the attempt counted.
    start_and_load(&mut f, T0, vec![poison(3)]);
    f.handle_captured_outcome(T0, &fail, &mut SplitMix64(1));
    let plan = record_plan(&drain(&mut f));
    assert!(plan.dead.is_empty());
    assert_eq!(plan.bump_attempts, vec![1]);
    let message = f.last_error().unwrap().message.clone();
    assert!(message.contains("SQLITE_CONSTRAINT"), "{message}");
    f.handle_recorded(T0, Ok(()));
    drain(&mut f);
    // The fifth: dead, with the API's text, and the flush goes on.
    let until = f.poll_timeout().unwrap();
    assert!(f.handle_timeout(until));
    drain(&mut f);
    f.handle_batch_loaded(until, vec![poison(4), mutation(2, "a")]);
    drain(&mut f);
    f.handle_captured_outcome(until, &fail, &mut SplitMix64(2));
    let actions = drain(&mut f);
    let plan = record_plan(&actions);
    assert_eq!(plan.dead.len(), 1);
    assert!(
        plan.dead[0].1.contains("failed it 5 times"),
        "{:?}",
        plan.dead
    );
    assert!(
        plan.dead[0].1.contains("SQLITE_CONSTRAINT"),
        "{:?}",
        plan.dead
    );
    let shown = f.last_error().unwrap();
    assert!(shown.message.contains("SQLITE_CONSTRAINT"), "{shown:?}");
    f.handle_recorded(until, Ok(()));
    assert!(
        matches!(drain(&mut f).as_slice(), [Action::LoadBatch { .. }]),
        "the entries behind it go on at once"
    );
    // An outage's 503 never makes a request poison.
    let mut f = poison_flusher();
    start_and_load(&mut f, T0, vec![poison(4)]);
    f.handle_captured_outcome(T0, &respond(503, None, ""), &mut SplitMix64(3));
    assert!(record_plan(&drain(&mut f)).dead.is_empty());
}

#[test]
fn a_write_queued_after_a_failed_attempt_shows_no_error_flash_but_a_storage_failure_does() {
    let counts = StoreCounts {
        pending: 1,
        ..StoreCounts::default()
    };
    let error = |code: &str| LastError {
        code: code.into(),
        message: "m".into(),
        at: T0,
    };
    let state = |code: &str| {
        derive_status(
            &FlusherState::Idle,
            true,
            Some(&error(code)),
            None,
            &counts,
            crate::status::Mode::Worker,
        )
        .state
    };
    use crate::status::SyncState;
    assert_eq!(state(codes::SERVER_ERROR), SyncState::Idle);
    assert_eq!(state(codes::NETWORK), SyncState::Offline);
    assert_eq!(state(codes::CONFIG_ERROR), SyncState::ConfigError);
    assert_eq!(state(codes::STORAGE_ERROR), SyncState::Error);
    assert_eq!(state(codes::CORRUPT_RECORD), SyncState::Error);
}

#[test]
fn a_given_up_background_sync_keeps_a_config_error_instead_of_calling_it_network() {
    let mut f = flusher(10);
    fail_once(&mut f, &respond(404, None, "not here"), 1);
    assert_eq!(f.last_error().unwrap().code, codes::CONFIG_ERROR);
    f.handle_sync_given_up(T0 + 10);
    let e = f.last_error().unwrap();
    assert_eq!(e.code, codes::CONFIG_ERROR, "{e:?}");
    assert!(e.message.contains("gave up background sync"), "{e:?}");
    assert!(e.message.contains("404"), "the cause stays readable: {e:?}");
    // A second last chance does not wrap the message again.
    let once = e.message.clone();
    f.handle_sync_given_up(T0 + 20);
    assert_eq!(f.last_error().unwrap().message, once);
}

#[test]
fn a_given_up_background_sync_after_no_answer_is_a_network_error() {
    let mut f = flusher(10);
    fail_once(
        &mut f,
        &HttpOutcome::Network {
            message: "refused".into(),
        },
        2,
    );
    f.handle_sync_given_up(T0 + 10);
    let e = f.last_error().unwrap();
    assert_eq!(e.code, codes::NETWORK, "{e:?}");
    assert!(e.message.contains("refused"), "{e:?}");
}

#[test]
fn a_device_whose_clock_is_behind_the_server_stamps_its_next_write_after_the_server_time_it_heard()
{
    let mut f = flusher(10);
    let mut rng = SplitMix64(1);
    // The device's clock reads an hour before the server's.
    let device = T0 - 3_600_000;
    start_and_load(&mut f, device, vec![mutation(1, "a")]);
    f.handle_push_outcome(device, &applied(&[1]), &mut rng);
    let plan = record_plan(&drain(&mut f));
    assert_eq!(
        plan.server_time,
        Some(T0),
        "the floor is persisted with the record"
    );
    assert!(f.stamp(device + 10) > T0);
}

#[test]
fn a_restarted_flusher_keeps_the_write_clock_floor_it_persisted() {
    let mut f = flusher(10);
    f.restore_history(None, None, Some(T0));
    assert!(f.stamp(T0 - 50_000) > T0);
}
