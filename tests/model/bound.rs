//! How far the checker explores: members, lease grants, heights and window sizes. The default
//! keeps a debug-build run of `cargo test --test model_check` under about a minute on two cores;
//! `FAILOVERD_MODEL_BOUND=large` selects a bigger one for a manual run.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub name: &'static str,
    pub members: u8,
    /// Lease grants: an Acquire that would make the epoch exceed this is never applied.
    pub epochs: u8,
    /// No window reaches above this height.
    pub heights: u8,
    /// The sizes a member may choose for its next window.
    pub windows: &'static [u8],
}

/// About 519,000 states, 15 s of checking in a debug build on two cores.
pub const DEFAULT: Bound = Bound { name: "default", members: 2, epochs: 3, heights: 4, windows: &[1, 2] };
/// A third member: about 4.8 million states, 4.5 minutes and 0.7 GB in a debug build.
pub const LARGE: Bound = Bound { name: "large", members: 3, epochs: 3, heights: 4, windows: &[1, 2] };

/// The variable that selects the bound.
pub const ENV: &str = "FAILOVERD_MODEL_BOUND";

impl Bound {
    /// The bound `FAILOVERD_MODEL_BOUND` names: unset or `default`, or `large`.
    pub fn from_env() -> Bound {
        match std::env::var(ENV).as_deref() {
            Err(_) | Ok("") | Ok("default") => DEFAULT,
            Ok("large") => LARGE,
            Ok(other) => panic!("{ENV}={other} names no bound; use default or large"),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<String> = self.windows.iter().map(u8::to_string).collect();
        write!(
            f,
            "{} bound: {} members, up to {} lease grants, heights 1 to {}, windows of {} heights",
            self.name,
            self.members,
            self.epochs,
            self.heights,
            sizes.join(" or ")
        )
    }
}
