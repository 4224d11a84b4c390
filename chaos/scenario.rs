//! The scenarios: each injects one kind of fault into a running lab at a randomised moment, for
//! a randomised time, heals it, and says what the cluster should have done (fail over, keep the
//! active, or either). Every random choice comes from the run's seeded generator, so a seed
//! replays the same choices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use failover::domain::MonoTime;
use nix::sys::signal::Signal;

use crate::lab::{Lab, MEMBERS, PRODUCERS, Timings};
use crate::net::LinkFault;
use crate::observe::Observer;
use crate::rogue::{self, Answers};
use crate::verdict::{Expect, MemberState, RogueEvidence, expected_refusals};

pub struct Scenario {
    pub name: &'static str,
    /// Needs the namespace lab (root, ip, nft) or a tmpfs mount.
    pub needs_root: bool,
    /// Needs libfaketime.
    pub needs_faketime: bool,
    pub about: &'static str,
}

pub const ALL: &[Scenario] = &[
    Scenario { name: "kill-daemon", needs_root: false, needs_faketime: false, about: "kill -9 the active daemon" },
    Scenario { name: "kill-node", needs_root: false, needs_faketime: false, about: "kill -9 the active node" },
    Scenario {
        name: "stop-daemon",
        needs_root: false,
        needs_faketime: false,
        about: "SIGSTOP the active daemon for longer than its lease, then SIGCONT",
    },
    Scenario {
        name: "partition-active",
        needs_root: true,
        needs_faketime: false,
        about: "cut the active member off from all others",
    },
    Scenario {
        name: "partition-leader",
        needs_root: true,
        needs_faketime: false,
        about: "cut the raft leader off while it is not the active",
    },
    Scenario { name: "isolate-witness", needs_root: true, needs_faketime: false, about: "cut the witness off" },
    Scenario {
        name: "asymmetric",
        needs_root: true,
        needs_faketime: false,
        about: "drop one direction of the active's link",
    },
    Scenario {
        name: "packet-loss",
        needs_root: true,
        needs_faketime: false,
        about: "drop 2-10 % of packets on one member's link",
    },
    Scenario {
        name: "flapping-link",
        needs_root: true,
        needs_faketime: false,
        about: "the active's link goes down and up again, repeatedly",
    },
    Scenario {
        name: "restart-storm",
        needs_root: false,
        needs_faketime: false,
        about: "every member restarted, one after another",
    },
    Scenario {
        name: "full-disk",
        needs_root: true,
        needs_faketime: false,
        about: "the active's data_dir (a small tmpfs) fills up",
    },
    Scenario {
        name: "clock-jump",
        needs_root: false,
        needs_faketime: true,
        about: "the active's wall clock jumps hours forward, then back",
    },
    Scenario {
        name: "rogue-peer",
        needs_root: false,
        needs_faketime: false,
        about: "a host that is no member sends forged and spoofed traffic to every peer port",
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// A small, seedable generator (splitmix64): the runs' randomness must replay from a seed on
/// any machine, and nothing here needs more.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.next_u64() % (span + 1) })
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// The runner was interrupted (SIGINT, SIGTERM, SIGHUP): stop and clean up.
#[derive(Debug)]
pub struct Interrupted;

/// What a scenario did, for the verdict.
pub struct Injected {
    pub fault_at: MonoTime,
    pub expect: Expect,
    pub max_failovers: usize,
    pub l1_limit: Duration,
    pub notes: Vec<String>,
    /// The rogue-peer scenario's evidence; completed by [`after_settle`].
    pub rogue: Option<RogueEvidence>,
}

/// What a scenario may use while it runs.
pub struct Context<'a> {
    pub lab: &'a mut Lab,
    pub observer: &'a Observer,
    pub rng: &'a mut Rng,
    pub timings: &'a Timings,
    pub interrupted: &'a dyn Fn() -> bool,
}

impl Context<'_> {
    /// Waits `d`, restarting crashed processes meanwhile (as systemd would).
    pub fn pause(&mut self, d: Duration) -> Result<(), Interrupted> {
        let end = Instant::now() + d;
        loop {
            if (self.interrupted)() {
                return Err(Interrupted);
            }
            self.lab.supervise();
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep(end.saturating_duration_since(now).min(Duration::from_millis(50)));
        }
    }

    /// Waits until a producer other than `old` signs, up to `limit`.
    fn wait_other(&mut self, old: usize, limit: Duration) -> Result<bool, Interrupted> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.lab.signing().iter().any(|&i| i != old) {
                return Ok(true);
            }
            self.pause(Duration::from_millis(50))?;
        }
        Ok(false)
    }

    fn link(&self, i: usize, fault: Option<LinkFault>) -> Result<(), String> {
        self.lab.net().set_link(i, fault).map_err(|e| e.to_string())
    }

    /// Puts `fault` on member `i`'s link for `hold`, then heals it (also when interrupted).
    fn hold_link(&mut self, i: usize, fault: LinkFault, hold: Duration) -> Result<Result<(), String>, Interrupted> {
        if let Err(e) = self.link(i, Some(fault)) {
            return Ok(Err(e));
        }
        let paused = self.pause(hold);
        let healed = self.link(i, None);
        paused?;
        Ok(healed)
    }
}

