//! What differs between signing a vote and signing a proposal: where the message sits in the
//! request, which steps it may have, and what goes back with the signature. The one signing
//! path, [`super::signer::PrivvalSigner`]'s `sign`, is generic over [`SignRequest`].
//!
//! Never signs and never decides: it reads requests and builds responses. Sign bytes come from
//! the tendermint-rs domain types, which also validate the request.

use prost::Message as _;
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{
    RemoteSignerError, SignProposalRequest, SignVoteRequest, SignedProposalResponse, SignedVoteResponse,
};
use tendermint_proto::v0_38::types::{CanonicalVoteExtension, Proposal, Vote};

use super::refusal::Refusal;
use super::validator_key::ValidatorKey;
use crate::domain::{Hrs, Step};

/// The signature the signer decided on, and the stored timestamp when it repeats a signature
/// whose message differed only in its timestamp (the signature covers the stored one).
pub struct Signed {
    pub signature: Vec<u8>,
    pub timestamp: Option<Timestamp>,
}

/// A request to sign one consensus message.
pub trait SignRequest: Sized {
    /// The message that is signed and sent back.
    type Message;
    type Response;

    /// The chain the request is for.
    fn chain_id(&self) -> &str;

    /// The message to sign and its HRS, or why the request is malformed.
    fn message(&self) -> Result<(Self::Message, Hrs), Refusal>;

    /// The canonical bytes to sign, or why tendermint-rs refuses the request.
    fn sign_bytes(self) -> Result<Vec<u8>, Refusal>;

    /// The response carrying `message` signed; `key` and `chain_id` sign what goes with it.
    fn signed(message: Self::Message, signed: Signed, key: &ValidatorKey, chain_id: &str) -> Self::Response;

    /// The response carrying a refusal.
    fn refused(error: RemoteSignerError) -> Self::Response;
}

/// The HRS of a vote or proposal, from its wire fields.
fn hrs_of(height: i64, round: i32, msg_type: i32) -> Result<Hrs, Refusal> {
    let malformed = Refusal::Malformed;
    let height = u64::try_from(height).map_err(|_| malformed(format!("height {height} is negative")))?;
    let round = u32::try_from(round).map_err(|_| malformed(format!("round {round} is negative")))?;
    let step = match msg_type {
        1 => Step::Prevote,
        2 => Step::Precommit,
        32 => Step::Propose,
        other => return Err(malformed(format!("message type {other} is not a prevote, precommit or proposal"))),
    };
    Ok(Hrs::new(height, round, step))
}

/// The sign bytes `form` writes (tendermint-rs's `to_signable_bytes`).
fn encoded<E: std::fmt::Display>(form: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>) -> Result<Vec<u8>, Refusal> {
    let mut sign_bytes = Vec::new();
    form(&mut sign_bytes).map_err(|e| Refusal::Malformed(format!("cannot form the sign bytes: {e}")))?;
    Ok(sign_bytes)
}

impl SignRequest for SignVoteRequest {
    type Message = Vote;
    type Response = SignedVoteResponse;

    fn chain_id(&self) -> &str {
        &self.chain_id
    }

    fn message(&self) -> Result<(Vote, Hrs), Refusal> {
        let vote = self.vote.clone().ok_or_else(|| Refusal::Malformed("the request carries no vote".into()))?;
        match hrs_of(vote.height, vote.round, vote.r#type)? {
            hrs if hrs.step != Step::Propose => Ok((vote, hrs)),
            _ => Err(Refusal::Malformed("a vote of type proposal".into())),
        }
    }

    fn sign_bytes(self) -> Result<Vec<u8>, Refusal> {
        let domain = tendermint::vote::SignVoteRequest::try_from(self)
            .map_err(|e| Refusal::Malformed(format!("malformed vote: {e}")))?;
        encoded(|bytes| domain.to_signable_bytes(bytes))
    }

    fn signed(mut vote: Vote, signed: Signed, key: &ValidatorKey, chain_id: &str) -> SignedVoteResponse {
        vote.signature = signed.signature;
        if signed.timestamp.is_some() {
            vote.timestamp = signed.timestamp;
        }
        // CometBFT 0.38+: a precommit for a block carries a signed vote extension (empty when
        // the chain has none). It belongs to the precommit just decided and reserved; ed25519
        // makes a repeat produce the same signature.
        let precommit = vote.r#type == 2; // as `hrs_of` reads the type
        if precommit && vote.block_id.as_ref().is_some_and(|b| !b.hash.is_empty()) {
            let extension = CanonicalVoteExtension {
                extension: vote.extension.clone(),
                height: vote.height,
                round: i64::from(vote.round),
                chain_id: chain_id.to_string(),
            };
            vote.extension_signature = key.sign(&extension.encode_length_delimited_to_vec()).to_vec();
        }
        SignedVoteResponse { vote: Some(vote), error: None }
    }

    fn refused(error: RemoteSignerError) -> SignedVoteResponse {
        SignedVoteResponse { vote: None, error: Some(error) }
    }
}

impl SignRequest for SignProposalRequest {
    type Message = Proposal;
    type Response = SignedProposalResponse;

    fn chain_id(&self) -> &str {
        &self.chain_id
    }

    fn message(&self) -> Result<(Proposal, Hrs), Refusal> {
        let proposal =
            self.proposal.clone().ok_or_else(|| Refusal::Malformed("the request carries no proposal".into()))?;
        match hrs_of(proposal.height, proposal.round, proposal.r#type)? {
            hrs if hrs.step == Step::Propose => Ok((proposal, hrs)),
            _ => Err(Refusal::Malformed("a proposal of a vote type".into())),
        }
    }

    fn sign_bytes(self) -> Result<Vec<u8>, Refusal> {
        let domain = tendermint::proposal::SignProposalRequest::try_from(self)
            .map_err(|e| Refusal::Malformed(format!("malformed proposal: {e}")))?;
        encoded(|bytes| domain.to_signable_bytes(bytes))
    }

    fn signed(mut proposal: Proposal, signed: Signed, _key: &ValidatorKey, _chain_id: &str) -> SignedProposalResponse {
        proposal.signature = signed.signature;
        if signed.timestamp.is_some() {
            proposal.timestamp = signed.timestamp;
        }
        SignedProposalResponse { proposal: Some(proposal), error: None }
    }

    fn refused(error: RemoteSignerError) -> SignedProposalResponse {
        SignedProposalResponse { proposal: None, error: Some(error) }
    }
}
