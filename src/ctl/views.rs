//! The read-only subcommands: `status` (once, or `--watch`), `members` and `events`
//! (`--follow`). They call the member's control API and print; they never change anything.

use std::time::Duration;

use super::connect::Daemon;
use super::failure::Failure;
use super::output::{members_json, print_event, print_members, print_status, status_json};
use crate::proto::v1::{EventsRequest, MembersRequest, StatusRequest};

/// `status`: this member and every member; with `watch`, again every second until Ctrl-C.
pub(super) async fn status(d: &mut Daemon, watch: bool, json: bool) -> Result<(), Failure> {
    loop {
        let own = d.client.status(StatusRequest {}).await.map_err(|s| d.failure(s))?.into_inner();
        let members = d.client.members(MembersRequest {}).await.map_err(|s| d.failure(s))?.into_inner();
        if !watch {
            print_status(&own, &members, json);
            return Ok(());
        }
        if json {
            println!("{}", serde_json::json!({"self": status_json(&own), "cluster": members_json(&members)}));
        } else {
            println!("--- {}", crate::domain::rfc3339::format_unix_nanos(crate::domain::rfc3339::now_unix_nanos()));
            print_status(&own, &members, false);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// `members`: every member's row.
pub(super) async fn members(d: &mut Daemon, json: bool) -> Result<(), Failure> {
    let members = d.client.members(MembersRequest {}).await.map_err(|s| d.failure(s))?.into_inner();
    print_members(&members, json);
    Ok(())
}

/// `events`: the member's recent events; with `follow`, then each new one until the stream ends.
pub(super) async fn events(d: &mut Daemon, follow: bool, json: bool) -> Result<(), Failure> {
    let mut stream = d.client.events(EventsRequest { follow }).await.map_err(|s| d.failure(s))?.into_inner();
    while let Some(event) = stream.message().await.map_err(|s| d.failure(s))? {
        print_event(&event, json);
    }
    Ok(())
}
