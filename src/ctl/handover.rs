//! A handover started by `promote` or `demote`: what it started, and with `--wait`, polling
//! the member until the target is active at a newer epoch, the lease went elsewhere, or the
//! wait ended. It reads the member's view only; every decision about the handover is the
//! daemons'.

use std::time::Duration;

use serde_json::json;

use super::connect::Daemon;
use super::failure::{EXIT_REFUSED, EXIT_UNFINISHED, Failure};
use super::output::{print_json, reachable, unreachable_text};
use crate::proto::v1::{LeaseState, MemberRow, MembersRequest, PromoteReply, StatusRequest};

/// How a handover that failoverctl waited for ended.
#[derive(Debug, Clone, PartialEq)]
enum Handover {
    /// The target holds the lease at `epoch` and publishes itself active.
    Finished { holder: String, epoch: u64 },
    /// The lease moved on without the target becoming active: why, in words.
    Failed(String),
    /// Neither within the wait: where it stands, in words.
    TimedOut(String),
}

/// Prints what a promote or demote started; with `wait`, waits at most that long for the
/// handover to finish or fail and prints how it ended (a failure or a timeout exits 1).
pub(super) async fn hand_over(
    d: &mut Daemon,
    r: PromoteReply,
    wait: Option<Duration>,
    json: bool,
) -> Result<(), Failure> {
    let started = json!({"target": r.target, "epoch": r.epoch, "message": r.message});
    let Some(limit) = wait else {
        if json {
            print_json(&started);
        } else {
            println!("{} (target {}, epoch {})", r.message, r.target, r.epoch);
        }
        return Ok(());
    };
    if !json {
        println!("{} (target {}, epoch {}); waiting up to {:.0} s", r.message, r.target, r.epoch, limit.as_secs_f64());
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    let clock = tokio::time::Instant::now();
    let outcome = wait_for_handover(d, &r, limit).await?;
    let waited_s = (clock.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let mut report = started;
    let (finished, detail) = match &outcome {
        Handover::Finished { holder, epoch } => {
            report["holder"] = json!(holder);
            report["new_epoch"] = json!(epoch);
            (true, format!("handover finished: {holder} is active at epoch {epoch} (after {waited_s:.1} s)"))
        }
        Handover::Failed(why) => (false, format!("the handover to {} failed: {why}", r.target)),
        Handover::TimedOut(now) => {
            (false, format!("the handover to {} did not finish within {:.0} s: {now}", r.target, limit.as_secs_f64()))
        }
    };
    report["finished"] = json!(finished);
    report["waited_s"] = json!(waited_s);
    if !finished {
        report["reason"] = json!(detail);
    }
    if json {
        print_json(&report);
    } else if finished {
        println!("{detail}");
    }
    let code = if matches!(outcome, Handover::TimedOut(_)) { EXIT_UNFINISHED } else { EXIT_REFUSED };
    if finished { Ok(()) } else { Err(Failure { code, message: detail }) }
}

/// Polls the member's view of the lease and of the target's published status until the
/// handover `r` started has finished or failed, or `limit` has passed. A poll, not a watch:
/// the target's "active" is its published status, which this member's event stream does not
/// carry.
async fn wait_for_handover(d: &mut Daemon, r: &PromoteReply, limit: Duration) -> Result<Handover, Failure> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        // A poll that fails (a store blip, the old active's member restarting) is asked again
        // until the wait ends: the handover goes on whether or not this client sees it.
        let polled = async {
            let status = d.client.status(super::connect::ask(&d.validator, StatusRequest {})).await?.into_inner();
            let members = d.client.members(super::connect::ask(&d.validator, MembersRequest {})).await?.into_inner();
            Ok::<_, tonic::Status>((status, members))
        };
        let (status, members) = match polled.await {
            Ok(both) => both,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(d.failure(e)),
            Err(_) => continue,
        };
        let row = members.members.iter().find(|m| m.id == r.target);
        match handover_state(&r.target, r.epoch, status.lease.as_ref(), row) {
            Ok(Some(done)) => return Ok(done),
            Err(why) => return Ok(Handover::Failed(why)),
            Ok(None) if tokio::time::Instant::now() >= deadline => {
                return Ok(Handover::TimedOut(handover_progress(&r.target, status.lease.as_ref(), row)));
            }
            Ok(None) => {}
        }
    }
}

