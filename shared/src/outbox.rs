//! The outbox as a sans-IO state machine (quinn-proto style).
//!
//! [`Flusher`] makes every decision of delivering the outbox and performs none of the work: it
//! never touches IndexedDB, the network, a timer or a clock. The shell (the service worker, or
//! the page fallback) feeds it inputs with `handle_*` methods and carries out what
//! [`Flusher::poll_action`] asks, in order:
//!
//! ```text
//!   handle_trigger ──► LoadBatch ──► handle_batch_loaded ──► Send ──► handle_push_outcome /
//!                        ▲                                            handle_captured_outcome
//!                        │                                                   │
//!                        └──── handle_recorded ◄── Record ◄──────────────────┘
//!   (empty batch) ──► Pull ──► handle_pulled ──► Idle
//!   (failure) ──► Record(bump attempts) ──► WaitingRetry{until} ──► handle_timeout(now)
//! ```
//!
//! Time (`now`) and randomness (`&mut dyn RandomSource`) are passed in, so every rule is tested
//! natively and deterministically on a virtual clock.
//!
//! Rules:
//! - single flight: a trigger while a flush runs only sets an "again" flag;
//! - entries are sent in seq order; a captured REST request is sent alone, in its place;
//! - `413` / `400` halve the batch down to one entry, which is then dead-lettered;
//! - `Retry-After` is a floor no trigger may jump; plain backoff (full jitter via
//!   [`RetryPolicy`]) may be cut short only by a manual flush or a periodic sync, and by a
//!   sync event or the `online` event after a failure that got no answer at all (the browser
//!   fires those when the network is back). A worker start, a page event, a write or a sync
//!   event after an HTTP failure never send before the backoff is over;
//! - the backoff (attempt, next retry, `Retry-After` floor) is persisted with every failed
//!   attempt ([`RecordPlan::backoff`]) and restored by a restarted shell
//!   ([`Flusher::restore_backoff`]), so a worker woken 20 times does not send 20 times;
//! - an answer that shows the URL does not lead to a rangersync endpoint (404, 405, 415, HTML,
//!   a non-protocol body; [`PushAction::ConfigError`]) is a `config_error`: it backs off like
//!   an outage, counts nothing toward `max_attempts` and dead-letters nothing;
//! - entries that ran out of attempts or age are dead-lettered before being sent;
//! - `401` / `403` on a push stop everything until the configuration changes (on a captured
//!   request they dead-letter it: its frozen `Authorization` header will never get better);
//! - "server unreachable" failures (no answer, `429`, `502`, `503`, `504`; see
//!   [`counts_toward_attempts`]) never count toward `max_attempts` (an outage must not
//!   dead-letter the queue; `max_age_ms` bounds them); every other failure does;
//! - the next batch is read after the contiguous prefix of entries that left the outbox, and only
//!   once that removal is committed;
//! - a `200` whose results do not match the batch seq for seq is a `bad_response` and backs off.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::classify::{
    classify_captured, classify_push, counts_toward_attempts, CapturedAction, HttpOutcome,
    PushAction,
};
use crate::clock::HybridClock;
use crate::messages::codes;
use crate::protocol::{CurrentEntity, Millis, Mutation, MutationResult, PushRequest};
use crate::retry::{RandomSource, RetryPolicy};
use crate::status::{LastError, Mode, Status, SyncState};

/// A captured REST call (method, URL, headers, body bytes), queued for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Secret headers the call lost when it went through a snapshot (a restored call): the
    /// page's `captureCredentials` gives them at replay; until one does, the call waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// What an outbox entry carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A put or delete of one entity.
    Mutation(Mutation),
    /// A captured REST request.
    Request(CapturedRequest),
    /// The upload of a blob the worker holds (`crate::blob`).
    Blob(BlobUpload),
}

/// An attachment waiting for upload: its bytes are in the worker's blob store under `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobUpload {
    pub sha256: String,
    pub size: u64,
}

/// One outbox entry as the shell read it from storage.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEntry {
    pub seq: u64,
    /// When it was written (for the max-age rule).
    pub created_at: Millis,
    /// Failed attempts so far.
    pub attempts: u32,
    pub item: Item,
}

impl QueuedEntry {
    /// The `(collection, key)` of a mutation.
    pub fn entity(&self) -> Option<(&str, &str)> {
        match &self.item {
            Item::Mutation(m) => Some((m.collection.as_str(), m.key.as_str())),
            Item::Request(_) | Item::Blob(_) => None,
        }
    }
}

/// Why a flush was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A write was committed.
    Write,
    /// A Background Sync event; `last_chance` when the browser will not retry it.
    Sync { last_chance: bool },
    /// A Periodic Background Sync event.
    PeriodicSync,
    /// The worker (or the page fallback) started.
    WorkerStart,
    /// A page said it is hidden or unloading (or sent any other message).
    PageEvent,
    /// A visible page asks (it became visible, or its wake-up timer fired at the next retry
    /// time). After a failure that got no answer at all it may cut the backoff short, at most
    /// once per [`VISIBLE_PROBE_MS`]: a server that comes back is noticed within that while a
    /// page is open, and a server answering 5xx is never probed faster than its backoff.
    PageVisible,
    /// The network came back.
    Online,
    /// The network went away (no flush; status shows offline).
    Offline,
    /// The retry timer fired.
    Timer,
    /// Someone asked explicitly (a `flush` request, a configuration change).
    Manual,
}

