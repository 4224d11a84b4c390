//! A 3-member raft cluster of in-process members ("a", "b" producers, "c" witness) on 127.0.0.1
//! with mutual TLS and fsynced raft-engine directories, at the timings a benchmark names, with
//! crash and restart of one member and the wait for an agreed leader.
//!
//! Peer links go through [`Links`]: direct, or through the WAN lab's userspace delay proxy
//! (`failover::sim::lab::delay_proxy::serve`, run in this process by [`Proxies`]): each member
//! then dials every peer through a proxy of its own that delays each direction by half the RTT,
//! one proxy per directed link, as the chaos lab's `failoverd delay-proxy` processes do.

use std::sync::Arc;
use std::time::Duration;

use failover::config::{Config, CoordinatorConfig, TimingDefaults};
use failover::coord::raft::{RaftCoordinator, RaftOptions};
use failover::sim::lab::delay_proxy::{self, Delay};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::raft_cluster::{NAMES, Timings, cluster_pki, member_config, member_config_timed, within};

/// The timings the members run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// failoverd's defaults (`CoordinatorConfig::default()`: lease_ttl 3 s, renew 1 s, tick
    /// 100 ms, election 10 ticks, heartbeat 3 ticks), as an operator's config without a
    /// `[coordinator]` section has them.
    Defaults,
    /// Signer mode's defaults, as an operator's config with a `cometbft-signer` producer and no
    /// `[coordinator]` section has them: `TimingDefaults::SIGNER` (lease_ttl 400 ms, renew
    /// 150 ms) on raft's default clock, renews refreshing the raft leader's expiry timer outside
    /// the log.
    SignerDefaults,
    /// The integration tests' (tests/common/raft_cluster.rs: lease 1 s, tick 50 ms).
    Tests,
}

/// How members reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Straight to each peer's listener on 127.0.0.1.
    Direct,
    /// Through the WAN lab's delay proxy at this round-trip time.
    Delayed { rtt: Duration },
}

/// The environment variable that asks for a round-trip time between members, in milliseconds.
pub const RTT_VAR: &str = "FAILOVERD_BENCH_RTT_MS";

impl Links {
    /// [`RTT_VAR`]: unset or 0 is [`Links::Direct`].
    pub fn from_env() -> Links {
        match super::env_number(RTT_VAR, 0) {
            0 => Links::Direct,
            rtt => Links::Delayed { rtt: Duration::from_millis(rtt) },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Links::Direct => "direct loopback links (RTT ~0)".into(),
            Links::Delayed { rtt } => format!("{} ms RTT between members", rtt.as_millis()),
        }
    }

    /// The peer ports member `from` dials, one per member, given where each member listens: its
    /// own port, and for every peer either that peer's port (direct) or a proxy in `proxies`
    /// forwarding to it with half the RTT each way.
    pub fn addresses(&self, from: usize, listening: &[u16], proxies: &Proxies) -> Vec<u16> {
        match self {
            Links::Direct => listening.to_vec(),
            Links::Delayed { rtt } => {
                let delay = Delay { delay: *rtt / 2, jitter: Duration::ZERO };
                let link = |(to, port): (usize, &u16)| match to == from {
                    true => *port,
                    false => proxies.link(*port, delay, (from * 3 + to) as u64 + 1),
                };
                listening.iter().enumerate().map(link).collect()
            }
        }
    }
}

