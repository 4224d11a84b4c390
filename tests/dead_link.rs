//! A member link that is cut silently is closed by the kernel, not kept open by it: the sockets
//! members dial and accept carry `link_watch::DEAD_LINK`, and the WAN lab's delay proxy gives its
//! upstream side the same watch. Each test runs in a network namespace of its own, where an
//! nftables rule drops the link's packets both ways, as a black hole on a real network would.
//! Network namespaces need root (CAP_NET_ADMIN); `./scripts/test` runs as root and installs `ip`
//! and `nft`. Without root the tests say so and check nothing.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use failover::link_watch::{DEAD_LINK, dial_member_link, ready_member_link};
use failover::sim::lab::delay_proxy::{self, Delay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the tests wait for a close: well past the give-up time, so that a close that comes
/// late is measured and reported, not cut off.
const CLOSED_WITHIN: Duration = Duration::from_secs(7);
/// A close this much after the give-up time is late: the kernel's timers and a loaded
/// machine's scheduling stay well within it (measured: within 0.1 s).
const LATE_BY: Duration = Duration::from_millis(800);

/// Runs `test` on a thread of its own inside a new network namespace with loopback up, on a
/// runtime of that thread (sockets belong to the namespace of the thread that makes them).
/// `false` without root.
fn in_own_network<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F + Send + 'static) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: a network namespace needs root (CAP_NET_ADMIN); ./scripts/test runs as root");
        return false;
    }
    let thread = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("a network namespace for this thread");
        // A child started from this thread shares its namespace.
        run(Command::new("ip").args(["link", "set", "lo", "up"]), "");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(test());
    });
    thread.join().expect("the test thread passed");
    true
}

fn run(command: &mut Command, stdin: &str) {
    let mut child = command.stdin(Stdio::piped()).spawn().expect("ip and nft are installed (./scripts/test does)");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{command:?} failed: {status}");
}

/// Drops every TCP packet to or from `port` in this thread's namespace: the link is cut silently,
/// with no reset and no unreachable answer.
fn cut(port: u16) {
    let rules = format!(
        "table inet cut {{\n chain input {{\n  type filter hook input priority 0;\n  tcp dport {port} drop\n  tcp sport {port} drop\n }}\n}}\n"
    );
    run(Command::new("nft").args(["-f", "-"]), &rules);
}

/// Waits for `stream` to be closed or fail; `None` if it is still open at `CLOSED_WITHIN`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Option<(Duration, String)> {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout_at((since + CLOSED_WITHIN).into(), stream.read(&mut byte)).await.ok()?;
    let how = match read {
        Ok(0) => "closed by the other end".to_string(),
        Ok(_) => "a byte arrived".to_string(),
        Err(e) => e.to_string(),
    };
    Some((since.elapsed(), how))
}

/// A connected pair on `listener`: the dialled side and the accepted side, with bytes carried
/// both ways so both have seen the link work. The accepted side hears last: the byte it reads
/// last carries the acknowledgement of the one it sent, so it has nothing in flight.
async fn pair(
    listener: &TcpListener,
    dial: impl std::future::Future<Output = std::io::Result<TcpStream>>,
) -> (TcpStream, TcpStream) {
    let (dialled, accepted) = tokio::join!(dial, listener.accept());
    let (mut dialled, mut accepted) = (dialled.expect("dial"), accepted.expect("accept").0);
    let mut byte = [0u8; 1];
    dialled.write_all(b"a").await.expect("send");
    accepted.read_exact(&mut byte).await.expect("receive");
    accepted.write_all(b"b").await.expect("answer");
    dialled.read_exact(&mut byte).await.expect("read the answer");
    dialled.write_all(b"c").await.expect("send again");
    accepted.read_exact(&mut byte).await.expect("receive again");
    (dialled, accepted)
}

/// Asserts that a side was closed by the kernel's give-up (a timeout), neither before the
/// give-up time nor late.
fn assert_given_up(side: &str, closed: Option<(Duration, String)>) {
    let (took, how) = closed.unwrap_or_else(|| panic!("the {side} side is still open after {CLOSED_WITHIN:?}"));
    eprintln!("the {side} side closed after {took:?}: {how}");
    assert!(how.contains("timed out"), "the {side} side failed with \"{how}\" after {took:?}, not a timeout");
    assert!(
        took >= DEAD_LINK.give_up - Duration::from_millis(100),
        "the {side} side closed after {took:?}, before the give-up time"
    );
    assert!(took <= DEAD_LINK.give_up + LATE_BY, "the {side} side closed after {took:?}, late");
}

#[test]
fn a_silently_cut_member_link_is_closed_by_the_kernel_on_both_sides() {
    in_own_network(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (mut dialled, mut accepted) = pair(&listener, dial_member_link("127.0.0.1", port)).await;
        // The accepted side last heard anything now: its give-up counts from here.
        let heard = Instant::now();
        ready_member_link(&accepted).expect("ready the accepted side");
        // The same link without the rule: what a socket left to the kernel's defaults does.
        let (mut bare, _bare_accepted) = pair(&listener, TcpStream::connect(("127.0.0.1", port))).await;

        cut(port);
        let since = Instant::now();
        // The dialled side has data in flight (a raft message into the black hole); the accepted
        // side only hears nothing, as a follower does when its leader's link is cut.
        dialled.write_all(b"d").await.expect("queue a message");
        bare.write_all(b"d").await.expect("queue a message");

        // The dialled side gives up a give-up time after its first unacknowledged send; the
        // accepted side (nothing in flight, probed at 1 and 2 s) that long after it last heard.
        let (dialled_closed, accepted_closed) =
            tokio::join!(closed_after(&mut dialled, since), closed_after(&mut accepted, heard));
        assert_given_up("dialled", dialled_closed);
        assert_given_up("accepted", accepted_closed);

        let mut byte = [0u8; 1];
        match bare.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("without the rule the cut link was closed too ({other:?}): the test shows nothing"),
        }
    });
}

#[test]
fn a_cut_behind_the_delay_proxy_closes_the_members_connection() {
    in_own_network(|| async {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind the member's peer port");
        let upstream_at: SocketAddr = upstream.local_addr().expect("address");
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let proxy_at = proxy.local_addr().expect("address");
        let stop = tokio_util::sync::CancellationToken::new();
        let delay = Delay { delay: Duration::from_millis(5), jitter: Duration::ZERO };
        tokio::spawn(delay_proxy::serve(proxy, upstream_at, delay, 7, stop.clone()));
        let (mut member, _peer) = pair(&upstream, dial_member_link("127.0.0.1", proxy_at.port())).await;

        // Only the WAN side is cut: the member's own socket reaches the proxy on a link that
        // stays up, so only the proxy's upstream side can notice.
        cut(upstream_at.port());
        let since = Instant::now();
        member.write_all(b"d").await.expect("queue a message");
        let (took, how) = closed_after(&mut member, since).await.expect("the member's connection is closed");
        eprintln!("the member's connection closed after {took:?}: {how}");
        // The proxy closes the member's connection once its upstream side gave up.
        assert!(took <= DEAD_LINK.give_up + LATE_BY, "closed after {took:?} ({how}), late");
        assert!(
            took >= DEAD_LINK.give_up - Duration::from_millis(100),
            "closed after {took:?} ({how}), before the give-up time"
        );
        stop.cancel();
    });
}
