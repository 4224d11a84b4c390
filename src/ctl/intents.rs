//! The subcommands that record an operator's intent on the member: `promote` and `demote`
//! (a handover, see [`super::handover`]), `pause` and `resume`. Every check is the daemon's:
//! these send the request and print the answer.

use std::time::Duration;

use super::connect::Daemon;
use super::failure::Failure;
use super::handover::hand_over;
use super::output::print_json;
use crate::proto::v1::{DemoteRequest, PauseRequest, PromoteRequest};

/// `promote MEMBER [--force]`: a planned (or forced) switchover to `member`.
pub(super) async fn promote(
    d: &mut Daemon,
    member: &str,
    force: bool,
    wait: Option<Duration>,
    json: bool,
) -> Result<(), Failure> {
    let request = PromoteRequest { target: member.to_string(), force };
    let r = d.client.promote(super::connect::ask(&d.validator, request)).await.map_err(|s| d.failure(s))?.into_inner();
    hand_over(d, r, wait, json).await
}

/// `demote`: the active hands over to the best standby that can take over.
pub(super) async fn demote(d: &mut Daemon, wait: Option<Duration>, json: bool) -> Result<(), Failure> {
    let r = d
        .client
        .demote(super::connect::ask(&d.validator, DemoteRequest {}))
        .await
        .map_err(|s| d.failure(s))?
        .into_inner();
    hand_over(d, r, wait, json).await
}

/// `pause` (`paused`) or `resume`: maintenance mode on or off.
pub(super) async fn pause(d: &mut Daemon, paused: bool, json: bool) -> Result<(), Failure> {
    let r = if paused {
        d.client.pause(super::connect::ask(&d.validator, PauseRequest {})).await
    } else {
        d.client.resume(super::connect::ask(&d.validator, PauseRequest {})).await
    }
    .map_err(|s| d.failure(s))?
    .into_inner();
    if json {
        print_json(&serde_json::json!({"paused": r.paused}));
    } else if r.paused {
        println!("paused: nothing happens automatically until `failoverctl resume`");
    } else {
        println!("resumed: automatic failover is on");
    }
    Ok(())
}
