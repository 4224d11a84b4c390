//! Turning probe results into a verdict on the local node (docs/design.md §7): healthy, unhealthy
//! after `unhealthy_after` consecutive bad probes, or unknown when there is no fresh probe.
//!
//! Pure, like `role`: [`ProbeHistory::record`] and [`ProbeHistory::assess`] take the monotonic
//! time as input and do no I/O. A probe is bad when it failed, the node is catching up, its lag
//! exceeds `max_lag`, its height has not moved for `stall_after`, or our validator is missing
//! from recent commits. "Could not probe" is never "healthy".

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::chain::ChainSample;
use crate::config::Config;
use crate::domain::MonoTime;

/// The thresholds of docs/design.md §7, from `[chain]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    pub unhealthy_after: u32,
    pub max_lag: u64,
    pub stall_after: Duration,
    /// A verdict older than this is unknown: the probe loop itself may be stuck.
    pub stale_after: Duration,
    /// Commits searched for our signature (CometBFT): a "not signing" reading counts only once
    /// this many blocks passed since the member became active.
    pub signing_window: u64,
}

impl HealthPolicy {
    pub fn from_config(config: &Config) -> HealthPolicy {
        let chain = config.chain_or_default();
        HealthPolicy {
            unhealthy_after: chain.unhealthy_after,
            max_lag: chain.max_lag,
            stall_after: chain.stall_after,
            stale_after: chain.stale_after(),
            signing_window: u64::from(chain.signing_window),
        }
    }
}

/// Keeps a sample's "signing" reading only where it means something: on the active member, once
/// a whole signing window of blocks has passed since it became active (the commits before that
/// were signed, or not, by the previous active). `active_from` remembers the height at which
/// this member was first seen active, and is cleared when it is not.
pub fn gate_signing(mut sample: ChainSample, active: bool, active_from: &mut Option<u64>, window: u64) -> ChainSample {
    if !active {
        *active_from = None;
        sample.signing = None;
        return sample;
    }
    let from = *active_from.get_or_insert(sample.height);
    if sample.height <= from.saturating_add(window) {
        sample.signing = None;
    }
    sample
}

/// Why one probe counted as bad.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum BadProbe {
    Failed { error: String },
    CatchingUp,
    Lagging { lag: u64 },
    Stalled { for_ms: u64 },
    NotSigning,
}

impl fmt::Display for BadProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadProbe::Failed { error } => write!(f, "probe failed: {error}"),
            BadProbe::CatchingUp => f.write_str("node is catching up"),
            BadProbe::Lagging { lag } => write!(f, "node is {lag} blocks behind the best height"),
            BadProbe::Stalled { for_ms } => {
                write!(f, "height has not moved for {}", crate::role::Span(std::time::Duration::from_millis(*for_ms)))
            }
            BadProbe::NotSigning => f.write_str("our validator is missing from recent commits"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No probe yet, or none recent enough to trust.
    Unknown,
    Healthy,
    Unhealthy,
}

/// The assessed state of the local node, as the role logic consumes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeHealth {
    pub verdict: Verdict,
    /// Height at the last successful probe.
    pub height: Option<u64>,
    /// Blocks behind the best known height at the last successful probe.
    pub lag: Option<u64>,
    /// Whether the most recent probe was good: a candidate must be healthy *now*.
    pub latest_good: bool,
    pub consecutive_bad: u32,
    pub last_bad: Option<BadProbe>,
}

impl NodeHealth {
    /// No probe has run yet.
    pub const UNKNOWN: NodeHealth = NodeHealth {
        verdict: Verdict::Unknown,
        height: None,
        lag: None,
        latest_good: false,
        consecutive_bad: 0,
        last_bad: None,
    };
}

/// What the daemon remembers of recent probes of the local node. Plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeHistory {
    last_at: Option<MonoTime>,
    last_good: bool,
    consecutive_bad: u32,
    last_bad: Option<BadProbe>,
    height: Option<u64>,
    lag: Option<u64>,
    /// The highest height seen and when it was first seen: stall detection.
    moved: Option<(u64, MonoTime)>,
}

impl ProbeHistory {
    /// Records one probe result taken at `at`, judged against `best_height` (the highest
    /// height any fresh source reports, this node included).
    pub fn record(
        &mut self,
        at: MonoTime,
        result: Result<&ChainSample, &str>,
        best_height: Option<u64>,
        policy: &HealthPolicy,
    ) {
        self.last_at = Some(at);
        let bad = match result {
            Err(error) => Some(BadProbe::Failed { error: error.to_string() }),
            Ok(sample) => {
                let height = sample.height;
                match self.moved {
                    Some((h, _)) if height <= h => {}
                    _ => self.moved = Some((height, at)),
                }
                let lag = best_height.map_or(0, |best| best.saturating_sub(height));
                self.height = Some(height);
                self.lag = Some(lag);
                let stalled_for = self.moved.map_or(Duration::ZERO, |(_, since)| at.saturating_since(since));
                if sample.catching_up {
                    Some(BadProbe::CatchingUp)
                } else if lag > policy.max_lag {
                    Some(BadProbe::Lagging { lag })
                } else if stalled_for >= policy.stall_after {
                    Some(BadProbe::Stalled { for_ms: u64::try_from(stalled_for.as_millis()).unwrap_or(u64::MAX) })
                } else if sample.signing == Some(false) {
                    Some(BadProbe::NotSigning)
                } else {
                    None
                }
            }
        };
        match bad {
            None => {
                self.last_good = true;
                self.consecutive_bad = 0;
            }
            Some(reason) => {
                self.last_good = false;
                self.consecutive_bad = self.consecutive_bad.saturating_add(1);
                self.last_bad = Some(reason);
            }
        }
    }