impl Trigger {
    /// Whether this trigger may cut a plain backoff short (never a `Retry-After` floor):
    /// always for a manual flush and a periodic sync; for a sync event or `online` only when
    /// the last failure got no answer at all (`unreachable`), since the browser fires those
    /// when the network comes back, which says nothing about a server answering 500.
    fn cuts_backoff(self, unreachable: bool) -> bool {
        match self {
            Self::Manual | Self::PeriodicSync => true,
            Self::Sync { .. } | Self::Online => unreachable,
            // Rate-limited by the flusher (see `Flusher::handle_trigger`).
            Self::PageVisible => unreachable,
            Self::Write | Self::WorkerStart | Self::PageEvent | Self::Offline | Self::Timer => {
                false
            }
        }
    }
}

/// How often a visible page may probe a server that did not answer (see
/// [`Trigger::PageVisible`]).
pub const VISIBLE_PROBE_MS: Millis = 10_000;

/// The backoff a failed attempt leaves behind, persisted so that a restarted worker honours
/// it (see [`RecordPlan::backoff`], [`Flusher::restore_backoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Consecutive failed attempts (the backoff exponent).
    pub attempt: u32,
    /// No flush starts on its own before this time (ms since the epoch).
    pub retry_at: Millis,
    /// The `Retry-After` floor: no trigger at all may start a flush before it.
    pub not_before: Millis,
    /// The last failure got no HTTP answer (a sync event or `online` may cut the wait short).
    #[serde(default)]
    pub unreachable: bool,
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub enum SendRequest {
    /// `POST /api/sync/push`.
    Push(PushRequest),
    /// Replay one captured request with `Idempotency-Key: <idempotency_key>`.
    Captured {
        seq: u64,
        request: CapturedRequest,
        idempotency_key: String,
    },
    /// Upload one blob (`crate::blob::Upload`), then call [`Flusher::handle_blob_outcome`].
    Blob { seq: u64, upload: BlobUpload },
}

/// The result of one attempt, to be written in ONE transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordPlan {
    /// Delivered (`applied`, `duplicate`, `conflict`, captured `2xx`): remove from the outbox.
    pub ack: Vec<u64>,
    /// New server versions of applied mutations: `(seq, version)`.
    pub applied: Vec<(u64, u64)>,
    /// Conflicts: take the server's current into `entities` (unless a newer local write waits).
    pub adopt: Vec<(String, String, CurrentEntity)>,
    /// Move to the dead-letter store with the reason.
    pub dead: Vec<(u64, String)>,
    /// A failed attempt: add one to these entries' attempt counters.
    pub bump_attempts: Vec<u64>,
    /// When every removed seq is one contiguous run of the store (`ack` ∪ `dead` is the whole
    /// batch read in seq order), the inclusive range to delete with one key-range delete.
    pub remove_range: Option<(u64, u64)>,
    /// Every seq that was sent in this attempt (whatever came of it): each one's delivery-try
    /// counter goes up by one, so a dead letter reports how often it was really tried.
    pub tried: Vec<u64>,
    /// The backoff to persist (`meta`), so that a restarted worker honours it too: the
    /// attempt count, the next retry time and the `Retry-After` floor. `None` clears it (the
    /// attempt succeeded, or nothing is waiting).
    pub backoff: Option<Backoff>,
    /// The newest `server_time` heard, to persist (`meta`): a restarted worker's write clock
    /// keeps its floor.
    pub server_time: Option<Millis>,
}

impl RecordPlan {
    /// Every seq that leaves the outbox.
    pub fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.ack
            .iter()
            .copied()
            .chain(self.dead.iter().map(|(s, _)| *s))
    }
    pub fn is_empty(&self) -> bool {
        self.ack.is_empty() && self.dead.is_empty() && self.bump_attempts.is_empty()
    }
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Read up to `limit` entries with seq greater than `after`, in seq order, then close the
    /// transaction and call [`Flusher::handle_batch_loaded`].
    LoadBatch { after: u64, limit: usize },
    /// Send, then call [`Flusher::handle_push_outcome`] or [`Flusher::handle_captured_outcome`].
    Send(SendRequest),
    /// Write the plan in one transaction, then call [`Flusher::handle_recorded`].
    Record(RecordPlan),
    /// Pull server changes, then call [`Flusher::handle_pulled`].
    Pull,
    /// Arrange for [`Flusher::handle_timeout`] to be called at `at`.
    ScheduleWake { at: Millis },
    /// A failed attempt: register a Background Sync so the browser retries when it can
    /// (the shell skips it inside a failing sync handler).
    RegisterSync,
}

/// What happens after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterRecord {
    Continue,
    Wait { until: Millis, floor: Millis },
    Auth,
}

/// The flusher's state (read-only view for the shell and tests).
#[derive(Debug, Clone, PartialEq)]
pub enum FlusherState {
    Idle,
    Loading,
    Sending { batch: Vec<u64> },
    Recording,
    Pulling,
    WaitingRetry { until: Millis },
    AuthStopped,
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Loading,
    Sending {
        batch: Vec<QueuedEntry>,
    },
    Recording {
        next: AfterRecord,
        /// Seqs the plan touches (never coalesced away before it is committed).
        seqs: Vec<u64>,
        /// `acked_through` once the plan is committed.
        advance_to: Option<u64>,
    },
    Pulling,
    WaitingRetry {
        until: Millis,
        floor: Millis,
    },
    AuthStopped,
}

/// The outbox's decisions. See the module documentation.
#[derive(Debug)]
pub struct Flusher {
    client_id: String,
    state: State,
    again: bool,
    online: bool,
    config_batch: usize,
    batch_limit: usize,
    policy: RetryPolicy,
    /// Consecutive failed attempts (the backoff exponent).
    attempt: u32,
    /// Highest seq known to have left the outbox; batches are read after it.
    acked_through: u64,
    actions: VecDeque<Action>,
    last_error: Option<LastError>,
    last_synced_at: Option<Millis>,
    last_attempt_failed: bool,
    /// The last failure got no HTTP answer at all.
    last_failure_unreachable: bool,
    /// The push URL, for messages.
    endpoint: String,
    /// When a visible page last cut a backoff short.
    last_visible_probe: Option<Millis>,
    flushes: u64,
    /// What new writes are stamped with: never at or below the last `server_time` heard.
    clock: HybridClock,
}

