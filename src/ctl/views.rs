//! The read-only subcommands: `status` (once, or `--watch`), `members` and `events`
//! (`--follow`). They call the member's control API and print; they never change anything.

use std::time::Duration;

use super::connect::Daemon;
use super::connect::ask;
use super::failure::Failure;
use super::output::{members_json, print_event, print_members, print_status, status_json};
use crate::domain::ValidatorId;
use crate::proto::v1::{EventsRequest, MembersReply, MembersRequest, StatusReply, StatusRequest};

/// `status`: this member and every member; with `watch`, again every second until Ctrl-C. On a
/// member serving several validators and without `--validator`: each validator in turn.
pub(super) async fn status(d: &mut Daemon, watch: bool, json: bool) -> Result<(), Failure> {
    let each = match &d.validator {
        Some(v) => vec![v.clone()],
        None => d.validators().await?,
    };
    // One validator is shown as it always was; several each under their name.
    let named = each.len() > 1;
    loop {
        let mut views = Vec::with_capacity(each.len());
        for v in &each {
            let which = if named { Some(v.clone()) } else { d.validator.clone() };
            let own = d.client.status(ask(&which, StatusRequest {})).await.map_err(|s| d.failure(s))?.into_inner();
            let members =
                d.client.members(ask(&which, MembersRequest {})).await.map_err(|s| d.failure(s))?.into_inner();
            views.push((v, own, members));
        }
        if watch && !json {
            println!("--- {}", crate::domain::rfc3339::format_unix_nanos(crate::domain::rfc3339::now_unix_nanos()));
        }
        print_each(&views, named, json, watch);
        if !watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One status per validator: as it always was for one (`--watch --json`: one object a line),
/// each under a heading, or in a `validators` list in JSON, for several.
fn print_each(views: &[(&ValidatorId, StatusReply, MembersReply)], named: bool, json: bool, watch: bool) {
    if json && named {
        let list: Vec<serde_json::Value> = views
            .iter()
            .map(|(v, own, members)| {
                serde_json::json!({"validator": v.as_str(), "self": status_json(own), "cluster": members_json(members)})
            })
            .collect();
        println!("{}", serde_json::json!({ "validators": list }));
        return;
    }
    for (i, (v, own, members)) in views.iter().enumerate() {
        if named {
            if i > 0 {
                println!();
            }
            println!("== validator {v} ==");
        }
        if json && watch {
            println!("{}", serde_json::json!({"self": status_json(own), "cluster": members_json(members)}));
        } else {
            print_status(own, members, json);
        }
    }
}

/// `members`: every member's row.
pub(super) async fn members(d: &mut Daemon, json: bool) -> Result<(), Failure> {
    let members = d
        .client
        .members(super::connect::ask(&d.validator, MembersRequest {}))
        .await
        .map_err(|s| d.failure(s))?
        .into_inner();
    print_members(&members, json);
    Ok(())
}

/// `events`: the member's recent events; with `follow`, then each new one until the stream ends.
pub(super) async fn events(d: &mut Daemon, follow: bool, json: bool) -> Result<(), Failure> {
    let mut stream = d
        .client
        .events(super::connect::ask(&d.validator, EventsRequest { follow }))
        .await
        .map_err(|s| d.failure(s))?
        .into_inner();
    while let Some(event) = stream.message().await.map_err(|s| d.failure(s))? {
        print_event(&event, json);
    }
    Ok(())
}
