//! The signer's own double-sign rule, as CometBFT's FilePV has it: never sign below the last
//! height/round/step signed; at the same HRS, answer again only for the same message, where a
//! different timestamp alone gets the stored signature back (with the stored timestamp, which
//! the signature covers); refuse everything else.
//!
//! A refusal is a [`DoubleSign`] kind, as tmkms's chain state names them: a regression of the
//! height, the round or the step, or a different message at the signed HRS.
//!
//! Pure: plain data in, a verdict out. It is the second line of defence — the watermark reserved
//! through the coordinator before every new signature is the first, and the one that holds
//! across members.

use prost::Message as _;
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::types::{CanonicalProposal, CanonicalVote};

use crate::domain::{Hrs, Step};

/// What this signer signed last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastSignature {
    pub hrs: Hrs,
    pub sign_bytes: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Above everything signed: sign (after the reservation commits).
    Sign,
    /// The same message again: answer with the stored signature and, when only the timestamp
    /// differed, the stored timestamp.
    Repeat { signature: Vec<u8>, timestamp: Option<Timestamp> },
    /// Would be a double sign or a regression.
    Refuse(DoubleSign),
}

/// Why the double-sign rule refuses a request. A regression names what is lower; the three
/// read alike to the node, which only needs to know it was below what was signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DoubleSign {
    /// A lower height than the last signature.
    #[error("{asked} is below {last}, already signed")]
    HeightRegression { asked: Hrs, last: Hrs },
    /// The same height, a lower round.
    #[error("{asked} is below {last}, already signed")]
    RoundRegression { asked: Hrs, last: Hrs },
    /// The same height and round, an earlier step.
    #[error("{asked} is below {last}, already signed")]
    StepRegression { asked: Hrs, last: Hrs },
    /// The signed HRS again, for another message (another block, or bytes that are no
    /// canonical message of that step).
    #[error("{hrs} was already signed for a different message")]
    Conflicting { hrs: Hrs },
}

impl DoubleSign {
    /// The regression of `asked` below `last` (which must be higher).
    fn regression(asked: Hrs, last: Hrs) -> DoubleSign {
        if asked.height < last.height {
            DoubleSign::HeightRegression { asked, last }
        } else if asked.round < last.round {
            DoubleSign::RoundRegression { asked, last }
        } else {
            DoubleSign::StepRegression { asked, last }
        }
    }
}

/// Judges a request to sign `sign_bytes` at `hrs`, after `last`.
pub fn judge(last: Option<&LastSignature>, hrs: Hrs, sign_bytes: &[u8]) -> Verdict {
    let Some(last) = last else { return Verdict::Sign };
    if hrs > last.hrs {
        return Verdict::Sign;
    }
    if hrs < last.hrs {
        return Verdict::Refuse(DoubleSign::regression(hrs, last.hrs));
    }
    if sign_bytes == last.sign_bytes {
        return Verdict::Repeat { signature: last.signature.clone(), timestamp: None };
    }
    match (canonical_without_timestamp(hrs.step, sign_bytes), canonical_without_timestamp(hrs.step, &last.sign_bytes)) {
        (Some((new, _)), Some((old, stored))) if new == old => {
            Verdict::Repeat { signature: last.signature.clone(), timestamp: stored }
        }
        _ => Verdict::Refuse(DoubleSign::Conflicting { hrs }),
    }
}