impl Flusher {
    /// A flusher for `client_id`, sending at most `batch_size` mutations per push.
    pub fn new(client_id: impl Into<String>, batch_size: u32, policy: RetryPolicy) -> Self {
        let batch = batch_size.clamp(1, crate::validate::MAX_BATCH_MUTATIONS as u32) as usize;
        Self {
            client_id: client_id.into(),
            state: State::Idle,
            again: false,
            online: true,
            config_batch: batch,
            batch_limit: batch,
            policy,
            attempt: 0,
            acked_through: 0,
            actions: VecDeque::new(),
            last_error: None,
            last_synced_at: None,
            last_attempt_failed: false,
            last_failure_unreachable: false,
            endpoint: String::new(),
            last_visible_probe: None,
            flushes: 0,
            clock: HybridClock::default(),
        }
    }

    /// The URL pushes go to (named in `config_error` messages).
    pub fn set_endpoint(&mut self, url: impl Into<String>) {
        self.endpoint = url.into();
    }

    /// Seed the history persisted by the shell (after a restart).
    pub fn restore_history(
        &mut self,
        last_error: Option<LastError>,
        last_synced_at: Option<Millis>,
        server_time: Option<Millis>,
    ) {
        self.last_error = last_error;
        self.last_synced_at = last_synced_at;
        self.clock = HybridClock::seen(server_time.unwrap_or(0));
    }

    /// The stamp of a write committed now (device clock `wall`): see [`HybridClock`].
    pub fn stamp(&mut self, wall: Millis) -> Millis {
        self.clock.stamp(wall)
    }

    // ---- inputs ----

    /// Something asks for a flush. Returns whether a flush started now.
    pub fn handle_trigger(&mut self, now: Millis, trigger: Trigger) -> bool {
        match trigger {
            Trigger::Offline => {
                self.online = false;
                return false;
            }
            Trigger::Online => self.online = true,
            _ => {}
        }
        match self.state {
            State::Idle => {
                self.start();
                true
            }
            State::Loading | State::Sending { .. } | State::Recording { .. } | State::Pulling => {
                self.again = true;
                false
            }
            State::WaitingRetry { until, floor } => {
                let mut cut = trigger.cuts_backoff(self.last_failure_unreachable);
                if cut && trigger == Trigger::PageVisible {
                    let recent = self
                        .last_visible_probe
                        .is_some_and(|at| now.saturating_sub(at) < VISIBLE_PROBE_MS);
                    cut = !recent;
                    if cut && now >= floor && now < until {
                        self.last_visible_probe = Some(now);
                    }
                }
                if now >= until || (cut && now >= floor) {
                    self.start();
                    true
                } else {
                    false
                }
            }
            State::AuthStopped => false,
        }
    }

    /// The retry timer fired (or the shell checks on its own). Starts the retry when due.
    pub fn handle_timeout(&mut self, now: Millis) -> bool {
        match self.state {
            State::WaitingRetry { until, .. } if now >= until => {
                self.start();
                true
            }
            _ => false,
        }
    }

    /// The batch asked for by [`Action::LoadBatch`], in seq order.
    pub fn handle_batch_loaded(&mut self, now: Millis, entries: Vec<QueuedEntry>) {
        if !matches!(self.state, State::Loading) {
            return;
        }
        if entries.is_empty() {
            self.state = State::Pulling;
            self.actions.push_back(Action::Pull);
            return;
        }
        // Entries out of attempts or age leave before anything is sent.
        let expired: Vec<(u64, String)> = entries
            .iter()
            .filter(|e| self.policy.gives_up(e.attempts, e.created_at, now))
            .map(|e| (e.seq, self.give_up_reason(e)))
            .collect();
        if !expired.is_empty() {
            let advance_to = removed_prefix_end(entries.iter().map(|e| e.seq), |s| {
                expired.iter().any(|(d, _)| *d == s)
            });
            let plan = RecordPlan {
                dead: expired,
                ..RecordPlan::default()
            };
            self.record(plan, AfterRecord::Continue, advance_to);
            return;
        }
        let batch: Vec<QueuedEntry> = match &entries[0].item {
            Item::Request(_) | Item::Blob(_) => entries.into_iter().take(1).collect(),
            Item::Mutation(_) => entries
                .into_iter()
                .take_while(|e| matches!(e.item, Item::Mutation(_)))
                .take(self.batch_limit)
                .collect(),
        };
        let send = match &batch[0].item {
            Item::Request(r) => SendRequest::Captured {
                seq: batch[0].seq,
                request: r.clone(),
                idempotency_key: format!("{}:{}", self.client_id, batch[0].seq),
            },
            Item::Blob(b) => SendRequest::Blob {
                seq: batch[0].seq,
                upload: b.clone(),
            },
            Item::Mutation(_) => SendRequest::Push(PushRequest {
                client_id: self.client_id.clone(),
                mutations: batch
                    .iter()
                    .filter_map(|e| match &e.item {
                        Item::Mutation(m) => Some(m.clone()),
                        Item::Request(_) | Item::Blob(_) => None,
                    })
                    .collect(),
            }),
        };
        self.state = State::Sending { batch };
        self.actions.push_back(Action::Send(send));
    }

