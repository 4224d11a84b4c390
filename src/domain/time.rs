//! Monotonic time as a plain value. The only clock read in the domain is [`MonoTime::now`];
//! pure code receives time as input instead.
//!
//! The clock is `CLOCK_BOOTTIME`: monotonic like `CLOCK_MONOTONIC`, but it keeps counting while
//! the host is suspended. A lease's validity is spent by the rest of the cluster during a
//! suspension, so the holder's deadlines must count it too: after a resume, a holder on
//! `CLOCK_MONOTONIC` would believe it still had time the others had already used up.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A reading of the machine's boot-time clock (`CLOCK_BOOTTIME`), in nanoseconds.
///
/// failoverd never relies on wall-clock time for safety (docs/design.md §3): every deadline, TTL and
/// cooldown is computed in `MonoTime`. Readings are comparable between processes on the same
/// machine (the simulated chain and its ledger use that), never between machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MonoTime(u64);

impl MonoTime {
    pub const ZERO: MonoTime = MonoTime(0);

    /// Reads `CLOCK_BOOTTIME`. Pure code (`role`, `health`) never calls this; it receives
    /// the time in its input.
    pub fn now() -> MonoTime {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .expect("CLOCK_BOOTTIME is always available on Linux (since 2.6.39)");
        let nanos = (ts.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec() as u64);
        MonoTime(nanos)
    }

    pub const fn from_nanos(nanos: u64) -> MonoTime {
        MonoTime(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(duration_nanos(d)))
    }

    pub fn saturating_sub(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_sub(duration_nanos(d)))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Display for MonoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}s", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = MonoTime::from_nanos(u64::MAX - 1);
        assert_eq!(t.saturating_add(Duration::from_secs(1)).as_nanos(), u64::MAX);
        assert_eq!(MonoTime::ZERO.saturating_sub(Duration::from_secs(1)), MonoTime::ZERO);
        assert_eq!(MonoTime::ZERO.saturating_since(t), Duration::ZERO);
    }

    #[test]
    fn now_never_goes_backwards() {
        let a = MonoTime::now();
        let b = MonoTime::now();
        assert!(b >= a);
    }
}
