//! The embedded raft backend of the [`Coordinator`](super::Coordinator) (docs/design.md §4): the
//! daemons form the quorum themselves.
//!
//! - [`RaftCoordinator`]: the Coordinator contract over the node.
//! - [`fsm`]: the deterministic state machine (lease, epochs, watermarks, intents).
//! - [`cluster_state`]: one such state per validator, in one raft group, and batched commands.
//! - [`node`]: the task that drives raft-rs and runs the leader's expiry timer.
//! - [`expiry`]: when the leader's expiry timer is due (a new leader's grace, retries).
//! - [`refresh`]: when the leader accepts a lease refresh outside the log (signer mode).
//! - [`refresh_beat`]: when a holder of several validators' leases sends its refreshes (together, on a beat).
//! - [`refresh_link`]: refreshes between holder and leader, on one stream (or by calls).
//! - [`election_order`]: who campaigns first when the leader is lost (the lease holder).
//! - [`storage`]: the durable log on raft-engine, snapshots and compaction.
//! - [`transport`]: the tonic peer service, per-peer batching senders, mutual TLS.
//! - [`status_link`]: this member's statuses to one peer, on one stream (or by calls).
//! - [`gather`]: what one stream carries, held a moment so that messages close together share a write.
//! - [`peer_gate`]: who may speak on the peer port, and as whom (identity from certificates).
//! - [`tick_clock`]: when the node applies raft's ticks (only when one is due, caught up at each turn).
//! - [`snapshot_check`]: which snapshots from peers may be installed.
//! - [`wire_check`]: peer bytes walked against the raft schema before protobuf 2 parses them.
pub mod cluster_state;
mod coordinator;
mod election_order;
pub mod expiry;
pub mod fsm;
mod gather;
pub mod node;
pub mod peer_batch;
pub mod peer_gate;
pub mod refresh;
mod refresh_beat;
mod refresh_desk;
mod refresh_link;
mod refresh_round;
pub mod snapshot_check;
mod status_link;
pub mod storage;
mod tick_clock;
pub mod transport;
pub mod wire_check;

pub use coordinator::{RaftCoordinator, RaftOptions, StartError, raft_ids};
pub use node::NodeInfo;