    /// The answer to a [`SendRequest::Push`].
    pub fn handle_push_outcome(
        &mut self,
        now: Millis,
        outcome: &HttpOutcome,
        rng: &mut dyn RandomSource,
    ) {
        let State::Sending { batch } = &self.state else {
            return;
        };
        let batch = batch.clone();
        let seqs: Vec<u64> = batch.iter().map(|e| e.seq).collect();
        self.last_failure_unreachable = matches!(outcome, HttpOutcome::Network { .. });
        match classify_push(outcome, batch.len(), now) {
            PushAction::Results(resp) => {
                let matches = resp.results.len() == seqs.len()
                    && resp.results.iter().zip(&seqs).all(|(r, s)| r.seq() == *s);
                if !matches {
                    let msg = format!(
                        "the server answered {} results for a batch of {} that do not match its seqs",
                        resp.results.len(),
                        seqs.len()
                    );
                    self.fail(now, &seqs, codes::BAD_RESPONSE, msg, None, true, rng);
                    return;
                }
                self.clock.handle_server_time(resp.server_time);
                let mut plan = RecordPlan {
                    server_time: Some(self.clock.server_time()),
                    ..RecordPlan::default()
                };
                // A conflict is adopted only when no later entry of the same entity in this
                // batch delivered our own write (else an older server value would win).
                let mut last_delivered: HashMap<(&str, &str), usize> = HashMap::new();
                for (i, (r, e)) in resp.results.iter().zip(&batch).enumerate() {
                    let ours = matches!(
                        r,
                        MutationResult::Applied { .. } | MutationResult::Duplicate { .. }
                    );
                    if let (Some(ent), true) = (e.entity(), ours) {
                        last_delivered.insert(ent, i);
                    }
                }
                let adopt_ok: Vec<bool> = batch
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        e.entity()
                            .is_some_and(|ent| last_delivered.get(&ent).is_none_or(|&j| j < i))
                    })
                    .collect();
                for ((r, e), may_adopt) in resp.results.into_iter().zip(&batch).zip(adopt_ok) {
                    match r {
                        MutationResult::Applied { seq, version, .. } => {
                            plan.ack.push(seq);
                            plan.applied.push((seq, version));
                        }
                        MutationResult::Duplicate { seq } => plan.ack.push(seq),
                        MutationResult::Conflict { seq, current } => {
                            plan.ack.push(seq);
                            if let (Some((c, k)), true) = (e.entity(), may_adopt) {
                                plan.adopt.push((c.to_owned(), k.to_owned(), current));
                            }
                        }
                        MutationResult::Rejected { seq, reason } => plan.dead.push((seq, reason)),
                    }
                }
                self.succeed(now, &seqs, plan);
            }
            PushAction::RetryAfter {
                delay_ms,
                code,
                message,
            } => {
                let counts = counts_toward_attempts(outcome);
                self.fail(now, &seqs, code, message, Some(delay_ms), counts, rng);
            }
            PushAction::Backoff { code, message } => {
                let counts = counts_toward_attempts(outcome);
                self.fail(now, &seqs, code, message, None, counts, rng);
            }
            PushAction::HalveBatch { code, message } => {
                if batch.len() > 1 {
                    self.batch_limit = (batch.len() / 2).max(1);
                    self.set_error(now, code, message);
                    self.state = State::Loading;
                    self.actions.push_back(Action::LoadBatch {
                        after: self.acked_through,
                        limit: self.batch_limit,
                    });
                } else {
                    let plan = RecordPlan {
                        dead: vec![(seqs[0], message)],
                        ..RecordPlan::default()
                    };
                    self.succeed(now, &seqs, plan);
                }
            }
            PushAction::DeadLetter { reason } => {
                let plan = RecordPlan {
                    dead: seqs.iter().map(|s| (*s, reason.clone())).collect(),
                    ..RecordPlan::default()
                };
                self.succeed(now, &seqs, plan);
            }
            PushAction::AuthStop { status, message } => self.auth_stop(now, status, message),
            PushAction::ConfigError { message } => {
                let url = if self.endpoint.is_empty() {
                    "the sync endpoint".to_owned()
                } else {
                    format!("POST {}", self.endpoint)
                };
                let message = format!(
                    "{url} {message}: the server URL does not lead to a rangersync sync server; \
                     nothing is dead-lettered, delivery resumes once it answers properly"
                );
                self.fail(now, &seqs, codes::CONFIG_ERROR, message, None, false, rng);
            }
        }
    }

    /// The answer to a [`SendRequest::Captured`].
    pub fn handle_captured_outcome(
        &mut self,
        now: Millis,
        outcome: &HttpOutcome,
        rng: &mut dyn RandomSource,
    ) {
        let action = classify_captured(outcome, now);
        self.handle_single_outcome(now, outcome, action, "a captured request", true, rng);
    }

    /// The final answer of a [`SendRequest::Blob`]'s upload attempt ([`crate::blob::Upload`]).
    pub fn handle_blob_outcome(
        &mut self,
        now: Millis,
        outcome: &HttpOutcome,
        rng: &mut dyn RandomSource,
    ) {
        let action = crate::blob::classify_blob(outcome, now);
        self.handle_single_outcome(now, outcome, action, "a blob upload", false, rng);
    }

    /// A [`SendRequest::Blob`] whose bytes this device no longer holds (or cannot read): it
    /// can never be uploaded from here, so it becomes a dead letter with `reason`.
    pub fn handle_blob_unreadable(
        &mut self,
        now: Millis,
        reason: String,
        rng: &mut dyn RandomSource,
    ) {
        let outcome = HttpOutcome::Network {
            message: reason.clone(),
        };
        let action = CapturedAction::DeadLetter { reason };
        self.handle_single_outcome(now, &outcome, action, "a blob upload", false, rng);
    }

    /// The answer to an entry sent alone (a captured request, a blob upload), classified.
    /// `poison_rule`: `max_server_errors` 5xx answers dead-letter it (a captured call the API
    /// always fails; not a blob, whose 5xx is the server's storage having trouble).
    fn handle_single_outcome(
        &mut self,
        now: Millis,
        outcome: &HttpOutcome,
        action: CapturedAction,
        what: &str,
        poison_rule: bool,
        rng: &mut dyn RandomSource,
    ) {
        let State::Sending { batch } = &self.state else {
            return;
        };
        let seqs: Vec<u64> = batch.iter().map(|e| e.seq).collect();
        let failures = batch.first().map_or(0, |e| e.attempts).saturating_add(1);
        self.last_failure_unreachable = matches!(outcome, HttpOutcome::Network { .. });
        match action {
            CapturedAction::Retry { code, message, .. }
                if poison_rule
                    && code == codes::SERVER_ERROR
                    && self.policy.max_server_errors > 0
                    && failures >= self.policy.max_server_errors =>
            {
                // A poison request: the API fails it every time. It leaves the queue with
                // the API's own words, so the requests behind it go on.
                let reason = format!("the API failed it {failures} times: {message}");
                let plan = RecordPlan {
                    dead: seqs.iter().map(|s| (*s, reason.clone())).collect(),
                    ..RecordPlan::default()
                };
                self.succeed(now, &seqs, plan);
                self.set_error(
                    now,
                    codes::SERVER_ERROR,
                    format!("{what} was moved to the dead letters: {reason}"),
                );
            }
            CapturedAction::Ack => {
                let plan = RecordPlan {
                    ack: seqs.clone(),
                    ..RecordPlan::default()
                };
                self.succeed(now, &seqs, plan);
            }
            CapturedAction::Retry {
                retry_after_ms,
                code,
                message,
            } => {
                // No blob endpoint is the server's setup, not the entry's fault.
                let counts = code != codes::CONFIG_ERROR
                    && code != crate::blob::RANGE_MISMATCH
                    && counts_toward_attempts(outcome);
                self.fail(now, &seqs, code, message, retry_after_ms, counts, rng);
            }
            CapturedAction::AuthStop { status, message } => self.auth_stop(now, status, message),
            CapturedAction::DeadLetter { reason } => {
                let plan = RecordPlan {
                    dead: seqs.iter().map(|s| (*s, reason.clone())).collect(),
                    ..RecordPlan::default()
                };
                self.succeed(now, &seqs, plan);
            }
        }
    }

    /// The last [`Action::Record`] committed (`Ok`) or failed (`Err(message)`).
    pub fn handle_recorded(&mut self, now: Millis, result: Result<(), String>) {
        let State::Recording {
            next, advance_to, ..
        } = self.state
        else {
            return;
        };
        if let Err(message) = result {
            // Nothing was written: the entries are still in the outbox (and `acked_through`
            // did not move). Try again later, never before a Retry-After floor.
            self.set_error(now, codes::STORAGE_ERROR, message);
            let floor = match next {
                AfterRecord::Wait { floor, .. } => floor,
                _ => now,
            };
            let delay = i64::try_from(self.policy.base_delay_ms.max(1000)).unwrap_or(i64::MAX);
            let until = now.saturating_add(delay).max(floor);
            self.state = State::WaitingRetry { until, floor };
            self.actions.push_back(Action::ScheduleWake { at: until });
            return;
        }
        if let Some(seq) = advance_to {
            self.acked_through = self.acked_through.max(seq);
        }
        match next {
            AfterRecord::Continue => {
                // The next read sees every write committed so far: earlier asks are served.
                self.again = false;
                self.state = State::Loading;
                self.actions.push_back(Action::LoadBatch {
                    after: self.acked_through,
                    limit: self.batch_limit,
                });
            }
            AfterRecord::Wait { until, floor } => {
                self.state = State::WaitingRetry { until, floor };
                self.actions.push_back(Action::ScheduleWake { at: until });
                self.actions.push_back(Action::RegisterSync);
                self.again = false;
            }
            AfterRecord::Auth => {
                self.state = State::AuthStopped;
                self.again = false;
            }
        }
    }

    /// The pull after a flush finished (`Err((code, message))`, see
    /// [`crate::classify::classify_pull`], is reported but not retried).
    pub fn handle_pulled(&mut self, now: Millis, result: Result<(), (&str, String)>) {
        if !matches!(self.state, State::Pulling) {
            return;
        }
        match result {
            Ok(()) => {
                if self
                    .last_error
                    .as_ref()
                    .is_some_and(|e| e.code != codes::AUTH)
                {
                    self.last_error = None;
                }
            }
            Err((code, message)) => self.set_error(now, code, message),
        }
        self.state = State::Idle;
        if std::mem::take(&mut self.again) {
            self.start();
        }
    }

    /// The configuration changed: new batch size and policy, and an auth stop is lifted.
    /// A backoff (even a `Retry-After` floor) is lifted too: use
    /// [`Flusher::handle_config_update`] when the server may be the same.
    pub fn handle_config_changed(&mut self, batch_size: u32, policy: RetryPolicy) {
        self.handle_config_update(batch_size, policy, true);
    }

    /// The configuration changed. `endpoint_changed`: the server URL or the token differs, so
    /// the old server's backoff (even a `Retry-After` floor) no longer applies. Otherwise the
    /// backoff is kept whole: pages send their config on every load, and a reload must not
    /// send before the next retry time.
    pub fn handle_config_update(
        &mut self,
        batch_size: u32,
        policy: RetryPolicy,
        endpoint_changed: bool,
    ) {
        self.config_batch =
            batch_size.clamp(1, crate::validate::MAX_BATCH_MUTATIONS as u32) as usize;
        self.batch_limit = self.config_batch;
        self.policy = policy;
        if matches!(self.state, State::WaitingRetry { .. }) && !endpoint_changed {
            return;
        }
        if matches!(self.state, State::AuthStopped | State::WaitingRetry { .. }) {
            self.state = State::Idle;
            self.attempt = 0;
            if self
                .last_error
                .as_ref()
                .is_some_and(|e| e.code == codes::AUTH)
            {
                self.last_error = None;
            }
        }
    }

    /// The batch asked for by [`Action::LoadBatch`] could not be read (a storage error): back
    /// off and try again (never treated as an empty outbox).
    pub fn handle_batch_failed(
        &mut self,
        now: Millis,
        code: &str,
        message: impl Into<String>,
        rng: &mut dyn RandomSource,
    ) {
        if !matches!(self.state, State::Loading) {
            return;
        }
        self.attempt = self.attempt.saturating_add(1);
        self.last_attempt_failed = true;
        self.set_error(now, code, message.into());
        let delay = self.policy.delay_ms(self.attempt, None, rng).max(1);
        let until = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        self.state = State::WaitingRetry { until, floor: now };
        self.again = false;
        self.actions.push_back(Action::ScheduleWake { at: until });
        self.actions.push_back(Action::RegisterSync);
    }

    /// Seed the backoff persisted by a previous run (after a restart): the attempt count
    /// carries on, and while `now` is before `retry_at` only the triggers that may cut a
    /// backoff short start a flush (never before `not_before`); the wake-up is at `retry_at`.
    pub fn restore_backoff(&mut self, now: Millis, backoff: Option<Backoff>) {
        let (Some(b), State::Idle) = (backoff, &self.state) else {
            return;
        };
        self.attempt = b.attempt;
        self.last_failure_unreachable = b.unreachable;
        if b.attempt > 0 {
            self.last_attempt_failed = true;
        }
        let until = b.retry_at.max(b.not_before);
        if until > now {
            self.state = State::WaitingRetry {
                until,
                floor: b.not_before,
            };
        }
    }

    /// The shell moved entries out of the outbox on its own (retry/discard of dead letters
    /// need nothing; a restore or a re-queue does not either). Kept for symmetry.
    pub fn note_removed_through(&mut self, seq: u64) {
        self.acked_through = self.acked_through.max(seq);
    }

    // ---- outputs ----

    /// The next thing the shell must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Flusher::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::WaitingRetry { until, .. } => Some(until),
            _ => None,
        }
    }

    /// A read-only view of the state.
    pub fn state(&self) -> FlusherState {
        match &self.state {
            State::Idle => FlusherState::Idle,
            State::Loading => FlusherState::Loading,
            State::Sending { batch } => FlusherState::Sending {
                batch: batch.iter().map(|e| e.seq).collect(),
            },
            State::Recording { .. } => FlusherState::Recording,
            State::Pulling => FlusherState::Pulling,
            State::WaitingRetry { until, .. } => FlusherState::WaitingRetry { until: *until },
            State::AuthStopped => FlusherState::AuthStopped,
        }
    }

    /// Whether a flush is running (between a start and Idle / WaitingRetry / AuthStopped).
    pub fn is_busy(&self) -> bool {
        matches!(
            self.state,
            State::Loading | State::Sending { .. } | State::Recording { .. } | State::Pulling
        )
    }

    /// Seqs between their load and the commit of their result: on the wire or being recorded
    /// (never coalesced away). See also [`Flusher::coalesce_guard`].
    pub fn in_flight(&self) -> Vec<u64> {
        match &self.state {
            State::Sending { batch } => batch.iter().map(|e| e.seq).collect(),
            State::Recording { seqs, .. } => seqs.clone(),
            _ => Vec::new(),
        }
    }

    /// What a new write must not coalesce away right now: the entries in flight or being
    /// recorded, and while a batch is being read, every entry it may read. The shell adds
    /// the capture barrier it keeps in storage.
    pub fn coalesce_guard(&self) -> CoalesceGuard {
        CoalesceGuard {
            in_flight: self.in_flight(),
            loading_after: matches!(self.state, State::Loading).then_some(self.acked_through),
            barrier: 0,
        }
    }

    /// Whether the last attempt failed (a sync handler rejects so the browser retries).
    pub fn last_attempt_failed(&self) -> bool {
        self.last_attempt_failed
    }
    pub fn last_error(&self) -> Option<&LastError> {
        self.last_error.as_ref()
    }
    pub fn last_synced_at(&self) -> Option<Millis> {
        self.last_synced_at
    }
    pub fn is_online(&self) -> bool {
        self.online
    }
    pub fn batch_limit(&self) -> usize {
        self.batch_limit
    }
    /// How many flushes started since creation (for tests of single flight).
    pub fn flushes_started(&self) -> u64 {
        self.flushes
    }
    /// Forget the last error if it has this code (the shell fixed what it described).
    pub fn clear_error(&mut self, code: &str) {
        if self.last_error.as_ref().is_some_and(|e| e.code == code) {
            self.last_error = None;
        }
    }
    /// Record an error the shell saw (e.g. the browser gave up a sync).
    pub fn report_error(&mut self, now: Millis, code: &str, message: impl Into<String>) {
        self.set_error(now, code, message.into());
    }

    /// The browser gave up a Background Sync after its last attempt failed (`lastChance`).
    /// The data stays queued; the error says so, and keeps the failure's own code when it is
    /// one a person must act on (`config_error`, `auth`): a more specific state is never
    /// replaced by `network` (Chromium's last attempt can land a moment after the failure
    /// that earned `config_error`).
    pub fn handle_sync_given_up(&mut self, now: Millis) {
        let (code, cause) = match &self.last_error {
            Some(e) => (
                if e.code == codes::CONFIG_ERROR || e.code == codes::AUTH {
                    codes_static(&e.code)
                } else {
                    codes::NETWORK
                },
                e.message.clone(),
            ),
            None => (codes::NETWORK, "unknown error".to_owned()),
        };
        let message = if cause.starts_with(SYNC_GIVEN_UP) {
            cause
        } else {
            format!("{SYNC_GIVEN_UP} ({cause}); the data is kept and goes out on the next trigger")
        };
        self.set_error(now, code, message);
    }

    /// The status object, from the machine's state and the shell's store counts.
    pub fn status(&self, counts: &StoreCounts, mode: Mode) -> Status {
        derive_status(
            &self.state(),
            self.online,
            self.last_error.as_ref(),
            self.last_synced_at,
            counts,
            mode,
        )
    }

    // ---- internals ----

    fn start(&mut self) {
        self.flushes += 1;
        self.again = false;
        self.state = State::Loading;
        self.actions.push_back(Action::LoadBatch {
            after: self.acked_through,
            limit: self.batch_limit,
        });
    }

    fn record(&mut self, mut plan: RecordPlan, next: AfterRecord, advance_to: Option<u64>) {
        if plan.remove_range.is_none() {
            let mut removed: Vec<u64> = plan.removed().collect();
            removed.sort_unstable();
            if let (Some(&lo), Some(&hi)) = (removed.first(), removed.last()) {
                if removed.len() > 1 && plan.bump_attempts.is_empty() && self.batch_is(&removed) {
                    plan.remove_range = Some((lo, hi));
                }
            }
        }
        let mut seqs: Vec<u64> = plan
            .removed()
            .chain(plan.bump_attempts.iter().copied())
            .chain(plan.tried.iter().copied())
            .collect();
        if let State::Sending { batch } = &self.state {
            seqs.extend(batch.iter().map(|e| e.seq));
        }
        seqs.sort_unstable();
        seqs.dedup();
        self.state = State::Recording {
            next,
            seqs,
            advance_to,
        };
        self.actions.push_back(Action::Record(plan));
    }

    fn give_up_reason(&self, e: &QueuedEntry) -> String {
        if self.policy.max_attempts > 0 && e.attempts >= self.policy.max_attempts {
            format!("gave up after {} failed attempts", e.attempts)
        } else {
            format!(
                "gave up: not delivered within {} s",
                self.policy.max_age_ms / 1000
            )
        }
    }

    fn batch_is(&self, removed: &[u64]) -> bool {
        match &self.state {
            State::Sending { batch } => {
                batch.len() == removed.len() && batch.iter().zip(removed).all(|(e, s)| e.seq == *s)
            }
            _ => false,
        }
    }

    fn succeed(&mut self, now: Millis, seqs: &[u64], mut plan: RecordPlan) {
        plan.tried = seqs.to_vec();
        let advance_to = {
            let removed: Vec<u64> = plan.removed().collect();
            removed_prefix_end(seqs.iter().copied(), |s| removed.contains(&s))
        };
        self.attempt = 0;
        self.last_attempt_failed = false;
        self.last_failure_unreachable = false;
        self.last_synced_at = Some(now);
        if self
            .last_error
            .as_ref()
            .is_some_and(|e| e.code != codes::AUTH)
        {
            self.last_error = None;
        }
        // Grow back towards the configured batch size after halving.
        self.batch_limit = (self.batch_limit * 2).min(self.config_batch);
        self.record(plan, AfterRecord::Continue, advance_to);
    }

    #[allow(clippy::too_many_arguments)]
    fn fail(
        &mut self,
        now: Millis,
        seqs: &[u64],
        code: &str,
        message: String,
        retry_after_ms: Option<u64>,
        counts: bool,
        rng: &mut dyn RandomSource,
    ) {
        self.attempt = self.attempt.saturating_add(1);
        self.last_attempt_failed = true;
        self.set_error(now, code, message);
        let delay = self.policy.delay_ms(self.attempt, retry_after_ms, rng);
        let until = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        let floor = retry_after_ms.map_or(now, |ra| {
            now.saturating_add(i64::try_from(ra).unwrap_or(i64::MAX))
        });
        // An unreachable server says nothing about the entries (`counts` is false): leave
        // those to `max_age_ms`.
        let plan = RecordPlan {
            bump_attempts: if counts { seqs.to_vec() } else { Vec::new() },
            tried: seqs.to_vec(),
            backoff: Some(Backoff {
                attempt: self.attempt,
                retry_at: until,
                not_before: floor,
                unreachable: self.last_failure_unreachable,
            }),
            ..RecordPlan::default()
        };
        self.state = State::Recording {
            next: AfterRecord::Wait { until, floor },
            seqs: seqs.to_vec(),
            advance_to: None,
        };
        self.actions.push_back(Action::Record(plan));
    }

    fn auth_stop(&mut self, now: Millis, status: u16, message: String) {
        self.last_attempt_failed = true;
        self.set_error(
            now,
            codes::AUTH,
            format!("the server refused the credentials ({status}): {message}"),
        );
        let seqs = self.in_flight();
        self.state = State::Recording {
            next: AfterRecord::Auth,
            seqs,
            advance_to: None,
        };
        self.actions
            .push_back(Action::Record(RecordPlan::default()));
    }

    fn set_error(&mut self, now: Millis, code: &str, message: String) {
        self.last_error = Some(LastError {
            code: code.to_owned(),
            message,
            at: now,
        });
    }
}

