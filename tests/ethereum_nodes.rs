//! Two real Ethereum dev nodes (anvil) as the producers of a three-member cluster (a, b
//! producers; c witness), with the `ethereum` probe and producer (interval mining). Judged only
//! from the nodes' own answers — whether each says it mines, and the blocks it produced — never
//! from the daemons.
//!
//! Each anvil is its own chain (anvil has no peer-to-peer sync), so the heights of a and b are not
//! comparable: lag and stall limits are set out of the way and health comes from reachability.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::anvil::Anvil;
use common::lab::free_port;
use tokio::time::Instant;

const MEMBERS: [&str; 3] = ["a", "b", "c"];

/// One poll of one node: when it started and ended, and what the node said.
#[derive(Clone, Debug)]
struct Read {
    node: usize,
    start: Instant,
    end: Instant,
    height: Option<u64>,
    mining: Option<bool>,
}

struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Cluster {
    fn start(anvils: &[&Anvil; 2]) -> Cluster {
        let dir = tempfile::tempdir().expect("dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let pki = common::pki::write_cluster(dir.path(), &MEMBERS, &[]);
        let mut daemons = Vec::new();
        for (i, m) in MEMBERS.iter().enumerate() {
            let mut text =
                format!("member = \"{m}\"\ndata_dir = \"{}\"\n", dir.path().join(format!("data-{m}")).display());
            for (j, port) in ports.iter().enumerate() {
                let (kind, priority) = if j < 2 { ("producer", 200 - 100 * j) } else { ("witness", 100) };
                text.push_str(&format!(
                    "[[members]]\nid = \"{}\"\npeer_address = \"127.0.0.1:{port}\"\nkind = \"{kind}\"\npriority = {priority}\n",
                    MEMBERS[j]
                ));
            }
            text.push_str(&format!(
                "[coordinator]\nlease_ttl = \"1s\"\nrenew_interval = \"250ms\"\nsafety_margin = \"200ms\"\ncall_timeout = \"400ms\"\n\
                 [coordinator.raft]\ntick = \"50ms\"\nelection_ticks = 10\n\
                 [failover]\ncooldown = \"1s\"\npriority_delay = \"300ms\"\nmax_lag_on_failover = 1000000\n\
                 [api]\nsocket = \"{}\"\n[metrics]\nenabled = false\n",
                dir.path().join(format!("{m}.sock")).display()
            ));
            if i < 2 {
                text.push_str(&format!(
                    "[chain]\nkind = \"ethereum\"\nrpc = \"{}\"\nprobe_interval = \"200ms\"\nprobe_timeout = \"150ms\"\n\
                     unhealthy_after = 3\nmax_lag = 1000000\nstall_after = \"1h\"\n\
                     [producer]\nkind = \"ethereum\"\nmining = \"interval\"\nblock_interval = \"1s\"\nfence_timeout = \"500ms\"\n",
                    anvils[i].url
                ));
            }
            text.push_str(&common::pki::tls_section(&pki.member(m)));
            let config = dir.path().join(format!("{m}.toml"));
            std::fs::write(&config, text).expect("config");
            let log = std::fs::File::create(dir.path().join(format!("daemon-{m}.log"))).expect("log");
            daemons.push(
                common::failoverd()
                    .arg("--config")
                    .arg(&config)
                    .env("RUST_LOG", "info")
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("failoverd starts"),
            );
        }
        Cluster { dir, daemons }
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.sock", MEMBERS[i]))
    }

    fn logs(&self) -> String {
        MEMBERS
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("daemon-{m}.log"))).unwrap_or_default();
                format!(
                    "--- daemon {m}\n{}",
                    log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// Polls both nodes side by side every 50 ms until stopped.
/// Returns the reads so far and the observer task, which ends once `stop` is cancelled.
fn observe(
    anvils: [Arc<Anvil>; 2],
    stop: tokio_util::sync::CancellationToken,
) -> (Arc<Mutex<Vec<Read>>>, tokio::task::JoinHandle<()>) {
    let reads = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&reads);
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            let poll = |node: usize| {
                let anvil = Arc::clone(&anvils[node]);
                async move {
                    let start = Instant::now();
                    let (height, mining) = tokio::join!(anvil.height(), anvil.mining());
                    Read { node, start, end: Instant::now(), height, mining }
                }
            };
            let (r0, r1) = tokio::join!(poll(0), poll(1));
            out.lock().expect("reads").extend([r0, r1]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (reads, task)
}

/// The intervals in which `node` certainly mined: from the end of the first of a run of "mining"
/// reads to the start of the run's last one (each read sampled somewhere inside its own span).
fn certainly_mining(reads: &[Read], node: usize) -> Vec<(Instant, Instant)> {
    let mut out = Vec::new();
    let mut run: Option<(Instant, Instant)> = None;
    for r in reads.iter().filter(|r| r.node == node && r.mining.is_some()) {
        match (r.mining == Some(true), run) {
            (true, None) => run = Some((r.end, r.start)),
            (true, Some((from, _))) => run = Some((from, r.start)),
            (false, Some(span)) => {
                out.push(span);
                run = None;
            }
            (false, None) => {}
        }
    }
    out.extend(run);
    out.retain(|(from, to)| from < to);
    out
}

/// Which node produced each new block, in the order the blocks were seen.
fn producers_in_order(reads: &[Read]) -> Vec<usize> {
    let mut last = [None::<u64>; 2];
    let mut order = Vec::new();
    for r in reads {
        if let Some(h) = r.height {
            if last[r.node].is_some_and(|prev| h > prev) && order.last() != Some(&r.node) {
                order.push(r.node);
            }
            last[r.node] = Some(h);
        }
    }
    order
}

async fn wait_until(what: &str, limit: Duration, cluster: &Cluster, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what} did not happen within {limit:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Waits until `node` has produced `blocks` more blocks and says it mines, while the other does not.
async fn wait_mining(
    anvils: &[Arc<Anvil>; 2],
    node: usize,
    blocks: u64,
    limit: Duration,
    cluster: &Cluster,
) -> Duration {
    let from = anvils[node].height().await.expect("node answers");
    wait_until(&format!("{} mining {blocks} blocks", MEMBERS[node]), limit, cluster, async || {
        anvils[node].height().await.is_some_and(|h| h >= from + blocks) && anvils[node].mining().await == Some(true)
    })
    .await
}

/// Waits until one node says it mines, and returns which.
async fn wait_first_miner(anvils: &[Arc<Anvil>; 2], cluster: &Cluster) -> usize {
    let mut first = None;
    wait_until("a node mining", Duration::from_secs(30), cluster, async || {
        for (i, anvil) in anvils.iter().enumerate() {
            if anvil.mining().await == Some(true) {
                first = Some(i);
                return true;
            }
        }
        false
    })
    .await;
    first.expect("a miner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_anvil_mines_through_a_planned_handover_and_a_kill() {
    let anvils = [Arc::new(Anvil::start(free_port()).await), Arc::new(Anvil::start(free_port()).await)];
    let cluster = Cluster::start(&[&anvils[0], &anvils[1]]);
    let stop = tokio_util::sync::CancellationToken::new();
    let (reads, observer) = observe([Arc::clone(&anvils[0]), Arc::clone(&anvils[1])], stop.clone());

    // One of them becomes active (a has the higher priority, but b may be first on a loaded
    // machine) and its node mines.
    let first = wait_first_miner(&anvils, &cluster).await;
    let other = 1 - first;
    wait_mining(&anvils, first, 2, Duration::from_secs(15), &cluster).await;

    // A planned handover through failoverctl: the other node mines, the first one stops.
    let promote = std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .arg("--socket")
        .arg(cluster.socket(2))
        .args(["promote", MEMBERS[other]])
        .output()
        .expect("failoverctl runs");
    assert!(
        promote.status.success(),
        "promote {}: {}{}\n{}",
        MEMBERS[other],
        String::from_utf8_lossy(&promote.stdout),
        String::from_utf8_lossy(&promote.stderr),
        cluster.logs()
    );
    wait_mining(&anvils, other, 2, Duration::from_secs(15), &cluster).await;
    assert_eq!(anvils[first].mining().await, Some(false), "the first node still mines after the handover");

    // kill -9 of the active node: the first one takes over again.
    let killed_at = Instant::now();
    anvils[other].kill9();
    wait_mining(&anvils, first, 1, Duration::from_secs(20), &cluster).await;
    let failover = killed_at.elapsed();
    wait_mining(&anvils, first, 1, Duration::from_secs(10), &cluster).await;
    stop.cancel();
    observer.await.expect("the observer ends cleanly");

    let reads = reads.lock().expect("reads").clone();
    let a = certainly_mining(&reads, 0);
    let b = certainly_mining(&reads, 1);
    for (af, at) in &a {
        for (bf, bt) in &b {
            assert!(
                at <= bf || bt <= af,
                "both nodes mined at once: a {af:?}..{at:?}, b {bf:?}..{bt:?}\n{}",
                cluster.logs()
            );
        }
    }
    assert!(!a.is_empty() && !b.is_empty(), "each node mined for a while: a {a:?}, b {b:?}");
    assert_eq!(
        producers_in_order(&reads),
        vec![first, other, first],
        "blocks came from one, the other, then the first again"
    );
    eprintln!("failover after kill -9 of the active node: {failover:?} to the new active's first block");
}