    /// The verdict at `now`.
    pub fn assess(&self, now: MonoTime, policy: &HealthPolicy) -> NodeHealth {
        let fresh = self.last_at.is_some_and(|at| now.saturating_since(at) <= policy.stale_after);
        let verdict = if !fresh {
            Verdict::Unknown
        } else if self.consecutive_bad >= policy.unhealthy_after {
            Verdict::Unhealthy
        } else {
            Verdict::Healthy
        };
        NodeHealth {
            verdict,
            height: self.height,
            lag: self.lag,
            latest_good: fresh && self.last_good,
            consecutive_bad: self.consecutive_bad,
            last_bad: self.last_bad.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            unhealthy_after: 3,
            max_lag: 5,
            stall_after: Duration::from_secs(10),
            stale_after: Duration::from_secs(4),
            signing_window: 10,
        }
    }

    fn sample(height: u64) -> ChainSample {
        ChainSample { peers: Some(3), ..ChainSample::at(height) }
    }

    fn t(secs: u64) -> MonoTime {
        MonoTime::from_nanos(secs * 1_000_000_000)
    }

    #[test]
    fn not_signing_counts_only_on_the_active_after_a_whole_window() {
        let not_signing = |h| ChainSample { signing: Some(false), ..sample(h) };
        let mut from = None;
        assert_eq!(gate_signing(not_signing(100), false, &mut from, 10).signing, None, "a standby never signs");
        assert_eq!(from, None);
        assert_eq!(gate_signing(not_signing(100), true, &mut from, 10).signing, None, "just promoted");
        assert_eq!(from, Some(100));
        assert_eq!(
            gate_signing(not_signing(110), true, &mut from, 10).signing,
            None,
            "the window still holds old commits"
        );
        assert_eq!(gate_signing(not_signing(111), true, &mut from, 10).signing, Some(false));
        gate_signing(sample(112), false, &mut from, 10);
        assert_eq!(from, None, "stepping down forgets the activation height");
    }

    #[test]
    fn no_probe_is_unknown_not_healthy() {
        let h = ProbeHistory::default().assess(t(100), &policy());
        assert_eq!(h.verdict, Verdict::Unknown);
        assert!(!h.latest_good);
    }

    #[test]
    fn unhealthy_only_after_consecutive_bad_probes() {
        let p = policy();
        let mut hist = ProbeHistory::default();
        hist.record(t(1), Ok(&sample(10)), Some(10), &p);
        hist.record(t(2), Err("connection refused"), Some(10), &p);
        hist.record(t(3), Err("connection refused"), Some(10), &p);
        let h = hist.assess(t(3), &p);
        assert_eq!(h.verdict, Verdict::Healthy);
        assert!(!h.latest_good);
        hist.record(t(4), Err("connection refused"), Some(10), &p);
        assert_eq!(hist.assess(t(4), &p).verdict, Verdict::Unhealthy);
    }

    #[test]
    fn a_good_probe_resets_the_count() {
        let p = policy();
        let mut hist = ProbeHistory::default();
        for s in 1..=2 {
            hist.record(t(s), Err("timeout"), None, &p);
        }
        hist.record(t(3), Ok(&sample(11)), Some(11), &p);
        hist.record(t(4), Err("timeout"), None, &p);
        assert_eq!(hist.assess(t(4), &p).consecutive_bad, 1);
    }

    #[test]
    fn each_kind_of_bad_probe_is_named() {
        let p = policy();
        let cases: Vec<(ChainSample, Option<u64>, BadProbe)> = vec![
            (ChainSample { catching_up: true, ..sample(10) }, Some(10), BadProbe::CatchingUp),
            (sample(10), Some(16), BadProbe::Lagging { lag: 6 }),
            (ChainSample { signing: Some(false), ..sample(10) }, Some(10), BadProbe::NotSigning),
        ];
        for (s, best, want) in cases {
            let mut hist = ProbeHistory::default();
            hist.record(t(1), Ok(&s), best, &p);
            assert_eq!(hist.assess(t(1), &p).last_bad, Some(want));
        }
    }

    #[test]
    fn lag_at_the_limit_is_fine_one_more_is_bad() {
        let p = policy();
        let mut hist = ProbeHistory::default();
        hist.record(t(1), Ok(&sample(10)), Some(15), &p);
        assert!(hist.assess(t(1), &p).latest_good);
        hist.record(t(2), Ok(&sample(10)), Some(16), &p);
        assert!(!hist.assess(t(2), &p).latest_good);
    }

    #[test]
    fn a_height_that_stops_moving_is_a_stall() {
        let p = policy();
        let mut hist = ProbeHistory::default();
        for s in 0..=10 {
            hist.record(t(s), Ok(&sample(50)), Some(50), &p);
        }
        assert_eq!(hist.assess(t(10), &p).last_bad, Some(BadProbe::Stalled { for_ms: 10_000 }));
        hist.record(t(11), Ok(&sample(51)), Some(51), &p);
        assert!(hist.assess(t(11), &p).latest_good);
    }

    #[test]
    fn an_old_verdict_becomes_unknown() {
        let p = policy();
        let mut hist = ProbeHistory::default();
        hist.record(t(1), Ok(&sample(10)), Some(10), &p);
        assert_eq!(hist.assess(t(5), &p).verdict, Verdict::Healthy);
        let late = hist.assess(t(6), &p);
        assert_eq!(late.verdict, Verdict::Unknown);
        assert!(!late.latest_good);
    }
}