/// How the error after a given-up Background Sync starts.
const SYNC_GIVEN_UP: &str = "the browser gave up background sync after its last attempt";

/// The `'static` code for one of the two codes [`Flusher::handle_sync_given_up`] keeps.
fn codes_static(code: &str) -> &'static str {
    if code == codes::AUTH {
        codes::AUTH
    } else {
        codes::CONFIG_ERROR
    }
}

/// What the shell counts in its stores, for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreCounts {
    pub pending: u64,
    pub dead: u64,
    pub last_saved_at: Option<Millis>,
    pub last_exported_at: Option<Millis>,
    /// A write is being committed right now.
    pub saving: bool,
    /// Bytes of the blobs whose upload waits in the outbox.
    pub blob_bytes_pending: u64,
}

/// The status rule, pure: the person-facing state from the machine's state.
pub fn derive_status(
    state: &FlusherState,
    online: bool,
    last_error: Option<&LastError>,
    last_synced_at: Option<Millis>,
    counts: &StoreCounts,
    mode: Mode,
) -> Status {
    let network_error = last_error.is_some_and(|e| e.code == codes::NETWORK);
    let config_error = last_error.is_some_and(|e| e.code == codes::CONFIG_ERROR);
    let (sync_state, in_flight, next_retry_at) = match state {
        FlusherState::AuthStopped => (SyncState::AuthError, 0, None),
        FlusherState::Sending { batch } => (SyncState::Syncing, batch.len() as u64, None),
        FlusherState::Loading | FlusherState::Recording | FlusherState::Pulling => {
            (SyncState::Syncing, 0, None)
        }
        FlusherState::WaitingRetry { until } => {
            let s = if config_error {
                SyncState::ConfigError
            } else if !online || network_error {
                SyncState::Offline
            } else {
                SyncState::WaitingRetry
            };
            (s, 0, Some(*until))
        }
        FlusherState::Idle => {
            let s = if counts.saving {
                SyncState::Saving
            } else if !online {
                SyncState::Offline
            } else if config_error {
                SyncState::ConfigError
            } else if counts.pending > 0 && last_error.is_some_and(|e| is_local_failure(&e.code)) {
                // Idle with writes waiting is the moment between a commit and its flush: only
                // a failure of this device's storage is an error then. A server's or the
                // network's last failure is re-judged by the flush that follows (no `error`
                // flash on every captured request).
                SyncState::Error
            } else if counts.pending > 0 && network_error {
                SyncState::Offline
            } else {
                SyncState::Idle
            };
            (s, 0, None)
        }
    };
    let sync_state = if counts.saving && matches!(sync_state, SyncState::Idle) {
        SyncState::Saving
    } else {
        sync_state
    };
    Status {
        state: sync_state,
        pending: counts.pending,
        blob_bytes_pending: counts.blob_bytes_pending,
        in_flight,
        dead: counts.dead,
        last_saved_at: counts.last_saved_at,
        last_synced_at,
        last_exported_at: counts.last_exported_at,
        last_error: last_error.cloned(),
        next_retry_at,
        mode,
        // Backups, storage persistence and the client id are the shell's to fill in.
        ..Status::default()
    }
}

