//! One lab: a failoverd cluster of real processes on one machine, shared by `failoverd demo`,
//! the integration tests (`tests/common/lab.rs`) and the chaos suite (`chaos/lab.rs`).
//!
//! It owns what every lab does alike: picking loopback ports ([`ports`]), writing the cluster's
//! certificates ([`certificates`]) and each member's config ([`config`]: members, store, timings,
//! TLS, simulated chain, producer), building a real-shaped validator's command line
//! ([`validator`]), starting simulated nodes and talking to them ([`node`]), starting and stopping
//! member processes ([`processes`]), and asking a member over its control socket ([`control`]).
//! With a WAN setting ([`wan`]), members reach each other through delay proxies
//! ([`delay_proxy`]) that add a round-trip time and jitter to every link.
//!
//! Each lab keeps its own extras on top: the tests' fault helpers and waits, the chaos suite's
//! namespaces, network faults, rogue peer and supervisor, the demo's fault schedule and timeline.
//!
//! It must never judge a run (the ledger checker, the activation log and the labs' verdicts do)
//! and never believe a daemon about its own processes: whether a validator runs is read from
//! `/proc`. Nothing here is used by a real deployment.

pub mod certificates;
pub mod config;
pub mod control;
pub mod delay_proxy;
pub mod node;
pub mod ports;
pub mod processes;
pub mod procs;
pub mod validator;
pub mod wan;

pub use config::{Chain, MemberConfig, Metrics, Peer, Producer, SimChain, Store, Timings, split_validator_tables};
pub use ports::unused_port;
pub use processes::{LogFile, Processes, daemon_command, kill_strays, process_alive};
pub use validator::{ValidatorCommand, ValidatorKind};

/// What went wrong building or running a lab, and to what.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what} of member {member}: {source}")]
    Spawn {
        what: &'static str,
        member: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free port on 127.0.0.1 between 20000 and 32000: {0}; stop whatever holds them and try again")]
    NoPort(#[source] std::io::Error),
    #[error("cannot write the lab's certificates into {}: {reason}", dir.display())]
    Certificates { dir: std::path::PathBuf, reason: String },
    #[error("the simulated node of {member} did not announce its address: {reason}")]
    NodeAddress { member: String, reason: String },
    #[error("the delay proxy to {upstream} did not announce its address: {reason}")]
    ProxyAddress { upstream: std::net::SocketAddr, reason: String },
}

impl LabError {
    /// An I/O failure doing `what` to `path`.
    pub fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.to_path_buf();
        move |source| LabError::Io { what, path, source }
    }
}
