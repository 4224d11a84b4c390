//! A member status a peer publishes (`MemberStatusMsg`), as the peer service reads it: the
//! validator it is about, then the status itself. Properties: a refusal names the field; an
//! accepted status goes back on the wire and reads back the same, for the same validator.
#![no_main]

use failover::domain::MemberStatus;
use failover::proto::v1::MemberStatusMsg;
use failover::proto::{validator_on_wire, validator_to_wire};
use failover_fuzz::assert_readable;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = MemberStatusMsg::decode(data) else { return };
    let validator = match validator_on_wire(&msg.validator) {
        Err(e) => return assert_readable(&e.to_string(), "a status's validator"),
        Ok(v) => v,
    };
    assert_eq!(validator_on_wire(&validator_to_wire(&validator)).as_ref(), Ok(&validator));
    match MemberStatus::try_from(msg) {
        Err(e) => {
            assert!(!e.field.is_empty(), "a status refusal names no field");
            assert_readable(&e.to_string(), "a status refusal");
        }
        Ok(status) => {
            let bytes = MemberStatusMsg::from(&status).encode_to_vec();
            let back = MemberStatusMsg::decode(bytes.as_slice()).expect("its own encoding decodes");
            assert_eq!(MemberStatus::try_from(back).as_ref(), Ok(&status), "a status changes on the wire");
        }
    }
});
