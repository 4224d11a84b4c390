//! Why `decide` did what it did — or nothing — in every turn: a typed [`Why`], built on the
//! same branches of `decide` that choose the actions, so an explanation cannot drift from the
//! decision. Also the cause of a takeover ([`Takeover`]) and the one sentence written for every
//! role change ([`describe_change`]).
//!
//! Plain data and rendering only: nothing here decides, reads a clock or does I/O. Durations are
//! carried as milliseconds measured at the observation's `now`, because monotonic instants mean
//! nothing to a person; [`Why::situation`] drops them, so the daemon logs a line when the
//! situation changes, not when a countdown ticks.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{FenceReason, Reason, RoleState, StepDown};
use crate::domain::{Epoch, MemberId, RoleName};

/// A duration as people read it: `250 ms`, `1.2 s`, `2 min 5 s`.
pub struct Span(pub Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1_000 {
            write!(f, "{ms} ms")
        } else if ms < 120_000 {
            write!(f, "{:.1} s", self.0.as_secs_f64())
        } else {
            write!(f, "{} min {} s", ms / 60_000, (ms % 60_000) / 1_000)
        }
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn span(ms: u64) -> Span {
    Span(Duration::from_millis(ms))
}

/// The situation this member is in after a decision, and what it waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "situation", rename_all = "snake_case")]
pub enum Why {
    /// A witness votes in the quorum and never produces.
    Witness,
    /// The store could not be read this turn, or this member has not caught up with it (no raft
    /// leader known yet): the lease is unknown, and unknown is never free.
    StoreUnknown,
    /// This member's own node is not fit to take over.
    NotEligible { cause: NotFit },
    /// Maintenance mode: nobody takes the lease on its own; only a transfer moves it.
    Paused,
    /// Another member holds the lease; `next` says who would take over if it stopped.
    LeaseHeld { holder: MemberId, epoch: Epoch, holder_heard: Heard, next: Successor },
    /// The store says this member holds a lease it is not using — the one it just stopped
    /// using (`just_used`), or one this process never acquired: it is given back.
    Releasing { epoch: Epoch, just_used: bool },
    /// The lease is free, but a fresh, eligible standby with a higher priority goes first.
    WaitingForPriority { ahead: MemberId, remaining_ms: u64 },
    /// The lease is free and a transfer names another member.
    WaitingForTransfer { to: MemberId },
    /// This member stood down recently and another eligible standby can take the free lease;
    /// it leaves the lease to that one until its cooldown ends, so two live members do not
    /// hand production back and forth.
    DeferringAfterStepDown { to: MemberId, remaining_ms: u64 },
    /// This member's own promotion guard failed `failures` times in a row: it waits before it
    /// takes a free lease again.
    GuardBackoff { failures: u32, remaining_ms: u64 },
    /// The last acquire failed; the next one is sent after this pause.
    AcquireRetry { remaining_ms: u64 },
    /// An acquire is in flight.
    Acquiring { takeover: Takeover },
    /// The lease was granted; the promotion guard is running.
    Promoting { epoch: Epoch, takeover: Option<Takeover> },
    /// Producing, and renewing the lease.
    Active { epoch: Epoch, valid_for_ms: u64, next: Successor },
    /// Producing with an unhealthy node, and not stepping down because of `held`.
    ActiveUnhealthy { epoch: Epoch, node: NotFit, held: Held },
    /// Stepping down; waiting for the producer to confirm it stopped.
    Demoting { epoch: Epoch, why: StepDown },
    /// Fenced; waiting for the producer to confirm it cannot sign.
    Fenced { why: FenceReason },
}

/// Why this member's own node cannot take over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "not_fit", rename_all = "snake_case")]
pub enum NotFit {
    /// No probe recent enough to trust.
    NotProbed,
    Unhealthy {
        detail: String,
    },
    /// The verdict is still healthy but the latest probe was bad.
    LastProbeBad {
        detail: String,
    },
    Behind {
        lag: u64,
        max: u64,
    },
    NoHeight,
}

/// When the holder's status was last published, as this member saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "heard", rename_all = "snake_case")]
pub enum Heard {
    Recently {
        age_ms: u64,
    },
    /// Older than the staleness limit: the holder may be dead.
    Silent {
        age_ms: u64,
    },
    Never,
}

/// Who takes over if the active stopped now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "successor", rename_all = "snake_case")]
pub enum Successor {
    Member {
        id: MemberId,
        priority: u32,
    },
    /// Nobody could; each other producer with the reason.
    Nobody {
        unfit: Vec<PeerUnfit>,
    },
}

/// Why another producer could not take over now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerUnfit {
    pub member: MemberId,
    pub why: PeerProblem,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum PeerProblem {
    Silent { last_heard_ms: u64 },
    NotStandby { role: RoleName },
    Unhealthy,
    Behind { lag: u64, max: u64 },
    NoHeight,
}

/// What keeps an unhealthy active producing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "held_by", rename_all = "snake_case")]
pub enum Held {
    /// Activated less than `cooldown` ago: a fresh active is not demoted at once (L2).
    Cooldown {
        remaining_ms: u64,
    },
    Paused,
    NoStandby {
        unfit: Vec<PeerUnfit>,
    },
}

/// Why this member takes the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "takeover", rename_all = "snake_case")]
pub enum Takeover {
    /// The holder stopped publishing and its lease ended without a hand-over.
    HolderSilent { holder: MemberId, epoch: Epoch, last_heard_ms: Option<u64> },
    /// The holder is alive and gave the lease up (it stepped down or was fenced).
    HolderGaveUp { holder: MemberId, epoch: Epoch, role: RoleName },
    /// The holder was heard within one renew interval, still as active, and its lease is free:
    /// it released the lease without a handover, as a member does when it stops.
    HolderReleased { holder: MemberId, epoch: Epoch, last_heard_ms: u64 },
    /// An operator asked for this member (`failoverctl promote`, or `demote` on the active).
    Transfer { from: Option<MemberId>, epoch: Epoch, forced: bool },
    /// The lease is free and no holder was seen since this member started.
    FreeLease { epoch: Epoch },
    /// The holder has been silent this long while holding the lease; this member fences it
    /// with `fence_command` and takes the lease over without waiting for expiry.
    HolderFenced { holder: MemberId, epoch: Epoch, last_heard_ms: u64 },
}

impl Why {
    /// The situation without its countdowns and running figures (ages, lags, probe counts):
    /// two turns in the same situation compare equal, so a change of this value is worth one
    /// log line — not every probe of a node that stays unhealthy or behind.
    pub fn situation(&self) -> Why {
        let mut w = self.clone();
        match &mut w {
            Why::NotEligible { cause } => cause.drop_figures(),
            Why::ActiveUnhealthy { node, held, .. } => {
                node.drop_figures();
                match held {
                    Held::Cooldown { remaining_ms } => *remaining_ms = 0,
                    Held::NoStandby { unfit } => drop_times(unfit),
                    Held::Paused => {}
                }
            }
            Why::WaitingForPriority { remaining_ms, .. }
            | Why::DeferringAfterStepDown { remaining_ms, .. }
            | Why::GuardBackoff { remaining_ms, .. }
            | Why::AcquireRetry { remaining_ms } => *remaining_ms = 0,
            Why::Active { valid_for_ms, next, .. } => {
                *valid_for_ms = 0;
                next.drop_times();
            }
            Why::LeaseHeld { holder_heard, next, .. } => {
                if let Heard::Recently { age_ms } | Heard::Silent { age_ms } = holder_heard {
                    *age_ms = 0;
                }
                next.drop_times();
            }
            Why::Acquiring { takeover } | Why::Promoting { takeover: Some(takeover), .. } => takeover.drop_times(),
            _ => {}
        }
        w
    }

    /// Whether the member would rather an operator looked: producing on an unhealthy node, or
    /// no other producer able to take over from the active.
    pub fn needs_attention(&self) -> bool {
        match self {
            Why::ActiveUnhealthy { .. } => true,
            // A producer seen but unfit; none seen yet is a cluster still starting.
            Why::Active { next: Successor::Nobody { unfit }, .. } => !unfit.is_empty(),
            _ => false,
        }
    }
}

impl Successor {
    fn drop_times(&mut self) {
        if let Successor::Nobody { unfit } = self {
            drop_times(unfit);
        }
    }
}

impl Takeover {
    fn drop_times(&mut self) {
        match self {
            Takeover::HolderSilent { last_heard_ms: Some(ms), .. }
            | Takeover::HolderReleased { last_heard_ms: ms, .. }
            | Takeover::HolderFenced { last_heard_ms: ms, .. } => *ms = 0,
            _ => {}
        }
    }
}

fn drop_times(unfit: &mut [PeerUnfit]) {
    for u in unfit {
        match &mut u.why {
            PeerProblem::Silent { last_heard_ms } => *last_heard_ms = 0,
            PeerProblem::Behind { lag, .. } => *lag = 0,
            _ => {}
        }
    }
}

impl NotFit {
    fn drop_figures(&mut self) {
        match self {
            NotFit::Unhealthy { detail } | NotFit::LastProbeBad { detail } => detail.clear(),
            NotFit::Behind { lag, .. } => *lag = 0,
            NotFit::NotProbed | NotFit::NoHeight => {}
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Witness => f.write_str("witness: votes in the quorum, never produces"),
            Why::StoreUnknown => f.write_str(
                "the store could not be read, or this member has not caught up with it (no leader known yet): \
                     the lease is unknown, and unknown is never free",
            ),
            Why::NotEligible { cause } => write!(f, "not eligible to take over: {cause}"),
            Why::Paused => f.write_str("paused by operator: nobody takes the lease on its own (failoverctl resume)"),
            Why::LeaseHeld { holder, epoch, holder_heard, next } => {
                write!(f, "lease held by {holder} at epoch {epoch}")?;
                match holder_heard {
                    Heard::Recently { age_ms } => write!(f, " (last heard {} ago)", span(*age_ms))?,
                    Heard::Silent { age_ms } => {
                        write!(f, "; {holder} has been silent for {}: waiting for its lease to expire", span(*age_ms))?
                    }
                    Heard::Never => write!(f, "; {holder} has published no status: waiting for its lease to expire")?,
                }
                write!(f, "; if {holder} stopped now, {next}")
            }
            Why::Releasing { epoch, just_used: true } => {
                write!(f, "giving back the lease at epoch {epoch}, which this member no longer uses")
            }
            Why::Releasing { epoch, just_used: false } => write!(
                f,
                "the store says this member holds epoch {epoch}, which this process never acquired (an earlier run's?): stopping the node and giving it back"
            ),
            Why::WaitingForPriority { ahead, remaining_ms } => write!(
                f,
                "lease free: waiting {} more (priority_delay) for {ahead}, which has a higher priority",
                span(*remaining_ms)
            ),
            Why::WaitingForTransfer { to } => write!(f, "lease free: a transfer names {to}, which takes it first"),
            Why::DeferringAfterStepDown { to, remaining_ms } => write!(
                f,
                "lease free: this member stood down recently, so it leaves the lease to eligible standby {to} for {} more",
                span(*remaining_ms)
            ),
            Why::GuardBackoff { failures, remaining_ms } => write!(
                f,
                "lease free: this member's promotion guard failed {failures} time(s) in a row; trying again in {} (see the guard's last step in the log)",
                span(*remaining_ms)
            ),
            Why::AcquireRetry { remaining_ms } => {
                write!(f, "lease free: the last acquire failed; asking again in {}", span(*remaining_ms))
            }
            Why::Acquiring { takeover } => write!(f, "acquiring the lease: {takeover}"),
            Why::Promoting { epoch, takeover } => {
                write!(f, "promoting at epoch {epoch}: running the promotion guard")?;
                match takeover {
                    Some(t) => write!(f, " ({t})"),
                    None => Ok(()),
                }
            }
            Why::Active { epoch, valid_for_ms, next } => {
                write!(
                    f,
                    "active: lease epoch {epoch} valid for {}; if this member stopped now, {next}",
                    span(*valid_for_ms)
                )
            }
            Why::ActiveUnhealthy { epoch, node, held } => {
                write!(f, "active at epoch {epoch} although {node}; ")?;
                match held {
                    Held::Cooldown { remaining_ms } => write!(
                        f,
                        "step-down held by cooldown for {} more (a fresh active is not demoted at once)",
                        span(*remaining_ms)
                    ),
                    Held::Paused => f.write_str("paused by operator, so it keeps producing"),
                    Held::NoStandby { unfit } => {
                        write!(f, "no eligible standby to hand over to: {}", UnfitList(unfit))
                    }
                }
            }
            Why::Demoting { epoch, why } => {
                write!(f, "stepping down at epoch {epoch} ({why}); waiting for the producer to confirm it stopped")
            }
            Why::Fenced { why } => write!(f, "fenced ({why}); waiting for the producer to confirm it cannot sign"),
        }
    }
}

impl fmt::Display for NotFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFit::NotProbed => f.write_str("no recent probe of the local node"),
            NotFit::Unhealthy { detail } => write!(f, "the local node is unhealthy ({detail})"),
            NotFit::LastProbeBad { detail } => write!(f, "the local node's last probe was bad ({detail})"),
            NotFit::Behind { lag, max } => {
                write!(f, "the local node is {lag} blocks behind the best height (max_lag_on_failover {max})")
            }
            NotFit::NoHeight => f.write_str("the local node's height is unknown"),
        }
    }
}

