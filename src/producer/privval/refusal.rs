//! Why the signer answers a sign request without a signature, by kind: the typed refusals of
//! [`super::signer::PrivvalSigner`], each with the `RemoteSignerError` code the node gets (the
//! table in [`super`]) and the outcome it is counted as.
//!
//! Only kinds and their texts live here; deciding is the signer's, and the gate's.

use super::double_sign::DoubleSign;
use super::signer::{SignOutcome, code};
use crate::coord::CoordError;
use crate::domain::{Hrs, WatermarkRefusal};

/// Why the [`super::signer::SignGate`] did not reserve an HRS.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// No permission: this member is not (or no longer) active, or its deadline passed.
    #[error("this member is not the active signer")]
    NotActive,
    /// The permission was revoked while the reservation was in flight: the reservation stands
    /// (the watermark only rises), but this member no longer signs.
    #[error("demoted while reserving")]
    DemotedWhileReserving,
    /// The store says another lease epoch is current.
    #[error(transparent)]
    NotHolder(CoordError),
    /// The store did not confirm the reservation (timeout, unavailable): "could not check"
    /// means "do not sign".
    #[error("reservation not confirmed: {0}")]
    Unconfirmed(CoordError),
    /// The watermark is at or above the request: a double sign across members.
    #[error(transparent)]
    Watermark(WatermarkRefusal),
    /// A planned handover is draining this member's window: `hrs` is above the last height it
    /// reserved, and the successor signs it.
    #[error("{hrs} is above this member's last reserved window: it is handing over to its successor")]
    HandingOver { hrs: Hrs },
    /// At or below the activation floor (the guard's margin above the watermark).
    #[error("{hrs} is at or below the activation floor {floor}")]
    BelowFloor { hrs: Hrs, floor: Hrs },
}

/// Why a sign request got no signature. The `Display` is the description the node logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request names another chain.
    #[error("this signer serves chain \"{served}\", not \"{asked}\"")]
    WrongChain { served: String, asked: String },
    /// No message, a message of the wrong type, or fields tendermint-rs refuses.
    #[error("{0}")]
    Malformed(String),
    /// The signer's own double-sign rule.
    #[error(transparent)]
    DoubleSign(#[from] DoubleSign),
    /// The gate: not active, not reserved, or below the floor or the watermark.
    #[error(transparent)]
    Gate(#[from] GateRefusal),
    /// The signature could not be recorded in the signer's state file, so it was not sent: a
    /// signature this signer would not remember after a restart is one it could contradict.
    #[error("{0}")]
    Unrecorded(String),
}

impl Refusal {
    /// The `RemoteSignerError.code` the node gets.
    pub fn code(&self) -> i32 {
        match self {
            Refusal::WrongChain { .. } | Refusal::Malformed(_) => code::BAD_REQUEST,
            Refusal::DoubleSign(_) | Refusal::Gate(GateRefusal::Watermark(_) | GateRefusal::BelowFloor { .. }) => {
                code::REFUSED
            }
            Refusal::Gate(
                GateRefusal::NotActive
                | GateRefusal::DemotedWhileReserving
                | GateRefusal::HandingOver { .. }
                | GateRefusal::NotHolder(_)
                | GateRefusal::Unconfirmed(_),
            )
            | Refusal::Unrecorded(_) => code::NOT_ACTIVE,
        }
    }

    /// What the refusal counts as, once the request reached the decision; `None` for a request
    /// refused before it (another chain, malformed), which is not counted.
    pub fn outcome(&self) -> Option<SignOutcome> {
        match self {
            Refusal::WrongChain { .. } | Refusal::Malformed(_) => None,
            Refusal::DoubleSign(_) | Refusal::Gate(GateRefusal::Watermark(_)) | Refusal::Unrecorded(_) => {
                Some(SignOutcome::Refused)
            }
            Refusal::Gate(GateRefusal::BelowFloor { .. }) => Some(SignOutcome::BelowFloor),
            Refusal::Gate(_) => Some(SignOutcome::NotActive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Epoch, LeaseView, Step};

    /// Every kind, its code, its outcome and the text the node reads.
    #[test]
    fn each_refusal_kind_has_its_code_outcome_and_text() {
        let h = Hrs::new(10, 0, Step::Precommit);
        let below = Hrs::new(9, 0, Step::Precommit);
        let not_holder =
            CoordError::NotHolder { epoch: Epoch::new(3), current: LeaseView::Free { epoch: Epoch::new(4) } };
        let cases: Vec<(Refusal, i32, Option<SignOutcome>, &str)> = vec![
            (
                Refusal::WrongChain { served: "a".into(), asked: "b".into() },
                code::BAD_REQUEST,
                None,
                "this signer serves chain \"a\", not \"b\"",
            ),
            (Refusal::Malformed("the request carries no vote".into()), code::BAD_REQUEST, None, "carries no vote"),
            (
                DoubleSign::HeightRegression { asked: below, last: h }.into(),
                code::REFUSED,
                Some(SignOutcome::Refused),
                "is below",
            ),
            (
                DoubleSign::RoundRegression { asked: below, last: h }.into(),
                code::REFUSED,
                Some(SignOutcome::Refused),
                "already signed",
            ),
            (
                DoubleSign::StepRegression { asked: below, last: h }.into(),
                code::REFUSED,
                Some(SignOutcome::Refused),
                "already signed",
            ),
            (
                DoubleSign::Conflicting { hrs: h }.into(),
                code::REFUSED,
                Some(SignOutcome::Refused),
                "already signed for a different message",
            ),
            (
                GateRefusal::Watermark(WatermarkRefusal::NotAbove { current: h, requested: below }).into(),
                code::REFUSED,
                Some(SignOutcome::Refused),
                "not above the watermark",
            ),
            (
                GateRefusal::BelowFloor { hrs: below, floor: h }.into(),
                code::REFUSED,
                Some(SignOutcome::BelowFloor),
                "at or below the activation floor",
            ),
            (GateRefusal::NotActive.into(), code::NOT_ACTIVE, Some(SignOutcome::NotActive), "not the active signer"),
            (
                GateRefusal::DemotedWhileReserving.into(),
                code::NOT_ACTIVE,
                Some(SignOutcome::NotActive),
                "demoted while reserving",
            ),
            (
                GateRefusal::NotHolder(not_holder).into(),
                code::NOT_ACTIVE,
                Some(SignOutcome::NotActive),
                "does not hold the lease at epoch 3",
            ),
            (
                GateRefusal::HandingOver { hrs: h }.into(),
                code::NOT_ACTIVE,
                Some(SignOutcome::NotActive),
                "handing over to its successor",
            ),
            (
                Refusal::Unrecorded(
                    "cannot write the signer's state file /x: disk full; the signature was not sent".into(),
                ),
                code::NOT_ACTIVE,
                Some(SignOutcome::Refused),
                "the signature was not sent",
            ),
            (
                GateRefusal::Unconfirmed(CoordError::Timeout { operation: "reserve" }).into(),
                code::NOT_ACTIVE,
                Some(SignOutcome::NotActive),
                "reservation not confirmed: the store did not answer",
            ),
        ];
        for (i, (refusal, want_code, want_outcome, text)) in cases.iter().enumerate() {
            assert_eq!(refusal.code(), *want_code, "case {i}: {refusal}");
            assert_eq!(refusal.outcome(), *want_outcome, "case {i}: {refusal}");
            assert!(refusal.to_string().contains(text), "case {i}: {refusal}");
        }
    }
}
