//! The embedded raft backend of the [`Coordinator`](super::Coordinator) (DESIGN.md §4): the
//! daemons form the quorum themselves.
//!
//! - [`fsm`]: the deterministic state machine (lease, epochs, watermarks, intents).
//! - [`storage`]: the durable log on raft-engine, snapshots and compaction.
pub mod fsm;
pub mod storage;
