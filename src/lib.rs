//! failoverd keeps exactly one block producer active across regions, fails over when the active
//! one breaks, and makes double-signing impossible (docs/design.md §1).
//!
//! Crate map:
//! - [`domain`]: the words of the design as plain data (member, epoch, HRS, watermark, lease).
//! - [`config`]: the TOML schema, defaults and validation.
//! - [`health`] and [`role`]: pure decisions — probe history to a verdict, observation to
//!   actions. No I/O, no clock reads.
//! - [`coord`]: the coordination store's contract ([`coord::Coordinator`]).
//! - [`chain`]: probing nodes ([`chain::ChainProbe`]).
//! - [`producer`]: turning production on and off ([`producer::Producer`]).
//! - [`daemon`]: the member: its listeners, parts, decision loop and the executor of its
//!   actions, in the order of effects its doc writes down.
//! - [`keeper`]: the process outside the daemon that kills a node whose daemon froze.
//! - [`fence_notice`]: how a fence done outside the decision loop reaches it.
//! - [`sim`]: the simulated chain, its signature ledger and the S2 checker, and the lab
//!   ([`sim::lab`]) of real member processes that `failoverd demo`, the tests and chaos share.
//! - [`http`]: the one way to build an HTTP client (rustls + ring, deadlines).
//! - [`proto`]: generated protobuf types and their conversions.
//! - [`signal`]: the one place that waits for SIGTERM/SIGINT.
//! - [`panic_hook`]: a panic fences the producer and ends the process.
//! - [`telemetry`]: metrics, health endpoints, systemd notifications and event webhooks.
//! - [`link_watch`]: the kernel's watch that closes a silently cut member link.
//! - [`tls`]: the identity (member or operator) a peer's certificate names.
//! - [`cli`]: the `failoverd` subcommands behind the thin binaries.
//! - [`watchdog_device`]: the optional Linux watchdog device, armed while holding the lease.

#![deny(unsafe_code)]

pub mod api;
pub mod chain;
pub mod cli;
pub mod config;
pub mod coord;
pub mod ctl;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod events;
pub mod fence_notice;
pub mod guard;
pub mod health;
pub mod http;
pub mod keeper;
pub mod kernel_timer;
pub mod link_watch;
pub mod operator_command;
pub mod panic_hook;
pub mod producer;
pub mod proto;
pub mod role;
pub mod signal;
pub mod sim;
pub mod telemetry;
pub mod tls;
pub mod watchdog_device;
