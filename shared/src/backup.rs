//! Backups off the device, as a sans-IO state machine: when a snapshot must be built and
//! uploaded to the server (`POST /api/backups`), and what an upload's answer means.
//!
//! The shell (the worker, or the page engine) feeds it triggers with [`BackupSchedule::handle_trigger`]
//! (worker start, page open, page focus, a timer, a periodic sync, a person asking), takes the
//! work with [`BackupSchedule::poll_action`], reports the snapshot it built
//! ([`BackupSchedule::handle_export_failed`] when it could not) and the upload's answer
//! ([`BackupSchedule::handle_upload`]), and sleeps until [`BackupSchedule::poll_timeout`].
//!
//! Rules:
//! - a scheduled backup is due when `interval_ms` is set and the server has never confirmed
//!   one, or the last confirmed one is `interval_ms` old;
//! - a failure (the snapshot could not be built, no answer, any answer but 2xx) is kept, shown
//!   and retried with the sync's backoff rules ([`RetryPolicy::delay_ms`]: full jitter, the
//!   cap, `Retry-After`); it is never given up: every retry builds a fresh snapshot;
//! - a person asking ([`BackupTrigger::Manual`]) starts one at once, whatever the interval or
//!   the backoff;
//! - one backup at a time.
//!
//! `last_exported_at` (a snapshot was built) and `last_backup_at` (the server answered that it
//! holds a verified copy) are kept apart: only the second makes a backup "done".
//!
//! Dead letters are kept until a backup the server holds has them: then those that died more
//! than `dead_letter_retention_days` before it was taken are removed ([`dead_letters_let_go`]),
//! so an old one leaves the device only into a backup, never silently (that backup is kept as
//! long as the server keeps it: `--keep-backups` per client).

use serde::{Deserialize, Serialize};

use crate::classify::{what_came_back, HttpOutcome};
use crate::protocol::Millis;
use crate::retry::{parse_retry_after, RandomSource, RetryPolicy};
use crate::status::LastError;

/// What asked for a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupTrigger {
    /// The worker (or the page engine) started.
    WorkerStart,
    /// A page registered (sent its config).
    PageOpen,
    /// A page became visible again.
    PageVisible,
    /// The shell's timer, or a page's, reached [`BackupSchedule::poll_timeout`].
    Timer,
    /// A `periodicsync` event.
    PeriodicSync,
    /// A person asked (`backupNow`): runs whatever the interval and the backoff.
    Manual,
}

/// The failure of the last backup attempt, persisted so a restarted worker keeps its backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFailure {
    /// Failed attempts in a row.
    pub attempt: u32,
    /// The next attempt is not due before this time.
    pub retry_at: Millis,
    /// What went wrong, for the status.
    pub error: LastError,
}

/// What the shell must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupAction {
    /// Build a snapshot of everything and upload it; then report with
    /// [`BackupSchedule::handle_upload`] or [`BackupSchedule::handle_export_failed`].
    ExportAndUpload,
}

/// What an upload's answer meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadResult {
    /// The server holds a verified copy; `last_backup_at` is now the snapshot's time.
    Stored,
    /// It failed; retried at `retry_at`.
    Failed { code: String, retry_at: Millis },
}

/// The backup schedule of one client.
#[derive(Debug, Clone, Default)]
pub struct BackupSchedule {
    interval_ms: Option<u64>,
    policy: RetryPolicy,
    last_exported_at: Option<Millis>,
    last_backup_at: Option<Millis>,
    failure: Option<BackupFailure>,
    /// A backup is being built or uploaded.
    running: bool,
    /// A trigger made one due; [`Self::poll_action`] hands it out.
    wanted: bool,
}

impl BackupSchedule {
    /// A schedule with backups every `interval_ms` (`None`: only when asked), retried by `policy`.
    pub fn new(interval_ms: Option<u64>, policy: RetryPolicy) -> Self {
        Self {
            interval_ms,
            policy,
            ..Self::default()
        }
    }

    /// Seed what a previous run persisted.
    pub fn restore(
        &mut self,
        last_exported_at: Option<Millis>,
        last_backup_at: Option<Millis>,
        failure: Option<BackupFailure>,
    ) {
        self.last_exported_at = last_exported_at;
        self.last_backup_at = last_backup_at;
        self.failure = failure;
    }

