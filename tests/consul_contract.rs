//! The Coordinator contract suite against a real Consul agent (`consul agent -dev`), with three
//! members' coordinators (a, b producers; c witness) sharing it, as members on one host would.

mod common;

use common::contract::{self, Member};
use failover::config::Config;
use failover::coord::consul::ConsulCoordinator;
use failover::domain::MemberKind;

/// A config for `member` of a three-member Consul cluster on the agent at `address`.
pub fn consul_config(member: &str, address: &str, prefix: &str) -> Config {
    let text = format!(
        "member = \"{member}\"\n\
         [[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:1\"\n\
         [[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:2\"\n\
         [[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n\
         [coordinator]\nbackend = \"consul\"\nlease_ttl = \"3s\"\nsafety_margin = \"300ms\"\n\
         [coordinator.consul]\naddress = \"{address}\"\nprefix = \"{prefix}\"\ncheck_ttl = \"2s\"\nlock_delay = \"500ms\"\n{}",
        if member == "c" {
            ""
        } else {
            "[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[producer]\nkind = \"sim\"\n"
        }
    );
    Config::parse(&text).unwrap_or_else(|p| panic!("test config: {p:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_keeps_the_coordinator_contract() {
    let agent = common::consul::dev().await;
    let coords: Vec<ConsulCoordinator> = ["a", "b", "c"]
        .iter()
        .map(|m| ConsulCoordinator::start(&consul_config(m, &agent.address(), "contract")).expect("coordinator"))
        .collect();
    let members: Vec<Member<'_>> = coords
        .iter()
        .enumerate()
        .map(|(i, c)| Member {
            id: failover::domain::MemberId::new(["a", "b", "c"][i]).expect("id"),
            kind: if i == 2 { MemberKind::Witness } else { MemberKind::Producer },
            coord: c,
        })
        .collect();
    contract::run_all(&members).await;
    for c in &coords {
        c.shutdown().await;
    }
}
