//! Operator intents: a planned switchover (`Promote`, `Demote`) and maintenance mode (`Pause`,
//! `Resume`).
//! Each is checked against the cluster's published status and then recorded in the store,
//! where every member's loop acts on it; nothing here touches a producer.

use tokio::time::Instant;
use tonic::Status;

use super::{ControlService, refuse};
use crate::coord::StatusReport;
use crate::domain::{LeaseView, MemberId, MemberKind};
use crate::proto::v1::{PauseReply, PromoteReply, PromoteRequest};
use crate::role::{self, PeerProblem, TakeoverLimits};

impl ControlService {
    /// A planned switchover (the active hands over: 0 missed heights), or with `force` the
    /// choice of the next holder when the active is unreachable. Force changes only two things:
    /// it accepts a free lease (naming the next holder, also in maintenance mode) and an active
    /// that has stopped publishing its status. It never shortens or breaks a held lease — the
    /// target acquires only once the holder released or the store expired it — and never skips
    /// a guard step or the target checks below.
    pub(super) async fn promote_to(&self, req: PromoteRequest) -> Result<PromoteReply, Status> {
        let target = MemberId::new(req.target.clone()).map_err(|e| Status::invalid_argument(format!("target: {e}")))?;
        let deadline = Instant::now() + self.call_timeout;
        let cluster = self.coord.cluster_status(deadline).await.map_err(refuse)?;
        self.fit_to_take_over(&target, &cluster).map_err(Status::failed_precondition)?;
        let lease = self.coord.lease(deadline).await.map_err(refuse)?;
        if !req.force {
            match &lease {
                LeaseView::Free { .. } => {
                    return Err(Status::failed_precondition(
                        "the lease is free, so no active can hand over; use --force to name the next holder",
                    ));
                }
                LeaseView::Held { holder, .. } => {
                    let fresh = cluster.iter().any(|r| &r.status.member == holder && r.age <= self.status_stale_after);
                    if !fresh {
                        return Err(Status::failed_precondition(format!(
                            "the active {holder} has not published its status lately, so a planned handover cannot be confirmed; use --force to hand over once its lease expires (heights will be missed)"
                        )));
                    }
                }
            }
        }
        let transfer = if req.force {
            self.coord.request_forced_transfer(&target, deadline).await
        } else {
            self.coord.request_transfer(&target, deadline).await
        }
        .map_err(refuse)?;
        let message = match (&lease, req.force) {
            (_, false) => format!("handing over from epoch {} to {}", transfer.epoch, transfer.to),
            (LeaseView::Free { .. }, true) => {
                format!("forced: the lease is free; {} takes it next and runs every guard step", transfer.to)
            }
            (LeaseView::Held { holder, .. }, true) => format!(
                "forced: {} takes over when {holder} hands over or its lease (epoch {}) expires; every guard step still runs",
                transfer.to, transfer.epoch
            ),
        };
        Ok(PromoteReply { target: transfer.to.to_string(), epoch: transfer.epoch.get(), message })
    }

    /// The active hands over to the best standby that could take over now (highest priority,
    /// then least lag); refused when there is none, since stepping down would stop production.
    /// Only the active serves it: run against a standby or a witness — typically before
    /// stopping that member — it would otherwise move the lease *to* the member about to stop.
    pub(super) async fn demote_active(&self) -> Result<PromoteReply, Status> {
        let deadline = Instant::now() + self.call_timeout;
        let lease = self.coord.lease(deadline).await.map_err(refuse)?;
        self.check_self_active(&lease).map_err(Status::failed_precondition)?;
        let cluster = self.coord.cluster_status(deadline).await.map_err(refuse)?;
        let best = self.members.iter().filter(|m| self.fit_to_take_over(&m.id, &cluster).is_ok()).max_by_key(|m| {
            let height = cluster.iter().find(|r| r.status.member == m.id).and_then(|r| r.status.height);
            (m.priority, height)
        });
        let Some(to) = best else {
            let reasons: Vec<String> =
                self.members.iter().filter_map(|m| self.fit_to_take_over(&m.id, &cluster).err()).collect();
            return Err(Status::failed_precondition(format!(
                "no standby can take over, so the active keeps producing: {}",
                reasons.join("; ")
            )));
        };
        let transfer = self.coord.request_transfer(&to.id, deadline).await.map_err(refuse)?;
        Ok(PromoteReply {
            target: transfer.to.to_string(),
            epoch: transfer.epoch.get(),
            message: format!("handing over from epoch {} to {}", transfer.epoch, transfer.to),
        })
    }

    /// Why this member may not demote: by the store's lease, it is not the active.
    fn check_self_active(&self, lease: &LeaseView) -> Result<(), String> {
        match lease {
            LeaseView::Held { holder, .. } if holder == &self.me => Ok(()),
            LeaseView::Held { holder, epoch } => Err(format!(
                "{me} is not the active, {holder} is (epoch {epoch}): demote hands over from the active, so run it \
                 against {holder}; nothing was changed",
                me = self.me
            )),
            LeaseView::Free { epoch } => Err(format!(
                "{me} is not the active: no member holds the lease (last epoch {epoch}), so there is nothing to \
                 hand over; nothing was changed",
                me = self.me
            )),
        }
    }

    /// Why `target` could not take over now, by the cluster's published status: it must be a
    /// producer, and `role::fit_to_take_over` (a fresh and healthy standby within
    /// max_lag_on_failover of the best height), in words for the operator.
    fn fit_to_take_over(&self, target: &MemberId, cluster: &[StatusReport]) -> Result<(), String> {
        match self.members.iter().find(|m| &m.id == target).map(|m| m.kind) {
            None => return Err(format!("{target} is not a member of this cluster")),
            Some(MemberKind::Witness) => return Err(format!("{target} is a witness and never produces")),
            Some(MemberKind::Producer) => {}
        }
        let Some(report) = cluster.iter().find(|r| &r.status.member == target) else {
            return Err(format!("{target} has published no status; is it running?"));
        };
        let limits = TakeoverLimits {
            status_stale_after: self.status_stale_after,
            max_lag_on_failover: self.max_lag_on_failover,
        };
        let best = role::best_height(cluster, limits.status_stale_after, []);
        role::fit_to_take_over(report, best, &limits).map_err(|problem| match problem {
            PeerProblem::Silent { .. } => {
                format!("{target} was last heard {:.1} s ago; is it running?", report.age.as_secs_f64())
            }
            PeerProblem::NotStandby { .. } | PeerProblem::Unhealthy => format!(
                "{target} is {} and {}; only a healthy standby can take over",
                report.status.role,
                if report.status.healthy { "healthy" } else { "unhealthy" }
            ),
            PeerProblem::Behind { lag, max } => format!("{target} is {lag} blocks behind (max_lag_on_failover {max})"),
            PeerProblem::NoHeight => format!(
                "{target} has not published a height, or no member has (max_lag_on_failover {}); wait for its node to be probed",
                limits.max_lag_on_failover
            ),
        })
    }

    pub(super) async fn set_paused(&self, paused: bool) -> Result<PauseReply, Status> {
        let deadline = Instant::now() + self.call_timeout;
        self.coord.set_paused(paused, deadline).await.map_err(refuse)?;
        Ok(PauseReply { paused })
    }
}
