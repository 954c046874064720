//! When an auto-saved value is written (`client.autosave`): the decision alone, time passed
//! in, so every rule is tested natively. A change is written `debounce_ms` after the last
//! one, and never later than `max_wait_ms` after the first change not yet written: a person
//! typing without a pause is still saved every `max_wait_ms`.

/// The write schedule of one auto-saved key.
#[derive(Debug, Clone, PartialEq)]
pub struct Coalescer {
    debounce_ms: f64,
    max_wait_ms: f64,
    first_unsaved_at: Option<f64>,
}

impl Coalescer {
    /// A schedule with these delays (`max_wait_ms ≥ debounce_ms`, checked by the options).
    pub fn new(debounce_ms: u32, max_wait_ms: u32) -> Self {
        Self {
            debounce_ms: f64::from(debounce_ms),
            max_wait_ms: f64::from(max_wait_ms),
            first_unsaved_at: None,
        }
    }

    /// A change at `now`: returns when the write is due (the timer to arm, replacing any).
    pub fn handle_change(&mut self, now: f64) -> f64 {
        let first = *self.first_unsaved_at.get_or_insert(now);
        (now + self.debounce_ms).min(first + self.max_wait_ms)
    }

    /// The pending value was taken to be written: the next change starts a new wait.
    pub fn handle_taken(&mut self) {
        self.first_unsaved_at = None;
    }

    /// Milliseconds from `now` until `due` (never negative), for `setTimeout`.
    pub fn poll_delay(due: f64, now: f64) -> u32 {
        (due - now).clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_change_is_written_after_the_debounce() {
        let mut c = Coalescer::new(300, 2_000);
        assert_eq!(c.handle_change(1_000.0), 1_300.0);
    }

    #[test]
    fn each_change_pushes_the_write_back_by_the_debounce() {
        let mut c = Coalescer::new(300, 2_000);
        c.handle_change(1_000.0);
        assert_eq!(c.handle_change(1_200.0), 1_500.0);
    }

    #[test]
    fn typing_without_a_pause_is_still_written_after_max_wait() {
        let mut c = Coalescer::new(300, 2_000);
        c.handle_change(1_000.0);
        let mut due = 0.0;
        for t in (1_100..=3_000).step_by(100) {
            due = c.handle_change(f64::from(t));
        }
        assert_eq!(due, 3_000.0, "never later than first change + max wait");
    }

    #[test]
    fn after_a_write_is_taken_the_max_wait_starts_again() {
        let mut c = Coalescer::new(300, 2_000);
        c.handle_change(1_000.0);
        c.handle_taken();
        assert_eq!(c.handle_change(5_000.0), 5_300.0);
        assert_eq!(c.handle_change(6_900.0), 7_000.0);
    }

    #[test]
    fn a_due_time_in_the_past_is_no_delay() {
        assert_eq!(Coalescer::poll_delay(900.0, 1_000.0), 0);
        assert_eq!(Coalescer::poll_delay(1_250.5, 1_000.0), 250);
    }
}
