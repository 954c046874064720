//! Retry policy: exponential backoff with full jitter, a cap, `Retry-After`,
//! and give-up limits (attempts, age) after which an entry is dead-lettered.
//! The random source is injected so tests are deterministic.

use serde::{Deserialize, Serialize};

use crate::protocol::Millis;

/// A source of uniform random numbers in `[0, 1)`.
pub trait RandomSource {
    fn next_unit(&mut self) -> f64;
}

/// A small deterministic generator (SplitMix64) for tests and for shells without a better one.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl RandomSource for SplitMix64 {
    /// Standard SplitMix64 step; the top 53 bits of the output scaled by `2^-53`.
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 significant bits fit an f64 exactly.
        #[allow(clippy::cast_precision_loss)]
        let top = (z >> 11) as f64;
        top * UNIT_53
    }
}

/// `2^-53`.
const UNIT_53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// One second in milliseconds.
const SECOND_MS: u64 = 1000;
/// One day in milliseconds.
const DAY_MS: u64 = 24 * 60 * 60 * SECOND_MS;

/// The longest delay [`parse_retry_after`] returns (7 days): a larger `Retry-After` (a
/// misconfigured server, or a date far in the future) is capped to this.
pub const MAX_RETRY_AFTER_MS: u64 = 7 * DAY_MS;

/// Backoff and give-up limits. Serialized as part of the page's `Config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay ceiling of the first retry, before jitter.
    pub base_delay_ms: u64,
    /// Most any single delay may be (before `Retry-After`, which may be longer).
    pub max_delay_ms: u64,
    /// Attempts after which an entry goes to the dead-letter store (0: never).
    pub max_attempts: u32,
    /// Age (since the write) after which an entry goes to the dead-letter store (0: never).
    pub max_age_ms: u64,
    /// Replays of a captured request answered with a server error (500, 501, 505…; never an
    /// outage's 502/503/504) after which it goes to the dead-letter store with the server's
    /// text (0: only `max_attempts` applies). A request the API fails every time must not
    /// hold the requests behind it for hours.
    pub max_server_errors: u32,
}

impl Default for RetryPolicy {
    /// Base 1 s, cap 5 min, 25 attempts, 7 days, 5 server errors for a captured request.
    fn default() -> Self {
        Self {
            base_delay_ms: SECOND_MS,
            max_delay_ms: 300_000,
            max_attempts: 25,
            max_age_ms: 7 * DAY_MS,
            max_server_errors: 5,
        }
    }
}

impl RetryPolicy {
    /// Full-jitter backoff before retry number `attempt` (1 = first retry):
    /// uniform in `[0, min(max_delay, base * 2^(attempt-1))]`. Never overflows.
    /// Attempt 0 is treated as 1. The random source is drawn from exactly once per call.
    pub fn backoff_ms(&self, attempt: u32, rng: &mut dyn RandomSource) -> u64 {
        let ceiling = self.backoff_ceiling_ms(attempt);
        let unit = rng.next_unit();
        // Guard against a misbehaving source (NaN, negative, >= 1).
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Uniform over the ceiling + 1 integers 0..=ceiling. `as` saturates on f64 → u64.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let drawn = (unit * (ceiling as f64 + 1.0)).floor() as u64;
        drawn.min(ceiling)
    }

    /// The upper bound of [`backoff_ms`](Self::backoff_ms) before jitter:
    /// `min(max_delay, base * 2^(attempt-1))`, saturating, attempt 0 treated as 1.
    pub fn backoff_ceiling_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.max(1) - 1;
        // 2^exponent, or "infinite" from 2^64 on.
        let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
        self.base_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms)
    }

    /// The delay to wait: the jittered backoff, but at least `retry_after_ms` when the server said so.
    pub fn delay_ms(
        &self,
        attempt: u32,
        retry_after_ms: Option<u64>,
        rng: &mut dyn RandomSource,
    ) -> u64 {
        let backoff = self.backoff_ms(attempt, rng);
        backoff.max(retry_after_ms.unwrap_or(0))
    }

    /// Whether an entry first written at `created_at` that has been tried `attempts` times
    /// should now be dead-lettered.
    ///
    /// A limit of 0 is disabled. A clock that went backwards (`now < created_at`) never makes
    /// an entry too old.
    pub fn gives_up(&self, attempts: u32, created_at: Millis, now: Millis) -> bool {
        if self.max_attempts > 0 && attempts >= self.max_attempts {
            return true;
        }
        if self.max_age_ms > 0 {
            let age = now.saturating_sub(created_at);
            let max_age = i64::try_from(self.max_age_ms).unwrap_or(i64::MAX);
            if age >= max_age {
                return true;
            }
        }
        false
    }
}

