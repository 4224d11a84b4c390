//! `PrivvalSigner`: answers one privval request at a time — public key, ping, sign vote, sign
//! proposal — for the node connections of this member.
//!
//! Before every new signature, in this order: the request is for our chain; the double-sign rule
//! of [`super::double_sign`] allows it; and the [`SignGate`] has reserved its HRS through the
//! coordinator (the member is active at epoch E and `reserve(E, key, hrs)` committed). Anything
//! that fails is answered with a `RemoteSignerError` and counted; nothing is signed "to see".
//! Sign bytes come from the tendermint-rs domain types, which also validate the request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tendermint_proto::v0_38::crypto::{PublicKey, public_key};
use tendermint_proto::v0_38::privval::{
    Message, PingResponse, PubKeyResponse, RemoteSignerError, SignProposalRequest, SignVoteRequest,
    SignedProposalResponse, SignedVoteResponse, message::Sum,
};

use prost::Message as _;
use tendermint_proto::v0_38::types::CanonicalVoteExtension;

use super::double_sign::{LastSignature, Verdict, judge};
use super::validator_key::ValidatorKey;
use crate::domain::{Hrs, Step};

/// `RemoteSignerError.code` values, aligned with CometBFT (the table in [`super`]).
///
/// CometBFT's own remote signer answers every refused request with code 0 and says why in the
/// description; its `privval.Errors` enum gives 1 to 5 to the node's own connection failures
/// (unexpected response, no connection, connection, read and write timeouts), which a node reports
/// as "signerEndpoint returned error #N". So failoverd answers 0 wherever CometBFT's signer
/// would refuse too, and gives "not active", which CometBFT has no word for, a code outside 0 to 5
/// that no one can take for a connection failure.
pub mod code {
    /// The request is malformed or for another chain (CometBFT: 0).
    pub const BAD_REQUEST: i32 = 0;
    /// Signing would break the double-sign rule, the watermark or the activation floor
    /// (CometBFT's FilePV refuses a conflicting or regressing request with 0 too).
    pub const REFUSED: i32 = 0;
    /// This member may not sign now: it is not the active signer, or the store did not confirm
    /// the reservation. No CometBFT equivalent; the node should ask again later.
    pub const NOT_ACTIVE: i32 = 100;
}

/// Permission for one signature: blocks until `hrs` is reserved in the store for this member's
/// key under its current epoch, or says why not.
pub trait SignGate: Send + Sync {
    fn reserve(&self, hrs: Hrs) -> Result<(), GateRefusal>;

    /// Whether this member may answer with a signature at all now (a repeat of a stored one
    /// included): a member that is not active answers every request with an error.
    fn may_sign(&self) -> bool;
}

/// How a sign request that reached the decision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignOutcome {
    /// A new signature, reserved in the store.
    Signed,
    /// The stored signature again (same HRS, only the timestamp differed).
    Repeated,
    /// At or below the last signature or the watermark: a double sign that did not happen.
    Refused,
    /// At or below the floor the guard set when this member became active: the heights around
    /// a takeover that the previous active may have signed. Expected at every promotion.
    BelowFloor,
    /// This member may not sign now; the usual answer of a standby.
    NotActive,
}

impl SignOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SignOutcome::Signed => "signed",
            SignOutcome::Repeated => "repeated",
            SignOutcome::Refused => "refused",
            SignOutcome::BelowFloor => "below_floor",
            SignOutcome::NotActive => "not_active",
        }
    }
}

/// Told of every outcome, with the HRS asked for and, for a refusal, why (metrics, events).
/// Called while the signer decides: it must not block.
pub type SignObserver = Arc<dyn Fn(SignOutcome, Hrs, &str) + Send + Sync>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateRefusal {
    /// This member is not active (or is no longer): the node must not get signatures from it.
    NotActive(String),
    /// The watermark is at or above the request: a double sign across members.
    Watermark(String),
    /// At or below the activation floor (the guard's margin above the watermark).
    BelowFloor(String),
}

pub struct PrivvalSigner<G: SignGate> {
    chain_id: String,
    key: ValidatorKey,
    gate: G,
    last: Mutex<Option<LastSignature>>,
    refusals: AtomicU64,
    signatures: AtomicU64,
    /// The height of `last`, plus one (0: nothing signed), readable without `last`'s lock,
    /// which a decision holds across its reservation: an async caller must never wait on it.
    newest_height: AtomicU64,
    observer: Option<SignObserver>,
}

fn error(code: i32, description: impl Into<String>) -> Option<RemoteSignerError> {
    Some(RemoteSignerError { code, description: description.into() })
}