/// Injects `scenario`'s fault into a lab whose producer `active` signs, and heals it.
pub fn inject(scenario: &Scenario, cx: &mut Context, active: usize) -> Result<Result<Injected, String>, Interrupted> {
    let t = cx.timings.clone();
    let lease_limit = t.l1_lease_limit();
    let mut notes = Vec::new();
    let injected = |fault_at, expect, max_failovers, l1_limit, notes| {
        Ok(Ok(Injected { fault_at, expect, max_failovers, l1_limit, notes, rogue: None }))
    };
    match scenario.name {
        "kill-daemon" => {
            let at = MonoTime::now();
            cx.lab.kill_daemon(active);
            cx.wait_other(active, lease_limit + Duration::from_secs(2))?;
            if let Err(e) = cx.lab.start_daemon(active) {
                return Ok(Err(e));
            }
            injected(at, Expect::Failover, 1, lease_limit, notes)
        }
        "kill-node" => {
            let at = MonoTime::now();
            cx.lab.kill_node(active);
            cx.wait_other(active, t.l1_node_limit() + Duration::from_secs(2))?;
            if let Err(e) = cx.lab.start_node(active) {
                return Ok(Err(e));
            }
            injected(at, Expect::Failover, 1, t.l1_node_limit(), notes)
        }
        "stop-daemon" => {
            let hold = cx.rng.between(lease_limit, lease_limit + t.lease_ttl);
            notes.push(format!("stopped for {:.1} s", hold.as_secs_f64()));
            let at = MonoTime::now();
            cx.lab.signal_daemon(active, Signal::SIGSTOP);
            cx.pause(hold)?;
            cx.lab.signal_daemon(active, Signal::SIGCONT);
            injected(at, Expect::Failover, 1, lease_limit, notes)
        }
        "partition-active" => {
            let hold = cx.rng.between(lease_limit, lease_limit + Duration::from_secs(3));
            notes.push(format!("cut for {:.1} s", hold.as_secs_f64()));
            let at = MonoTime::now();
            if let Err(e) = cx.hold_link(active, LinkFault::Cut, hold)? {
                return Ok(Err(e));
            }
            injected(at, Expect::Failover, 1, lease_limit, notes)
        }
        "partition-leader" => {
            let end = Instant::now() + Duration::from_secs(3);
            let mut leader = cx.observer.leader();
            while leader.as_deref().is_none_or(|l| l == MEMBERS[active]) && Instant::now() < end {
                cx.pause(Duration::from_millis(100))?;
                leader = cx.observer.leader();
            }
            let Some(leader) = leader else { return Ok(Err("no raft leader was reported".into())) };
            let Some(l) = MEMBERS.iter().position(|m| *m == leader) else {
                return Ok(Err(format!("unknown raft leader {leader}")));
            };
            let expect = if l == active {
                notes.push("the raft leader stayed on the active; it was cut off anyway".into());
                Expect::Failover
            } else {
                notes.push(format!("leader {leader}"));
                Expect::NoFailover
            };
            let hold = cx.rng.between(Duration::from_secs(2), Duration::from_secs(5));
            let at = MonoTime::now();
            if let Err(e) = cx.hold_link(l, LinkFault::Cut, hold)? {
                return Ok(Err(e));
            }
            injected(at, expect, 1, lease_limit, notes)
        }
        "isolate-witness" => {
            let witness = MEMBERS.len() - 1;
            let hold = cx.rng.between(Duration::from_secs(2), Duration::from_secs(5));
            notes.push(format!("cut for {:.1} s", hold.as_secs_f64()));
            let at = MonoTime::now();
            if let Err(e) = cx.hold_link(witness, LinkFault::Cut, hold)? {
                return Ok(Err(e));
            }
            injected(at, Expect::NoFailover, 0, lease_limit, notes)
        }
        "asymmetric" => {
            let fault = if cx.rng.chance() { LinkFault::DropIncoming } else { LinkFault::DropOutgoing };
            let hold = cx.rng.between(lease_limit, lease_limit + Duration::from_secs(3));
            notes.push(format!("{fault:?} for {:.1} s", hold.as_secs_f64()));
            let at = MonoTime::now();
            if let Err(e) = cx.hold_link(active, fault, hold)? {
                return Ok(Err(e));
            }
            injected(at, Expect::Either, 1, lease_limit, notes)
        }
        "packet-loss" => {
            let link = cx.rng.below(MEMBERS.len() as u64) as usize;
            // A degraded WAN link, not a broken one: at 20 % loss on the raft leader's link, TCP's
            // retransmit backoff holds renewals longer than TTL - margin at lab timings (see
            // chaos/README.md).
            let percent = 2 + cx.rng.below(9) as u8;
            let hold = cx.rng.between(Duration::from_secs(4), Duration::from_secs(7));
            notes.push(format!("{percent} % loss on {} for {:.1} s", MEMBERS[link], hold.as_secs_f64()));
            let expect = if link == active { Expect::Either } else { Expect::NoFailover };
            let at = MonoTime::now();
            if let Err(e) = cx.hold_link(link, LinkFault::Loss(percent), hold)? {
                return Ok(Err(e));
            }
            injected(at, expect, 1, lease_limit, notes)
        }
        "flapping-link" => {
            let total = cx.rng.between(Duration::from_secs(5), Duration::from_secs(8));
            let at = MonoTime::now();
            let mut flaps = 0;
            while MonoTime::now().saturating_since(at) < total {
                let down = cx.rng.between(Duration::from_millis(200), Duration::from_millis(1000));
                let up = cx.rng.between(Duration::from_millis(300), Duration::from_millis(1500));
                if let Err(e) = cx.link(active, Some(LinkFault::Cut)) {
                    return Ok(Err(e));
                }
                cx.pause(down)?;
                if let Err(e) = cx.link(active, None) {
                    return Ok(Err(e));
                }
                cx.pause(up)?;
                flaps += 1;
            }
            notes.push(format!("{flaps} flaps in {:.1} s", total.as_secs_f64()));
            injected(at, Expect::Either, 1, lease_limit, notes)
        }
        "restart-storm" => {
            let mut order: Vec<usize> = (0..MEMBERS.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, cx.rng.below(i as u64 + 1) as usize);
            }
            let at = MonoTime::now();
            for i in order {
                let graceful = cx.rng.chance();
                let down = cx.rng.between(Duration::ZERO, Duration::from_millis(500));
                notes.push(format!("{} {}", MEMBERS[i], if graceful { "SIGTERM" } else { "SIGKILL" }));
                if graceful {
                    cx.lab.stop_daemon(i, Duration::from_secs(5));
                } else {
                    cx.lab.kill_daemon(i);
                }
                cx.pause(down)?;
                if let Err(e) = cx.lab.start_daemon(i) {
                    return Ok(Err(e));
                }
                if !cx.lab.wait_back(i, Duration::from_secs(10)) {
                    return Ok(Err(format!("member {} did not come back within 10 s", MEMBERS[i])));
                }
                let gap = cx.rng.between(Duration::from_millis(500), Duration::from_millis(1500));
                cx.pause(gap)?;
            }
            injected(at, Expect::Either, PRODUCERS, lease_limit, notes)
        }
        "full-disk" => {
            let hold = cx.rng.between(Duration::from_secs(3), Duration::from_secs(5));
            let at = MonoTime::now();
            match cx.lab.fill_disk(active) {
                Ok(bytes) => notes.push(format!("filled {} MiB, held {:.1} s", bytes >> 20, hold.as_secs_f64())),
                Err(e) => return Ok(Err(e)),
            }
            cx.pause(hold)?;
            cx.lab.free_disk(active);
            injected(at, Expect::Either, 1, lease_limit, notes)
        }
        "clock-jump" => {
            let hours = 1 + cx.rng.below(24);
            let forward = cx.rng.chance();
            let (first, second) =
                if forward { (hours as i64, -(hours as i64)) } else { (-(hours as i64), hours as i64) };
            notes.push(format!("wall clock {first:+} h, then {second:+} h"));
            let at = MonoTime::now();
            if let Err(e) = cx.lab.set_clock(active, &format!("{:+}", first * 3600)) {
                return Ok(Err(e));
            }
            let (hold_first, hold_second) = (
                cx.rng.between(Duration::from_secs(2), Duration::from_secs(4)),
                cx.rng.between(Duration::from_secs(2), Duration::from_secs(4)),
            );
            cx.pause(hold_first)?;
            if let Err(e) = cx.lab.set_clock(active, &format!("{:+}", second * 3600)) {
                return Ok(Err(e));
            }
            cx.pause(hold_second)?;
            if let Err(e) = cx.lab.set_clock(active, "+0") {
                return Ok(Err(e));
            }
            injected(at, Expect::NoFailover, 0, lease_limit, notes)
        }
        "rogue-peer" => rogue_peer(cx, active),
        other_name => Ok(Err(format!("no such scenario {other_name}"))),
    }
}

