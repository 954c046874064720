//! The clock writes are stamped with: the device's wall clock, but never at or below the
//! newest `server_time` the server has reported, and never below the last stamp given.
//!
//! Last-writer-wins compares stamps. A device whose clock is behind the server's would
//! otherwise stamp a new edit earlier than the server's copy of an older one and lose it; with
//! the floor, an edit made after the device last heard from the server is stamped after
//! everything the server had then. (A clock far *ahead* is the server's to bound:
//! `--max-clock-skew-ms`.)

use crate::protocol::Millis;

/// A hybrid logical clock reduced to what last-writer-wins needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HybridClock {
    /// The newest `server_time` seen (0: none yet).
    server_time: Millis,
    /// The last stamp given.
    last: Millis,
}

impl HybridClock {
    /// A clock that has seen the server at `server_time` (persisted across restarts).
    pub fn seen(server_time: Millis) -> Self {
        Self {
            server_time,
            last: 0,
        }
    }

    /// The server said its clock read `server_time`.
    pub fn handle_server_time(&mut self, server_time: Millis) {
        self.server_time = self.server_time.max(server_time);
    }

    /// The newest `server_time` seen (0: none).
    pub fn server_time(&self) -> Millis {
        self.server_time
    }

    /// The stamp of a write made when the device's clock reads `wall`.
    pub fn stamp(&mut self, wall: Millis) -> Millis {
        let floor = if self.server_time > 0 {
            self.server_time.saturating_add(1)
        } else {
            0
        };
        let stamp = wall.max(floor).max(self.last);
        self.last = stamp;
        stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_with_a_right_clock_stamps_its_own_time() {
        let mut clock = HybridClock::seen(1_000);
        assert_eq!(clock.stamp(5_000), 5_000);
    }

    #[test]
    fn a_device_whose_clock_is_behind_stamps_after_the_last_server_time_it_saw() {
        let mut clock = HybridClock::default();
        clock.handle_server_time(10_000);
        assert_eq!(clock.stamp(4_000), 10_001);
    }

    #[test]
    fn an_older_server_time_never_lowers_the_floor() {
        let mut clock = HybridClock::seen(10_000);
        clock.handle_server_time(3_000);
        assert_eq!(clock.server_time(), 10_000);
    }

    #[test]
    fn stamps_never_go_back_when_the_device_clock_is_set_back() {
        let mut clock = HybridClock::default();
        assert_eq!(clock.stamp(9_000), 9_000);
        assert_eq!(clock.stamp(2_000), 9_000);
    }

    #[test]
    fn a_clock_that_has_never_heard_from_the_server_is_the_wall_clock() {
        let mut clock = HybridClock::default();
        assert_eq!(clock.stamp(1), 1);
    }
}
