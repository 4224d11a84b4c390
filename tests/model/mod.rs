//! The model of signer mode's lease + reservation protocol that `tests/model_check.rs` checks;
//! see that file's documentation for what is modelled, what is abstracted, and why.

pub mod bound;
pub mod protocol;
pub mod state;
pub mod store;
