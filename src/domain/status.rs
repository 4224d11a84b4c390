//! What members publish about themselves for the cluster's view. Advisory data: it never
//! grants or revokes anything.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Epoch, MemberId, MemberKind};

/// A member's role, as published to the cluster and shown by `failoverctl status`.
/// The decision logic's richer state lives in `role::RoleState`; this is its public name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Witness,
    Ineligible,
    Standby,
    Promoting,
    Active,
    Demoting,
    Fenced,
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleName::Witness => "witness",
            RoleName::Ineligible => "ineligible",
            RoleName::Standby => "standby",
            RoleName::Promoting => "promoting",
            RoleName::Active => "active",
            RoleName::Demoting => "demoting",
            RoleName::Fenced => "fenced",
        })
    }
}

/// What each member publishes about itself (docs/design.md §4 `publish_status`), so that every
/// member can compute consensus lag and find candidates. Not part of the raft log: it is
/// advisory, and a stale entry is treated as unknown, never as healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub member: MemberId,
    pub kind: MemberKind,
    pub role: RoleName,
    pub priority: u32,
    /// The local node's height at its last probe, if a probe has succeeded.
    pub height: Option<u64>,
    /// The member's own verdict on its node (docs/design.md §7).
    pub healthy: bool,
    /// The epoch the member holds the lease at, when it does.
    pub epoch: Option<Epoch>,
}
