//! The `cometbft-signer` producer's connections as a CometBFT node needs them (issue 21): a
//! member holds a connection to its nodes only while it may sign, dials at once when it becomes
//! active, closes when it stops being active or its permission runs out, and serves several
//! nodes (sentries) at once through one double-sign rule.
//!
//! Real parts throughout: the producer against a real 3-member raft store, and the nodes' side
//! of privval — the simulated node's listener, in process or as `failoverd sim-node` processes —
//! over real SecretConnections. Whether a member holds a connection is judged from the node's
//! side: the connections it accepted and whether the one it holds is still open.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raft_cluster::{SharedCluster, within};
use failover::config::Config;
use failover::coord::Coordinator;
use failover::domain::{Hrs, KeyId, MonoTime, Step};
use failover::producer::cometbft_signer::{CometbftSignerProducer, SignerContext};
use failover::producer::privval::connection::NodeAddress;
use failover::producer::privval::signer::{SignObserver, SignOutcome};
use failover::producer::privval::validator_key::ValidatorKey;
use failover::producer::{Grant, Producer, SignFloor};
use failover::sim::lab::node::SimNode;
use failover::sim::ledger::{self, SignatureRecord};
use failover::sim::privval_node::{self, PrivvalRequester, SignerLink};
use tokio::time::Instant;

/// The simulated node's chain.
const CHAIN: &str = "sim";
/// Far longer than any connection takes here: a wait that reaches it has failed.
const LONG: Duration = Duration::from_secs(5);
/// How long a standby is watched for a dial it must not make: more than twice the old fixed
/// redial pause (200 ms), which dialled a node from a standby too.
const QUIET: Duration = Duration::from_millis(500);

/// The producer of member `a` (which holds the lease) with the cluster behind it, and every
/// signing outcome its signer reported.
struct Member {
    cluster: SharedCluster,
    producer: CometbftSignerProducer,
    outcomes: Arc<Mutex<Vec<(SignOutcome, Hrs)>>>,
    _key_dir: tempfile::TempDir,
}

impl Member {
    async fn start(nodes: &[String]) -> Member {
        let key_id = KeyId::new("validator").expect("key id");
        let cluster = SharedCluster::start_with_holder_a(&key_id).await;
        let key_dir = tempfile::tempdir().expect("dir");
        let key_file = key_dir.path().join("priv_validator_key.json");
        ValidatorKey::write_for_seed(&key_file, [0x5a; 32]).expect("key file");
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&outcomes);
        let observer: SignObserver = Arc::new(move |o, hrs, _: &str| seen.lock().expect("outcomes").push((o, hrs)));
        let coord: Arc<dyn Coordinator> = cluster.nodes[0].clone();
        let context = SignerContext { coord, runtime: tokio::runtime::Handle::current(), observer: Some(observer) };
        let addresses: Vec<NodeAddress> = nodes.iter().map(|n| n.parse().expect("a node address")).collect();
        let producer = CometbftSignerProducer::start(
            &key_file,
            &key_dir.path().join("signer-state-validator.bin"),
            key_id,
            CHAIN.into(),
            addresses,
            context,
            Duration::from_millis(800),
        )
        .expect("the producer starts");
        Member { cluster, producer, outcomes, _key_dir: key_dir }
    }

    /// Activates with the lease's epoch, permitted until `until`.
    async fn activate(&self, until: MonoTime) {
        let grant = Grant { epoch: self.cluster.lease.epoch, floor: SignFloor(Hrs::ZERO), until };
        self.producer.activate(grant, within(LONG)).await.expect("activates");
    }

    /// Keeps the lease, as the active member's daemon does, until the task is aborted.
    fn renew(&self) -> tokio::task::JoinHandle<()> {
        let (coord, lease) = (Arc::clone(&self.cluster.nodes[0]), self.cluster.lease.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(300));
            loop {
                every.tick().await;
                let _ = coord.renew(&lease, within(Duration::from_secs(1))).await;
            }
        })
    }

    fn outcomes(&self) -> Vec<(SignOutcome, Hrs)> {
        self.outcomes.lock().expect("outcomes").clone()
    }
}

/// The simulated node's privval listener, in this process; its `priv_validator_laddr`.
fn node() -> (PrivvalRequester, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("the node listens");
    let address = format!("tcp://{}@{}", privval_node::node_id(), listener.local_addr().expect("address"));
    (PrivvalRequester::listen(listener), address)
}

