//! The WAN lab: the delay proxy (`failoverd delay-proxy`, the real binary) over real sockets —
//! how long a round trip takes through it, that it keeps bytes in order and closes both sides —
//! its refusals of absurd flags, and a real cluster whose members reach each other only through
//! proxies at 50 ms RTT.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::lab::{Lab, MEMBERS, Store};
use failover::sim::lab::delay_proxy::Delay;
use failover::sim::lab::wan::{self, Wan};

/// How long a socket read may wait before the test fails instead of hanging.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// A delay proxy process, killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy(upstream: SocketAddr, delay: Delay) -> Proxy {
    let (child, addr) =
        wan::spawn_announced(common::failoverd(), "127.0.0.1:0", upstream, delay, 42).unwrap_or_else(|e| panic!("{e}"));
    Proxy { child, addr }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An echo server: each connection gets back what it sends, until it closes.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_nodelay(true);
            std::thread::spawn(move || {
                let Ok(mut reader) = conn.try_clone() else { return };
                let _ = std::io::copy(&mut reader, &mut conn);
            });
        }
    });
    addr
}

/// A server that hands each accepted connection to the test.
fn handing_server() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if tx.send(conn).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, READ_LIMIT).expect("connect to the proxy");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(READ_LIMIT)).expect("read timeout");
    s
}

/// Reads until the peer closes; what came, or the error that came instead of the close.
fn read_to_close(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).map(|_| got)
}

#[test]
fn a_round_trip_through_the_proxy_takes_twice_the_delay_plus_at_most_twice_the_jitter() {
    let (delay, jitter) = (ms(20), ms(10));
    let p = proxy(echo_server(), Delay::new(delay, jitter).expect("valid"));
    let mut s = connect(p.addr);
    let mut samples = Vec::new();
    for i in 0..40u8 {
        let started = Instant::now();
        s.write_all(&[i]).expect("write");
        let mut back = [0u8];
        s.read_exact(&mut back).expect("the echo comes back");
        samples.push(started.elapsed());
        assert_eq!(back[0], i);
    }
    samples.sort();
    let (min, median) = (samples[0], samples[samples.len() / 2]);
    // Both directions hold each byte at least the delay; the jitter adds up to its value each
    // way; the slack is the scheduling of three processes on a loaded 2-core machine.
    assert!(min >= delay * 2, "the fastest round trip took {min:?}, under twice the delay {delay:?}: {samples:?}");
    let bound = delay * 2 + jitter * 2 + ms(15);
    assert!(median < bound, "the median round trip took {median:?}, not under {bound:?}: {samples:?}");
}

#[test]
fn bytes_keep_their_order_when_later_chunks_draw_less_jitter() {
    // A jitter as large as the delay: a chunk released at arrival + delay + jitter alone would
    // often overtake the one before it.
    let p = proxy(echo_server(), Delay::new(ms(2), ms(2)).expect("valid"));
    let mut s = connect(p.addr);
    let sent: Vec<u8> = (0..2_000_000u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut writer = s.try_clone().expect("clone");
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || {
        // Writes of varying size, so that the proxy reads many chunks of its own sizes.
        let mut at = 0;
        let mut size = 1;
        while at < to_send.len() {
            let end = (at + size).min(to_send.len());
            writer.write_all(&to_send[at..end]).expect("write");
            at = end;
            size = size * 7 % 9001 + 1;
        }
    });
    let mut got = vec![0u8; sent.len()];
    s.read_exact(&mut got).expect("every byte comes back");
    writing.join().expect("the writer finished");
    let first_difference = got.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the bytes came back in another order");
}

#[test]
fn a_client_that_closes_closes_the_upstream_after_its_last_bytes() {
    let (upstream, accepted) = handing_server();
    let p = proxy(upstream, Delay::new(ms(10), ms(0)).expect("valid"));
    let mut client = connect(p.addr);
    client.write_all(b"last words").expect("write");
    drop(client);
    let mut server = accepted.recv_timeout(READ_LIMIT).expect("the proxy connected upstream");
    server.set_read_timeout(Some(READ_LIMIT)).expect("read timeout");
    assert_eq!(read_to_close(&mut server).expect("closed, not timed out"), b"last words");
}

#[test]
fn an_upstream_that_closes_closes_the_client_after_its_last_bytes() {
    let (upstream, accepted) = handing_server();
    let p = proxy(upstream, Delay::new(ms(10), ms(0)).expect("valid"));
    let mut client = connect(p.addr);
    let mut server = accepted.recv_timeout(READ_LIMIT).expect("the proxy connected upstream");
    server.write_all(b"goodbye").expect("write");
    drop(server);
    assert_eq!(read_to_close(&mut client).expect("closed, not timed out"), b"goodbye");
}

#[test]
fn when_one_side_stops_sending_both_sides_are_closed() {
    let (upstream, accepted) = handing_server();
    let p = proxy(upstream, Delay::new(ms(5), ms(0)).expect("valid"));
    let mut client = connect(p.addr);
    let mut server = accepted.recv_timeout(READ_LIMIT).expect("the proxy connected upstream");
    server.set_read_timeout(Some(READ_LIMIT)).expect("read timeout");
    client.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_to_close(&mut server).expect("the server sees the close"), b"");
    // The server still holds its socket open, yet the client's side is closed too.
    assert_eq!(read_to_close(&mut client).expect("the client sees the close"), b"");
    drop(server);
}

