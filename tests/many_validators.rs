//! Two validators on one 3-member cluster (`[[validators]]`, one raft group), with different
//! actives: `hub` on member a, `osmo` on member b. One validator's dead node moves only that
//! validator; a member's dead daemon moves each validator it was active for and leaves the
//! others signing. Judged from each chain's signature ledger (S2 per chain, who signs which
//! height) and the operator's view through `failoverctl`.

mod common;

use std::time::Duration;

use common::two_chains::{CHAINS, MEMBERS, TwoChains, tail};
use tokio::time::Instant;

const HUB: usize = 0;
const OSMO: usize = 1;
const A: usize = 0;
const B: usize = 1;

/// Starts the lab and has each chain sign on the producer it prefers. A cold start places each
/// validator there by priority (`at_a_cold_start_each_validator_starts_on_the_member_that_prefers_it`);
/// should one still start elsewhere (its preferred member seen late), the operator's planned
/// switchover, `failoverctl --validator ID promote`, moves it, since a healthy active is never
/// demoted for priority.
async fn started() -> TwoChains {
    let lab = TwoChains::start().await;
    let end = Instant::now() + Duration::from_secs(20);
    for (c, (chain, preferred)) in CHAINS.iter().enumerate() {
        let signer = loop {
            if let Some((member, _)) = lab.last_signer(c) {
                break member;
            }
            assert!(Instant::now() < end, "chain {chain} signed nothing within 20 s\n{}", tail(&lab.log(0)));
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if signer != MEMBERS[*preferred] {
            let out = lab.failoverctl(2, &["--validator", chain, "promote", MEMBERS[*preferred], "--wait"]);
            assert!(out.status.success(), "promote on {chain}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let top = lab.last_signer(c).map_or(0, |(_, h)| h);
        lab.wait_signing(c, MEMBERS[*preferred], top, 3, Duration::from_secs(10)).await;
    }
    lab
}

/// Chain `c`'s heights above `above`, each with who signed it, in height order.
fn signed_above(lab: &TwoChains, c: usize, above: u64) -> Vec<(u64, String)> {
    let mut signed: Vec<(u64, String)> =
        lab.records(c).into_iter().filter(|r| r.height > above).map(|r| (r.height, r.member.to_string())).collect();
    signed.sort();
    signed
}

/// Chain `c`, above `above`, was signed by member `m` alone and lost no more than a height at a
/// time: the other validator's failover did not touch it.
fn assert_untouched(lab: &TwoChains, c: usize, m: usize, above: u64) {
    let signed = signed_above(lab, c, above);
    assert!(signed.iter().all(|(_, who)| who == MEMBERS[m]), "chain {} moved: {signed:?}", CHAINS[c].0);
    let heights: Vec<u64> = signed.iter().map(|(h, _)| *h).collect();
    let gaps: Vec<(u64, u64)> = heights.windows(2).filter(|w| w[1] > w[0] + 2).map(|w| (w[0], w[1])).collect();
    assert!(gaps.is_empty(), "chain {} lost heights: {gaps:?}\n{}", CHAINS[c].0, tail(&lab.log(m)));
}

fn assert_no_double_sign(lab: &TwoChains) {
    for (c, (chain, _)) in CHAINS.iter().enumerate() {
        let report = lab.report(c);
        assert!(report.is_safe(), "S2 on chain {chain}: {:?}", report.double_signs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_validators_on_one_cluster_each_sign_on_their_preferred_member_and_show_in_status() {
    let lab = started().await;
    let hub_top = lab.last_signer(HUB).map_or(0, |(_, h)| h);
    let osmo_top = lab.last_signer(OSMO).map_or(0, |(_, h)| h);
    lab.wait_signing(HUB, MEMBERS[A], hub_top, 5, Duration::from_secs(5)).await;
    lab.wait_signing(OSMO, MEMBERS[B], osmo_top, 5, Duration::from_secs(5)).await;
    assert!(signed_above(&lab, HUB, hub_top).iter().all(|(_, m)| m == "a"), "hub is signed by a alone");
    assert!(signed_above(&lab, OSMO, osmo_top).iter().all(|(_, m)| m == "b"), "osmo is signed by b alone");

    // Without --validator, status shows every validator with its holder; each alone with it.
    let out = lab.failoverctl(2, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("== validator hub ==") && text.contains("== validator osmo =="), "{text}");
    for (validator, holder) in [("hub", "a"), ("osmo", "b")] {
        let out = lab.failoverctl(2, &["--validator", validator, "--json", "status"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert_eq!(json["self"]["lease"]["holder"], holder, "{validator}: {json}");
    }
    // A validator the member does not serve, and a command that needs one named, are refused
    // with the names it serves.
    let out = lab.failoverctl(0, &["--validator", "nope", "status"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("no validator nope") && said.contains("hub, osmo"), "{said}");
    let out = lab.failoverctl(0, &["pause"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("name one with --validator"), "{said}");

    // Metrics carry the validator: one family, a series per validator.
    let (code, metrics) = common::scrape::get(lab.metrics_ports[A], "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(common::scrape::sample(&metrics, "failoverd_active{validator=\"hub\"}"), Some(1.0), "{metrics}");
    assert_eq!(common::scrape::sample(&metrics, "failoverd_active{validator=\"osmo\"}"), Some(0.0));
    assert_eq!(metrics.matches("# TYPE failoverd_active ").count(), 1, "each family once");
    assert_no_double_sign(&lab);
}

/// With every member started together, each validator's first signature is its preferred
/// member's: no member acquires a free lease before the raft group has a leader (its view is not
/// yet the store's), so the lower-priority member's priority wait starts only when a grant is
/// possible and the preferred member takes the lease within it. Before, both acquired into a
/// leaderless group and whichever proposal the first leader saw first won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_cold_start_each_validator_starts_on_the_member_that_prefers_it() {
    let lab = TwoChains::start().await;
    let end = Instant::now() + Duration::from_secs(20);
    for (c, (chain, preferred)) in CHAINS.iter().enumerate() {
        // The ledger is a file the signing nodes append to: read until it has a line.
        let first = loop {
            if let Some((_, who)) = signed_above(&lab, c, 0).first() {
                break who.clone();
            }
            assert!(Instant::now() < end, "chain {chain} signed nothing within 20 s\n{}", tail(&lab.log(0)));
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(first, MEMBERS[*preferred], "{chain}'s first signer\n--- a ---\n{}", tail(&lab.log(0)));
    }
    assert_no_double_sign(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_moves_only_its_own_validator() {
    let mut lab = started().await;
    let osmo_before = lab.last_signer(OSMO).map_or(0, |(_, h)| h);
    let hub_before = lab.last_signer(HUB).map_or(0, |(_, h)| h);
    lab.kill_node(HUB, A);
    let moved_at = Instant::now();
    lab.wait_signing(HUB, MEMBERS[B], hub_before, 3, Duration::from_secs(15)).await;
    let took = moved_at.elapsed();
    // Osmo was never touched: b kept signing it, a never did.
    lab.wait_signing(OSMO, MEMBERS[B], osmo_before, 10, Duration::from_secs(5)).await;
    assert_untouched(&lab, OSMO, B, osmo_before);
    assert_no_double_sign(&lab);
    eprintln!("hub failed over to b {:.2} s after its node on a died", took.as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_daemon_moves_each_validator_it_was_active_for_and_no_other() {
    let mut lab = started().await;
    let osmo_before = lab.last_signer(OSMO).map_or(0, |(_, h)| h);
    let hub_before = lab.last_signer(HUB).map_or(0, |(_, h)| h);
    lab.kill9(B);
    let killed_at = Instant::now();
    lab.wait_signing(OSMO, MEMBERS[A], osmo_before, 3, Duration::from_secs(15)).await;
    let took = killed_at.elapsed();
    lab.wait_signing(HUB, MEMBERS[A], hub_before, 10, Duration::from_secs(5)).await;
    assert_untouched(&lab, HUB, A, hub_before);
    // Osmo: b's last signature below a's first, none twice.
    let osmo = signed_above(&lab, OSMO, osmo_before);
    let last_b = osmo.iter().filter(|(_, m)| m == "b").map(|(h, _)| *h).max().unwrap_or(osmo_before);
    let first_a = osmo.iter().filter(|(_, m)| m == "a").map(|(h, _)| *h).min().unwrap_or(u64::MAX);
    assert!(last_b < first_a, "osmo: b signed up to {last_b}, a from {first_a}");
    assert_no_double_sign(&lab);
    eprintln!("osmo failed over to a {:.2} s after b's daemon was killed", took.as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_refreshes_and_control_calls_naming_a_bad_or_foreign_validator_are_refused() {
    use failover::proto::v1::{LeaseRefresh, MemberStatusMsg};
    use failover::sim::rogue_peer::{Answer, RoguePeer};

    let lab = started().await;
    let hub_top = lab.last_signer(HUB).map_or(0, |(_, h)| h);
    // Member b's own certificate, speaking for itself, to member a's peer port.
    let b = failover::tls::TlsMaterial::load(&lab.pki.member("b")).expect("certificates");
    let peer = RoguePeer::connect(&format!("127.0.0.1:{}", lab.peer_ports[A]), Some(&b), true).await;
    let status = |validator: &str| MemberStatusMsg {
        member: "b".into(),
        kind: "producer".into(),
        role: "standby".into(),
        priority: 1000,
        height: Some(1_000_000_000),
        healthy: true,
        epoch: None,
        run: 1,
        seq: 1,
        validator: validator.into(),
    };
    for (validator, why) in [
        ("zzz", "which this member does not serve"),
        ("a/b", "names no valid validator"),
        (&"x".repeat(5000), "names no valid validator"),
    ] {
        let answer = peer.publish(status(validator)).await;
        match &answer {
            Answer::Refused { code: tonic::Code::InvalidArgument, message } if message.contains(why) => {}
            other => panic!("a status about {:.20}: {other:?}", validator),
        }
    }
    let refresh = LeaseRefresh { member: "b".into(), epoch: 1, ttl_ms: 1000, seq: 0, validator: "../hub".into() };
    let answer = peer.refresh_lease(refresh).await;
    assert!(matches!(&answer, Answer::Refused { code: tonic::Code::InvalidArgument, .. }), "{answer:?}");

    // The control API: a header that is no validator id is refused, and names what is served.
    let mut client = failover::api::client::connect(&lab.socket(A), Duration::from_secs(2)).await.expect("socket");
    let mut request = tonic::Request::new(failover::proto::v1::StatusRequest {});
    request.metadata_mut().insert(failover::api::VALIDATOR_HEADER, "no/pe".parse().expect("ascii"));
    let refused = client.status(request).await.expect_err("a bad validator header");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");

    // Nothing moved: a still signs hub, and the forged height is believed nowhere.
    lab.wait_signing(HUB, MEMBERS[A], hub_top, 10, Duration::from_secs(10)).await;
    for validator in ["hub", "osmo"] {
        let out = lab.failoverctl(A, &["--validator", validator, "--json", "members"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let members: serde_json::Value = serde_json::from_slice(&out.stdout).expect("members JSON");
        let text = members.to_string();
        assert!(!text.contains("1000000000"), "{validator}: a believed the forged status: {text}");
    }
    let (_, metrics) = common::scrape::get(lab.metrics_ports[A], "/metrics").await;
    let malformed =
        common::scrape::sample(&metrics, "failoverd_peer_refusals_total{validator=\"hub\",reason=\"malformed\"}")
            .or_else(|| {
                common::scrape::sample(
                    &metrics,
                    "failoverd_peer_refusals_total{reason=\"malformed\",validator=\"hub\"}",
                )
            });
    assert_eq!(malformed, Some(4.0), "three statuses and a refresh, counted once each:\n{metrics}");
    assert_no_double_sign(&lab);
}