/// Errors of this device (its storage), not of the server or the network.
fn is_local_failure(code: &str) -> bool {
    matches!(
        code,
        codes::STORAGE_ERROR | codes::CORRUPT_RECORD | codes::QUOTA_EXCEEDED
    )
}

/// The coalescing rule for one new write: of the queued entries of the same entity
/// (`existing`, seqs), those not on the wire (`in_flight`) are superseded by the newer write
/// and may be dropped. The newer write keeps its own, higher seq, so seq order is preserved.
pub fn superseded(existing: &[u64], in_flight: &[u64]) -> Vec<u64> {
    existing
        .iter()
        .copied()
        .filter(|s| !in_flight.contains(s))
        .collect()
}

/// What a new write may not coalesce away (see [`Flusher::coalesce_guard`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoalesceGuard {
    /// Seqs on the wire or being recorded.
    pub in_flight: Vec<u64>,
    /// While a batch is read: every seq after this one may be in it.
    pub loading_after: Option<u64>,
    /// The highest seq of a captured request still queued: entries at or below it stay (a
    /// newer write must not reach across a captured request, which may depend on them).
    pub barrier: u64,
}

/// [`superseded`] with every guard: of the queued entries of the same entity (`existing`),
/// those the newer write may drop.
pub fn coalescable(existing: &[u64], guard: &CoalesceGuard) -> Vec<u64> {
    superseded(existing, &guard.in_flight)
        .into_iter()
        .filter(|s| *s > guard.barrier)
        .filter(|s| guard.loading_after.is_none_or(|after| *s <= after))
        .collect()
}