#[test]
fn a_client_of_an_upstream_that_is_not_there_is_closed() {
    // A port nobody listens on: bound, then let go.
    let gone = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let p = proxy(gone, Delay::NONE);
    let mut client = connect(p.addr);
    match read_to_close(&mut client) {
        Ok(got) => assert!(got.is_empty(), "nothing can come from nowhere"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "closed, not timed out: {e}"),
    }
}

#[test]
fn absurd_proxy_flags_are_refused_by_name_before_anything_listens() {
    let cases: [(&[&str], &str); 5] = [
        (&["--delay", "11s"], "error: --delay: 11s is over the limit of 10s"),
        (&["--delay", "banana"], "error: --delay: expected a duration"),
        (&["--delay", "20ms", "--jitter", "30ms"], "error: --jitter: 30ms is more than --delay 20ms"),
        (&["--delay", "20ms", "--jitter=-1ms"], "error: --jitter: expected a duration"),
        (&["--upstream", "peer-b:7100"], "error: --upstream: \"peer-b:7100\" is not an ip:port address"),
    ];
    for (flags, said) in cases {
        let mut args = vec!["delay-proxy", "--listen", "127.0.0.1:0"];
        if !flags.contains(&"--upstream") {
            args.extend(["--upstream", "127.0.0.1:9"]);
        }
        args.extend_from_slice(flags);
        let out = common::run_failoverd(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?} exits 2: {stderr}");
        assert!(stderr.starts_with(said), "{flags:?}: expected {said:?}, got {stderr}");
        assert!(out.stdout.is_empty(), "{flags:?}: nothing may listen: {}", String::from_utf8_lossy(&out.stdout));
    }
    let help = common::run_failoverd(&["--help"]);
    assert!(!String::from_utf8_lossy(&help.stdout).contains("delay-proxy"), "the lab's proxy is not in --help");
}

/// Proxies made while the lab writes its configs: member `i`'s config keeps its own peer
/// address and names every other member at a proxy of its own, so the members can reach each
/// other only through the proxies.
struct WanTweak {
    wan: Wan,
    proxies: Mutex<Vec<Proxy>>,
}

impl WanTweak {
    fn apply(&self, i: usize, text: String) -> String {
        let ports: Vec<u16> = text
            .lines()
            .filter_map(|l| l.strip_prefix("peer_address = \"127.0.0.1:")?.strip_suffix('"')?.parse().ok())
            .collect();
        assert_eq!(ports.len(), MEMBERS.len(), "a peer address per member:\n{text}");
        let mut text = text;
        for (_, port) in ports.iter().enumerate().filter(|(j, _)| *j != i) {
            let p = proxy(SocketAddr::from(([127, 0, 0, 1], *port)), self.wan.one_way());
            let to = format!("peer_address = \"{}\"", p.addr);
            text = common::replace_once(&text, &format!("peer_address = \"127.0.0.1:{port}\""), &to);
            self.proxies.lock().expect("lock").push(p);
        }
        text
    }
}

/// The `le` bucket and the count of the renew calls' latency histogram in a metrics exposition.
fn renew_latency(exposition: &str, le: &str) -> (f64, f64) {
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let renew = |l: &&str| l.contains("operation=\"renew\"");
    let lines: Vec<&str> = exposition.lines().filter(renew).collect();
    let bucket = lines
        .iter()
        .find(|l| l.starts_with("failoverd_store_call_duration_seconds_bucket{") && l.contains(&format!("le=\"{le}\"")))
        .and_then(|l| value(l));
    let count =
        lines.iter().find(|l| l.starts_with("failoverd_store_call_duration_seconds_count{")).and_then(|l| value(l));
    (bucket.unwrap_or(0.0), count.unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_cluster_whose_links_have_a_50_ms_round_trip_elects_commits_and_signs() {
    let tweak = WanTweak { wan: Wan { rtt: ms(50), jitter: ms(5) }, proxies: Mutex::new(Vec::new()) };
    let lab = Lab::start_each(Store::Raft, &|i, text| tweak.apply(i, text), &[]).await;
    assert_eq!(tweak.proxies.lock().expect("lock").len(), 6, "one proxy per directed link");
    let active = lab.wait_active(Duration::from_secs(30)).await;
    let height = lab.wait_signed_above(active, 0, Duration::from_secs(10)).await;
    lab.wait_signed_above(active, height + 3, Duration::from_secs(10)).await;
    assert!(lab.report().is_safe(), "{}", lab.report());
    // Every renewal is a raft commit, which needs a quorum across the WAN: at least one round
    // trip, where loopback takes a millisecond or two.
    let text = common::scrape::wait_metrics(
        lab.metrics_ports[active],
        MEMBERS[active],
        Duration::from_secs(10),
        "five renewals",
        |t| renew_latency(t, "0.025").1 >= 5.0,
    )
    .await;
    let (fast, all) = renew_latency(&text, "0.025");
    assert!(fast * 2.0 < all, "{fast} of {all} renewals took under 25 ms: the links are not delayed\n{text}");
}
