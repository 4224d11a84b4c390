//! `PrivvalSigner`: answers one privval request at a time — public key, ping, sign vote, sign
//! proposal — for the node connections of this member.
//!
//! Votes and proposals take one path, [`PrivvalSigner::sign`] over a [`SignRequest`]: before
//! every new signature, in this order, the request is for our chain and well formed; the
//! double-sign rule of [`super::double_sign`] allows it; and the [`SignGate`] says its HRS lies in
//! a window reserved through the coordinator (the member is active at epoch E and `reserve(E,
//! key, end_of_height(top))` committed for a top at or above its height). When the signer is
//! persisted, the signature is recorded in its state file ([`super::sign_state`]) before it
//! leaves. Anything that fails is a typed [`Refusal`], answered with a `RemoteSignerError`
//! and counted; nothing is signed "to see".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tendermint_proto::v0_38::crypto::{PublicKey, public_key};
use tendermint_proto::v0_38::privval::{Message, PingResponse, PubKeyResponse, RemoteSignerError, message::Sum};

use super::double_sign::{LastSignature, Verdict, judge};
pub use super::refusal::{GateRefusal, Refusal};
use super::sign_request::{SignRequest, Signed};
use super::sign_state::{SignStateError, SignStateFile};
use super::validator_key::ValidatorKey;
use crate::domain::Hrs;

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

/// Permission for one signature: returns once `hrs` lies in a window reserved in the store for
/// this member's key under its current epoch (blocking only when it must wait for one), or says
/// why not.
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

/// What this signer signed last, and the file that remembers it across restarts.
struct Record {
    last: Option<LastSignature>,
    file: Option<SignStateFile>,
}

pub struct PrivvalSigner<G: SignGate> {
    chain_id: String,
    key: ValidatorKey,
    gate: G,
    last: Mutex<Record>,
    refusals: AtomicU64,
    signatures: AtomicU64,
    /// The height of `last`, plus one (0: nothing signed), readable without `last`'s lock,
    /// which a decision holds across its reservation: an async caller must never wait on it.
    newest_height: AtomicU64,
    /// Answers decided and not yet written to their connection: a planned handover that closed
    /// the connection in between would drop a signature its window counted as given.
    answering: AtomicU64,
    observer: Option<SignObserver>,
}

impl<G: SignGate> PrivvalSigner<G> {
    pub fn new(chain_id: impl Into<String>, key: ValidatorKey, gate: G) -> PrivvalSigner<G> {
        PrivvalSigner {
            chain_id: chain_id.into(),
            key,
            gate,
            last: Mutex::new(Record { last: None, file: None }),
            refusals: AtomicU64::new(0),
            signatures: AtomicU64::new(0),
            newest_height: AtomicU64::new(0),
            answering: AtomicU64::new(0),
            observer: None,
        }
    }

