//! Generated protobuf types (proto/failover/v1) and their conversions to and from the domain
//! types. Conversions from the wire are fallible: a message from a peer or a client is input,
//! and a bad field is reported by name, never unwrapped.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("failover.v1");
}

use crate::domain::{Epoch, Hrs, MemberId, MemberKind, MemberStatus, RoleName, Step, Watermark};

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

impl From<&MemberStatus> for v1::MemberStatusMsg {
    fn from(s: &MemberStatus) -> Self {
        v1::MemberStatusMsg {
            member: s.member.to_string(),
            kind: s.kind.to_string(),
            role: s.role.to_string(),
            priority: s.priority,
            height: s.height,
            healthy: s.healthy,
            epoch: s.epoch.map(Epoch::get),
            run: 0,
            seq: 0,
            validator: String::new(),
        }
    }
}

/// A validator as peer messages name it: the empty string is the default validator, as every
/// version before `[[validators]]` meant by sending none.
pub fn validator_on_wire(text: &str) -> Result<crate::domain::ValidatorId, crate::domain::MemberIdError> {
    match text {
        "" => Ok(crate::domain::ValidatorId::default_validator()),
        named => crate::domain::ValidatorId::new(named),
    }
}

/// [`validator_on_wire`]'s inverse.
pub fn validator_to_wire(validator: &crate::domain::ValidatorId) -> String {
    if validator.is_default() { String::new() } else { validator.to_string() }
}

/// Parses a lowercase enum name the way the domain types serialise it.
fn parse_name<T: serde::de::DeserializeOwned>(field: &'static str, text: &str, expected: &str) -> Result<T, WireError> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| WireError { field, problem: format!("expected {expected}, found {text:?}") })
}

impl TryFrom<v1::MemberStatusMsg> for MemberStatus {
    type Error = WireError;
    fn try_from(m: v1::MemberStatusMsg) -> Result<Self, WireError> {
        Ok(MemberStatus {
            member: MemberId::new(m.member).map_err(|e| WireError { field: "member", problem: e.to_string() })?,
            kind: parse_name::<MemberKind>("kind", &m.kind, "producer or witness")?,
            role: parse_name::<RoleName>(
                "role",
                &m.role,
                "witness, ineligible, standby, promoting, active, demoting or fenced",
            )?,
            priority: m.priority,
            height: m.height,
            healthy: m.healthy,
            epoch: m.epoch.map(Epoch::new),
        })
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
    fn member_status_round_trips_and_bad_fields_are_named() {
        let s = MemberStatus {
            member: MemberId::new("b").expect("valid"),
            kind: MemberKind::Producer,
            role: RoleName::Standby,
            priority: 7,
            height: Some(99),
            healthy: true,
            epoch: None,
        };
        let msg = v1::MemberStatusMsg::from(&s);
        assert_eq!(MemberStatus::try_from(msg.clone()), Ok(s));
        let bad = v1::MemberStatusMsg { role: "boss".into(), ..msg.clone() };
        assert_eq!(MemberStatus::try_from(bad).map_err(|e| e.field), Err("role"));
        let bad = v1::MemberStatusMsg { member: "a b".into(), ..msg };
        assert_eq!(MemberStatus::try_from(bad).map_err(|e| e.field), Err("member"));
    }

    #[test]
    fn bad_step_and_missing_hrs_name_the_field() {
        let err = Hrs::try_from(v1::Hrs { height: 1, round: 0, step: 9 }).expect_err("step 9 is invalid");
        assert_eq!(err.field, "hrs.step");
        let err = Watermark::try_from(v1::Watermark { hrs: None, epoch: 1 }).expect_err("hrs is required");
        assert_eq!(err.field, "watermark.hrs");
    }
}
