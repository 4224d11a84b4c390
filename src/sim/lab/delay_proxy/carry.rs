//! Carrying connections through the delay proxy: accept, connect upstream within
//! [`CONNECT_DEADLINE`], then one held queue per direction.
//!
//! Each direction is a reader that stamps every chunk with its release time and a writer that
//! sends it no earlier: release = max(previous release, arrival + delay + jitter), so bytes keep
//! their order even when a later chunk draws less jitter. When either side closes (or fails),
//! its close travels the same delay as its last bytes, and then both connections are closed:
//! a link either carries a connection both ways or not at all.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CHUNK_BYTES, CONNECT_DEADLINE, Delay, QUEUE_CHUNKS, SplitMix};

/// What one direction holds: bytes to send at `release`, or (`None`) the sender's close.
struct Chunk {
    release: Instant,
    bytes: Option<Vec<u8>>,
}

/// Accepts on `listener` and carries every connection to `upstream` with `delay` each way,
/// until `shutdown`; then every connection it carries is closed.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, delay: Delay, seed: u64, shutdown: CancellationToken) {
    let mut seeds = SplitMix(seed);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((inbound, from)) => {
                let stop = shutdown.child_token();
                let seed = seeds.next();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = carry(inbound, from, upstream, delay, seed) => {}
                    }
                });
            }
            // A connection that went away before it was accepted, or no file descriptor left:
            // the listener itself is fine, so keep accepting after a breath.
            Err(e) => {
                tracing::debug!(error = %e, "delay proxy: an accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection: upstream within the deadline, then both directions until either ends.
async fn carry(inbound: TcpStream, from: SocketAddr, upstream: SocketAddr, delay: Delay, seed: u64) {
    let outbound = match tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        // The peer is down or cut off: the client sees its connection closed, as it would see a
        // connect fail, and retries on its own schedule.
        Ok(Err(e)) => {
            tracing::debug!(%from, %upstream, error = %e, "delay proxy: cannot connect upstream; closing the client");
            return;
        }
        Err(_) => {
            tracing::debug!(%from, %upstream, "delay proxy: no upstream connection within the deadline; closing the client");
            return;
        }
    };
    // Nagle would hold a released chunk back for an acknowledgement, adding delay of its own.
    let _ = inbound.set_nodelay(true);
    // The upstream connection is the member's link on the WAN, and the one a cut drops: it gets
    // the member's dead-link watch, so that a cut closes the member's connection as it would
    // without a proxy between (the member's own socket reaches only this proxy).
    crate::link_watch::ready_member_link_or_warn(&outbound, "delay proxy upstream");
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let mut seeds = SplitMix(seed);
    let there = one_way(in_read, out_write, delay, seeds.next());
    let back = one_way(out_read, in_write, delay, seeds.next());
    // The first direction to end ends the connection: dropping the other closes both sockets.
    tokio::select! {
        () = there => {}
        () = back => {}
    }
}

/// One direction: held by [`hold`], released by [`release`]; ends when the close (or a failed
/// write) has been carried.
async fn one_way(from: OwnedReadHalf, to: OwnedWriteHalf, delay: Delay, seed: u64) {
    let (queue, held) = mpsc::channel(QUEUE_CHUNKS);
    let reading = async {
        hold(from, queue, delay, seed).await;
        // What was read is still being released: the direction ends with the writer.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = reading => {}
        () = release(to, held) => {}
    }
}

/// Reads chunks and queues each with its release time; queues the close last. A full queue
/// stops the reading, so the sender is slowed by TCP, not buffered without bound.
async fn hold(mut from: OwnedReadHalf, queue: mpsc::Sender<Chunk>, delay: Delay, seed: u64) {
    let mut rng = SplitMix(seed);
    let mut last = Instant::now();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let read = from.read(&mut buf).await;
        // Never before the previous chunk: a smaller jitter must not overtake it.
        let release = (Instant::now() + delay.draw(&mut rng)).max(last);
        last = release;
        let bytes = match read {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(buf[..n].to_vec()),
        };
        let closed = bytes.is_none();
        if queue.send(Chunk { release, bytes }).await.is_err() || closed {
            return;
        }
    }
}

/// Sends each queued chunk at its release time; at the close, shuts the other side's write.
async fn release(mut to: OwnedWriteHalf, mut held: mpsc::Receiver<Chunk>) {
    while let Some(chunk) = held.recv().await {
        tokio::time::sleep_until(chunk.release).await;
        match chunk.bytes {
            Some(bytes) => {
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            None => {
                let _ = to.shutdown().await;
                return;
            }
        }
    }
}
