//! The keeper: a small process whose fate is not the daemon's, holding the node a producer runs
//! or controls and the deadline of its right to sign (docs/design.md §6, "Self-fencing").
//!
//! A frozen daemon freezes its deadline thread with it, and `PR_SET_PDEATHSIG` fires on death,
//! not on a stop; a node behind a forking start script outlives a signal to its direct child.
//! So activation first starts a keeper — `failoverd keeper`, in its own session and process
//! group, with no async runtime and nothing allocated in its loop — that starts the node in a
//! process group of its own (or holds a systemd unit, or an operator's `fence_command`). The
//! daemon moves the deadline after each committed renew over the keeper's stdin. At the deadline
//! (`CLOCK_BOOTTIME`, so a suspended host counts), when the daemon's end of the pipe closes, or
//! when asked, the keeper kills the node's whole group (or the unit, or runs the fence command),
//! removes the key file where there is one, and reports what it did on its stdout.
//!
//! The keeper never starts production on its own and never extends its own deadline: it only
//! stops things. The daemon side ([`handle`]) turns its reports into [`crate::fence_notice`]s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod group;
pub mod handle;
pub mod message;
pub mod process;
pub mod program;

pub use handle::{Keeper, KeeperError, KeeperLauncher};
pub use program::KeeperProgram;

/// What the keeper holds and must stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// Start this command as the node, in a new process group; fencing kills the whole group.
    Group { argv: Vec<String> },
    /// A node run as a systemd unit: fencing runs `<systemctl> kill --signal=SIGKILL <unit>`.
    Unit { systemctl: Vec<String>, unit: String },
    /// A node this machine cannot signal (an API-driven producer): fencing runs the operator's
    /// `fence_command`, which must kill the node.
    FenceCommand { argv: Vec<String> },
}

/// Everything the keeper is told at start, as one JSON argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeeperSpec {
    pub target: Target,
    /// Removed on a fence, so a node started later cannot find it.
    pub key_file: Option<PathBuf>,
    /// The end of the right to sign, on `CLOCK_BOOTTIME` (see [`crate::domain::MonoTime`]).
    pub until_ns: u64,
    /// How long a fence may take to confirm before it is reported as failed (and retried).
    pub fence_timeout_ms: u64,
    /// Where the node's process group is recorded while it runs, so that a later start-up can
    /// find and stop it (and any orphan of it) if both daemon and keeper died.
    pub record: Option<PathBuf>,
}

/// The `failoverd` binary beside this test executable (`target/<profile>/failoverd`), which a
/// full `cargo test` builds before running anything: unit tests of producers that start keepers.
#[cfg(test)]
pub(crate) fn test_launcher() -> KeeperLauncher {
    let exe = std::env::current_exe().expect("the test executable's path");
    let program = exe.parent().and_then(|deps| deps.parent()).map(|dir| dir.join("failoverd")).expect("target dir");
    assert!(
        program.exists(),
        "{} is missing: run `cargo test` (which builds it) or `cargo build --bin failoverd` first",
        program.display()
    );
    KeeperLauncher { program: KeeperProgram::at(program), notices: crate::fence_notice::FenceNotices::unread() }
}