impl fmt::Display for Successor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Successor::Member { id, priority } => write!(f, "{id} (priority {priority}) would take over"),
            Successor::Nobody { unfit } if unfit.is_empty() => {
                f.write_str("nobody could take over: no other producer has published a status")
            }
            Successor::Nobody { unfit } => write!(f, "nobody could take over: {}", UnfitList(unfit)),
        }
    }
}

struct UnfitList<'a>(&'a [PeerUnfit]);

impl fmt::Display for UnfitList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no other producer has published a status");
        }
        for (i, u) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} {}", u.member, u.why)?;
        }
        Ok(())
    }
}

impl fmt::Display for PeerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerProblem::Silent { last_heard_ms } => {
                write!(f, "is unreachable (last heard {} ago)", span(*last_heard_ms))
            }
            PeerProblem::NotStandby { role } => write!(f, "is {role}"),
            PeerProblem::Unhealthy => f.write_str("reports its node unhealthy"),
            PeerProblem::Behind { lag, max } => write!(f, "lags by {lag} (max_lag_on_failover {max})"),
            PeerProblem::NoHeight => f.write_str("has no known height"),
        }
    }
}

impl fmt::Display for Takeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Takeover::HolderSilent { holder, epoch, last_heard_ms: Some(ms) } => write!(
                f,
                "holder {holder} stopped renewing (last heard {} ago); its lease at epoch {epoch} ended",
                span(*ms)
            ),
            Takeover::HolderSilent { holder, epoch, last_heard_ms: None } => {
                write!(f, "holder {holder} was never heard from; its lease at epoch {epoch} ended")
            }
            Takeover::HolderGaveUp { holder, epoch, role } => {
                write!(f, "holder {holder} gave the lease up at epoch {epoch} and is now {role}")
            }
            Takeover::HolderReleased { holder, epoch, last_heard_ms } => write!(
                f,
                "holder {holder} released its lease at epoch {epoch} without a handover (last heard {} ago), as a member does when it stops",
                span(*last_heard_ms)
            ),
            Takeover::Transfer { from: Some(from), epoch, forced: false } => {
                write!(f, "a planned handover from {from} at epoch {epoch}, requested by an operator")
            }
            Takeover::Transfer { from: None, epoch, forced: false } => {
                write!(f, "a planned handover at epoch {epoch}, requested by an operator")
            }
            Takeover::Transfer { epoch, forced: true, .. } => {
                write!(f, "a forced handover requested by an operator (after epoch {epoch})")
            }
            Takeover::FreeLease { epoch } => write!(f, "the lease is free after epoch {epoch}"),
            Takeover::HolderFenced { holder, epoch, last_heard_ms } => write!(
                f,
                "holder {holder} has been silent for {} while holding epoch {epoch}: fencing it with fence_command and taking the lease over without waiting for expiry",
                span(*last_heard_ms)
            ),
        }
    }
}

