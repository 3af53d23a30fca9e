//! Diego's crash restart policy (`bbs:models/restart_calculator.go`), as
//! pure functions of the crash count and time, so the converger and the
//! crash handler agree and the table is tested in one place.

use kiln_model::bbs::Nanos;

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// The 1st and 2nd crashes restart at once.
pub const IMMEDIATE_RESTARTS: u32 = 3;
/// After this many crashes an instance is never restarted again.
pub const MAX_RESTARTS: u32 = 200;
/// A crash after running this long counts as the first again.
pub const CRASH_RESET_NANOS: Nanos = 5 * 60 * NANOS_PER_SEC;
const BACKOFF_MIN_NANOS: Nanos = 30 * NANOS_PER_SEC;
const BACKOFF_MAX_NANOS: Nanos = 16 * 60 * NANOS_PER_SEC;

/// The crash count after a crash, given the previous count and how long the
/// instance had been RUNNING (None if it never got to RUNNING).
pub fn next_crash_count(previous: u32, running_for: Option<Nanos>) -> u32 {
    match running_for {
        Some(d) if d > CRASH_RESET_NANOS => 1,
        _ => previous.saturating_add(1),
    }
}

/// Whether a crash with this count goes straight back to UNCLAIMED.
pub fn restarts_immediately(crash_count: u32) -> bool {
    crash_count < IMMEDIATE_RESTARTS
}

/// How long a CRASHED instance waits before convergence restarts it, or
/// None if it is never restarted.
pub fn backoff(crash_count: u32) -> Option<Nanos> {
    if crash_count >= MAX_RESTARTS {
        return None;
    }
    if restarts_immediately(crash_count) {
        return Some(0);
    }
    let doublings = (crash_count - IMMEDIATE_RESTARTS).min(5);
    Some((BACKOFF_MIN_NANOS << doublings).min(BACKOFF_MAX_NANOS))
}

/// Whether a CRASHED instance that crashed at `since` may restart at `now`.
pub fn should_restart(crash_count: u32, since: Nanos, now: Nanos) -> bool {
    backoff(crash_count).is_some_and(|wait| now >= since + wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NANOS_PER_SEC;

    #[test]
    fn backoff_table_matches_diego() {
        let table = [
            (1, Some(0)),
            (2, Some(0)),
            (3, Some(30 * S)),
            (4, Some(60 * S)),
            (5, Some(120 * S)),
            (6, Some(240 * S)),
            (7, Some(480 * S)),
            (8, Some(960 * S)),
            (9, Some(960 * S)),
            (199, Some(960 * S)),
            (200, None),
        ];
        for (count, expected) in table {
            assert_eq!(backoff(count), expected, "crash_count {count}");
        }
    }

    #[test]
    fn a_long_run_resets_the_count() {
        assert_eq!(next_crash_count(7, Some(CRASH_RESET_NANOS + 1)), 1);
        assert_eq!(next_crash_count(7, Some(CRASH_RESET_NANOS)), 8);
        assert_eq!(next_crash_count(2, None), 3);
        assert!(restarts_immediately(2));
        assert!(!restarts_immediately(3));
    }

    #[test]
    fn restart_waits_for_the_backoff() {
        assert!(!should_restart(3, 0, 29 * S));
        assert!(should_restart(3, 0, 30 * S));
        assert!(!should_restart(200, 0, i64::MAX / 2));
    }
}
