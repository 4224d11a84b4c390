//! The Coordinator contract suite against a real Consul agent (`consul agent -dev`), with three
//! members' coordinators (a, b producers; c witness) sharing it, as members on one host would.

mod common;

use common::contract::{self, Member};
use failover::config::Config;
use failover::coord::consul::ConsulCoordinator;
use failover::domain::MemberKind;

/// The text of a config for `member` of a three-member Consul cluster on the agent at
/// `address`, with `lock_delay`: check_ttl 2 s and safety_margin 300 ms, so the holder's
/// validity is 1.7 s after each renew and the lock-delay must be at least 2 s.
fn consul_config_text(member: &str, address: &str, prefix: &str, lock_delay: &str) -> String {
    format!(
        "member = \"{member}\"\n\
         [[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:1\"\n\
         [[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:2\"\n\
         [[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n\
         [coordinator]\nbackend = \"consul\"\nlease_ttl = \"3s\"\nsafety_margin = \"300ms\"\n\
         [coordinator.consul]\naddress = \"{address}\"\nprefix = \"{prefix}\"\ncheck_ttl = \"2s\"\nlock_delay = \"{lock_delay}\"\n{}",
        if member == "c" {
            ""
        } else {
            "[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[producer]\nkind = \"sim\"\n"
        }
    )
}