impl Takeover {
    /// A short stable word for the cause, for event consumers and metric labels.
    pub fn word(&self) -> &'static str {
        match self {
            Takeover::HolderSilent { .. } => "holder_silent",
            Takeover::HolderGaveUp { .. } => "holder_gave_up",
            Takeover::HolderReleased { .. } => "holder_released",
            Takeover::Transfer { forced: false, .. } => "planned",
            Takeover::Transfer { forced: true, .. } => "forced",
            Takeover::FreeLease { .. } => "free_lease",
            Takeover::HolderFenced { .. } => "holder_fenced",
        }
    }
}

/// One human sentence for a role change, with its cause: what the daemon logs and emits as an
/// event. `why` is the explanation of the turn that made the change.
pub fn describe_change(before: &RoleState, after: &RoleState, why: &Why) -> String {
    let (from, to) = (before.role, after.role);
    let epoch = after.epoch.or(before.epoch).map_or(String::from("-"), |e| e.to_string());
    let cause = match to {
        RoleName::Promoting => match &after.takeover {
            Some(t) => format!("taking over at epoch {epoch}: {t}; running the promotion guard"),
            None => format!("taking over at epoch {epoch}; running the promotion guard"),
        },
        RoleName::Active => match &after.takeover {
            Some(t) => format!("active at epoch {epoch}: every guard step passed; taken over because {t}"),
            None => format!("active at epoch {epoch}: every guard step passed"),
        },
        RoleName::Demoting => match &after.last_reason {
            Some(Reason::StepDown(s)) => format!("stepping down at epoch {epoch}: {s}"),
            _ => format!("stepping down at epoch {epoch}"),
        },
        RoleName::Fenced => match &after.last_reason {
            Some(Reason::Fence(r)) => format!("fencing the producer at epoch {epoch}: {r}"),
            _ => format!("fencing the producer at epoch {epoch}"),
        },
        _ if matches!(from, RoleName::Demoting | RoleName::Fenced) => match &after.last_reason {
            Some(r) => format!("the producer is confirmed stopped after it {r}; now: {why}"),
            None => format!("the producer is confirmed stopped; now: {why}"),
        },
        _ => why.to_string(),
    };
    format!("{from} → {to}: {cause}")
}

