//! Height, round and step, and their total order: the coordinates in which S2 is stated.
//! Pure values; never reads or writes anything.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A consensus step within a round, in the order a validator signs them.
///
/// The numbering follows CometBFT's FilePV (`stepPropose = 1`, `stepPrevote = 2`,
/// `stepPrecommit = 3`), so a `priv_validator_state.json` step converts without a table.
/// Chains without rounds and steps (Ethereum, Solana, Antelope) sign at `(height, 0, Propose)`
/// and checkpoint whole heights with [`Hrs::end_of_height`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Propose = 1,
    Prevote = 2,
    Precommit = 3,
}

impl Step {
    pub const ALL: [Step; 3] = [Step::Propose, Step::Prevote, Step::Precommit];

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(n: u8) -> Option<Step> {
        match n {
            1 => Some(Step::Propose),
            2 => Some(Step::Prevote),
            3 => Some(Step::Precommit),
            _ => None,
        }
    }
}

/// Why a text or number is not a [`Step`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown step {0:?}: expected propose (1), prevote (2) or precommit (3)")]
pub struct StepParseError(pub String);

impl FromStr for Step {
    type Err = StepParseError;
    fn from_str(s: &str) -> Result<Step, StepParseError> {
        match s {
            "propose" | "1" => Ok(Step::Propose),
            "prevote" | "2" => Ok(Step::Prevote),
            "precommit" | "3" => Ok(Step::Precommit),
            other => Err(StepParseError(other.to_string())),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Propose => "propose",
            Step::Prevote => "prevote",
            Step::Precommit => "precommit",
        })
    }
}

/// Height, round, step: the position of a signature in the chain's history.
///
/// Ordered lexicographically — height first, then round, then step — which is the order in
/// which an honest validator signs. S2 (docs/design.md §3) is stated over this order: a key may sign
/// a given HRS once, and never anything at or below its watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hrs {
    pub height: u64,
    pub round: u32,
    pub step: Step,
}

impl Hrs {
    /// The lowest possible position: nothing signed yet.
    pub const ZERO: Hrs = Hrs { height: 0, round: 0, step: Step::Propose };

    pub const fn new(height: u64, round: u32, step: Step) -> Hrs {
        Hrs { height, round, step }
    }

    /// The highest position within `height`: every round and step of it counts as signed.
    ///
    /// Key-holding checkpoints use this because the daemon knows only that the node signed
    /// *something* at that height, not in which round.
    pub const fn end_of_height(height: u64) -> Hrs {
        Hrs { height, round: u32::MAX, step: Step::Precommit }
    }
}

impl Ord for Hrs {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.height, self.round, self.step).cmp(&(other.height, other.round, other.step))
    }
}

impl PartialOrd for Hrs {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The one way failoverd writes an HRS for people — logs, events, failoverctl, error messages:
/// `height/round/step`, such as `4304/0/precommit`. The round of [`Hrs::end_of_height`]
/// (u32::MAX, "every round of this height", what key-holding checkpoints record) is written
/// `*`: `4304/*/precommit`. Machine formats (the watermark interchange JSON, the wire) keep
/// the numbers.
impl fmt::Display for Hrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.round == u32::MAX {
            write!(f, "{}/*/{}", self.height, self.step)
        } else {
            write!(f, "{}/{}/{}", self.height, self.round, self.step)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn step() -> impl Strategy<Value = Step> {
        prop::sample::select(Step::ALL.to_vec())
    }

    fn hrs() -> impl Strategy<Value = Hrs> {
        (0u64..5, 0u32..3, step()).prop_map(|(h, r, s)| Hrs::new(h, r, s))
    }

    #[test]
    fn height_dominates_round_and_step() {
        assert!(Hrs::new(2, 0, Step::Propose) > Hrs::new(1, 99, Step::Precommit));
    }

    #[test]
    fn round_dominates_step_within_a_height() {
        assert!(Hrs::new(5, 1, Step::Propose) > Hrs::new(5, 0, Step::Precommit));
    }

    #[test]
    fn steps_order_propose_prevote_precommit() {
        assert!(Hrs::new(5, 0, Step::Propose) < Hrs::new(5, 0, Step::Prevote));
        assert!(Hrs::new(5, 0, Step::Prevote) < Hrs::new(5, 0, Step::Precommit));
    }

    #[test]
    fn end_of_height_is_above_every_round_of_that_height_and_below_the_next() {
        let end = Hrs::end_of_height(7);
        assert!(end > Hrs::new(7, 1_000_000, Step::Precommit));
        assert!(end < Hrs::new(8, 0, Step::Propose));
    }

    #[test]
    fn an_hrs_reads_height_round_step_with_a_star_for_every_round() {
        assert_eq!(Hrs::new(4304, 0, Step::Precommit).to_string(), "4304/0/precommit");
        assert_eq!(Hrs::new(4304, 7, Step::Prevote).to_string(), "4304/7/prevote");
        assert_eq!(Hrs::end_of_height(4304).to_string(), "4304/*/precommit");
        assert_eq!(Hrs::new(4304, u32::MAX - 1, Step::Propose).to_string(), "4304/4294967294/propose");
    }

    #[test]
    fn step_numbers_match_cometbft_filepv() {
        assert_eq!(Step::Propose.as_u8(), 1);
        assert_eq!(Step::Prevote.as_u8(), 2);
        assert_eq!(Step::Precommit.as_u8(), 3);
        assert_eq!(Step::from_u8(0), None);
        assert_eq!(Step::from_u8(4), None);
        assert_eq!("2".parse::<Step>(), Ok(Step::Prevote));
        assert!("commit".parse::<Step>().is_err());
    }

    proptest! {
        #[test]
        fn order_is_total_and_lexicographic(a in hrs(), b in hrs()) {
            let lex = (a.height, a.round, a.step.as_u8()).cmp(&(b.height, b.round, b.step.as_u8()));
            prop_assert_eq!(a.cmp(&b), lex);
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        }

        #[test]
        fn order_is_transitive(a in hrs(), b in hrs(), c in hrs()) {
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }
    }
}
