//! The chaos suite's timings: the presets its scenarios and its benchmark run with, and the L1
//! limits its verdicts hold a failover to. The timings themselves are the shared lab's
//! ([`failover::sim::lab::Timings`]), written into every member's config by it.
//!
//! It only computes durations; it never starts, waits or judges.

use std::time::Duration;

use failover::sim::lab::Timings;
use failover::sim::lab::wan::Wan;

/// What a WAN adds to an L1 limit: a takeover waits for about four store round trips more than
/// on loopback (the acquire forwarded to the raft leader and committed by a quorum, then the
/// first signature's reservation or the guard's watermark read the same way), each up to its
/// jitter longer. Nothing without a WAN.
pub fn wan_allowance(wan: Option<&Wan>) -> Duration {
    wan.map_or(Duration::ZERO, |w| (w.rtt + w.jitter) * 4)
}

/// The scenarios' timings across a WAN: raft at its default tick (100 ms) rather than the lab's
/// fast 50 ms, as an operator's cluster across regions runs. A signer-mode holder keeps its
/// permission for three election timeouts and a renew (3.15 s at 100 ms ticks and the default
/// renew interval):
/// an election that takes its longest timeout (20 ticks) plus a pre-vote, a vote and a commit
/// round at 100 ms RTT must fit inside it.
pub fn across(timings: Timings, wan: Option<&Wan>) -> Timings {
    match wan {
        Some(_) => Timings { tick: Timings::design().tick, ..timings },
        None => timings,
    }
}

/// The chaos suite's presets and limits over the shared lab's [`Timings`].
pub trait ChaosTimings {
    /// Fast timings for the scenarios: a run takes seconds, not minutes.
    fn chaos() -> Timings;
    /// docs/design.md §9's defaults, for the failover benchmark (500 ms blocks, as in the demo).
    fn design() -> Timings;
    /// Signer mode's benchmark: signer mode's defaults (docs/design.md §7: lease_ttl 400 ms,
    /// renew 150 ms, safety_margin 100 ms, call_timeout 250 ms, priority_delay 300 ms, raft ticks
    /// of 100 ms) and 100 ms blocks, so that the first signed height after a takeover measures
    /// the takeover, not the block interval.
    fn signer_bench() -> Timings;
    /// The scenarios' timings in signer mode: [`ChaosTimings::chaos`] with signer mode's lease
    /// timings, so that the store faults are judged (L2) at the short lease signer mode runs with.
    fn signer_chaos() -> Timings;
    /// The per-run L1 limit for a fault that ends the active member's ability to renew (its
    /// daemon killed, stopped or cut off): the lease runs out on the raft leader TTL + margin
    /// after the last renew, an election may come first, then the guard, the floor margin and the
    /// next block; one second of slack for a loaded 2-core machine.
    fn l1_lease_limit(&self) -> Duration;
    /// The per-run L1 limit for a fault of the active's node: detection (unhealthy_after probes,
    /// each up to its timeout) plus a release and a takeover, or the lease limit if the release
    /// does not get through.
    fn l1_node_limit(&self) -> Duration;
}

impl ChaosTimings for Timings {
    fn chaos() -> Timings {
        Timings {
            block: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(3),
            renew_interval: Duration::from_millis(500),
            safety_margin: Duration::from_millis(300),
            call_timeout: Duration::from_millis(800),
            tick: Duration::from_millis(50),
            election_ticks: 10,
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_millis(200),
            unhealthy_after: 3,
            max_lag: 5,
            stall_after: Duration::from_secs(1),
            cooldown: Duration::from_secs(3),
            priority_delay: Duration::from_millis(300),
            max_lag_on_failover: 3,
            fence_timeout: Duration::from_millis(500),
            floor_margin: 1,
        }
    }

    fn design() -> Timings {
        Timings {
            block: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(3),
            renew_interval: Duration::from_secs(1),
            safety_margin: Duration::from_millis(500),
            call_timeout: Duration::from_secs(1),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(800),
            unhealthy_after: 3,
            max_lag: 5,
            stall_after: Duration::from_secs(3),
            cooldown: Duration::from_secs(30),
            priority_delay: Duration::from_secs(2),
            max_lag_on_failover: 3,
            fence_timeout: Duration::from_secs(1),
            floor_margin: 1,
        }
    }

    fn signer_bench() -> Timings {
        let d = failover::config::TimingDefaults::SIGNER;
        Timings {
            block: Duration::from_millis(100),
            lease_ttl: d.lease_ttl,
            renew_interval: d.renew_interval,
            safety_margin: d.safety_margin,
            call_timeout: d.call_timeout,
            priority_delay: d.priority_delay,
            ..Timings::design()
        }
    }

    fn signer_chaos() -> Timings {
        let d = failover::config::TimingDefaults::SIGNER;
        Timings {
            lease_ttl: d.lease_ttl,
            renew_interval: d.renew_interval,
            safety_margin: d.safety_margin,
            call_timeout: d.call_timeout,
            priority_delay: d.priority_delay,
            ..Timings::chaos()
        }
    }

    fn l1_lease_limit(&self) -> Duration {
        self.lease_ttl
            + self.safety_margin
            + self.election()
            + self.block * (self.floor_margin as u32 + 2)
            + Duration::from_secs(1)
    }

    fn l1_node_limit(&self) -> Duration {
        (self.probe_interval + self.probe_timeout) * self.unhealthy_after + self.stall_after + self.l1_lease_limit()
    }
}