    /// A new config: the interval and the retry policy.
    pub fn handle_config(&mut self, interval_ms: Option<u64>, policy: RetryPolicy) {
        self.interval_ms = interval_ms;
        self.policy = policy;
    }

    /// A snapshot was built at `at` (manually or for a backup).
    pub fn handle_exported(&mut self, at: Millis) {
        self.last_exported_at = Some(self.last_exported_at.map_or(at, |l| l.max(at)));
    }

    /// Whether a scheduled backup is due at `now` (ignoring one already running).
    pub fn is_due(&self, now: Millis) -> bool {
        self.next_backup_at().is_some_and(|at| now >= at)
    }

    /// When the next backup is due: the retry time after a failure (also of a manual one,
    /// which is retried like any other), else one
    /// interval after the last confirmed backup (0, i.e. now, when there was none); `None`
    /// when scheduled backups are off.
    pub fn next_backup_at(&self) -> Option<Millis> {
        if let Some(f) = &self.failure {
            return Some(f.retry_at);
        }
        let interval = i64::try_from(self.interval_ms?).unwrap_or(i64::MAX);
        Some(
            self.last_backup_at
                .map_or(0, |at| at.saturating_add(interval)),
        )
    }

    /// Something that may start a backup happened. Returns whether one should start now
    /// (then [`Self::poll_action`] returns it).
    pub fn handle_trigger(&mut self, now: Millis, trigger: BackupTrigger) -> bool {
        if self.running {
            return false;
        }
        if trigger == BackupTrigger::Manual || self.is_due(now) {
            self.wanted = true;
        }
        self.wanted
    }

    /// The work to do now, once per trigger that made a backup due.
    pub fn poll_action(&mut self) -> Option<BackupAction> {
        if self.running || !self.wanted {
            return None;
        }
        self.wanted = false;
        self.running = true;
        Some(BackupAction::ExportAndUpload)
    }

    /// Whether a backup is being built or uploaded.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The snapshot could not be built (a read failed): retried with backoff.
    pub fn handle_export_failed(
        &mut self,
        now: Millis,
        code: &str,
        message: String,
        rng: &mut dyn RandomSource,
    ) -> UploadResult {
        self.fail(now, code, message, None, rng)
    }

    /// The upload of the snapshot built at `exported_at` came back with `outcome`.
    pub fn handle_upload(
        &mut self,
        now: Millis,
        exported_at: Millis,
        outcome: &HttpOutcome,
        rng: &mut dyn RandomSource,
    ) -> UploadResult {
        self.handle_exported(exported_at);
        match classify_upload(outcome, now) {
            Ok(()) => {
                self.running = false;
                self.failure = None;
                self.last_backup_at = Some(
                    self.last_backup_at
                        .map_or(exported_at, |l| l.max(exported_at)),
                );
                UploadResult::Stored
            }
            Err((code, message, retry_after)) => self.fail(now, code, message, retry_after, rng),
        }
    }

    fn fail(
        &mut self,
        now: Millis,
        code: &str,
        message: String,
        retry_after_ms: Option<u64>,
        rng: &mut dyn RandomSource,
    ) -> UploadResult {
        self.running = false;
        let attempt = self.failure.as_ref().map_or(0, |f| f.attempt) + 1;
        let delay = self.policy.delay_ms(attempt, retry_after_ms, rng);
        let retry_at = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        self.failure = Some(BackupFailure {
            attempt,
            retry_at,
            error: LastError {
                code: code.to_owned(),
                message,
                at: now,
            },
        });
        UploadResult::Failed {
            code: code.to_owned(),
            retry_at,
        }
    }

    /// When the shell should wake up and trigger [`BackupTrigger::Timer`]: the next due time,
    /// unless a backup is running or scheduled backups are off.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.running {
            return None;
        }
        self.next_backup_at()
    }

    /// The time of the last snapshot built.
    pub fn last_exported_at(&self) -> Option<Millis> {
        self.last_exported_at
    }

    /// The snapshot time of the last backup the server confirmed.
    pub fn last_backup_at(&self) -> Option<Millis> {
        self.last_backup_at
    }

    /// The failure to persist and show, `None` after a success.
    pub fn failure(&self) -> Option<&BackupFailure> {
        self.failure.as_ref()
    }
}

