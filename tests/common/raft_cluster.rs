//! A raft cluster of real members in this process: real sockets on 127.0.0.1, real raft-engine
//! directories in temp dirs, mutual TLS with certificates from failoverd's own issuing code.
//! Members are "a", "b" (producers) and "c" (witness), plus "d" and "e" for five-member clusters.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use failover::config::{Config, TlsConfig};
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
                member_config(i, &ports, &dirs[i].path().join("data"), &tls)
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