/// A short stable word for the cause of a role change, carried by its event.
pub fn change_cause_word(after: &RoleState) -> &'static str {
    match (after.role, &after.last_reason, &after.takeover) {
        (RoleName::Promoting | RoleName::Active, _, Some(t)) => t.word(),
        (RoleName::Demoting | RoleName::Fenced, Some(r), _) | (_, Some(r), None) => r.word(),
        _ => "health",
    }
}

impl Reason {
    /// A short stable word for the cause (a metric label and an event's cause).
    pub fn word(&self) -> &'static str {
        match self {
            Reason::StepDown(StepDown::Unhealthy { .. }) => "unhealthy",
            Reason::StepDown(StepDown::Transfer { .. }) => "transfer",
            Reason::StepDown(StepDown::GuardFailed { .. }) => "guard_failed",
            Reason::Fence(FenceReason::LeaseDeadline) => "lease_deadline",
            Reason::Fence(FenceReason::LeaseLost) => "lease_lost",
            Reason::Fence(FenceReason::DeactivateFailed) => "deactivate_failed",
            Reason::Fence(FenceReason::Inconsistent) => "inconsistent",
            Reason::Fence(FenceReason::ProducerStopped { .. }) => "producer_stopped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(Span(Duration::from_millis(250)).to_string(), "250 ms");
        assert_eq!(Span(Duration::from_millis(8_300)).to_string(), "8.3 s");
        assert_eq!(Span(Duration::from_secs(125)).to_string(), "2 min 5 s");
    }

