//! Generated protobuf types (proto/failover/v1) and their conversions to and from the domain
//! types. Conversions from the wire are fallible: a message from a peer or a client is input,
//! and a bad field is reported by name, never unwrapped.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("failover.v1");
}

use crate::domain::{Epoch, Hrs, Step, Watermark};

/// A message field that does not hold a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {problem}")]
pub struct WireError {
    pub field: &'static str,
    pub problem: String,
}

impl From<Hrs> for v1::Hrs {
    fn from(h: Hrs) -> Self {
        v1::Hrs { height: h.height, round: h.round, step: u32::from(h.step.as_u8()) }
    }
}

impl TryFrom<v1::Hrs> for Hrs {
    type Error = WireError;
    fn try_from(h: v1::Hrs) -> Result<Self, WireError> {
        let step = u8::try_from(h.step).ok().and_then(Step::from_u8).ok_or_else(|| WireError {
            field: "hrs.step",
            problem: format!("expected 1 (propose), 2 (prevote) or 3 (precommit), found {}", h.step),
        })?;
        Ok(Hrs::new(h.height, h.round, step))
    }
}

impl From<Watermark> for v1::Watermark {
    fn from(w: Watermark) -> Self {
        v1::Watermark { hrs: Some(w.hrs.into()), epoch: w.epoch.get() }
    }
}

impl TryFrom<v1::Watermark> for Watermark {
    type Error = WireError;
    fn try_from(w: v1::Watermark) -> Result<Self, WireError> {
        let hrs = w.hrs.ok_or(WireError { field: "watermark.hrs", problem: "missing".into() })?;
        Ok(Watermark { hrs: hrs.try_into()?, epoch: Epoch::new(w.epoch) })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn watermark_round_trips_through_bytes() {
        let w = Watermark { hrs: Hrs::new(u64::MAX, 7, Step::Prevote), epoch: Epoch::new(42) };
        let bytes = v1::Watermark::from(w).encode_to_vec();
        let back = v1::Watermark::decode(bytes.as_slice()).expect("decodes what it encoded");
        assert_eq!(Watermark::try_from(back), Ok(w));
    }

    #[test]
    fn bad_step_and_missing_hrs_name_the_field() {
        let err = Hrs::try_from(v1::Hrs { height: 1, round: 0, step: 9 }).expect_err("step 9 is invalid");
        assert_eq!(err.field, "hrs.step");
        let err = Watermark::try_from(v1::Watermark { hrs: None, epoch: 1 }).expect_err("hrs is required");
        assert_eq!(err.field, "watermark.hrs");
    }
}
