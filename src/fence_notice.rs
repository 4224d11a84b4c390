//! How a fence that happened outside the decision loop reaches it: the keeper process, the
//! deadline thread or the node's own exit stopped production, and the loop must learn it at once
//! so that the member stops renewing, releases, and the cluster fails over. Never "lease held,
//! producer fenced".
//!
//! Sending is synchronous and never blocks, so the deadline thread can report while the async
//! runtime is stalled. This module only carries notices; what they mean is decided in `role`.

use std::fmt;

use tokio::sync::mpsc;

/// Who stopped production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FencedBy {
    /// The keeper process killed the node (deadline passed, the daemon's pipe closed, or the
    /// node exited by itself and the keeper cleaned up after it).
    Keeper,
    /// The keeper itself died; the daemon killed the node's process group directly.
    KeeperLost,
    /// The in-daemon deadline thread fenced the producer at the lease deadline.
    DeadlineThread,
}

impl fmt::Display for FencedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FencedBy::Keeper => "the keeper",
            FencedBy::KeeperLost => "the daemon itself (its keeper died)",
            FencedBy::DeadlineThread => "the deadline thread",
        })
    }
}

/// One fence, with a sentence saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceNotice {
    pub by: FencedBy,
    pub detail: String,
}

impl fmt::Display for FenceNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} stopped the producer: {}", self.by, self.detail)
    }
}

/// The sending side, cloned into every producer and the deadline thread.
#[derive(Clone)]
pub struct FenceNotices(mpsc::UnboundedSender<FenceNotice>);

impl FenceNotices {
    pub fn channel() -> (FenceNotices, mpsc::UnboundedReceiver<FenceNotice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (FenceNotices(tx), rx)
    }

    /// Notices that nobody reads: for producers used outside a member (tools, tests).
    pub fn unread() -> FenceNotices {
        FenceNotices::channel().0
    }

    /// Reports a fence; never blocks, and a loop that has ended is not an error.
    pub fn send(&self, by: FencedBy, detail: impl Into<String>) {
        let notice = FenceNotice { by, detail: detail.into() };
        tracing::error!(fenced_by = %notice.by, reason = %notice.detail, "production was stopped outside the decision loop");
        let _ = self.0.send(notice);
    }
}