/// Waits (off the runtime: the node's side blocks) until `done` holds for the node's signer
/// connections, or `limit` passes; their state then.
async fn wait_link(node: &PrivvalRequester, limit: Duration, done: fn(&SignerLink) -> bool) -> SignerLink {
    let node = node.clone();
    tokio::task::spawn_blocking(move || node.wait_for(limit, done)).await.expect("the wait ends")
}

/// The node asks its signer for a precommit at `height`; the signature, if it got one.
async fn precommit(node: &PrivvalRequester, height: u64) -> Option<Vec<u8>> {
    let node = node.clone();
    let unix_ns = i64::try_from(failover::domain::rfc3339::now_unix_nanos()).expect("a timestamp");
    tokio::task::spawn_blocking(move || node.precommit(CHAIN, height, [7; 32], unix_ns)).await.expect("asked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_holds_no_connection_and_an_activated_member_connects_at_once_and_closes_when_deactivated() {
    let (node, address) = node();
    let member = Member::start(&[address]).await;

    // A standby never dials: the node accepts no connection from it.
    let standby = wait_link(&node, QUIET, |l| l.accepted > 0).await;
    assert_eq!(standby.accepted, 0, "a standby connected to its node: {standby:?}");

    // Activated: connected at once, without a fixed redial pause.
    let activated_at = MonoTime::now();
    member.activate(MonoTime::now().saturating_add(Duration::from_secs(3600))).await;
    let active = wait_link(&node, LONG, |l| l.connected).await;
    assert!(active.connected, "the activated member did not connect within {LONG:?}: {active:?}");
    let after = MonoTime::from_nanos(active.accepted_at_mono_ns.expect("accepted")).saturating_since(activated_at);
    eprintln!("activation to connected: {:.1} ms", after.as_secs_f64() * 1e3);
    assert!(after < Duration::from_millis(500), "connected {after:?} after activation");
    assert!(precommit(&node, 5).await.is_some(), "the active member signs through its connection");
    assert_eq!(member.producer.connected_nodes(), 1);

    // Deactivated: the node sees the connection closed, and no dial follows.
    member.producer.deactivate(within(LONG)).await.expect("deactivates");
    let closed = wait_link(&node, LONG, |l| !l.connected).await;
    assert!(!closed.connected, "the connection outlived the deactivation: {closed:?}");
    let quiet = wait_link(&node, QUIET, |l| l.accepted > 1).await;
    assert_eq!(quiet.accepted, 1, "a deactivated member dialled its node again: {quiet:?}");
    assert!(precommit(&node, 6).await.is_none(), "nothing is signed for the node of a standby");
    assert_eq!(member.producer.connected_nodes(), 0);

    // Active again, then fenced: connected again, then closed again.
    member.activate(MonoTime::now().saturating_add(Duration::from_secs(3600))).await;
    let again = wait_link(&node, LONG, |l| l.accepted == 2 && l.connected).await;
    assert!(again.connected && again.accepted == 2, "not connected again after the second activation: {again:?}");
    member.producer.fence(LONG).expect("the fence confirms");
    let fenced = wait_link(&node, LONG, |l| !l.connected).await;
    assert!(!fenced.connected, "the connection outlived the fence: {fenced:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_that_runs_out_closes_the_connection_and_the_member_stops_dialling() {
    let (node, address) = node();
    let member = Member::start(&[address]).await;
    let until = MonoTime::now().saturating_add(Duration::from_millis(700));
    member.activate(until).await;
    let active = wait_link(&node, LONG, |l| l.connected).await;
    assert!(active.connected, "not connected: {active:?}");

    // No renewal reaches the producer: at the deadline the connection closes by itself.
    let closed = wait_link(&node, LONG, |l| !l.connected).await;
    assert!(!closed.connected, "the connection outlived the permission: {closed:?}");
    assert!(MonoTime::now() >= until, "closed before the deadline");
    let quiet = wait_link(&node, QUIET, |l| l.accepted > 1).await;
    assert_eq!(quiet.accepted, 1, "a member whose permission ran out dialled again: {quiet:?}");
}

/// A renew before the deadline wakes no thread, yet the connection closes at the renewed
/// deadline, not the first; a renew after the permission ran out revives it, and the member
/// dials its node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_permission_closes_at_its_new_deadline_and_one_renewed_after_it_ran_out_dials_again() {
    let (node, address) = node();
    let member = Member::start(&[address]).await;
    // The store's lease is renewed meanwhile, so the last signature's reservation is accepted.
    let renewing = member.renew();
    member.activate(MonoTime::now().saturating_add(Duration::from_secs(2))).await;
    let active = wait_link(&node, LONG, |l| l.connected).await;
    assert!(active.connected, "not connected: {active:?}");
    let renewed = MonoTime::now().saturating_add(Duration::from_secs(3));
    member.producer.extend(renewed, within(LONG)).await.expect("extends");
    let closed = wait_link(&node, LONG, |l| !l.connected).await;
    assert!(!closed.connected, "the connection outlived the renewed permission: {closed:?}");
    assert!(MonoTime::now() >= renewed, "closed at the first deadline, before the renewed one");

    member
        .producer
        .extend(MonoTime::now().saturating_add(Duration::from_secs(3600)), within(LONG))
        .await
        .expect("extends");
    let again = wait_link(&node, LONG, |l| l.accepted == 2 && l.connected).await;
    assert!(again.connected && again.accepted == 2, "a revived permission did not dial again: {again:?}");
    assert!(precommit(&node, 5).await.is_some(), "the revived member signs through its connection");
    renewing.abort();
}

/// One `failoverd sim-node` of member `a` with its own ledger, asking its signer at every
/// height; the process, its HTTP address and its privval address.
fn sentry(dir: &std::path::Path, name: &str) -> (std::process::Child, String, String) {
    let port = failover::sim::lab::unused_port().expect("a free port");
    let node = SimNode {
        member: "a".into(),
        listen: "127.0.0.1:0".into(),
        ledger: dir.join(format!("ledger-{name}.jsonl")),
        activations: None,
        privval_listen: Some(format!("127.0.0.1:{port}")),
        block: Duration::from_millis(200),
    };
    let (child, url) = node.spawn_announced(common::failoverd()).expect("the sentry starts");
    (child, url, format!("tcp://{}@127.0.0.1:{port}", privval_node::node_id()))
}

fn ledger_of(dir: &std::path::Path, name: &str) -> Vec<SignatureRecord> {
    ledger::read(&dir.join(format!("ledger-{name}.jsonl"))).unwrap_or_default()
}

/// Waits until `name`'s ledger has `n` heights above `above`; its records.
async fn wait_recorded(dir: &std::path::Path, name: &str, above: u64, n: usize) -> Vec<SignatureRecord> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let records = ledger_of(dir, name);
        if records.iter().filter(|r| r.height > above).count() >= n {
            return records;
        }
        assert!(Instant::now() < end, "{name} recorded fewer than {n} heights above {above}: {records:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_serving_two_sentries_keeps_signing_through_the_second_when_the_first_is_killed() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut first, _, first_address) = sentry(dir.path(), "first");
    let (mut second, _, second_address) = sentry(dir.path(), "second");
    let member = Member::start(&[first_address, second_address]).await;
    let renewing = member.renew();
    member.activate(MonoTime::now().saturating_add(Duration::from_secs(3600))).await;

    // Both sentries get signatures: the same vote at each height, from one signer.
    wait_recorded(dir.path(), "first", 0, 3).await;
    let before = wait_recorded(dir.path(), "second", 0, 3).await;
    assert_eq!(member.producer.connected_nodes(), 2);

    let _ = first.kill();
    let _ = first.wait();
    let killed_at = before.iter().map(|r| r.height).max().unwrap_or(0);
    let end = Instant::now() + LONG;
    while member.producer.connected_nodes() != 1 {
        assert!(Instant::now() < end, "the dead sentry's connection is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No failover: the same member signs on through the second sentry, with no height missed.
    let after = wait_recorded(dir.path(), "second", killed_at, 8).await;
    let report = failover::sim::checker::check(&after);
    assert!(report.gaps.is_empty(), "the second sentry missed heights around the kill: {report}");
    renewing.abort();
    let _ = second.kill();
    let _ = second.wait();

    // One signature per HRS: the second sentry asking for a height already signed got the
    // stored signature back, never a new one.
    let outcomes = member.outcomes();
    let mut signed: Vec<Hrs> = outcomes.iter().filter(|(o, _)| *o == SignOutcome::Signed).map(|(_, h)| *h).collect();
    let count = signed.len();
    signed.sort();
    signed.dedup();
    assert_eq!(signed.len(), count, "an HRS was signed twice: {outcomes:?}");
    assert!(
        outcomes.iter().any(|(o, _)| *o == SignOutcome::Repeated),
        "no sentry was given a stored signature: {outcomes:?}"
    );
    let both: Vec<SignatureRecord> = ledger_of(dir.path(), "first").into_iter().chain(after).collect();
    assert!(failover::sim::checker::check(&both).double_signs.is_empty());
    assert!(signed.contains(&Hrs::new(killed_at + 3, 0, Step::Precommit)), "signing went on past the kill");
}

/// A signer config with `laddr` as the value of `priv_validator_laddr`.
fn config_with(laddr: &str) -> String {
    format!(
        "member = \"a\"\n\
         [[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:7101\"\n\
         [[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:7102\"\n\
         [[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:7103\"\nkind = \"witness\"\n\
         [coordinator.raft]\ninsecure_plaintext_peers = true\n\
         [chain]\nkind = \"cometbft\"\nrpc = \"http://127.0.0.1:26657\"\n\
         [producer]\nkind = \"cometbft-signer\"\nkey_file = \"/k\"\nchain_id = \"c\"\npriv_validator_laddr = {laddr}\n"
    )
}

/// The problems `Config::parse` finds, as `key: message`.
fn problems(laddr: &str) -> Vec<String> {
    match Config::parse(&config_with(laddr)) {
        Ok(_) => Vec::new(),
        Err(problems) => {
            problems.iter().map(|p| format!("{}: {}", p.key.as_deref().unwrap_or("-"), p.message)).collect()
        }
    }
}

#[test]
fn priv_validator_laddr_takes_one_node_as_a_string_or_several_as_an_array() {
    assert_eq!(problems("\"tcp://127.0.0.1:26659\""), Vec::<String>::new());
    assert_eq!(problems("[\"tcp://10.0.0.1:26659\", \"tcp://10.0.0.2:26659\"]"), Vec::<String>::new());
    let Ok(config) = Config::parse(&config_with("[\"tcp://10.0.0.1:26659\", \"unix:///run/pv.sock\"]")) else {
        panic!("a list of two nodes parses")
    };
    let Some(failover::config::ProducerAdapter::CometbftSigner(signer)) = config.producer.map(|p| p.adapter) else {
        panic!("a signer")
    };
    assert_eq!(signer.priv_validator_laddr.0, vec!["tcp://10.0.0.1:26659", "unix:///run/pv.sock"]);

    // The effective config writes one node back as a string and several as an array.
    for (laddr, written) in [
        ("\"tcp://127.0.0.1:26659\"", "priv_validator_laddr = \"tcp://127.0.0.1:26659\""),
        ("[\"tcp://127.0.0.1:26659\"]", "priv_validator_laddr = \"tcp://127.0.0.1:26659\""),
        (
            "[\"tcp://10.0.0.1:1\", \"tcp://10.0.0.2:1\"]",
            "priv_validator_laddr = [\n    \"tcp://10.0.0.1:1\",\n    \"tcp://10.0.0.2:1\",\n]",
        ),
    ] {
        let config = Config::parse(&config_with(laddr)).expect("parses");
        let text = config.to_toml();
        assert!(text.contains(written), "{laddr}: {text}");
        assert_eq!(Config::parse(&text).as_ref(), Ok(&config), "{laddr} round-trips");
    }
}

#[test]
fn a_bad_priv_validator_laddr_list_is_refused_naming_the_entry() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("[]", "producer.priv_validator_laddr: ", &["names no node"]),
        (
            "[\"tcp://10.0.0.1:26659\", \"tcp://10.0.0.1:26659\"]",
            "producer.priv_validator_laddr[1]: ",
            &["\"tcp://10.0.0.1:26659\" is the node of entry 0 again"],
        ),
        (
            "[\"tcp://10.0.0.1:26659\", \"10.0.0.2:26659\"]",
            "producer.priv_validator_laddr[1]: ",
            &["found \"10.0.0.2:26659\""],
        ),
        (
            "[\"unix:///pv.sock\", \"tcp://f00d@10.0.0.2:26659\"]",
            "producer.priv_validator_laddr[1]: ",
            &["has 4 characters, not 40"],
        ),
        ("\"10.0.0.2:26659\"", "producer.priv_validator_laddr: ", &["found \"10.0.0.2:26659\""]),
        ("26659", "producer", &["or an array of such addresses"]),
        ("[\"tcp://10.0.0.1:26659\", 5]", "producer", &["invalid type"]),
    ];
    for (laddr, key, fragments) in cases {
        let found = problems(laddr);
        assert_eq!(found.len(), 1, "{laddr}: {found:?}");
        assert!(found[0].starts_with(key), "{laddr}: {found:?}");
        for fragment in *fragments {
            assert!(found[0].contains(fragment), "{laddr}: {found:?}");
        }
    }
}
