//! A raft cluster of real members in this process: real sockets on 127.0.0.1, real raft-engine
//! directories in temp dirs, mutual TLS with certificates from failoverd's own issuing code.
//! Members are "a", "b" (producers) and "c" (witness), plus "d" and "e" for five-member clusters.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use failover::config::{Config, ProducerAdapter, SignerSettings, TimingDefaults, TlsConfig};
use failover::coord::Coordinator;
use failover::coord::raft::{RaftCoordinator, RaftOptions, StartError};
use failover::domain::{Hrs, KeyId, Lease, MemberId, Step};
use tokio::net::TcpListener;
use tokio::time::Instant;

pub const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
pub const LEASE_TTL: Duration = Duration::from_millis(1000);
pub const SAFETY_MARGIN: Duration = Duration::from_millis(200);
pub const TICK: Duration = Duration::from_millis(50);
pub const ELECTION_TICKS: u32 = 10;

/// The lease and raft timings of a test cluster.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub safety_margin: Duration,
    pub call_timeout: Duration,
    pub tick: Duration,
    pub election_ticks: u32,
    /// The producers run in signer mode (`cometbft-signer`): renews refresh the raft leader's
    /// expiry timer outside the log.
    pub signer_mode: bool,
}

impl Timings {
    /// What most tests run with: a short lease on a fast raft clock.
    pub const TEST: Timings = Timings {
        lease_ttl: LEASE_TTL,
        renew_interval: Duration::from_millis(300),
        safety_margin: SAFETY_MARGIN,
        call_timeout: Duration::from_millis(800),
        tick: TICK,
        election_ticks: ELECTION_TICKS,
        signer_mode: false,
    };

    /// Signer mode's defaults (`TimingDefaults::SIGNER`, raft's default 100 ms tick and 10
    /// election ticks): a lease shorter than one election timeout.
    pub const SIGNER: Timings = Timings {
        lease_ttl: TimingDefaults::SIGNER.lease_ttl,
        renew_interval: TimingDefaults::SIGNER.renew_interval,
        safety_margin: TimingDefaults::SIGNER.safety_margin,
        call_timeout: TimingDefaults::SIGNER.call_timeout,
        tick: Duration::from_millis(100),
        election_ticks: 10,
        signer_mode: true,
    };

    pub fn election_timeout(&self) -> Duration {
        self.tick * self.election_ticks
    }
}

/// How many renews `node` made that succeeded by `path` (`leader`: a refresh outside the log;
/// `log`), from its `failoverd_raft_lease_renews_total` series; 0 when it has none.
pub fn renews_by_path(node: &RaftCoordinator, path: &str) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    node.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode the metrics");
    let series = format!("failoverd_raft_lease_renews_total{{path=\"{path}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|n| n.parse().ok()).unwrap_or(0)
}

pub fn id(s: &str) -> MemberId {
    MemberId::new(s).expect("test ids are valid")
}

pub fn within(d: Duration) -> Instant {
    Instant::now() + d
}

/// Certificates for every member name, and an operator "ops", in a temp dir.
pub fn cluster_pki() -> (tempfile::TempDir, super::pki::ClusterPki) {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = super::pki::write_cluster(dir.path(), &NAMES, &["ops"]);
    (dir, pki)
}

/// The config of member `i` of a cluster whose peers listen on `ports`, with `tls`.
pub fn member_config(i: usize, ports: &[u16], dir: &Path, tls: &TlsConfig) -> Config {
    member_config_timed(i, ports, dir, tls, Timings::TEST)
}

/// [`member_config`] with `timings`. A member running `Timings::SIGNER` is in signer mode, whose
/// validation needs a real node; the test members have a simulated producer, so the file is
/// validated with the test timings and then given these.
pub fn member_config_timed(i: usize, ports: &[u16], dir: &Path, tls: &TlsConfig, timings: Timings) -> Config {
    let mut config = member_config_text(i, ports, dir, tls);
    let c = &mut config.coordinator;
    c.lease_ttl = timings.lease_ttl;
    c.renew_interval = timings.renew_interval;
    c.safety_margin = timings.safety_margin;
    c.call_timeout = timings.call_timeout;
    c.raft.tick = timings.tick;
    c.raft.election_ticks = timings.election_ticks;
    if timings.signer_mode
        && let Some(producer) = config.producer.as_mut()
    {
        producer.adapter = ProducerAdapter::CometbftSigner(SignerSettings {
            key_file: dir.join("priv_validator_key.json"),
            priv_validator_laddr: "tcp://127.0.0.1:1".to_string().into(),
            chain_id: "sim".into(),
        });
    }
    config
}

fn member_config_text(i: usize, ports: &[u16], dir: &Path, tls: &TlsConfig) -> Config {
    let mut text = format!("member = \"{}\"\ndata_dir = \"{}\"\n", NAMES[i], dir.display());
    for (j, port) in ports.iter().enumerate() {
        let kind = if j == 2 { "witness" } else { "producer" };
        text.push_str(&format!(
            "[[members]]\nid = \"{}\"\npeer_address = \"127.0.0.1:{port}\"\nkind = \"{kind}\"\n",
            NAMES[j]
        ));
    }
    text.push_str(&format!(
        "[coordinator]\nlease_ttl = \"{}ms\"\nrenew_interval = \"300ms\"\nsafety_margin = \"{}ms\"\ncall_timeout = \"800ms\"\n\
         [coordinator.raft]\ntick = \"{}ms\"\nelection_ticks = {ELECTION_TICKS}\nheartbeat_ticks = 1\n",
        LEASE_TTL.as_millis(),
        SAFETY_MARGIN.as_millis(),
        TICK.as_millis()
    ));
    if i != 2 {
        text.push_str("[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:1\"\n[producer]\nkind = \"sim\"\n");
    }
    text.push_str(&format!(
        "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        tls.ca_file.display(),
        tls.cert_file.display(),
        tls.key_file.display()
    ));
    match Config::parse(&text) {
        Ok(c) => c,
        Err(problems) => panic!("test config does not validate: {problems:?}\n{text}"),
    }
}