/// What the lease (as this member reads it) and `target`'s row say about a handover away from
/// epoch `from`: finished, failed (the lease moved past `from` to anyone else, or is free
/// again), or `Ok(None)` while it is under way or cannot be told.
fn handover_state(
    target: &str,
    from: u64,
    lease: Option<&LeaseState>,
    row: Option<&MemberRow>,
) -> Result<Option<Handover>, String> {
    let Some(lease) = lease.filter(|l| l.epoch > from) else { return Ok(None) };
    if lease.holder == target {
        let active = row.is_some_and(|m| reachable(m) && m.role == "active");
        return Ok(active.then(|| Handover::Finished { holder: lease.holder.clone(), epoch: lease.epoch }));
    }
    let now = if lease.holder.is_empty() {
        format!("the lease moved on to epoch {} and is free again", lease.epoch)
    } else {
        format!("the lease went to {} at epoch {} instead", lease.holder, lease.epoch)
    };
    Err(format!("{now}; {}; `failoverctl events` on {target} says why", target_state(target, row)))
}

/// Where an unfinished handover to `target` stands, for a timeout.
fn handover_progress(target: &str, lease: Option<&LeaseState>, row: Option<&MemberRow>) -> String {
    let lease = match lease {
        None => "the store did not answer".to_string(),
        Some(l) if l.holder.is_empty() => format!("the lease is free (epoch {})", l.epoch),
        Some(l) if l.holder == target => format!("{target} holds the lease at epoch {}", l.epoch),
        Some(l) => format!("{} still holds the lease at epoch {}", l.holder, l.epoch),
    };
    format!("{lease}; {}; it may still finish", target_state(target, row))
}

/// "b is standby and healthy", "b is unreachable (last heard 8.3 s ago)".
fn target_state(target: &str, row: Option<&MemberRow>) -> String {
    match row {
        None => format!("{target} is not a member"),
        Some(m) if !reachable(m) => format!("{target} is {}", unreachable_text(m)),
        Some(m) => format!("{target} is {} and {}", m.role, if m.healthy { "healthy" } else { "not healthy" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::output::tests::row;

    fn lease(holder: &str, epoch: u64) -> LeaseState {
        LeaseState { holder: holder.into(), epoch, ..LeaseState::default() }
    }

    // One line per moment of a handover from epoch 3 to b: (lease, b's row, expected).
    #[test]
    fn a_handover_is_finished_only_when_the_target_holds_a_newer_lease_and_is_active() {
        let active = row("b", "active", Some(100), false);
        let promoting = row("b", "promoting", Some(100), false);
        let gone = row("b", "active", Some(9_000), true);
        let standby = row("b", "standby", Some(100), false);
        type Case<'a> = (Option<LeaseState>, Option<&'a MemberRow>, Result<Option<Handover>, &'a str>);
        let cases: Vec<Case> = vec![
            (None, Some(&active), Ok(None)),
            (Some(lease("a", 3)), Some(&standby), Ok(None)),
            (Some(lease("b", 3)), Some(&active), Ok(None)),
            (Some(lease("b", 4)), Some(&promoting), Ok(None)),
            (Some(lease("b", 4)), Some(&gone), Ok(None)),
            (Some(lease("b", 4)), Some(&active), Ok(Some(Handover::Finished { holder: "b".into(), epoch: 4 }))),
            (
                Some(lease("", 4)),
                Some(&standby),
                Err("the lease moved on to epoch 4 and is free again; b is standby and healthy"),
            ),
            (Some(lease("a", 5)), Some(&standby), Err("the lease went to a at epoch 5 instead")),
            (Some(lease("a", 5)), Some(&gone), Err("b is unreachable (last heard 9.0 s ago)")),
        ];
        for (i, (lease, row, want)) in cases.into_iter().enumerate() {
            let got = handover_state("b", 3, lease.as_ref(), row);
            match (&want, &got) {
                (Ok(w), Ok(g)) if w == g => {}
                (Err(part), Err(message)) if message.contains(part) && message.contains("failoverctl events") => {}
                _ => panic!("case {i}: wanted {want:?}, got {got:?}"),
            }
        }
    }
}