/// A config for `member` of a three-member Consul cluster on the agent at `address`.
pub fn consul_config(member: &str, address: &str, prefix: &str) -> Config {
    let text = consul_config_text(member, address, prefix, "2s");
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

/// Consul's HTTP API, as a raw client (what an old holder's request in flight would send).
async fn consul_http(
    agent: &common::consul::ConsulAgent,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = failover::http::client(std::time::Duration::from_secs(2)).expect("client");
    let mut request = client.request(method, format!("{}{path}", agent.address()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("consul answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// The id of `member`'s session, as Consul lists it.
async fn session_of(agent: &common::consul::ConsulAgent, member: &str) -> String {
    let (_, sessions) = consul_http(agent, reqwest::Method::GET, "/v1/session/list", None).await;
    sessions
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["Name"] == format!("failoverd-{member}").as_str())
        .and_then(|s| s["ID"].as_str())
        .unwrap_or_else(|| panic!("{member}'s session is not among {sessions}"))
        .to_string()
}

fn seconds(d: std::time::Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// `to − from` in seconds, negative when `to` is earlier.
fn signed_seconds(to: failover::domain::MonoTime, from: failover::domain::MonoTime) -> String {
    if to >= from { seconds(to.saturating_since(from)) } else { format!("−{}", seconds(from.saturating_since(to))) }
}

/// A session can end at any instant, not only when its check's TTL runs out: here an operator
/// destroys it right after the holder renewed, the worst moment. Consul's lock-delay keeps every
/// other member out until the holder's own validity has ended (src/coord/consul/mod.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_holder_session_frees_the_lease_only_after_the_holders_validity_ended() {
    use failover::coord::{CoordError, Coordinator};
    use failover::domain::{MemberId, MonoTime};
    use reqwest::Method;
    use std::time::Duration;
    use tokio::time::Instant;

    let agent = common::consul::dev().await;
    let soon = || Instant::now() + Duration::from_secs(5);
    let a = ConsulCoordinator::start(&consul_config("a", &agent.address(), "destroy")).expect("a");
    let b = ConsulCoordinator::start(&consul_config("b", &agent.address(), "destroy")).expect("b");
    let (id_a, id_b) = (MemberId::new("a").expect("id"), MemberId::new("b").expect("id"));

    let lease = a.acquire(&id_a, soon()).await.expect("a acquires");
    // b's session exists before the clock starts, so its first attempt is as quick as any other.
    assert!(matches!(b.acquire(&id_b, soon()).await, Err(CoordError::LeaseHeld { .. })), "a holds the lease");
    let session = session_of(&agent, "a").await;
    let lease = a.renew(&lease, soon()).await.expect("a renews");
    let valid_until = lease.valid_until;

    let destroyed_at = MonoTime::now();
    let (status, answer) = consul_http(&agent, Method::PUT, &format!("/v1/session/destroy/{session}"), None).await;
    assert_eq!((status, &answer), (200, &serde_json::Value::Bool(true)), "Consul destroyed a's session");

    // b asks every 10 ms, each call bounded by 50 ms; the instant a call starts is the earliest
    // moment the grant it returns can have happened.
    let give_up = Instant::now() + Duration::from_secs(10);
    let (attempt_started, granted_seen, new) = loop {
        let started = MonoTime::now();
        match b.acquire(&id_b, Instant::now() + Duration::from_millis(50)).await {
            Ok(new) => break (started, MonoTime::now(), new),
            Err(e) => assert!(Instant::now() < give_up, "b never acquired after a's session was destroyed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(new.epoch > lease.epoch, "b's grant has a newer epoch");
    assert!(
        matches!(a.renew(&lease, soon()).await, Err(CoordError::NotHolder { .. })),
        "a learns at its next renew that it lost the lease"
    );
    eprintln!(
        "session destroyed at T; a's validity ended at V = T + {}; b's successful acquire started at A = T + {} \
         (returned at T + {}): A − V = {}, A − T = {}",
        signed_seconds(valid_until, destroyed_at),
        signed_seconds(attempt_started, destroyed_at),
        signed_seconds(granted_seen, destroyed_at),
        signed_seconds(attempt_started, valid_until),
        signed_seconds(attempt_started, destroyed_at),
    );
    assert!(
        attempt_started >= valid_until,
        "b acquired {} before a's validity ended",
        seconds(valid_until.saturating_since(attempt_started))
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn a_lock_delay_shorter_than_the_holders_validity_plus_margin_is_refused_naming_both_fields() {
    let text = consul_config_text("a", "http://127.0.0.1:8500", "refused", "1500ms");
    let problems = Config::parse(&text).expect_err("a lock_delay below check_ttl is refused");
    let message = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert_eq!(problems.len(), 1, "{message}");
    assert_eq!(problems[0].key.as_deref(), Some("coordinator.consul.lock_delay"), "{message}");
    for fragment in [
        "coordinator.consul.lock_delay (1s500ms)",
        "coordinator.consul.check_ttl − coordinator.safety_margin (2s − 300ms)",
        "set coordinator.consul.lock_delay to at least 2s",
    ] {
        assert!(message.contains(fragment), "{fragment:?} missing from: {message}");
    }
    assert!(Config::parse(&consul_config_text("a", "http://127.0.0.1:8500", "ok", "2s")).is_ok(), "2s is enough");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holders_in_flight_watermark_write_fails_after_the_epoch_bump() {
    use failover::coord::{CoordError, Coordinator};
    use failover::domain::{Hrs, KeyId, MemberId};
    use reqwest::Method;
    use std::time::Duration;
    use tokio::time::Instant;

    let agent = common::consul::dev().await;
    let soon = || Instant::now() + Duration::from_secs(5);
    let a = ConsulCoordinator::start(&consul_config("a", &agent.address(), "stale")).expect("a");
    let b = ConsulCoordinator::start(&consul_config("b", &agent.address(), "stale")).expect("b");
    let (id_a, id_b) = (MemberId::new("a").expect("id"), MemberId::new("b").expect("id"));
    let k = KeyId::new("validator").expect("key");

    let old = a.acquire(&id_a, soon()).await.expect("a acquires");
    a.checkpoint(old.epoch, &k, 10, soon()).await.expect("a checkpoints");
    let (_, entries) = consul_http(&agent, Method::GET, "/v1/kv/stale/watermarks/validator", None).await;
    let in_flight_index = entries[0]["ModifyIndex"].as_u64().expect("ModifyIndex");

    // Consul invalidates a's session (as when its check goes critical): the lock is free.
    let session = session_of(&agent, "a").await;
    consul_http(&agent, Method::PUT, &format!("/v1/session/destroy/{session}"), None).await;

    // b acquires once the lock-delay has passed; its grant rewrites the watermark's epoch.
    let end = Instant::now() + Duration::from_secs(10);
    let new = loop {
        match b.acquire(&id_b, soon()).await {
            Ok(lease) => break lease,
            Err(e) => assert!(Instant::now() < end, "b never acquired: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(new.epoch > old.epoch);

    // The write a had in flight — a plain check-and-set on the index it read — now fails.
    let stale = serde_json::json!({"hrs": Hrs::end_of_height(20), "epoch": old.epoch});
    let value = failover::coord::consul::agent::base64_encode(stale.to_string().as_bytes());
    let txn = serde_json::json!([{"KV": {"Verb": "cas", "Key": "stale/watermarks/validator", "Value": value, "Index": in_flight_index}}]);
    let (status, answer) = consul_http(&agent, Method::PUT, "/v1/txn", Some(txn)).await;
    assert_eq!(status, 409, "the stale write was applied: {answer}");

    // And through the coordinator the old holder is refused outright.
    assert!(matches!(a.checkpoint(old.epoch, &k, 20, soon()).await, Err(CoordError::NotHolder { .. })));
    let w = b.watermark(&k, soon()).await.expect("read").expect("stored");
    assert_eq!((w.hrs, w.epoch), (Hrs::end_of_height(10), new.epoch), "unchanged but for the new epoch");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_token_comes_from_its_file_and_a_wrong_one_is_refused_clearly() {
    use failover::coord::{CoordError, Coordinator};
    use failover::domain::MemberId;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;
    use tokio::time::Instant;

    let master = "3f1c2a9e-failoverd-test-master";
    let hcl = format!("acl {{ enabled = true\n default_policy = \"deny\"\n tokens {{ master = \"{master}\" }} }}");
    let agent = common::consul::dev_with(&["-hcl".into(), hcl]).await;
    let dir = tempfile::tempdir().expect("dir");
    let with_token = |token: &str, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).expect("token file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut config = consul_config("a", &agent.address(), "acl");
        config.coordinator.consul.token_file = Some(path);
        ConsulCoordinator::start(&config).expect("coordinator")
    };
    let soon = || Instant::now() + Duration::from_secs(5);
    let a = MemberId::new("a").expect("id");

    let good = with_token(master, "good-token");
    let lease = good.acquire(&a, soon()).await.expect("the master token may do everything");
    good.release(&lease, None, soon()).await.expect("release");

    let wrong = with_token("00000000-0000-0000-0000-000000000000", "wrong-token");
    match wrong.acquire(&a, soon()).await {
        Err(CoordError::Unavailable(why)) => assert!(why.contains("403") || why.contains("ACL"), "{why}"),
        other => panic!("a wrong token: {other:?}"),
    }
    good.shutdown().await;
    wrong.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_reached_over_tls_with_the_configured_ca_and_a_stranger_ca_is_refused() {
    use failover::coord::{CoordError, Coordinator};
    use failover::domain::{Hrs, KeyId, MemberId, Step};
    use std::time::Duration;
    use tokio::time::Instant;

    let dir = tempfile::tempdir().expect("dir");
    let ca = common::pki::Ca::new("consul test CA");
    let tls = ca.write("localhost", dir.path());
    let https = common::lab::free_port();
    let hcl = format!(
        "ports {{ https = {https} }}\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nverify_incoming = false",
        tls.cert_file.display(),
        tls.key_file.display(),
        tls.ca_file.display()
    );
    let agent = common::consul::dev_with(&["-hcl".into(), hcl]).await;
    let address = format!("https://127.0.0.1:{https}");
    let soon = || Instant::now() + Duration::from_secs(5);
    let a = MemberId::new("a").expect("id");

    let mut config = consul_config("a", &address, "tls");
    config.coordinator.consul.ca_file = Some(tls.ca_file.clone());
    let trusted = ConsulCoordinator::start(&config).expect("coordinator");
    let lease = trusted.acquire(&a, soon()).await.expect("acquire over TLS");
    let key = KeyId::new("validator").expect("key");
    // A reservation is a transaction: the one call failoverd makes with its own HTTP client.
    let reserved =
        trusted.reserve(lease.epoch, &key, Hrs::new(7, 0, Step::Propose), soon()).await.expect("reserve over TLS");
    assert_eq!(reserved.hrs, Hrs::new(7, 0, Step::Propose));
    trusted.release(&lease, None, soon()).await.expect("release over TLS");
    trusted.shutdown().await;

    let stranger_dir = tempfile::tempdir().expect("dir");
    let stranger = common::pki::Ca::new("another CA").write("localhost", stranger_dir.path());
    let mut config = consul_config("a", &address, "tls");
    config.coordinator.consul.ca_file = Some(stranger.ca_file);
    let untrusting = ConsulCoordinator::start(&config).expect("coordinator");
    match untrusting.acquire(&a, soon()).await {
        Err(CoordError::Unavailable(why)) => assert!(why.contains(&address), "the error names the agent: {why}"),
        other => panic!("an agent whose certificate the configured CA did not sign: {other:?}"),
    }
    untrusting.shutdown().await;
    drop(agent);
}

/// Two validators served by one Consul prefix (`[[validators]]`, each under
/// `<prefix>/validators/<id>`): each has its own lock, epoch and watermark, and a holder that
/// gives one up keeps the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_keeps_each_validators_lease_and_watermark_apart() {
    use failover::domain::{Epoch, Hrs, KeyId, LeaseView};
    let agent = common::consul::dev().await;
    let text = |member: &str| {
        let single = consul_config_text(member, &agent.address(), "many", "2s");
        let shared = single.split("[chain]").next().unwrap_or_default().to_string();
        let entry = |id: &str| match member {
            "c" => format!("[[validators]]\nid = \"{id}\"\n"),
            _ => format!(
                "[[validators]]\nid = \"{id}\"\n[validators.chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n\
                 [validators.producer]\nkind = \"sim\"\nkey_id = \"{id}\"\n"
            ),
        };
        format!("{shared}{}{}", entry("hub"), entry("osmo"))
    };
    let start = |member: &str| {
        let config = Config::parse(&text(member)).unwrap_or_else(|p| panic!("test config: {p:?}"));
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            failover::coord::start_validators(&config, listener, Default::default()).await.expect("stores")
        }
    };
    let (a, b) = (start("a").await, start("b").await);
    let deadline = || tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let (ma, mb) =
        (failover::domain::MemberId::new("a").expect("id"), failover::domain::MemberId::new("b").expect("id"));
    let hub_a = a[0].store.acquire(&ma, deadline()).await.expect("hub to a");
    let osmo_b = b[1].store.acquire(&mb, deadline()).await.expect("osmo to b");
    assert!(b[0].store.acquire(&mb, deadline()).await.is_err(), "hub is a's");
    let key = KeyId::new("hub").expect("id");
    a[0].store.checkpoint(hub_a.epoch, &key, 77, deadline()).await.expect("hub checkpoint");
    assert_eq!(b[1].store.watermark(&key, deadline()).await.expect("read"), None, "osmo has no hub watermark");
    let hub_seen_by_b = b[0].store.watermark(&key, deadline()).await.expect("read");
    assert_eq!(hub_seen_by_b.map(|w| w.hrs), Some(Hrs::end_of_height(77)), "b reads hub's watermark as a wrote it");
    a[0].store.release(&hub_a, None, deadline()).await.expect("a gives hub back");
    assert!(
        matches!(a[1].store.lease(deadline()).await.expect("read"), LeaseView::Held { ref holder, .. } if *holder == mb)
    );
    assert!(matches!(b[0].store.lease(deadline()).await.expect("read"), LeaseView::Free { .. }));
    let renewed = b[1].store.renew(&osmo_b, deadline()).await.expect("osmo renews");
    assert_eq!(renewed.epoch, osmo_b.epoch);
    assert!(osmo_b.epoch > Epoch::ZERO);
    for s in a.iter().chain(&b) {
        s.store.shutdown().await;
    }
}