pub struct Cluster {
    /// Where the certificates live, and what they are.
    pub pki_dir: tempfile::TempDir,
    pub pki: super::pki::ClusterPki,
    pub dirs: Vec<tempfile::TempDir>,
    pub ports: Vec<u16>,
    pub configs: Vec<Config>,
    nodes: Vec<Option<RaftCoordinator>>,
    pub options: RaftOptions,
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, RaftOptions::default(), |_, _| None).await
    }

    /// Starts `n` members; `tls(i, dir)` may give member `i` other TLS files than the cluster's
    /// own (written into `dir`), by returning them.
    pub async fn start_with(
        n: usize,
        options: RaftOptions,
        tls: impl Fn(usize, &Path) -> Option<TlsConfig>,
    ) -> Cluster {
        Cluster::start_timed(n, options, Timings::TEST, tls).await
    }

    /// Starts `n` members with `timings`; `tls` as for [`Cluster::start_with`].
    pub async fn start_timed(
        n: usize,
        options: RaftOptions,
        timings: Timings,
        tls: impl Fn(usize, &Path) -> Option<TlsConfig>,
    ) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind loopback"));
        }
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("bound").port()).collect();
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let (pki_dir, pki) = cluster_pki();
        let configs: Vec<Config> = (0..n)
            .map(|i| {
                let tls = tls(i, dirs[i].path()).unwrap_or_else(|| pki.member(NAMES[i]));
                member_config_timed(i, &ports, &dirs[i].path().join("data"), &tls, timings)
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let node = RaftCoordinator::start(&configs[i], listener, options.clone()).await.expect("member starts");
            nodes.push(Some(node));
        }
        Cluster { pki_dir, pki, dirs, ports, configs, nodes, options }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, i: usize) -> &RaftCoordinator {
        self.nodes[i].as_ref().expect("member is running")
    }

    pub fn member(&self, i: usize) -> MemberId {
        id(NAMES[i])
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &RaftCoordinator)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Waits until every running member agrees on one leader; returns its index.
    pub async fn leader(&self, within_: Duration) -> usize {
        let deadline = within(within_);
        loop {
            let leaders: Vec<Option<u64>> = self.running().map(|(_, n)| n.info().leader).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && let Some((i, _)) = self.running().find(|(_, n)| n.info().is_leader && n.info().id == *l)
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {within_:?}: {leaders:?}");
            // Wake on any member's next info change, or re-check after a tick.
            let mut changes: Vec<_> =
                self.running().map(|(_, n)| Box::pin(n.wait_info(within(TICK), |_| true))).collect();
            if let Some(f) = changes.pop() {
                f.await;
            }
        }
    }

    /// Waits until members `among` agree on a leader that is one of them; returns its index.
    pub async fn leader_among(&self, among: &[usize], within_: Duration) -> usize {
        let deadline = within(within_);
        loop {
            let leaders: Vec<Option<u64>> = among.iter().map(|i| self.node(*i).info().leader).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && let Some(i) = among.iter().find(|i| self.node(**i).info().is_leader)
            {
                return *i;
            }
            assert!(Instant::now() < deadline, "no agreed leader among {among:?} within {within_:?}: {leaders:?}");
            tokio::time::sleep(TICK).await;
        }
    }

    /// Kills member `i` as a crash would.
    pub async fn crash(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.kill().await;
        }
    }

    /// Starts member `i` again on its port and data_dir.
    pub async fn restart(&mut self, i: usize, options: RaftOptions) -> Result<(), StartError> {
        let addr = format!("127.0.0.1:{}", self.ports[i]);
        let mut listener = TcpListener::bind(&addr).await;
        for _ in 0..50 {
            if listener.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            listener = TcpListener::bind(&addr).await;
        }
        let listener = listener.expect("rebind the member's port");
        let node = RaftCoordinator::start(&self.configs[i], listener, options).await?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.configs[i].data_dir
    }
}

/// A 3-member cluster whose members are shared (`Arc`), so that a signer can hold one: member
/// `a` holds the lease, and `key`'s watermark starts at 1/0/propose.
pub struct SharedCluster {
    pub nodes: Vec<Arc<RaftCoordinator>>,
    pub lease: Lease,
    pub dirs: Vec<tempfile::TempDir>,
    pub pki_dir: tempfile::TempDir,
}

impl SharedCluster {
    pub async fn start_with_holder_a(key: &KeyId) -> SharedCluster {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
        let (pki_dir, pki) = cluster_pki();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = member_config(i, &ports, &dirs[i].path().join("data"), &pki.member(NAMES[i]));
            nodes.push(Arc::new(
                RaftCoordinator::start(&config, listener, RaftOptions::default()).await.expect("member"),
            ));
        }
        // The first acquires may land while raft elects its first leader.
        let lease = loop {
            match nodes[0].acquire(&id("a"), within(Duration::from_secs(2))).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(TICK).await,
            }
        };
        nodes[0]
            .import_watermarks(&[(key.clone(), Hrs::new(1, 0, Step::Propose))], within(Duration::from_secs(5)))
            .await
            .expect("import");
        SharedCluster { nodes, lease, dirs, pki_dir }
    }
}
