//! The simulated chain's height as a function of monotonic time.

use std::time::Duration;

use crate::domain::MonoTime;

/// A chain that makes one block every `block_interval`. Its height at monotonic time `t` is
/// `t / block_interval`: every process on the machine computes the same height at the same
/// instant, because `CLOCK_BOOTTIME` (`MonoTime`) is shared by all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimChain {
    pub block_interval: Duration,
}

impl SimChain {
    pub fn new(block_interval: Duration) -> SimChain {
        SimChain { block_interval: block_interval.max(Duration::from_millis(1)) }
    }

    pub fn height_at(&self, t: MonoTime) -> u64 {
        let interval = u64::try_from(self.block_interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        t.as_nanos() / interval
    }

    /// When block `height` is made.
    pub fn time_of(&self, height: u64) -> MonoTime {
        let interval = u64::try_from(self.block_interval.as_nanos()).unwrap_or(u64::MAX);
        MonoTime::from_nanos(height.saturating_mul(interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn height_advances_once_per_interval() {
        let c = SimChain::new(Duration::from_millis(100));
        assert_eq!(c.height_at(MonoTime::from_nanos(0)), 0);
        assert_eq!(c.height_at(MonoTime::from_nanos(99_999_999)), 0);
        assert_eq!(c.height_at(MonoTime::from_nanos(100_000_000)), 1);
        assert_eq!(c.height_at(c.time_of(1234)), 1234);
    }
}