    #[test]
    fn a_countdown_is_not_a_new_situation_but_a_new_holder_is() {
        let a = MemberId::new("a").expect("id");
        let b = MemberId::new("b").expect("id");
        let held = |holder: &MemberId, age_ms| Why::LeaseHeld {
            holder: holder.clone(),
            epoch: Epoch::new(4),
            holder_heard: Heard::Recently { age_ms },
            next: Successor::Nobody { unfit: vec![] },
        };
        assert_eq!(held(&a, 100).situation(), held(&a, 900).situation());
        assert_ne!(held(&a, 100).situation(), held(&b, 100).situation());
        let silent = Why::LeaseHeld {
            holder: a.clone(),
            epoch: Epoch::new(4),
            holder_heard: Heard::Silent { age_ms: 5_000 },
            next: Successor::Nobody { unfit: vec![] },
        };
        assert_ne!(held(&a, 100).situation(), silent.situation());
    }

    #[test]
    fn a_node_that_stays_unhealthy_or_behind_is_one_situation_not_one_per_probe() {
        let unhealthy = |bad: u32, lag: u64| Why::ActiveUnhealthy {
            epoch: Epoch::new(5),
            node: NotFit::Unhealthy { detail: format!("height has not moved for {bad} s; {bad} bad probes in a row") },
            held: Held::NoStandby {
                unfit: vec![PeerUnfit {
                    member: MemberId::new("b").expect("id"),
                    why: PeerProblem::Behind { lag, max: 2 },
                }],
            },
        };
        assert_eq!(unhealthy(3, 14).situation(), unhealthy(9, 20).situation());
        let behind = |lag| Why::NotEligible { cause: NotFit::Behind { lag, max: 2 } };
        assert_eq!(behind(9).situation(), behind(12).situation());
        assert_ne!(behind(9).situation(), Why::NotEligible { cause: NotFit::NotProbed }.situation());
    }