/// What an answer to `POST /api/backups` means: `Ok` for 2xx, else `(code, message,
/// Retry-After in ms)`.
pub fn classify_upload(
    outcome: &HttpOutcome,
    now: Millis,
) -> Result<(), (&'static str, String, Option<u64>)> {
    let (status, retry_after, body) = match outcome {
        HttpOutcome::Network { message } => {
            return Err((
                "network",
                format!("the backup could not be uploaded: network error: {message}"),
                None,
            ))
        }
        HttpOutcome::Response {
            status,
            retry_after,
            body,
        } => (*status, retry_after, body),
    };
    let retry_after = retry_after
        .as_deref()
        .and_then(|h| parse_retry_after(h, now));
    let came_back = what_came_back(body);
    let (code, what) = match status {
        200..=299 => return Ok(()),
        401 | 403 => ("auth", "refused the credentials"),
        400 | 422 => (
            "bad_snapshot",
            "refused the snapshot (it did not verify there)",
        ),
        413 => ("payload_too_large", "refused the snapshot as too large"),
        429 => ("rate_limited", "is rate limiting"),
        503 => ("unavailable", "is unavailable"),
        408 | 500..=599 => ("server_error", "failed"),
        _ => (
            "config_error",
            "does not take backups at /api/backups (is the server URL a rangersync server?)",
        ),
    };
    Err((
        code,
        format!("the backup upload failed: the server {what} (HTTP {status}, {came_back})"),
        retry_after,
    ))
}