/// The HRS of a vote or proposal, from its wire fields.
fn hrs_of(height: i64, round: i32, msg_type: i32) -> Result<Hrs, String> {
    let height = u64::try_from(height).map_err(|_| format!("height {height} is negative"))?;
    let round = u32::try_from(round).map_err(|_| format!("round {round} is negative"))?;
    let step = match msg_type {
        1 => Step::Prevote,
        2 => Step::Precommit,
        32 => Step::Propose,
        other => return Err(format!("message type {other} is not a prevote, precommit or proposal")),
    };
    Ok(Hrs::new(height, round, step))
}

impl<G: SignGate> PrivvalSigner<G> {
    pub fn new(chain_id: impl Into<String>, key: ValidatorKey, gate: G) -> PrivvalSigner<G> {
        PrivvalSigner {
            chain_id: chain_id.into(),
            key,
            gate,
            last: Mutex::new(None),
            refusals: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
            newest_height: AtomicU64::new(0),
            observer: None,
        }
    }

    /// Reports every outcome to `observer` as well.
    pub fn observed(mut self, observer: SignObserver) -> PrivvalSigner<G> {
        self.observer = Some(observer);
        self
    }

    fn tell(&self, outcome: SignOutcome, hrs: Hrs, why: &str) {
        if let Some(observe) = &self.observer {
            observe(outcome, hrs, why);
        }
    }

    pub fn gate(&self) -> &G {
        &self.gate
    }