/// Parse a `Retry-After` header (delta-seconds or an IMF-fixdate HTTP-date) into a delay
/// in milliseconds from `now`. A date in the past is 0; garbage is `None`.
///
/// Also accepts the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) date forms. Any delay is capped at [`MAX_RETRY_AFTER_MS`].
pub fn parse_retry_after(header: &str, now: Millis) -> Option<u64> {
    let header = header.trim();
    if header.is_empty() {
        return None;
    }
    if header.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: an overflowing number is simply "very long".
        let seconds = header.parse::<u64>().unwrap_or(u64::MAX);
        return Some(seconds.saturating_mul(SECOND_MS).min(MAX_RETRY_AFTER_MS));
    }
    let at = parse_http_date(header)?;
    let delay = at.saturating_sub(now);
    if delay <= 0 {
        return Some(0);
    }
    Some(
        u64::try_from(delay)
            .unwrap_or(u64::MAX)
            .min(MAX_RETRY_AFTER_MS),
    )
}

/// Parse an HTTP-date (IMF-fixdate, RFC 850 or asctime, always GMT) into Unix milliseconds.
pub fn parse_http_date(text: &str) -> Option<Millis> {
    let parts: Vec<&str> = text.split_ascii_whitespace().collect();
    let (year, month, day, time) = match parts.as_slice() {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
        [weekday, day, month, year, time, "GMT"] => {
            weekday_name(weekday.strip_suffix(',')?, false)?;
            (
                parse_number(year, 4, 4)?,
                month_number(month)?,
                parse_number(day, 2, 2)?,
                *time,
            )
        }
        // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
        [weekday, date, time, "GMT"] => {
            weekday_name(weekday.strip_suffix(',')?, true)?;
            let mut fields = date.split('-');
            let day = parse_number(fields.next()?, 2, 2)?;
            let month = month_number(fields.next()?)?;
            let yy = parse_number(fields.next()?, 2, 2)?;
            if fields.next().is_some() {
                return None;
            }
            // RFC 9110: a two-digit year more than 50 years ahead is in the past century;
            // with no clock here, 70..=99 is 19xx and 00..=69 is 20xx.
            let year = if yy >= 70 { 1900 + yy } else { 2000 + yy };
            (year, month, day, *time)
        }
        // asctime: "Sun Nov  6 08:49:37 1994"
        [weekday, month, day, time, year] => {
            weekday_name(weekday, false)?;
            (
                parse_number(year, 4, 4)?,
                month_number(month)?,
                parse_number(day, 1, 2)?,
                *time,
            )
        }
        _ => return None,
    };
    let mut hms = time.split(':');
    let hour = parse_number(hms.next()?, 2, 2)?;
    let minute = parse_number(hms.next()?, 2, 2)?;
    let second = parse_number(hms.next()?, 2, 2)?;
    if hms.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Some(seconds.saturating_mul(1000))
}

/// Digits only, `min..=max` of them.
fn parse_number(text: &str, min: usize, max: usize) -> Option<u32> {
    if text.len() < min || text.len() > max || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn weekday_name(text: &str, long: bool) -> Option<()> {
    const SHORT: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const LONG: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let names: &[&str] = if long { &LONG } else { &SHORT };
    names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(text))
        .then_some(())
}

fn month_number(text: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let index = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(text))?;
    u32::try_from(index).ok().map(|i| i + 1)
}

