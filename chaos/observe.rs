//! The observer: a thread that asks every member for its `Status` ten times a second while a run
//! lasts — of every validator the cluster serves, each call naming its validator when there are
//! several — and keeps what it saw: each watermark read with the instants the call started and
//! ended (the S3 evidence, by validator), and the latest raft leader each member reported.
//!
//! It only reads; it never changes the lab.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use failover::domain::MonoTime;

use crate::control;
use crate::lab::Lab;
use crate::verdict::WatermarkRead;

#[derive(Default)]
struct Seen {
    /// By validator, the lab's first validator first.
    reads: Vec<Vec<WatermarkRead>>,
    /// Per member: the raft leader it reported last.
    leader: Vec<Option<String>>,
}

pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    pub fn start(lab: &Lab, runtime: tokio::runtime::Handle) -> Observer {
        let sockets: Vec<PathBuf> = lab.sockets();
        let headers = lab.headers();
        let n = sockets.len();
        let seen = Arc::new(Mutex::new(Seen { leader: vec![None; n], reads: vec![Vec::new(); headers.len()] }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let asks = headers
                        .iter()
                        .enumerate()
                        .flat_map(|(k, h)| sockets.iter().enumerate().map(move |(i, s)| (k, h, i, s)));
                    let calls = asks.map(|(k, header, i, socket)| async move {
                        let start = MonoTime::now();
                        let reply = control::status(socket, header.as_deref(), Duration::from_millis(700)).await;
                        (k, i, start, MonoTime::now(), reply)
                    });
                    let results = runtime.block_on(futures::future::join_all(calls));
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    for (k, i, start, end, reply) in results {
                        let Some(r) = reply else { continue };
                        if k == 0 {
                            s.leader[i] = r.raft.as_ref().map(|x| x.leader.clone()).filter(|l| !l.is_empty());
                        }
                        if let Some(hrs) = r.watermark.and_then(|w| w.hrs) {
                            s.reads[k].push(WatermarkRead {
                                member: r.member,
                                start_ns: start.as_nanos(),
                                end_ns: end.as_nanos(),
                                hrs: (hrs.height, hrs.round, hrs.step),
                            });
                        }
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Observer { seen, stop, thread: Some(thread) }
    }

    /// The raft leader most members agree on now, if any.
    pub fn leader(&self) -> Option<String> {
        let s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut votes: Vec<&String> = s.leader.iter().flatten().collect();
        votes.sort();
        let best = votes.chunk_by(|a, b| a == b).max_by_key(|c| c.len())?;
        (best.len() * 2 > s.leader.len()).then(|| best[0].clone())
    }

    /// Stops the thread and hands over every watermark read, by validator (the lab's first
    /// validator first).
    pub fn finish(mut self) -> Vec<Vec<WatermarkRead>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut self.seen.lock().unwrap_or_else(|p| p.into_inner()).reads)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