    /// Runs `f` (a revocation) once no request is being decided, so that no signature can be
    /// made after it returns; gives up after `timeout` (`false`).
    pub fn quiesced(&self, timeout: std::time::Duration, f: impl FnOnce(&G)) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            match self.last.try_lock() {
                Ok(_held) => {
                    f(&self.gate);
                    return true;
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    let _held = p.into_inner();
                    f(&self.gate);
                    return true;
                }
                Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < end => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    // Revoke anyway: the request in flight re-checks the permission after its
                    // reservation, so at most that one answer can still be sent.
                    f(&self.gate);
                    return false;
                }
            }
        }
    }

    /// Requests refused so far (double signs, regressions, watermark, not active).
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// New signatures made so far.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// The height of the highest HRS this signer signed. Never blocks: safe to call from async
    /// code while a request is being decided.
    pub fn newest_signed_height(&self) -> Option<u64> {
        self.newest_height.load(Ordering::Acquire).checked_sub(1)
    }

    /// The highest HRS this signer signed. Waits while a request is being decided (which may
    /// take a store round trip): not for async code.
    pub fn last_signed(&self) -> Option<Hrs> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.hrs)
    }

    /// The answer to `request`, or `None` when it is not a request a signer answers (the
    /// connection is then closed).
    pub fn answer(&self, request: Message) -> Option<Message> {
        let sum = match request.sum? {
            Sum::PingRequest(_) => Sum::PingResponse(PingResponse {}),
            Sum::PubKeyRequest(r) => Sum::PubKeyResponse(if r.chain_id != self.chain_id {
                PubKeyResponse { pub_key: None, error: error(code::BAD_REQUEST, self.wrong_chain(&r.chain_id)) }
            } else {
                let key = PublicKey { sum: Some(public_key::Sum::Ed25519(self.key.public_key().to_vec())) };
                PubKeyResponse { pub_key: Some(key), error: None }
            }),
            Sum::SignVoteRequest(r) => Sum::SignedVoteResponse(self.sign_vote(r)),
            Sum::SignProposalRequest(r) => Sum::SignedProposalResponse(self.sign_proposal(r)),
            _ => return None,
        };
        Some(Message { sum: Some(sum) })
    }

    fn wrong_chain(&self, got: &str) -> String {
        format!("this signer serves chain \"{}\", not \"{got}\"", self.chain_id)
    }

    fn sign_vote(&self, request: SignVoteRequest) -> SignedVoteResponse {
        let refuse = |code, why: String| SignedVoteResponse { vote: None, error: error(code, why) };
        if request.chain_id != self.chain_id {
            return refuse(code::BAD_REQUEST, self.wrong_chain(&request.chain_id));
        }
        let Some(mut vote) = request.vote.clone() else {
            return refuse(code::BAD_REQUEST, "the request carries no vote".into());
        };
        let hrs = match hrs_of(vote.height, vote.round, vote.r#type) {
            Ok(h) if h.step != Step::Propose => h,
            Ok(_) => return refuse(code::BAD_REQUEST, "a vote of type proposal".into()),
            Err(e) => return refuse(code::BAD_REQUEST, e),
        };
        let domain = match tendermint::vote::SignVoteRequest::try_from(request) {
            Ok(d) => d,
            Err(e) => return refuse(code::BAD_REQUEST, format!("malformed vote: {e}")),
        };
        let mut sign_bytes = Vec::new();
        if let Err(e) = domain.to_signable_bytes(&mut sign_bytes) {
            return refuse(code::BAD_REQUEST, format!("cannot form the sign bytes: {e}"));
        }
        match self.decide(hrs, &sign_bytes) {
            Ok((signature, timestamp)) => {
                vote.signature = signature;
                if timestamp.is_some() {
                    vote.timestamp = timestamp;
                }
                // CometBFT 0.38+: a precommit for a block carries a signed vote extension (empty
                // when the chain has none). It belongs to the precommit just decided and
                // reserved; ed25519 makes a repeat produce the same signature.
                if hrs.step == Step::Precommit && vote.block_id.as_ref().is_some_and(|b| !b.hash.is_empty()) {
                    let extension = CanonicalVoteExtension {
                        extension: vote.extension.clone(),
                        height: vote.height,
                        round: i64::from(vote.round),
                        chain_id: self.chain_id.clone(),
                    };
                    vote.extension_signature = self.key.sign(&extension.encode_length_delimited_to_vec()).to_vec();
                }
                SignedVoteResponse { vote: Some(vote), error: None }
            }
            Err((code, why)) => refuse(code, why),
        }
    }

    fn sign_proposal(&self, request: SignProposalRequest) -> SignedProposalResponse {
        let refuse = |code, why: String| SignedProposalResponse { proposal: None, error: error(code, why) };
        if request.chain_id != self.chain_id {
            return refuse(code::BAD_REQUEST, self.wrong_chain(&request.chain_id));
        }
        let Some(mut proposal) = request.proposal.clone() else {
            return refuse(code::BAD_REQUEST, "the request carries no proposal".into());
        };
        let hrs = match hrs_of(proposal.height, proposal.round, proposal.r#type) {
            Ok(h) if h.step == Step::Propose => h,
            Ok(_) => return refuse(code::BAD_REQUEST, "a proposal of a vote type".into()),
            Err(e) => return refuse(code::BAD_REQUEST, e),
        };
        let domain = match tendermint::proposal::SignProposalRequest::try_from(request) {
            Ok(d) => d,
            Err(e) => return refuse(code::BAD_REQUEST, format!("malformed proposal: {e}")),
        };
        let mut sign_bytes = Vec::new();
        if let Err(e) = domain.to_signable_bytes(&mut sign_bytes) {
            return refuse(code::BAD_REQUEST, format!("cannot form the sign bytes: {e}"));
        }
        match self.decide(hrs, &sign_bytes) {
            Ok((signature, timestamp)) => {
                proposal.signature = signature;
                if timestamp.is_some() {
                    proposal.timestamp = timestamp;
                }
                SignedProposalResponse { proposal: Some(proposal), error: None }
            }
            Err((code, why)) => refuse(code, why),
        }
    }

    /// The signature for `sign_bytes` at `hrs` (and the stored timestamp when it is a repeat),
    /// or the refusal. Holds the signer's lock across the reservation: requests are answered one
    /// at a time, so two connections cannot both sign the same HRS.
    #[allow(clippy::type_complexity)]
    fn decide(
        &self,
        hrs: Hrs,
        sign_bytes: &[u8],
    ) -> Result<(Vec<u8>, Option<tendermint_proto::google::protobuf::Timestamp>), (i32, String)> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let refused = |outcome, why: String| {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            self.tell(outcome, hrs, &why);
            let code = match outcome {
                SignOutcome::Refused => {
                    tracing::warn!(%hrs, reason = %why, "signature refused");
                    code::REFUSED
                }
                SignOutcome::BelowFloor => {
                    tracing::info!(%hrs, reason = %why, "signature refused below the activation floor");
                    code::REFUSED
                }
                // A standby answers every request so: not worth a warning each time.
                _ => {
                    tracing::debug!(%hrs, reason = %why, "signature refused: not active");
                    code::NOT_ACTIVE
                }
            };
            Err((code, why))
        };
        match judge(last.as_ref(), hrs, sign_bytes) {
            Verdict::Repeat { .. } if !self.gate.may_sign() => {
                refused(SignOutcome::NotActive, "this member is not the active signer".into())
            }
            Verdict::Repeat { signature, timestamp } => {
                self.tell(SignOutcome::Repeated, hrs, "");
                Ok((signature, timestamp))
            }
            Verdict::Refuse(why) => refused(SignOutcome::Refused, why),
            Verdict::Sign => match self.gate.reserve(hrs) {
                Err(GateRefusal::NotActive(why)) => refused(SignOutcome::NotActive, why),
                Err(GateRefusal::Watermark(why)) => refused(SignOutcome::Refused, why),
                Err(GateRefusal::BelowFloor(why)) => refused(SignOutcome::BelowFloor, why),
                Ok(()) => {
                    let signature = self.key.sign(sign_bytes).to_vec();
                    *last = Some(LastSignature { hrs, sign_bytes: sign_bytes.to_vec(), signature: signature.clone() });
                    self.newest_height.store(hrs.height.saturating_add(1), Ordering::Release);
                    self.signatures.fetch_add(1, Ordering::Relaxed);
                    self.tell(SignOutcome::Signed, hrs, "");
                    Ok((signature, None))
                }
            },
        }
    }
}