/// The delay proxies of a cluster, carried by a runtime on a thread of their own (so bytes in
/// flight never wait behind a member's task in the members' runtime), and stopped with it.
pub struct Proxies {
    handle: tokio::runtime::Handle,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxies {
    pub fn start() -> Proxies {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("the delay proxies' runtime");
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let until = stop.clone();
        let thread = std::thread::Builder::new()
            .name("delay-proxies".into())
            .spawn(move || runtime.block_on(until.cancelled()))
            .expect("the delay proxies' thread");
        Proxies { handle, stop, thread: Some(thread) }
    }

    /// Starts a proxy on a free loopback port that carries connections to `upstream` with
    /// `delay` each way; its port.
    pub fn link(&self, upstream: u16, delay: Delay, seed: u64) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a proxy binds loopback");
        listener.set_nonblocking(true).expect("a nonblocking proxy listener");
        let port = listener.local_addr().expect("bound").port();
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], upstream));
        let stop = self.stop.clone();
        self.handle.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("the proxy's listener");
            delay_proxy::serve(listener, upstream, delay, seed, stop).await;
        });
        port
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct BenchCluster {
    nodes: Vec<Option<Arc<RaftCoordinator>>>,
    pub configs: Vec<Config>,
    listening: Vec<u16>,
    /// Dropped after the members (fields drop in order), so no member sees its links cut first.
    _proxies: Proxies,
    _dirs: Vec<tempfile::TempDir>,
    _pki_dir: tempfile::TempDir,
}

impl BenchCluster {
    pub async fn start(timing: Timing, links: Links) -> BenchCluster {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind loopback"));
        }
        let listening: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("bound").port()).collect();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let (pki_dir, pki) = cluster_pki();
        let proxies = Proxies::start();
        let configs: Vec<Config> = (0..3)
            .map(|i| {
                let ports = links.addresses(i, &listening, &proxies);
                let (dir, tls) = (dirs[i].path().join("data"), pki.member(NAMES[i]));
                match timing {
                    Timing::Defaults => {
                        Config { coordinator: CoordinatorConfig::default(), ..member_config(i, &ports, &dir, &tls) }
                    }
                    Timing::SignerDefaults => {
                        let signer = TimingDefaults::SIGNER;
                        let config = member_config_timed(i, &ports, &dir, &tls, Timings::SIGNER);
                        let coordinator = CoordinatorConfig {
                            lease_ttl: signer.lease_ttl,
                            renew_interval: signer.renew_interval,
                            safety_margin: signer.safety_margin,
                            call_timeout: signer.call_timeout,
                            ..CoordinatorConfig::default()
                        };
                        Config { coordinator, ..config }
                    }
                    Timing::Tests => member_config(i, &ports, &dir, &tls),
                }
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let node =
                RaftCoordinator::start(&configs[i], listener, RaftOptions::default()).await.expect("member starts");
            nodes.push(Some(Arc::new(node)));
        }
        BenchCluster { nodes, configs, listening, _proxies: proxies, _dirs: dirs, _pki_dir: pki_dir }
    }

    /// Member `i`, which is running.
    pub fn node(&self, i: usize) -> &Arc<RaftCoordinator> {
        self.nodes[i].as_ref().expect("member is running")
    }

    pub fn coordinator(&self) -> &CoordinatorConfig {
        &self.configs[0].coordinator
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Arc<RaftCoordinator>)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Waits until every running member names the same leader, which is one of them; its index.
    pub async fn leader(&self, limit: Duration) -> usize {
        let deadline = within(limit);
        loop {
            let leaders: Vec<Option<u64>> = self.running().map(|(_, n)| n.info().leader).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && let Some((i, _)) = self.running().find(|(_, n)| n.info().is_leader && n.info().id == *l)
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {limit:?}: {leaders:?}");
            // Wake on the first member's next change of view, or look again after 20 ms.
            if let Some((_, n)) = self.running().next() {
                n.wait_info(within(Duration::from_millis(20)), |_| true).await;
            }
        }
    }

    /// Kills member `i` as a crash would: its tasks aborted, its sockets closed.
    pub async fn crash(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.kill().await;
        }
    }

    /// Starts member `i` again on its port and data_dir.
    pub async fn restart(&mut self, i: usize) {
        let addr = format!("127.0.0.1:{}", self.listening[i]);
        let mut listener = TcpListener::bind(&addr).await;
        for _ in 0..100 {
            if listener.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            listener = TcpListener::bind(&addr).await;
        }
        let listener = listener.expect("rebind the member's port");
        let node = RaftCoordinator::start(&self.configs[i], listener, RaftOptions::default()).await.expect("restart");
        self.nodes[i] = Some(Arc::new(node));
    }
}
