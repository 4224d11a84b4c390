//! The simulated chain used by `failoverd demo`, the tests and the chaos suite.
//!
//! - [`chain`]: one chain height for every simulated node on the machine, derived from the
//!   monotonic clock, so nodes in different processes agree without talking.
//! - [`node`]: a simulated node serving CometBFT-style JSON-RPC `/status` on loopback, which can
//!   be told to stall, fall behind or catch up, and which, while turned on over its API, appends
//!   a record to the ledger for every height it signs. Never turned on, it is a validator's sentry.
//! - [`validator`]: a validator shaped like a real one: it signs the heights its sentry reports
//!   from the moment its process starts until its process dies, with no deadline and no switch.
//! - [`privval_node`]: signer mode — the node's side of privval, asking the member's remote
//!   signer for a precommit at each height.
//! - [`jsonl`]: append-only JSON-lines files that several processes write at once.
//! - [`ledger`]: the shared, append-only signature ledger (one JSON line per signature, fsync per
//!   record).
//! - [`activation`]: the producers' activation log (when each node could sign) and the S1 checker
//!   over it.
//! - [`death_watch`]: sees from outside when a validator's process dies and records it there.
//! - [`checker`]: reads a ledger and reports every S2 violation and every gap in signed heights.
//! - [`rogue_peer`]: a hostile peer that sends forged and spoofed peer traffic.
//! - [`lab`]: a cluster of real member processes on one machine (configs, certificates, ports,
//!   starting and stopping), shared by `failoverd demo`, the integration tests and the chaos
//!   suite.
//!
//! Nothing here is used by a real deployment; it exists so that tests can prove S1 and S2 with
//! real processes, sockets and files.

pub mod activation;
pub mod chain;
pub mod checker;
pub mod death_watch;
pub mod jsonl;
pub mod lab;
pub mod ledger;
pub mod node;
pub mod privval_node;
pub mod rogue_peer;
pub mod validator;