fn is_leap_year(year: u32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
/// `month` is 1..=12, `day` 1..=31; `year` is small (four digits at most here).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400; // [0, 399]
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 }; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year; // [0, 146096]
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that always returns the same number.
    struct Fixed(f64);
    impl RandomSource for Fixed {
        fn next_unit(&mut self) -> f64 {
            self.0
        }
    }

    const NOW: Millis = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn the_default_policy_is_one_second_base_five_minute_cap_25_attempts_and_7_days() {
        let p = RetryPolicy::default();
        assert_eq!(p.base_delay_ms, 1000);
        assert_eq!(p.max_delay_ms, 300_000);
        assert_eq!(p.max_attempts, 25);
        assert_eq!(p.max_age_ms, 7 * 24 * 3600 * 1000);
    }

    #[test]
    fn the_policy_deserializes_from_a_partial_config_and_refuses_unknown_fields() {
        let p: RetryPolicy = serde_json::from_str(r#"{"max_attempts":3}"#).unwrap();
        assert_eq!(
            p,
            RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            }
        );
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"evil":1}"#).is_err());
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Reference outputs of splitmix64 seeded with 0 (Vigna's splitmix64.c).
        let mut state = 0u64;
        let mut raw = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        assert_eq!(raw(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(raw(), 0x6E78_9E6A_A1B9_65F4);
        let mut rng = SplitMix64(0);
        #[allow(clippy::cast_precision_loss)]
        let expected = (0xE220_A839_7B1D_CDAFu64 >> 11) as f64 / 9_007_199_254_740_992.0;
        assert!((rng.next_unit() - expected).abs() < f64::EPSILON);
    }

    #[test]
    fn splitmix64_is_deterministic_and_stays_in_the_unit_interval() {
        let mut a = SplitMix64(42);
        let mut b = SplitMix64(42);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let x = a.next_unit();
            assert_eq!(x.to_bits(), b.next_unit().to_bits());
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / 10_000.0;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
    }

    #[test]
    fn the_same_seed_gives_the_same_backoff_schedule() {
        let p = RetryPolicy::default();
        let a: Vec<u64> = (1..=30)
            .map(|n| p.backoff_ms(n, &mut SplitMix64(7)))
            .collect();
        let b: Vec<u64> = (1..=30)
            .map(|n| p.backoff_ms(n, &mut SplitMix64(7)))
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn backoff_stays_within_the_exponential_ceiling_for_every_attempt() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64(1);
        for attempt in 1..=40u32 {
            let ceiling = if attempt >= 20 {
                300_000
            } else {
                (1000u64 << (attempt - 1)).min(300_000)
            };
            assert_eq!(p.backoff_ceiling_ms(attempt), ceiling);
            for _ in 0..200 {
                assert!(p.backoff_ms(attempt, &mut rng) <= ceiling);
            }
        }
    }

    #[test]
    fn backoff_is_jittered_over_the_whole_range() {
        let p = RetryPolicy::default();
        let mut rng = SplitMix64(99);
        let draws: Vec<u64> = (0..2000).map(|_| p.backoff_ms(4, &mut rng)).collect();
        assert!(draws.iter().any(|&d| d < 800), "some draws near 0");
        assert!(
            draws.iter().any(|&d| d > 7200),
            "some draws near the 8 s ceiling"
        );
        assert!(draws.iter().all(|&d| d <= 8000));
    }

    #[test]
    fn backoff_reaches_both_ends_of_the_range_inclusively() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ms(3, &mut Fixed(0.0)), 0);
        assert_eq!(p.backoff_ms(3, &mut Fixed(0.999_999_999_9)), 4000);
    }

    #[test]
    fn the_cap_bounds_every_delay() {
        let p = RetryPolicy {
            base_delay_ms: 1000,
            max_delay_ms: 5000,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff_ms(50, &mut Fixed(0.999_999_999)), 5000);
        assert_eq!(p.backoff_ceiling_ms(4), 5000);
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first_retry() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ceiling_ms(0), 1000);
        assert_eq!(
            p.backoff_ms(0, &mut Fixed(0.5)),
            p.backoff_ms(1, &mut Fixed(0.5))
        );
    }

    #[test]
    fn huge_attempts_and_huge_bases_never_overflow() {
        let p = RetryPolicy {
            base_delay_ms: u64::MAX,
            max_delay_ms: u64::MAX,
            max_attempts: 0,
            max_age_ms: 0,
            max_server_errors: 0,
        };
        for attempt in [1, 2, 63, 64, 65, 1000, u32::MAX] {
            assert_eq!(p.backoff_ceiling_ms(attempt), u64::MAX);
            let _ = p.backoff_ms(attempt, &mut Fixed(0.999_999));
            assert_eq!(
                p.delay_ms(attempt, Some(u64::MAX), &mut Fixed(0.1)),
                u64::MAX
            );
        }
        let d = RetryPolicy::default();
        assert_eq!(d.backoff_ceiling_ms(u32::MAX), 300_000);
        assert!(d.backoff_ms(u32::MAX, &mut SplitMix64(3)) <= 300_000);
    }

    #[test]
    fn a_misbehaving_random_source_cannot_push_a_delay_out_of_range() {
        let p = RetryPolicy::default();
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1.0, 2.0] {
            assert!(p.backoff_ms(5, &mut Fixed(bad)) <= 16_000);
        }
        assert_eq!(p.backoff_ms(5, &mut Fixed(f64::NAN)), 0);
    }

    #[test]
    fn a_zero_base_means_retry_at_once() {
        let p = RetryPolicy {
            base_delay_ms: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff_ms(10, &mut Fixed(0.9)), 0);
    }

    #[test]
    fn retry_after_wins_when_it_is_longer_than_the_backoff() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1, Some(60_000), &mut Fixed(0.5)), 60_000);
        // Retry-After may exceed the cap.
        assert_eq!(p.delay_ms(30, Some(600_000), &mut Fixed(0.5)), 600_000);
    }

    #[test]
    fn the_backoff_wins_when_retry_after_is_shorter_or_absent() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(3, Some(10), &mut Fixed(0.5)), 2000);
        assert_eq!(p.delay_ms(3, None, &mut Fixed(0.5)), 2000);
    }

    #[test]
    fn an_entry_is_given_up_after_max_attempts() {
        let p = RetryPolicy::default();
        assert!(!p.gives_up(24, 0, 1));
        assert!(p.gives_up(25, 0, 1));
        assert!(p.gives_up(u32::MAX, 0, 1));
    }

    #[test]
    fn an_entry_is_given_up_when_older_than_max_age() {
        let p = RetryPolicy::default();
        let week = 7 * 24 * 3600 * 1000;
        assert!(!p.gives_up(1, 1000, 1000 + week - 1));
        assert!(p.gives_up(1, 1000, 1000 + week));
    }

    #[test]
    fn zero_limits_never_give_up() {
        let p = RetryPolicy {
            max_attempts: 0,
            max_age_ms: 0,
            ..RetryPolicy::default()
        };
        assert!(!p.gives_up(u32::MAX, i64::MIN, i64::MAX));
    }

    #[test]
    fn a_clock_that_went_backwards_does_not_make_an_entry_too_old() {
        let p = RetryPolicy::default();
        assert!(!p.gives_up(1, i64::MAX, i64::MIN));
        let huge = RetryPolicy {
            max_age_ms: u64::MAX,
            ..RetryPolicy::default()
        };
        assert!(!huge.gives_up(1, 0, i64::MAX - 1));
        assert!(huge.gives_up(1, i64::MIN, i64::MAX));
    }

    #[test]
    fn retry_after_in_delta_seconds_becomes_milliseconds() {
        assert_eq!(parse_retry_after("120", NOW), Some(120_000));
        assert_eq!(parse_retry_after("  0 ", NOW), Some(0));
        assert_eq!(parse_retry_after("007", NOW), Some(7000));
    }

    #[test]
    fn an_absurd_retry_after_is_capped_at_seven_days() {
        assert_eq!(
            parse_retry_after("999999999", NOW),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999999999", NOW),
            Some(MAX_RETRY_AFTER_MS)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW),
            Some(MAX_RETRY_AFTER_MS)
        );
    }

    #[test]
    fn retry_after_as_an_imf_fixdate_is_the_time_until_that_date() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", NOW),
            Some(60_000)
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", NOW),
            Some(86_400_000)
        );
    }

    #[test]
    fn retry_after_in_the_obsolete_date_forms_is_understood() {
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", NOW),
            Some(120_000)
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:52:37 1994", NOW),
            Some(180_000)
        );
    }

    #[test]
    fn a_retry_after_date_in_the_past_means_no_wait() {
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", NOW),
            Some(0)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:36 GMT", NOW),
            Some(0)
        );
    }

    #[test]
    fn http_dates_convert_to_unix_milliseconds() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(NOW));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400_000)
        );
        assert_eq!(
            parse_http_date("Wed, 25 Nov 2026 13:20:28 GMT"),
            Some(1_795_612_828_000)
        );
        assert_eq!(
            parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT"),
            Some(-1000)
        );
        assert_eq!(parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sat, 01 Jan 2000 00:00:00 GMT"),
            parse_http_date("Saturday, 01-Jan-00 00:00:00 GMT")
        );
    }

    #[test]
    fn garbage_retry_after_is_none() {
        for bad in [
            "",
            "   ",
            "-5",
            "+5",
            "1.5",
            "5s",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37:01 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06-Nov-94-1 08:49:37 GMT",
            "Sun Nov 6 08:49:37 94",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "٣",
            "\u{0}",
        ] {
            assert_eq!(parse_retry_after(bad, NOW), None, "{bad:?}");
        }
    }
}
