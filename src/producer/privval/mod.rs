//! CometBFT remote signing (privval) for the `cometbft-signer` producer (issue 10, docs/design.md §8):
//! the frame codec, the validator key, the per-signature double-sign rule, the typed refusals
//! ([`refusal`]), the signer's fsynced record of its last signature ([`sign_state`]) and the
//! request answering behind a [`signer::SignGate`] that signs only inside windows of heights
//! reserved through the coordinator ([`window`]).
//!
//! Nothing here decides who is active: the gate says whether this member may sign now. Nothing
//! here logs or returns the key's secret.
//!
//! # As a CometBFT node expects
//!
//! The node listens and pings its signer every two thirds of its 5 s read/write timeout (about
//! 3.3 s); the signer waits up to [`connection::NODE_SILENCE_LIMIT`] for a request, so an idle
//! link is kept, and a longer silence is logged as information, not as a bad frame.
//!
//! Every refusal is a `RemoteSignerError` inside the response to the request; the node logs it
//! as "signerEndpoint returned error #code: description" and goes on. Codes
//! ([`signer::code`]):
//!
//! | situation | CometBFT's own signer | failoverd |
//! |---|---|---|
//! | request for another chain id | 0, "unable to serve request" | 0 ([`signer::code::BAD_REQUEST`]), naming both chain ids |
//! | malformed vote or proposal (missing, wrong type, bad fields) | 0, the validation error | 0 ([`signer::code::BAD_REQUEST`]) |
//! | conflicting data at the signed HRS, or below it (double-sign rule) | 0, FilePV's error | 0 ([`signer::code::REFUSED`]) |
//! | at or below the watermark or the activation floor | (none) | 0 ([`signer::code::REFUSED`]) |
//! | this member is not the active signer, or the store did not confirm the reservation | (none) | 100 ([`signer::code::NOT_ACTIVE`]) |
//! | node side: unexpected response, no connection, connection, read, write timeout | `privval.Errors` 1 to 5, never sent by a signer | never sent |
//!
//! The description always says what happened; the code only sorts it. A member that may not
//! sign holds no connection to a node ([`dialer`]), and a request that reaches one anyway is not
//! answered: the connection closes, so that the node retries with its next signer.

pub mod connection;
pub mod coordinator_gate;
pub mod dialer;
pub mod double_sign;
pub mod frame;
pub mod refusal;
pub mod sign_request;
pub mod sign_state;
pub mod signer;
pub mod validator_key;
pub mod window;