/// The canonical message in `sign_bytes` re-encoded with its timestamp cleared, and that
/// timestamp; `None` when the bytes are not such a message.
fn canonical_without_timestamp(step: Step, sign_bytes: &[u8]) -> Option<(Vec<u8>, Option<Timestamp>)> {
    match step {
        Step::Propose => {
            let mut p = CanonicalProposal::decode_length_delimited(sign_bytes).ok()?;
            let t = p.timestamp.take();
            Some((p.encode_to_vec(), t))
        }
        Step::Prevote | Step::Precommit => {
            let mut v = CanonicalVote::decode_length_delimited(sign_bytes).ok()?;
            let t = v.timestamp.take();
            Some((v.encode_to_vec(), t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vote_bytes(height: i64, round: i64, block: u8, seconds: i64) -> Vec<u8> {
        CanonicalVote {
            r#type: 2,
            height,
            round,
            block_id: Some(tendermint_proto::v0_38::types::CanonicalBlockId {
                hash: vec![block; 32],
                part_set_header: None,
            }),
            timestamp: Some(Timestamp { seconds, nanos: 0 }),
            chain_id: "test-chain".into(),
        }
        .encode_length_delimited_to_vec()
    }

    fn signed(hrs: Hrs, bytes: Vec<u8>) -> LastSignature {
        LastSignature { hrs, sign_bytes: bytes, signature: vec![7; 64] }
    }

    const H: Hrs = Hrs::new(10, 0, Step::Precommit);

    #[test]
    fn the_filepv_rules() {
        let last = signed(H, vote_bytes(10, 0, 1, 100));
        assert_eq!(judge(None, H, &vote_bytes(10, 0, 1, 100)), Verdict::Sign);
        assert_eq!(judge(Some(&last), Hrs::new(10, 1, Step::Prevote), &vote_bytes(10, 1, 1, 100)), Verdict::Sign);
        assert_eq!(
            judge(Some(&last), H, &vote_bytes(10, 0, 1, 100)),
            Verdict::Repeat { signature: vec![7; 64], timestamp: None }
        );
        // Only the timestamp differs: the stored signature, with the stored timestamp.
        assert_eq!(
            judge(Some(&last), H, &vote_bytes(10, 0, 1, 105)),
            Verdict::Repeat { signature: vec![7; 64], timestamp: Some(Timestamp { seconds: 100, nanos: 0 }) }
        );
        // Another block at the same HRS: a double sign.
        assert!(matches!(judge(Some(&last), H, &vote_bytes(10, 0, 2, 100)), Verdict::Refuse(_)));
        // Below what was signed.
        assert!(matches!(
            judge(Some(&last), Hrs::new(10, 0, Step::Prevote), &vote_bytes(10, 0, 1, 100)),
            Verdict::Refuse(_)
        ));
        assert!(matches!(judge(Some(&last), H, b"not a canonical vote"), Verdict::Refuse(_)));
    }

    /// Each refusal by its kind, with the text the node gets (docs/design.md §8).
    #[test]
    fn refuses_each_regression_and_conflict_by_its_kind() {
        let last = signed(H, vote_bytes(10, 0, 1, 100));
        let r1 = Hrs::new(10, 1, Step::Prevote);
        let after_r1 = signed(r1, vote_bytes(10, 1, 1, 100));
        let cases: &[(&LastSignature, Hrs, Vec<u8>, DoubleSign, &str)] = &[
            (
                &last,
                Hrs::new(9, 3, Step::Precommit),
                vote_bytes(9, 3, 1, 100),
                DoubleSign::HeightRegression { asked: Hrs::new(9, 3, Step::Precommit), last: H },
                "is below",
            ),
            (
                &after_r1,
                Hrs::new(10, 0, Step::Precommit),
                vote_bytes(10, 0, 1, 100),
                DoubleSign::RoundRegression { asked: Hrs::new(10, 0, Step::Precommit), last: r1 },
                "is below",
            ),
            (
                &last,
                Hrs::new(10, 0, Step::Prevote),
                vote_bytes(10, 0, 1, 100),
                DoubleSign::StepRegression { asked: Hrs::new(10, 0, Step::Prevote), last: H },
                "already signed",
            ),
            (
                &last,
                H,
                vote_bytes(10, 0, 2, 100),
                DoubleSign::Conflicting { hrs: H },
                "already signed for a different message",
            ),
            (&last, H, b"not a canonical vote".to_vec(), DoubleSign::Conflicting { hrs: H }, "for a different message"),
        ];
        for (i, (last, hrs, bytes, kind, text)) in cases.iter().enumerate() {
            assert_eq!(judge(Some(last), *hrs, bytes), Verdict::Refuse(*kind), "case {i}");
            assert!(kind.to_string().contains(text), "case {i}: {kind}");
        }
    }

    proptest! {
        /// Whatever the history, a verdict to sign anew is only ever given strictly above the
        /// last signature, and a repeat only returns what was stored.
        #[test]
        fn never_a_second_signature_at_or_below_the_last(
            requests in proptest::collection::vec((1u64..5, 0u32..3, 1u8..4, 0u8..3, 0i64..3), 1..60)
        ) {
            let mut last: Option<LastSignature> = None;
            for (h, r, s, block, t) in requests {
                let step = match s { 1 => Step::Propose, 2 => Step::Prevote, _ => Step::Precommit };
                let hrs = Hrs::new(h, r, step);
                let bytes = vote_bytes(h as i64, i64::from(r), block, t);
                match judge(last.as_ref(), hrs, &bytes) {
                    Verdict::Sign => {
                        if let Some(l) = &last { prop_assert!(hrs > l.hrs); }
                        last = Some(LastSignature { hrs, sign_bytes: bytes, signature: vec![block; 64] });
                    }
                    Verdict::Repeat { signature, .. } => {
                        let l = last.as_ref().expect("a repeat needs a stored signature");
                        prop_assert_eq!(hrs, l.hrs);
                        prop_assert_eq!(&signature, &l.signature);
                    }
                    Verdict::Refuse(_) => {}
                }
            }
        }
    }
}