    #[test]
    fn explanations_are_sentences_without_debug_text() {
        let a = MemberId::new("a").expect("id");
        let b = MemberId::new("b").expect("id");
        let whys = [
            Why::LeaseHeld {
                holder: a.clone(),
                epoch: Epoch::new(4),
                holder_heard: Heard::Silent { age_ms: 3_200 },
                next: Successor::Member { id: b.clone(), priority: 100 },
            },
            Why::ActiveUnhealthy {
                epoch: Epoch::new(5),
                node: NotFit::Unhealthy { detail: "height has not moved for 6.0 s".into() },
                held: Held::NoStandby {
                    unfit: vec![PeerUnfit { member: b.clone(), why: PeerProblem::Behind { lag: 14, max: 2 } }],
                },
            },
            Why::Acquiring {
                takeover: Takeover::HolderSilent { holder: a, epoch: Epoch::new(4), last_heard_ms: Some(3_200) },
            },
        ];
        let text: Vec<String> = whys.iter().map(ToString::to_string).collect();
        assert_eq!(
            text[0],
            "lease held by a at epoch 4; a has been silent for 3.2 s: waiting for its lease to expire; if a stopped now, b (priority 100) would take over"
        );
        assert_eq!(
            text[1],
            "active at epoch 5 although the local node is unhealthy (height has not moved for 6.0 s); no eligible standby to hand over to: b lags by 14 (max_lag_on_failover 2)"
        );
        assert_eq!(
            text[2],
            "acquiring the lease: holder a stopped renewing (last heard 3.2 s ago); its lease at epoch 4 ended"
        );
        for t in &text {
            assert!(!t.contains("Some(") && !t.contains('{') && !t.contains("None"), "{t}");
        }
    }
}
