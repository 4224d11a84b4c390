//! Whole privval conversations from a node: frames decoded one after another, each request
//! answered by a real `PrivvalSigner` (a gate that always grants, so that only the signer's own
//! rules stand between a request and a signature). Properties, whatever the node sends: every
//! new signature is at a strictly higher HRS than the one before (S2), a repeat is only ever of
//! the last one, a request for another chain is never signed, and every answer frames and
//! decodes back to itself.
#![no_main]

use std::sync::{Arc, Mutex};

use failover::domain::Hrs;
use failover::producer::privval::frame;
use failover::producer::privval::signer::{GateRefusal, PrivvalSigner, SignGate, SignOutcome};
use failover::producer::privval::validator_key::ValidatorKey;
use libfuzzer_sys::fuzz_target;
use tendermint_proto::v0_38::privval::message::Sum;

/// The chain the seeds' requests are for.
const CHAIN: &str = "fuzz-chain";

/// Grants every reservation: the fuzzer then tests the signer, not the coordinator.
struct Granted;

impl SignGate for Granted {
    fn reserve(&self, _: Hrs) -> Result<(), GateRefusal> {
        Ok(())
    }
    fn may_sign(&self) -> bool {
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let key = ValidatorKey::parse(ValidatorKey::file_for_seed([7; 32]).as_bytes()).expect("a key");
    let outcomes: Arc<Mutex<Vec<(SignOutcome, Hrs)>>> = Arc::default();
    let seen = outcomes.clone();
    let signer = PrivvalSigner::new(CHAIN, key, Granted)
        .observed(Arc::new(move |o, hrs, _| seen.lock().expect("lock").push((o, hrs))));
    let mut rest = data;
    while let Ok(Some((request, used))) = frame::decode(rest) {
        assert!(used > 0 && used <= rest.len(), "a frame of {used} bytes in {}", rest.len());
        rest = &rest[used..];
        let other_chain = match &request.sum {
            Some(Sum::SignVoteRequest(r)) => r.chain_id != CHAIN,
            Some(Sum::SignProposalRequest(r)) => r.chain_id != CHAIN,
            _ => false,
        };
        let before = outcomes.lock().expect("lock").len();
        let Some(answer) = signer.answer(request) else { break };
        if other_chain {
            assert_eq!(outcomes.lock().expect("lock").len(), before, "a request for another chain reached a decision");
        }
        let framed = frame::encode(&answer);
        let (back, used) = frame::decode(&framed).expect("our answer decodes").expect("a whole frame");
        assert_eq!((back, used), (answer, framed.len()), "an answer changes through its frame");
    }
    let mut last: Option<Hrs> = None;
    for (outcome, hrs) in outcomes.lock().expect("lock").iter() {
        match outcome {
            SignOutcome::Signed => {
                assert!(last.is_none_or(|l| hrs > &l), "signed {hrs} after {last:?}: a double sign");
                last = Some(*hrs);
            }
            SignOutcome::Repeated => assert_eq!(Some(*hrs), last, "repeated a signature that was not the last"),
            _ => {}
        }
    }
});
