//! The replicated sign watermark, the only ways it may move (docs/design.md §4, S3), and the
//! ceiling no import may pass. Pure rules shared by every backend; no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Epoch, Hrs};

/// The highest HRS that any member may have signed with one key, and the epoch of the lease
/// holder that raised it last.
///
/// The store keeps one per key. S3 (docs/design.md §3) says it never decreases; the only ways to
/// change it are [`Watermark::reserve`] (signer mode, strictly above), [`Watermark::raise`]
/// (checkpoints and releases, never below) and [`Watermark::import`] (an operator's, refused
/// below and above [`IMPORT_HEIGHT_CEILING`]). All are pure so that the raft state machine, the
/// Consul backend and the control API's dry run apply the same rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Watermark {
    pub hrs: Hrs,
    pub epoch: Epoch,
}

/// The highest height an import may set, 2^53, even with `--force`.
///
/// No chain will reach it (a block every millisecond for 285,000 years), and below it every
/// height is exact wherever it travels: as a JSON number read by a float-based parser, and in
/// the activation floor `max(watermark, chain height) + floor_margin`, which can then never wrap
/// around u64. A height above it is a mistake (a typo, `u64::MAX`), and since a watermark never
/// goes down (S3) it would stop the key from signing for good.
pub const IMPORT_HEIGHT_CEILING: u64 = 1 << 53;

/// Why a watermark change was refused. Every refusal means "do not sign".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkRefusal {
    /// The request is at or below what may already have been signed: signing it could be a
    /// double sign.
    #[error("HRS {requested} is not above the watermark {current}; refusing to sign at or below it")]
    NotAbove { current: Hrs, requested: Hrs },
    /// The writer's lease epoch is not the current one: it is a deposed holder.
    #[error("epoch {given} is not the current lease epoch {current}; the writer no longer holds the lease")]
    StaleEpoch { current: Epoch, given: Epoch },
    /// An import above [`IMPORT_HEIGHT_CEILING`]: no chain gets there, and the key would never
    /// sign again.
    #[error(
        "height {requested} is above {IMPORT_HEIGHT_CEILING} (2^53), the ceiling no import may pass, --force or \
         not: no chain reaches it, the activation floor must stay exact, and a watermark there would stop the key \
         from signing for good; check the height in the file"
    )]
    AboveCeiling { requested: u64 },
}

/// Refuses a height an import may not set: above [`IMPORT_HEIGHT_CEILING`].
pub fn check_import_height(height: u64) -> Result<(), WatermarkRefusal> {
    if height > IMPORT_HEIGHT_CEILING {
        return Err(WatermarkRefusal::AboveCeiling { requested: height });
    }
    Ok(())
}

impl Watermark {
    /// Nothing signed yet, under no lease.
    pub const ZERO: Watermark = Watermark { hrs: Hrs::ZERO, epoch: Epoch::ZERO };

    /// Signer mode's check-and-advance: the watermark moves to `hrs` only when `epoch` is the
    /// current lease epoch and `hrs` is strictly above the watermark.
    pub fn reserve(&self, current_epoch: Epoch, epoch: Epoch, hrs: Hrs) -> Result<Watermark, WatermarkRefusal> {
        check_epoch(current_epoch, epoch)?;
        if hrs <= self.hrs {
            return Err(WatermarkRefusal::NotAbove { current: self.hrs, requested: hrs });
        }
        Ok(Watermark { hrs, epoch })
    }

    /// Key-holding checkpoints and releases: raise to `hrs` under the current epoch. A value
    /// at or below the watermark leaves it unchanged; it never lowers it.
    pub fn raise(&self, current_epoch: Epoch, epoch: Epoch, hrs: Hrs) -> Result<Watermark, WatermarkRefusal> {
        check_epoch(current_epoch, epoch)?;
        if hrs <= self.hrs {
            return Ok(*self);
        }
        Ok(Watermark { hrs, epoch })
    }

    /// An operator's import: the watermark moves up to `hrs` (an equal one leaves it as it is).
    /// Refuses, rather than silently ignoring, an import that would lower it, so the operator
    /// learns their file is older than the cluster; refuses a height above
    /// [`IMPORT_HEIGHT_CEILING`].
    pub fn import(&self, hrs: Hrs) -> Result<Watermark, WatermarkRefusal> {
        check_import_height(hrs.height)?;
        self.import_without_ceiling(hrs)
    }

    /// [`Watermark::import`] without the ceiling: only for applying raft log entries written
    /// before the ceiling existed. Those entries were applied without it when they were first
    /// committed, so a member that replays them now must reach the same state.
    pub fn import_without_ceiling(&self, hrs: Hrs) -> Result<Watermark, WatermarkRefusal> {
        if hrs < self.hrs {
            return Err(WatermarkRefusal::NotAbove { current: self.hrs, requested: hrs });
        }
        Ok(Watermark { hrs, epoch: self.epoch })
    }
}