/// The last seq of the leading run of `seqs` (in seq order) that `removed` holds: how far the
/// next batch may start without skipping an entry that is still queued.
fn removed_prefix_end(
    seqs: impl Iterator<Item = u64>,
    removed: impl Fn(u64) -> bool,
) -> Option<u64> {
    let mut end = None;
    for s in seqs {
        if !removed(s) {
            break;
        }
        end = Some(s);
    }
    end
}

/// The coalescing rule over a whole queue: keep only the newest not-in-flight mutation of each
/// entity (captured requests and in-flight entries are never dropped, nor any entry queued
/// before a captured request), order of seqs preserved.
pub fn coalesce(entries: Vec<QueuedEntry>, in_flight: &[u64]) -> Vec<QueuedEntry> {
    let barrier = entries
        .iter()
        .filter(|e| e.entity().is_none())
        .map(|e| e.seq)
        .max()
        .unwrap_or(0);
    let mut newest: HashMap<(String, String), u64> = HashMap::new();
    for e in &entries {
        if let Some((c, k)) = e.entity() {
            let slot = newest.entry((c.to_owned(), k.to_owned())).or_insert(e.seq);
            *slot = (*slot).max(e.seq);
        }
    }
    entries
        .into_iter()
        .filter(|e| match e.entity() {
            Some((c, k)) => {
                e.seq < barrier
                    || in_flight.contains(&e.seq)
                    || newest.get(&(c.to_owned(), k.to_owned())) == Some(&e.seq)
            }
            None => true,
        })
        .collect()
}

#[cfg(test)]
mod tests;