/// The seqs of the dead letters a stored backup lets the device forget: those it holds
/// (`in_backup`) whole that died more than `retention_days` before it was taken at
/// `exported_at`. A captured call whose secret headers the backup left out (`redacted`) stays
/// on the device: the backup could not replay it. `0` days keeps every one.
pub fn dead_letters_let_go(
    in_backup: &[crate::snapshot::DeadLetterCopy],
    exported_at: Millis,
    retention_days: u32,
) -> Vec<u64> {
    if retention_days == 0 {
        return Vec::new();
    }
    let horizon =
        exported_at.saturating_sub(Millis::from(retention_days).saturating_mul(86_400_000));
    in_backup
        .iter()
        .filter(|d| d.dead_at < horizon && d.redacted.is_empty())
        .map(|d| d.seq)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_letters_held_whole_in_the_backup_and_older_than_the_retention_go() {
        let day = 86_400_000;
        let letter = |seq, dead_at| crate::snapshot::DeadLetterCopy {
            seq,
            reason: "rejected".into(),
            dead_at,
            attempts: 1,
            record: serde_json::Value::Null,
            redacted: Vec::new(),
        };
        let now = 1_000 * day;
        let mut with_secret = letter(3, now - 91 * day);
        with_secret.redacted = vec!["authorization".into()];
        let held = [
            letter(1, now - 91 * day),
            letter(2, now - 89 * day),
            with_secret,
        ];
        assert_eq!(dead_letters_let_go(&held, now, 90), vec![1]);
        assert!(dead_letters_let_go(&held, now, 0).is_empty(), "0 keeps all");
        assert!(dead_letters_let_go(&[], now, 90).is_empty());
    }
    use crate::retry::SplitMix64;

    const MIN: Millis = 60_000;
    const DAY: u64 = 86_400_000;

    fn ok() -> HttpOutcome {
        HttpOutcome::Response {
            status: 201,
            retry_after: None,
            body: "{\"id\":1}".into(),
        }
    }

    fn answer(status: u16, retry_after: Option<&str>) -> HttpOutcome {
        HttpOutcome::Response {
            status,
            retry_after: retry_after.map(str::to_owned),
            body: "{\"error\":{\"code\":\"x\",\"message\":\"no\"}}".into(),
        }
    }

    fn schedule() -> BackupSchedule {
        BackupSchedule::new(Some(DAY), RetryPolicy::default())
    }

    /// Run one backup attempt at `now` through to `outcome`.
    fn attempt(s: &mut BackupSchedule, now: Millis, outcome: &HttpOutcome) -> UploadResult {
        assert_eq!(s.poll_action(), Some(BackupAction::ExportAndUpload));
        s.handle_upload(now, now, outcome, &mut SplitMix64(7))
    }

    #[test]
    fn a_client_that_never_backed_up_is_due_at_once_on_any_trigger() {
        for trigger in [
            BackupTrigger::WorkerStart,
            BackupTrigger::PageOpen,
            BackupTrigger::PageVisible,
            BackupTrigger::Timer,
            BackupTrigger::PeriodicSync,
        ] {
            let mut s = schedule();
            assert!(s.handle_trigger(1_000, trigger), "{trigger:?}");
            assert_eq!(s.poll_action(), Some(BackupAction::ExportAndUpload));
        }
    }

    #[test]
    fn after_a_confirmed_backup_the_next_is_due_one_interval_later_and_not_before() {
        let mut s = schedule();
        s.handle_trigger(1_000, BackupTrigger::WorkerStart);
        assert_eq!(attempt(&mut s, 1_000, &ok()), UploadResult::Stored);
        assert_eq!(s.last_backup_at(), Some(1_000));
        assert_eq!(s.next_backup_at(), Some(1_000 + DAY as Millis));
        assert_eq!(s.poll_timeout(), Some(1_000 + DAY as Millis));
        let just_before = 1_000 + DAY as Millis - 1;
        assert!(!s.handle_trigger(just_before, BackupTrigger::PageVisible));
        assert_eq!(s.poll_action(), None);
        assert!(s.handle_trigger(just_before + 1, BackupTrigger::Timer));
    }

    #[test]
    fn with_the_interval_off_nothing_is_scheduled_but_a_person_can_still_back_up() {
        let mut s = BackupSchedule::new(None, RetryPolicy::default());
        for trigger in [
            BackupTrigger::WorkerStart,
            BackupTrigger::Timer,
            BackupTrigger::PeriodicSync,
        ] {
            assert!(!s.handle_trigger(1_000, trigger));
        }
        assert_eq!(s.poll_timeout(), None);
        assert!(s.handle_trigger(1_000, BackupTrigger::Manual));
        assert_eq!(attempt(&mut s, 1_000, &ok()), UploadResult::Stored);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_manual_backup_runs_at_once_even_inside_the_interval_and_the_backoff() {
        let mut s = schedule();
        s.handle_trigger(1_000, BackupTrigger::WorkerStart);
        attempt(&mut s, 1_000, &answer(500, None));
        assert!(!s.handle_trigger(1_001, BackupTrigger::PageVisible));
        assert!(s.handle_trigger(1_001, BackupTrigger::Manual));
        assert_eq!(attempt(&mut s, 1_001, &ok()), UploadResult::Stored);
        assert!(s.failure().is_none());
    }

    #[test]
    fn only_one_backup_runs_at_a_time() {
        let mut s = schedule();
        assert!(s.handle_trigger(1_000, BackupTrigger::WorkerStart));
        assert_eq!(s.poll_action(), Some(BackupAction::ExportAndUpload));
        assert!(s.is_running());
        assert!(!s.handle_trigger(1_000, BackupTrigger::PageOpen));
        assert!(!s.handle_trigger(1_000, BackupTrigger::Manual));
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.poll_timeout(), None, "no timer while one runs");
    }

    #[test]
    fn a_failed_upload_is_kept_shown_and_retried_with_the_sync_backoff_never_given_up() {
        let policy = RetryPolicy::default();
        let mut s = BackupSchedule::new(Some(DAY), policy.clone());
        let mut now = 1_000;
        s.handle_trigger(now, BackupTrigger::WorkerStart);
        for n in 1..=40u32 {
            let result = attempt(
                &mut s,
                now,
                &HttpOutcome::Network {
                    message: "refused".into(),
                },
            );
            let UploadResult::Failed { code, retry_at } = result else {
                panic!("attempt {n} did not fail");
            };
            assert_eq!(code, "network");
            let f = s.failure().expect("kept");
            assert_eq!(f.attempt, n);
            assert_eq!(f.error.code, "network");
            assert!(f.error.message.contains("refused"), "{}", f.error.message);
            let ceiling = policy.backoff_ceiling_ms(n) as Millis;
            assert!(retry_at >= now && retry_at <= now + ceiling, "attempt {n}");
            assert_eq!(s.poll_timeout(), Some(retry_at));
            if retry_at > now {
                assert!(!s.handle_trigger(retry_at - 1, BackupTrigger::Timer));
            }
            now = retry_at;
            assert!(s.handle_trigger(now, BackupTrigger::Timer));
        }
        assert_eq!(attempt(&mut s, now, &ok()), UploadResult::Stored);
        assert!(s.failure().is_none());
        assert_eq!(s.last_backup_at(), Some(now));
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let mut s = schedule();
        s.handle_trigger(0, BackupTrigger::WorkerStart);
        let r = attempt(&mut s, 0, &answer(429, Some("120")));
        assert_eq!(
            r,
            UploadResult::Failed {
                code: "rate_limited".into(),
                retry_at: 120_000
            }
        );
    }

    #[test]
    fn each_answer_that_is_not_2xx_fails_with_a_code_a_person_can_act_on() {
        let cases = [
            (401, "auth"),
            (403, "auth"),
            (400, "bad_snapshot"),
            (413, "payload_too_large"),
            (429, "rate_limited"),
            (500, "server_error"),
            (503, "unavailable"),
            (404, "config_error"),
            (405, "config_error"),
        ];
        for (status, code) in cases {
            let Err((got, message, _)) = classify_upload(&answer(status, None), 0) else {
                panic!("{status} accepted");
            };
            assert_eq!(got, code, "{status}");
            assert!(message.contains(&status.to_string()), "{message}");
        }
        assert!(classify_upload(&ok(), 0).is_ok());
        assert!(classify_upload(&answer(200, None), 0).is_ok());
    }

    #[test]
    fn a_snapshot_that_could_not_be_built_backs_off_like_a_failed_upload() {
        let mut s = schedule();
        s.handle_trigger(5 * MIN, BackupTrigger::WorkerStart);
        s.poll_action();
        let r = s.handle_export_failed(
            5 * MIN,
            "storage_error",
            "read failed".into(),
            &mut SplitMix64(1),
        );
        assert!(matches!(r, UploadResult::Failed { .. }));
        assert!(!s.is_running());
        assert_eq!(s.failure().unwrap().error.code, "storage_error");
        assert_eq!(
            s.last_exported_at(),
            None,
            "no snapshot was built, so none is reported as exported"
        );
    }

    #[test]
    fn exported_and_backed_up_are_told_apart() {
        let mut s = schedule();
        s.handle_exported(500);
        assert_eq!(s.last_exported_at(), Some(500));
        assert_eq!(s.last_backup_at(), None, "a download is not a backup");
        assert!(s.is_due(501));
        s.handle_trigger(600, BackupTrigger::PageOpen);
        attempt(&mut s, 600, &answer(503, None));
        assert_eq!(s.last_exported_at(), Some(600));
        assert_eq!(s.last_backup_at(), None, "the server holds no copy");
    }

    #[test]
    fn a_restarted_client_keeps_its_last_backup_and_its_backoff() {
        let mut s = schedule();
        let failure = BackupFailure {
            attempt: 3,
            retry_at: 10_000,
            error: LastError {
                code: "network".into(),
                message: "down".into(),
                at: 9_000,
            },
        };
        s.restore(Some(8_000), Some(1_000), Some(failure));
        assert!(!s.handle_trigger(9_999, BackupTrigger::WorkerStart));
        assert!(s.handle_trigger(10_000, BackupTrigger::WorkerStart));
        let r = attempt(&mut s, 10_000, &answer(500, None));
        assert!(matches!(r, UploadResult::Failed { .. }));
        assert_eq!(s.failure().unwrap().attempt, 4, "the count goes on");
    }

    #[test]
    fn a_failed_manual_backup_is_retried_even_with_scheduled_backups_off() {
        let mut s = BackupSchedule::new(None, RetryPolicy::default());
        s.handle_trigger(1_000, BackupTrigger::Manual);
        let UploadResult::Failed { retry_at, .. } = attempt(&mut s, 1_000, &answer(503, None))
        else {
            panic!("stored");
        };
        assert_eq!(s.poll_timeout(), Some(retry_at));
        assert!(s.handle_trigger(retry_at, BackupTrigger::Timer));
        assert_eq!(attempt(&mut s, retry_at, &ok()), UploadResult::Stored);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_new_interval_takes_effect_at_once() {
        let mut s = BackupSchedule::new(None, RetryPolicy::default());
        assert!(!s.handle_trigger(1_000, BackupTrigger::PageOpen));
        s.handle_config(Some(DAY), RetryPolicy::default());
        assert!(s.handle_trigger(1_000, BackupTrigger::PageOpen));
    }
}