fn check_epoch(current: Epoch, given: Epoch) -> Result<(), WatermarkRefusal> {
    if given != current {
        return Err(WatermarkRefusal::StaleEpoch { current, given });
    }
    Ok(())
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (epoch {})", self.hrs, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Step;

    const E1: Epoch = Epoch::new(1);
    const E2: Epoch = Epoch::new(2);

    fn wm(h: u64, r: u32, s: Step) -> Watermark {
        Watermark { hrs: Hrs::new(h, r, s), epoch: E1 }
    }

    // One line per rule (docs/design.md §4 `reserve`): (watermark, current epoch, writer epoch,
    // request, expected).
    #[test]
    fn reserve_rules() {
        use Step::*;
        type Case = (Watermark, Epoch, Epoch, Hrs, Result<Hrs, &'static str>);
        let cases: &[Case] = &[
            (wm(10, 0, Prevote), E1, E1, Hrs::new(10, 0, Precommit), Ok(Hrs::new(10, 0, Precommit))),
            (wm(10, 0, Prevote), E1, E1, Hrs::new(11, 0, Propose), Ok(Hrs::new(11, 0, Propose))),
            (wm(10, 0, Prevote), E1, E1, Hrs::new(10, 1, Propose), Ok(Hrs::new(10, 1, Propose))),
            (wm(10, 0, Prevote), E1, E1, Hrs::new(10, 0, Prevote), Err("not above")),
            (wm(10, 0, Prevote), E1, E1, Hrs::new(10, 0, Propose), Err("not above")),
            (wm(10, 0, Prevote), E1, E1, Hrs::new(9, 5, Precommit), Err("not above")),
            (wm(10, 0, Prevote), E2, E1, Hrs::new(11, 0, Propose), Err("stale epoch")),
            (wm(10, 0, Prevote), E1, E2, Hrs::new(11, 0, Propose), Err("stale epoch")),
        ];
        for (i, (w, current, given, req, want)) in cases.iter().enumerate() {
            let got = w.reserve(*current, *given, *req);
            match (want, got) {
                (Ok(h), Ok(n)) => {
                    assert_eq!(n.hrs, *h, "case {i}");
                    assert_eq!(n.epoch, *given, "case {i}");
                }
                (Err("not above"), Err(WatermarkRefusal::NotAbove { .. })) => {}
                (Err("stale epoch"), Err(WatermarkRefusal::StaleEpoch { .. })) => {}
                (want, got) => panic!("case {i}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn refuses_reserve_with_stale_epoch_even_when_above() {
        let w = wm(1, 0, Step::Propose);
        assert_eq!(
            w.reserve(E2, E1, Hrs::new(100, 0, Step::Propose)),
            Err(WatermarkRefusal::StaleEpoch { current: E2, given: E1 })
        );
    }

    #[test]
    fn raise_below_is_a_no_op_not_a_decrease() {
        let w = wm(10, 0, Step::Precommit);
        assert_eq!(w.raise(E1, E1, Hrs::end_of_height(3)), Ok(w));
        assert_eq!(w.raise(E1, E1, Hrs::end_of_height(12)).map(|n| n.hrs), Ok(Hrs::end_of_height(12)));
    }

    #[test]
    fn import_that_would_lower_is_refused() {
        let w = wm(10, 0, Step::Precommit);
        assert!(w.import(Hrs::new(9, 0, Step::Precommit)).is_err());
        assert_eq!(w.import(Hrs::new(10, 0, Step::Precommit)), Ok(w));
        assert_eq!(w.import(Hrs::new(20, 0, Step::Propose)).map(|n| n.hrs), Ok(Hrs::new(20, 0, Step::Propose)));
    }

    // One line per case: (import height, expected) against a watermark at height 10.
    #[test]
    fn no_import_passes_the_ceiling_of_2_to_the_53() {
        let cases: &[(u64, Result<u64, WatermarkRefusal>)] = &[
            (IMPORT_HEIGHT_CEILING, Ok(IMPORT_HEIGHT_CEILING)),
            (IMPORT_HEIGHT_CEILING + 1, Err(WatermarkRefusal::AboveCeiling { requested: IMPORT_HEIGHT_CEILING + 1 })),
            (u64::MAX, Err(WatermarkRefusal::AboveCeiling { requested: u64::MAX })),
        ];
        let w = wm(10, 0, Step::Precommit);
        for (height, want) in cases {
            assert_eq!(w.import(Hrs::new(*height, 0, Step::Propose)).map(|n| n.hrs.height), *want, "height {height}");
        }
        assert_eq!(IMPORT_HEIGHT_CEILING, 9_007_199_254_740_992);
        let text = WatermarkRefusal::AboveCeiling { requested: u64::MAX }.to_string();
        assert!(text.contains("9007199254740992 (2^53)"), "{text}");
    }

    fn any_step() -> impl Strategy<Value = Step> {
        prop::sample::select(Step::ALL.to_vec())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(u64, u32, Step, u64),
        Raise(u64, u64),
        Import(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..20, 0u32..3, any_step(), 1u64..4).prop_map(|(h, r, s, e)| Op::Reserve(h, r, s, e)),
            (0u64..20, 1u64..4).prop_map(|(h, e)| Op::Raise(h, e)),
            (0u64..20).prop_map(Op::Import),
        ]
    }

    proptest! {
        // S3: whatever sequence of reserves, raises and imports arrives, under whatever epochs,
        // the watermark never decreases and a successful reserve is strictly above.
        #[test]
        fn watermark_never_decreases(ops in prop::collection::vec(op(), 1..60), current in 1u64..4) {
            let current = Epoch::new(current);
            let mut w = Watermark::ZERO;
            for op in ops {
                let before = w;
                let next = match op {
                    Op::Reserve(h, r, s, e) => w.reserve(current, Epoch::new(e), Hrs::new(h, r, s)),
                    Op::Raise(h, e) => w.raise(current, Epoch::new(e), Hrs::end_of_height(h)),
                    Op::Import(h) => w.import(Hrs::end_of_height(h)),
                };
                if let Ok(n) = next {
                    prop_assert!(n.hrs >= before.hrs);
                    if let Op::Reserve(..) = op {
                        prop_assert!(n.hrs > before.hrs);
                    }
                    w = n;
                }
            }
        }
    }
}
