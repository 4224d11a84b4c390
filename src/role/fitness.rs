//! Who could take over now, by the cluster's published statuses: the best known height and
//! whether a member is fit to take the lease.
//!
//! The loop's decisions, the guard's floor, the control API's `promote`/`demote` checks and the
//! members view all ask here, so the rule is written once. Plain data in, plain data out: no
//! I/O and no clock (ages arrive in the statuses).

use std::time::Duration;

use super::PeerProblem;
use super::why::millis;
use crate::coord::StatusReport;
use crate::domain::RoleName;

/// The two limits that make a standby fit to take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakeoverLimits {
    /// A status older than this proves nothing about its member now.
    pub status_stale_after: Duration,
    /// How far behind the best height a standby may be and still take over.
    pub max_lag_on_failover: u64,
}

/// The best height among the fresh statuses in `cluster` and the heights in `also` (this
/// member's own node, reference RPCs already filtered for freshness): `None` when nobody knows.
pub fn best_height<'a>(
    cluster: impl IntoIterator<Item = &'a StatusReport>,
    status_stale_after: Duration,
    also: impl IntoIterator<Item = Option<u64>>,
) -> Option<u64> {
    cluster.into_iter().filter(|r| r.age <= status_stale_after).map(|r| r.status.height).chain(also).flatten().max()
}

/// Whether the member that published `report` could take over now: heard lately, a standby,
/// healthy, and within `max_lag_on_failover` of `best`. It says nothing about the member's
/// kind (a witness publishes no producer status) — callers that take a name check that first.
pub fn fit_to_take_over(report: &StatusReport, best: Option<u64>, limits: &TakeoverLimits) -> Result<(), PeerProblem> {
    if report.age > limits.status_stale_after {
        return Err(PeerProblem::Silent { last_heard_ms: millis(report.age) });
    }
    if report.status.role != RoleName::Standby {
        return Err(PeerProblem::NotStandby { role: report.status.role });
    }
    if !report.status.healthy {
        return Err(PeerProblem::Unhealthy);
    }
    match (best, report.status.height) {
        (Some(best), Some(h)) if best.saturating_sub(h) <= limits.max_lag_on_failover => Ok(()),
        (Some(best), Some(h)) => Err(PeerProblem::Behind { lag: best - h, max: limits.max_lag_on_failover }),
        _ => Err(PeerProblem::NoHeight),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MemberId, MemberKind, MemberStatus};

    fn report(member: &str, role: RoleName, healthy: bool, height: Option<u64>, age_ms: u64) -> StatusReport {
        StatusReport {
            status: MemberStatus {
                member: MemberId::new(member).expect("valid id"),
                kind: MemberKind::Producer,
                role,
                priority: 100,
                height,
                healthy,
                epoch: None,
            },
            age: Duration::from_millis(age_ms),
        }
    }

    const LIMITS: TakeoverLimits =
        TakeoverLimits { status_stale_after: Duration::from_secs(3), max_lag_on_failover: 2 };

    #[test]
    fn the_best_height_ignores_stale_statuses_and_unknown_heights() {
        let cluster = [
            report("a", RoleName::Active, true, Some(50), 3_001),
            report("b", RoleName::Standby, true, Some(40), 100),
            report("c", RoleName::Standby, true, None, 100),
        ];
        assert_eq!(best_height(&cluster, LIMITS.status_stale_after, []), Some(40));
        assert_eq!(best_height(&cluster, LIMITS.status_stale_after, [None, Some(45)]), Some(45));
        assert_eq!(best_height(&cluster[..1], LIMITS.status_stale_after, [None]), None);
    }

    /// One row per way a standby can be unfit, in the order they are checked, and the fit one.
    #[test]
    fn a_member_is_fit_only_when_heard_standby_healthy_and_caught_up() {
        let cases = [
            (report("b", RoleName::Standby, true, Some(10), 3_500), Err(PeerProblem::Silent { last_heard_ms: 3_500 })),
            (
                report("b", RoleName::Active, true, Some(10), 10),
                Err(PeerProblem::NotStandby { role: RoleName::Active }),
            ),
            (report("b", RoleName::Standby, false, Some(10), 10), Err(PeerProblem::Unhealthy)),
            (report("b", RoleName::Standby, true, Some(7), 10), Err(PeerProblem::Behind { lag: 3, max: 2 })),
            (report("b", RoleName::Standby, true, None, 10), Err(PeerProblem::NoHeight)),
            (report("b", RoleName::Standby, true, Some(8), 10), Ok(())),
            (report("b", RoleName::Standby, true, Some(12), 10), Ok(())),
        ];
        for (r, want) in cases {
            assert_eq!(fit_to_take_over(&r, Some(10), &LIMITS), want, "{r:?}");
        }
        let r = report("b", RoleName::Standby, true, Some(10), 10);
        assert_eq!(fit_to_take_over(&r, None, &LIMITS), Err(PeerProblem::NoHeight), "no best height known");
    }
}
