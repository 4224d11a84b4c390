//! CometBFT remote signing (privval) for the `cometbft-signer` producer (issue 10, docs/design.md §8):
//! the frame codec, the validator key, the per-signature double-sign rule and the request
//! answering behind a [`signer::SignGate`] that reserves every new HRS through the coordinator.
//!
//! Nothing here decides who is active: the gate says whether this member may sign now. Nothing
//! here logs or returns the key's secret.

pub mod connection;
pub mod coordinator_gate;
pub mod double_sign;
pub mod frame;
pub mod signer;
pub mod validator_key;