/// How long the members may take to count what the rogue sent them (the forged snapshots are
/// refused by each member's raft loop, after the transport accepted them).
const COUNT_LIMIT: Duration = Duration::from_secs(5);

/// The rogue-peer scenario: a host that is no member attacks every member's peer port for
/// 5–10 s while the cluster runs (see `rogue`); the active must stay active, with the same
/// lease, and every attack must be refused and counted.
fn rogue_peer(cx: &mut Context, active: usize) -> Result<Result<Injected, String>, Interrupted> {
    let duration = cx.rng.between(Duration::from_secs(5), Duration::from_secs(10));
    let mut evidence = RogueEvidence {
        members: MEMBERS.iter().map(|m| m.to_string()).collect(),
        before: cx.lab.status(active).map(|s| member_state(&s)),
        refusals_before: (0..MEMBERS.len()).map(|i| cx.lab.peer_refusals(i)).collect(),
        forged_term: rogue::forged_term(),
        spoofed_height: rogue::spoofed_height(),
        ..RogueEvidence::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let plan = rogue::Plan {
        targets: (0..MEMBERS.len())
            .map(|i| rogue::Target {
                id: failover::domain::MemberId::new(MEMBERS[i]).expect("lab member names are valid ids"),
                peer: cx.lab.net().peer_addr(i),
                tls: cx.lab.member_tls[i].clone(),
            })
            .collect(),
        operator: cx.lab.operator_tls.clone(),
        duration,
        stop: Arc::clone(&stop),
    };
    let at = MonoTime::now();
    let handle = match cx.lab.net_mut().spawn_outsider(move || rogue::run(plan)) {
        Ok(h) => h,
        Err(e) => return Ok(Err(format!("cannot start the rogue peer: {e}"))),
    };
    let mut seen = BTreeMap::new();
    while !handle.is_finished() {
        if let Err(i) = cx.pause(Duration::from_millis(200)) {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
            return Err(i);
        }
        heights_seen(cx.lab, &mut seen);
    }
    evidence.answers = match handle.join() {
        Ok(Ok(Ok(answers))) => answers,
        Ok(Ok(Err(e))) => return Ok(Err(e)),
        Ok(Err(e)) => return Ok(Err(format!("the rogue peer could not enter its namespace: {e}"))),
        Err(_) => return Ok(Err("the rogue peer's thread panicked".into())),
    };
    evidence.refusals_after = wait_counted(cx, &evidence.answers, &evidence.refusals_before)?;
    evidence.heights_seen = seen.into_iter().map(|((viewer, shown), h)| (viewer, shown, h)).collect();
    let sent: u64 = evidence.answers.values().map(|t| t.total()).sum();
    let notes =
        vec![format!("{sent} hostile requests to {} members over {:.1} s", MEMBERS.len(), duration.as_secs_f64())];
    let lease_limit = cx.timings.l1_lease_limit();
    Ok(Ok(Injected {
        fault_at: at,
        expect: Expect::NoFailover,
        max_failovers: 0,
        l1_limit: lease_limit,
        notes,
        rogue: Some(evidence),
    }))
}

fn member_state(s: &failover::proto::v1::StatusReply) -> MemberState {
    MemberState {
        holder: s.lease.as_ref().map(|l| l.holder.clone()).unwrap_or_default(),
        epoch: s.lease.as_ref().map_or(0, |l| l.epoch),
        term: s.raft.as_ref().map_or(0, |r| r.term),
        failed: s.raft.as_ref().map(|r| r.failed.clone()).unwrap_or_default(),
    }
}

/// Records, per (viewer, member shown), the highest height each member's `Members` shows now.
fn heights_seen(lab: &Lab, seen: &mut BTreeMap<(String, String), u64>) {
    for (i, viewer) in MEMBERS.iter().enumerate() {
        let Some(view) = lab.members_view(i) else { continue };
        for row in view.members {
            let Some(height) = row.height else { continue };
            let highest = seen.entry((viewer.to_string(), row.id)).or_insert(height);
            *highest = (*highest).max(height);
        }
    }
}

/// Waits until every member has counted, on top of what it had counted `before` the attack,
/// the refusals its answers to the rogue call for (or [`COUNT_LIMIT`] passes), and returns the
/// counters as they are then.
fn wait_counted(
    cx: &mut Context,
    answers: &Answers,
    before: &[Option<BTreeMap<String, u64>>],
) -> Result<Vec<Option<BTreeMap<String, u64>>>, Interrupted> {
    let end = Instant::now() + COUNT_LIMIT;
    loop {
        let now: Vec<_> = (0..MEMBERS.len()).map(|i| cx.lab.peer_refusals(i)).collect();
        let counted = now.iter().enumerate().all(|(i, counts)| {
            let had = |reason: &str| before.get(i).and_then(|b| b.as_ref()?.get(reason).copied()).unwrap_or(0);
            counts.as_ref().is_some_and(|c| {
                expected_refusals(answers, i)
                    .iter()
                    .all(|(reason, want)| c.get(reason).copied().unwrap_or(0).saturating_sub(had(reason)) >= *want)
            })
        });
        if counted || Instant::now() >= end {
            return Ok(now);
        }
        cx.pause(Duration::from_millis(100))?;
    }
}

/// Completes a scenario's evidence once the run has settled: for the rogue-peer scenario,
/// every member's lease and raft state, what each member shows, and the processes that exited
/// or are not running.
pub fn after_settle(lab: &mut Lab, injected: &mut Injected) {
    let Some(evidence) = injected.rogue.as_mut() else { return };
    evidence.after = (0..MEMBERS.len()).map(|i| lab.status(i).map(|s| member_state(&s))).collect();
    let mut seen: BTreeMap<(String, String), u64> =
        evidence.heights_seen.drain(..).map(|(viewer, shown, h)| ((viewer, shown), h)).collect();
    heights_seen(lab, &mut seen);
    evidence.heights_seen = seen.into_iter().map(|((viewer, shown), h)| (viewer, shown, h)).collect();
    evidence.exits = lab.exits.iter().map(|e| format!("{} of {} exited ({})", e.what, e.member, e.status)).collect();
    evidence.not_running = lab.not_running();
}