    /// Remembers every signature in the state file at `path` before it leaves, and starts from
    /// the signature recorded there: after a restart the double-sign rule still knows what was
    /// signed. Refuses a damaged file.
    pub fn persisted(self, path: &std::path::Path) -> Result<PrivvalSigner<G>, SignStateError> {
        let (file, last) = SignStateFile::open(path)?;
        if let Some(l) = &last {
            self.newest_height.store(l.hrs.height.saturating_add(1), Ordering::Release);
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Record { last, file: Some(file) };
        Ok(self)
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

    /// A connection is about to decide and write an answer; [`Self::answered`] when it is out.
    pub fn answering(&self) {
        self.answering.fetch_add(1, Ordering::AcqRel);
    }

    /// The answer [`Self::answering`] announced is written (or its connection failed).
    pub fn answered(&self) {
        self.answering.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether no answer is between its decision and its connection. Never blocks.
    pub fn no_answer_in_flight(&self) -> bool {
        self.answering.load(Ordering::Acquire) == 0
    }

    /// The height of the highest HRS this signer signed. Never blocks: safe to call from async
    /// code while a request is being decided.
    pub fn newest_signed_height(&self) -> Option<u64> {
        self.newest_height.load(Ordering::Acquire).checked_sub(1)
    }

    /// The highest HRS this signer signed. Waits while a request is being decided (which may
    /// take a store round trip): not for async code.
    pub fn last_signed(&self) -> Option<Hrs> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).last.as_ref().map(|l| l.hrs)
    }

    /// The answer to `request`, or `None` when it is not a request a signer answers (the
    /// connection is then closed).
    pub fn answer(&self, request: Message) -> Option<Message> {
        let sum = match request.sum? {
            Sum::PingRequest(_) => Sum::PingResponse(PingResponse {}),
            Sum::PubKeyRequest(r) => Sum::PubKeyResponse(if r.chain_id != self.chain_id {
                PubKeyResponse { pub_key: None, error: Some(self.wrong_chain(&r.chain_id).into()) }
            } else {
                let key = PublicKey { sum: Some(public_key::Sum::Ed25519(self.key.public_key().to_vec())) };
                PubKeyResponse { pub_key: Some(key), error: None }
            }),
            Sum::SignVoteRequest(r) => Sum::SignedVoteResponse(self.sign(r)),
            Sum::SignProposalRequest(r) => Sum::SignedProposalResponse(self.sign(r)),
            _ => return None,
        };
        Some(Message { sum: Some(sum) })
    }

    fn wrong_chain(&self, asked: &str) -> Refusal {
        Refusal::WrongChain { served: self.chain_id.clone(), asked: asked.to_string() }
    }

    /// Answers a request to sign a vote or a proposal: the signed message, or the refusal with
    /// its code and description.
    pub fn sign<R: SignRequest>(&self, request: R) -> R::Response {
        match self.try_sign(request) {
            Ok(response) => response,
            Err(refusal) => R::refused(refusal.into()),
        }
    }

    /// The one signing path: our chain, a well-formed message, then [`Self::decide`].
    fn try_sign<R: SignRequest>(&self, request: R) -> Result<R::Response, Refusal> {
        if request.chain_id() != self.chain_id {
            return Err(self.wrong_chain(request.chain_id()));
        }
        let (message, hrs) = request.message()?;
        let sign_bytes = request.sign_bytes()?;
        let signed = self.decide(hrs, &sign_bytes)?;
        Ok(R::signed(message, signed, &self.key, &self.chain_id))
    }

    /// The signature for `sign_bytes` at `hrs` (with the stored timestamp when it is a repeat),
    /// or the refusal: the double-sign rule first, then the reservation, then the signature.
    /// Holds the signer's lock across the reservation: requests are answered one at a time, so
    /// two connections cannot both sign the same HRS.
    fn decide(&self, hrs: Hrs, sign_bytes: &[u8]) -> Result<Signed, Refusal> {
        let mut record = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let decided = match judge(record.last.as_ref(), hrs, sign_bytes) {
            Verdict::Repeat { .. } if !self.gate.may_sign() => Err(GateRefusal::NotActive.into()),
            Verdict::Repeat { signature, timestamp } => {
                self.tell(SignOutcome::Repeated, hrs, "");
                Ok(Signed { signature, timestamp })
            }
            Verdict::Refuse(kind) => Err(kind.into()),
            Verdict::Sign => match self.gate.reserve(hrs) {
                Err(refusal) => Err(refusal.into()),
                Ok(()) => self.sign_new(&mut record, hrs, sign_bytes),
            },
        };
        decided.map_err(|refusal| self.refused(hrs, refusal))
    }

    /// Signs `sign_bytes`, records the signature (durably, when persisted) and only then hands
    /// it out: a signature the state file does not hold is never sent.
    fn sign_new(&self, record: &mut Record, hrs: Hrs, sign_bytes: &[u8]) -> Result<Signed, Refusal> {
        let signature = self.key.sign(sign_bytes).to_vec();
        let last = LastSignature { hrs, sign_bytes: sign_bytes.to_vec(), signature: signature.clone() };
        if let Some(file) = record.file.as_mut() {
            file.store(&last).map_err(|e| Refusal::Unrecorded(e.to_string()))?;
        }
        record.last = Some(last);
        self.newest_height.store(hrs.height.saturating_add(1), Ordering::Release);
        self.signatures.fetch_add(1, Ordering::Relaxed);
        self.tell(SignOutcome::Signed, hrs, "");
        Ok(Signed { signature, timestamp: None })
    }

    /// Counts and reports a refusal made at the decision, and hands it back.
    fn refused(&self, hrs: Hrs, refusal: Refusal) -> Refusal {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        let why = refusal.to_string();
        let outcome = refusal.outcome().unwrap_or(SignOutcome::Refused);
        self.tell(outcome, hrs, &why);
        match outcome {
            SignOutcome::BelowFloor => {
                tracing::info!(%hrs, reason = %why, "signature refused below the activation floor")
            }
            // A standby answers every request so: not worth a warning each time.
            SignOutcome::NotActive => tracing::debug!(%hrs, reason = %why, "signature refused: not active"),
            _ => tracing::warn!(%hrs, reason = %why, "signature refused"),
        }
        refusal
    }
}

impl From<Refusal> for RemoteSignerError {
    fn from(refusal: Refusal) -> RemoteSignerError {
        RemoteSignerError { code: refusal.code(), description: refusal.to_string() }
    }
}
