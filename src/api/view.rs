//! Read-only views: this member's own (`Status`) and the cluster as it sees it (`Members`).
//! A store that does not answer in time leaves its part empty and says why; the call itself
//! always answers, so an operator sees as much as can be seen. A member whose status is older
//! than `status_stale_after` is marked stale: its row keeps the last words it published, and
//! the client must not present them as its present state.

use tokio::time::Instant;

use super::ControlService;
use crate::domain::LeaseView;
use crate::proto::v1::{LeaseState, MemberRow, MembersReply, RaftState, StatusReply};

impl ControlService {
    pub(super) async fn own_view(&self) -> StatusReply {
        let own = self.own_status.borrow().clone();
        let deadline = Instant::now() + self.call_timeout;
        let (lease, watermark, intents) = tokio::join!(
            self.coord.lease(deadline),
            self.coord.watermark(&self.key, deadline),
            self.coord.intents(deadline)
        );
        let mut store_errors = Vec::new();
        let lease = match (lease, intents) {
            (Ok(lease), Ok(intents)) => {
                let (holder, epoch) = match lease {
                    LeaseView::Free { epoch } => (String::new(), epoch.get()),
                    LeaseView::Held { holder, epoch } => (holder.to_string(), epoch.get()),
                };
                Some(LeaseState {
                    holder,
                    epoch,
                    paused: intents.paused,
                    transfer_to: intents.transfer.map(|t| t.to.to_string()).unwrap_or_default(),
                })
            }
            (Err(e), _) | (_, Err(e)) => {
                store_errors.push(format!("lease: {e}"));
                None
            }
        };
        let watermark = match watermark {
            Ok(w) => w.map(Into::into),
            Err(e) => {
                store_errors.push(format!("watermark: {e}"));
                None
            }
        };
        let backend = self.coord.status();
        let raft = backend.raft.map(|raft| RaftState {
            leader: raft.leader.map(|m| m.to_string()).unwrap_or_default(),
            term: raft.term,
            commit: raft.commit,
            applied: raft.applied,
            failed: backend.failed.unwrap_or_default(),
        });
        StatusReply {
            member: self.me.to_string(),
            kind: self.kind.to_string(),
            role: own.as_ref().map(|s| s.role.to_string()).unwrap_or_default(),
            height: own.as_ref().and_then(|s| s.height),
            healthy: own.as_ref().is_some_and(|s| s.healthy),
            lease,
            key: self.key.to_string(),
            watermark,
            store_error: store_errors.join("; "),
            raft,
            last_reason: self.last_reason.borrow().clone(),
            why: self
                .why
                .borrow()
                .as_ref()
                .map_or_else(|| "starting: no decision yet".to_string(), ToString::to_string),
        }
    }

    pub(super) async fn cluster_view(&self) -> MembersReply {
        let deadline = Instant::now() + self.call_timeout;
        let (reports, store_error) = match self.coord.cluster_status(deadline).await {
            Ok(r) => (r, String::new()),
            Err(e) => (Vec::new(), e.to_string()),
        };
        let best = crate::role::best_height(&reports, self.status_stale_after, []);
        let members = self
            .members
            .iter()
            .map(|m| {
                let report = reports.iter().find(|r| r.status.member == m.id);
                let height = report.and_then(|r| r.status.height);
                MemberRow {
                    id: m.id.to_string(),
                    kind: m.kind.to_string(),
                    priority: m.priority,
                    region: m.region.clone(),
                    peer_address: m.peer_address.to_string(),
                    role: report.map(|r| r.status.role.to_string()).unwrap_or_default(),
                    height,
                    healthy: report.is_some_and(|r| r.status.healthy),
                    status_age_ms: report.map(|r| u64::try_from(r.age.as_millis()).unwrap_or(u64::MAX)),
                    lag: best.zip(height).map(|(b, h)| b.saturating_sub(h)),
                    stale: report.is_none_or(|r| r.age > self.status_stale_after),
                }
            })
            .collect();
        let status_stale_after_ms = u64::try_from(self.status_stale_after.as_millis()).unwrap_or(u64::MAX);
        MembersReply { members, store_error, status_stale_after_ms }
    }
}
