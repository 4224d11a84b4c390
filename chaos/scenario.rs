//! The scenarios: each injects one kind of fault into a running lab at a randomised moment, for
//! a randomised time, heals it, and says what the cluster should have done (fail over, keep the
//! active, or either). Every random choice comes from the run's seeded generator, so a seed
//! replays the same choices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use failover::domain::MonoTime;
use failover::sim::lab::procs::{self, Proc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::lab::{Lab, MEMBERS, PRODUCERS, Timings};
use crate::net::LinkFault;
use crate::observe::Observer;
use crate::rogue::{self, Answers};
use crate::timings::ChaosTimings;
use crate::verdict::{Expect, MemberState, RogueEvidence, expected_refusals};

pub struct Scenario {
    pub name: &'static str,
    /// Needs the namespace lab (root, ip, nft) or a tmpfs mount.
    pub needs_root: bool,
    /// Needs libfaketime.
    pub needs_faketime: bool,
    pub about: &'static str,
    /// Why the scenario cannot apply in signer mode, where it does not run; `None`: it runs in
    /// both modes.
    pub not_in_signer_mode: Option<&'static str>,
}

/// Signer mode has no keeper and no node the daemon starts: the nodes are the lab's own.
const NO_NODE_PROCESS: &str = "signer mode has no keeper and no node process started by the daemon (its nodes are the lab's, and the remote signer lives in the daemon)";

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "kill-daemon",
        needs_root: false,
        needs_faketime: false,
        about: "kill -9 the active daemon",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "kill-node",
        needs_root: false,
        needs_faketime: false,
        about: "kill -9 the active node",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "stop-daemon",
        needs_root: false,
        needs_faketime: false,
        about: "SIGSTOP the active daemon for longer than its lease, then SIGCONT",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "freeze-host",
        needs_root: false,
        needs_faketime: false,
        about: "SIGSTOP the active's daemon, keeper and node together for about twice the lease, then SIGCONT",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "kill-keeper",
        needs_root: false,
        needs_faketime: false,
        about: "kill -9 the active's keeper",
        not_in_signer_mode: Some(NO_NODE_PROCESS),
    },
    Scenario {
        name: "forking-node",
        needs_root: false,
        needs_faketime: false,
        about: "validators behind a forking start script: a planned promote, then kill -9 of the new active's daemon",
        not_in_signer_mode: Some(NO_NODE_PROCESS),
    },
    Scenario {
        name: "partition-active",
        needs_root: true,
        needs_faketime: false,
        about: "cut the active member off from all others",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "partition-leader",
        needs_root: true,
        needs_faketime: false,
        about: "cut the raft leader off while it is not the active",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "isolate-witness",
        needs_root: true,
        needs_faketime: false,
        about: "cut the witness off",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "asymmetric",
        needs_root: true,
        needs_faketime: false,
        about: "drop one direction of the active's link",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "packet-loss",
        needs_root: true,
        needs_faketime: false,
        about: "drop 2-10 % of packets on one member's link",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "flapping-link",
        needs_root: true,
        needs_faketime: false,
        about: "the active's link goes down and up again, repeatedly",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "restart-storm",
        needs_root: false,
        needs_faketime: false,
        about: "every member restarted, one after another",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "full-disk",
        needs_root: true,
        needs_faketime: false,
        about: "the active's data_dir (a small tmpfs) fills up",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "clock-jump",
        needs_root: false,
        needs_faketime: true,
        about: "the active's wall clock jumps hours forward, then back",
        not_in_signer_mode: None,
    },
    Scenario {
        name: "rogue-peer",
        needs_root: false,
        needs_faketime: false,
        about: "a host that is no member sends forged and spoofed traffic to every peer port",
        not_in_signer_mode: None,
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
    /// What the scenario itself saw go wrong (a process left of a node group that was stopped,
    /// a second handover that never came).
    pub violations: Vec<String>,
    /// The whole host of the active was paused (freeze-host): the old node's overlap with the new
    /// active is a measured residual risk, not a verdict.
    pub host_freeze: bool,
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

    /// Waits until one producer alone has been signing throughout `hold`, a stretch that must
    /// begin within `limit`; that producer, or `None` when no stretch did. Crashed processes are
    /// restarted meanwhile, as in [`Context::pause`]. One sample is not enough: a producer whose
    /// daemon has just failed on the healing fault still shows the signatures its node made
    /// before the daemon stopped it, for two blocks.
    pub fn wait_settled(&mut self, limit: Duration, hold: Duration) -> Result<Option<usize>, Interrupted> {
        let end = Instant::now() + limit;
        let mut stretch = None;
        loop {
            if (self.interrupted)() {
                return Err(Interrupted);
            }
            self.lab.supervise();
            match settle_step(stretch, &self.lab.signing(), Instant::now(), end, hold) {
                Settling::Settled(who) => return Ok(Some(who)),
                Settling::Unsettled => return Ok(None),
                Settling::Waiting(s) => stretch = s,
            }
            std::thread::sleep(Duration::from_millis(25));
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
        Ok(Ok(Injected {
            fault_at,
            expect,
            max_failovers,
            l1_limit,
            notes,
            rogue: None,
            violations: Vec::new(),
            host_freeze: false,
        }))
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
        "freeze-host" => freeze_host(cx, active),
        "kill-keeper" => kill_keeper(cx, active),
        "forking-node" => forking_node(cx, active),
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
            // A degraded WAN link, not a broken one. TCP recovers a lost segment within
            // milliseconds unless its retransmission is lost too; then its timeout (200 ms at
            // least, doubling each time) stalls the whole connection, renews included. At 20 %
            // loss on the raft leader's link that holds renewals longer than TTL - margin at lab
            // timings; signer mode's 400 ms lease rides out one such timeout but not a doubled
            // one, which 8-9 % loss on the leader's link produced (see chaos/README.md).
            let percent = if cx.lab.signer_mode() { 1 + cx.rng.below(4) as u8 } else { 2 + cx.rng.below(9) as u8 };
            let hold = cx.rng.between(Duration::from_secs(4), Duration::from_secs(7));
            notes.push(format!("{percent} % loss on {} for {:.1} s", MEMBERS[link], hold.as_secs_f64()));
            // In signer mode the raft leader's link carries every renew of a 400 ms lease, and a
            // lost segment of a sparse TCP flow waits about 200 ms for its probe or timeout: two
            // of them expire a live holder, so production may move once (never flap).
            let on_leader = cx.lab.signer_mode() && cx.observer.leader().as_deref() == Some(MEMBERS[link]);
            if on_leader {
                notes.push("the raft leader's link".into());
            }
            let expect = if link == active || on_leader { Expect::Either } else { Expect::NoFailover };
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

/// The freeze-host scenario: the whole of the active's host pauses — its daemon, its keeper
/// and its node's process group (in signer mode: its daemon and its node) stopped together for
/// about twice the lease — and resumes, every process continued in a random order within
/// microseconds. Nothing on the host can act while it is paused, so the old node's process
/// outlives the lease; what it does after the resume is what the run measures.
fn freeze_host(cx: &mut Context, active: usize) -> Result<Result<Injected, String>, Interrupted> {
    let t = cx.timings.clone();
    let mut targets: Vec<(String, Pid)> = Vec::new();
    let mut validator_pid = None;
    let Some(daemon) = cx.lab.daemon_pid(active) else {
        return Ok(Err(format!("member {}'s daemon is not running", MEMBERS[active])));
    };
    targets.push((format!("daemon {daemon}"), Pid::from_raw(daemon)));
    if cx.lab.signer_mode() {
        let Some(node) = cx.lab.node_pid(active) else {
            return Ok(Err(format!("member {}'s node is not running", MEMBERS[active])));
        };
        targets.push((format!("node {node}"), Pid::from_raw(node)));
    } else {
        let Some(keeper) = cx.lab.keeper(active) else {
            return Ok(Err(format!("no keeper of member {}'s daemon (pid {daemon}) in /proc", MEMBERS[active])));
        };
        let Some(validator) = cx.lab.validators(active).into_iter().next() else {
            return Ok(Err(format!("no validator of member {} in /proc", MEMBERS[active])));
        };
        validator_pid = Some(validator.pid);
        targets.push((format!("keeper {}", keeper.pid), Pid::from_raw(keeper.pid)));
        // A negative pid is the whole process group.
        targets.push((format!("node group {}", validator.pgrp), Pid::from_raw(-validator.pgrp)));
    }
    let hold = cx.rng.between(t.lease_ttl * 2, t.lease_ttl * 2 + Duration::from_secs(1));
    let mut order: Vec<usize> = (0..targets.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, cx.rng.below(i as u64 + 1) as usize);
    }
    let at = MonoTime::now();
    for (_, pid) in &targets {
        let _ = kill(*pid, Signal::SIGSTOP);
    }
    let paused = cx.pause(hold);
    for &k in &order {
        let _ = kill(targets[k].1, Signal::SIGCONT);
    }
    let lived = validator_pid.map(lifetime_after);
    paused?;
    let resumed: Vec<&str> = order.iter().map(|&k| targets[k].0.as_str()).collect();
    let mut notes = vec![format!("host paused {:.1} s; resumed {}", hold.as_secs_f64(), resumed.join(", then "))];
    match lived {
        Some(Some(d)) => notes.push(format!("old validator gone {:.1} ms after the resume", d.as_secs_f64() * 1e3)),
        Some(None) => notes.push(format!("old validator still alive {} s after the resume", LIFETIME_LIMIT.as_secs())),
        None => {}
    }
    Ok(Ok(Injected {
        fault_at: at,
        expect: Expect::Failover,
        max_failovers: 1,
        l1_limit: t.l1_lease_limit(),
        notes,
        rogue: None,
        violations: Vec::new(),
        host_freeze: true,
    }))
}

/// How long [`lifetime_after`] watches a process.
const LIFETIME_LIMIT: Duration = Duration::from_secs(5);

/// How long process `pid` goes on living from now, looked up in `/proc` every 200 µs (a zombie
/// counts as gone: it cannot sign); `None` if it still lives after [`LIFETIME_LIMIT`].
fn lifetime_after(pid: i32) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < LIFETIME_LIMIT {
        if procs::read(pid).is_none_or(|p| !p.live()) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

/// The kill-keeper scenario: the active's keeper dies by SIGKILL. Its node dies with it
/// (`PR_SET_PDEATHSIG`); the daemon must see the keeper gone, kill the node's group itself,
/// stand down and release, and the other producer take over. No process of the old group may be
/// left once it does.
fn kill_keeper(cx: &mut Context, active: usize) -> Result<Result<Injected, String>, Interrupted> {
    let lease_limit = cx.timings.l1_lease_limit();
    let Some(daemon) = cx.lab.daemon_pid(active) else {
        return Ok(Err(format!("member {}'s daemon is not running", MEMBERS[active])));
    };
    let Some(keeper) = cx.lab.keeper(active) else {
        return Ok(Err(format!("no keeper of member {}'s daemon (pid {daemon}) in /proc", MEMBERS[active])));
    };
    let groups: Vec<i32> = cx.lab.validators(active).iter().map(|v| v.pgrp).collect();
    let mut notes = vec![format!("keeper pid {} of daemon pid {daemon}", keeper.pid)];
    let at = MonoTime::now();
    let _ = kill(Pid::from_raw(keeper.pid), Signal::SIGKILL);
    let mut violations = Vec::new();
    if cx.wait_other(active, lease_limit + Duration::from_secs(2))? {
        violations.extend(left_of_groups(MEMBERS[active], &groups, "after another member began to sign"));
    }
    if cx.lab.keeper(active).is_some() {
        notes.push(format!("{} runs a new keeper", MEMBERS[active]));
    }
    Ok(Ok(Injected {
        fault_at: at,
        expect: Expect::Failover,
        max_failovers: 1,
        l1_limit: lease_limit,
        notes,
        rogue: None,
        violations,
        host_freeze: false,
    }))
}

/// The forking-node scenario (a lab whose validators run behind `sh -c "<validator> & wait"`):
/// a planned `failoverctl promote` of the standby, then kill -9 of the new active's daemon. After
/// each handover no process of the old node's group may be left — not the script, not the
/// validator it forked — by the time the other member signs.
fn forking_node(cx: &mut Context, active: usize) -> Result<Result<Injected, String>, Interrupted> {
    let lease_limit = cx.timings.l1_lease_limit();
    let other = (active + 1) % PRODUCERS;
    let group = match forked_group(cx.lab, active) {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    let mut notes = Vec::new();
    let mut violations = Vec::new();
    let at = MonoTime::now();
    match cx.lab.promote(active, other) {
        Ok(said) => notes.push(format!("promote {}: {said}", MEMBERS[other])),
        Err(e) => return Ok(Err(e)),
    }
    if cx.wait_other(active, lease_limit + Duration::from_secs(2))? {
        violations.extend(left_of_groups(MEMBERS[active], &[group], "after the planned handover"));
    }
    let Some(second) = cx.lab.wait_active(Duration::from_secs(5), cx.interrupted) else {
        violations.push("L1: no single producer signed after the planned handover".into());
        return Ok(Ok(forking_injected(at, lease_limit, notes, violations)));
    };
    let group = match forked_group(cx.lab, second) {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    let killed = MonoTime::now();
    cx.lab.kill_daemon(second);
    if cx.wait_other(second, lease_limit + Duration::from_secs(2))? {
        let took = MonoTime::now().saturating_since(killed).as_secs_f64();
        notes.push(format!("kill -9 of {}'s daemon: another member signing {took:.1} s later", MEMBERS[second]));
        violations.extend(left_of_groups(MEMBERS[second], &[group], "after its daemon was killed"));
    } else {
        violations.push(format!(
            "L1: after kill -9 of {}'s daemon no other member signed within {:.1} s",
            MEMBERS[second],
            (lease_limit + Duration::from_secs(2)).as_secs_f64()
        ));
    }
    if let Err(e) = cx.lab.start_daemon(second) {
        return Ok(Err(e));
    }
    Ok(Ok(forking_injected(at, lease_limit, notes, violations)))
}

fn forking_injected(at: MonoTime, l1_limit: Duration, notes: Vec<String>, violations: Vec<String>) -> Injected {
    Injected {
        fault_at: at,
        expect: Expect::Failover,
        max_failovers: 2,
        l1_limit,
        notes,
        rogue: None,
        violations,
        host_freeze: false,
    }
}

/// The process group of member `i`'s validator, which must hold the start script and the
/// validator it forked.
fn forked_group(lab: &Lab, i: usize) -> Result<i32, String> {
    let validator = lab
        .validators(i)
        .into_iter()
        .next()
        .ok_or_else(|| format!("no validator of member {} in /proc", MEMBERS[i]))?;
    let members = procs::live_in_group(validator.pgrp);
    if validator.pgrp == validator.pid || members.len() < 2 {
        return Err(format!(
            "member {}'s validator (pid {}) is not behind a forking start script: its group {} holds {}",
            MEMBERS[i],
            validator.pid,
            validator.pgrp,
            members.iter().map(Proc::describe).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(validator.pgrp)
}

/// A violation for every process still alive in one of `member`'s old node groups.
fn left_of_groups(member: &str, groups: &[i32], when: &str) -> Vec<String> {
    groups
        .iter()
        .filter_map(|&g| {
            let left = procs::live_in_group(g);
            (!left.is_empty()).then(|| {
                format!(
                    "orphan: {} process(es) of {member}'s old node group {g} still alive {when}: {}",
                    left.len(),
                    left.iter().map(Proc::describe).collect::<Vec<_>>().join("; ")
                )
            })
        })
        .collect()
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
        violations: Vec::new(),
        host_freeze: false,
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

/// One producer seen signing alone at every sample since `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stretch {
    pub who: usize,
    pub since: Instant,
}

/// Where the settle wait stands after a sample.
#[derive(Debug, PartialEq, Eq)]
pub enum Settling {
    /// This producer alone signed throughout the hold.
    Settled(usize),
    /// The limit passed with no stretch under way that began before it.
    Unsettled,
    /// Keep sampling, with this stretch under way (if any).
    Waiting(Option<Stretch>),
}

/// The settle rule, one sample at a time: `signing` are the producers signing at `now`. A stretch
/// holds while the same single producer signs at every sample and breaks on any other sample
/// (nobody, two, or another one, which starts a stretch of its own); it settles the run once it
/// has lasted `hold`, and it must have begun before `end`.
pub fn settle_step(
    stretch: Option<Stretch>,
    signing: &[usize],
    now: Instant,
    end: Instant,
    hold: Duration,
) -> Settling {
    let stretch = match (signing, stretch) {
        ([one], Some(s)) if *one == s.who => Some(s),
        ([one], _) => Some(Stretch { who: *one, since: now }),
        _ => None,
    };
    match stretch {
        Some(s) if now.duration_since(s.since) >= hold => Settling::Settled(s.who),
        Some(s) if s.since < end => Settling::Waiting(stretch),
        _ if now >= end => Settling::Unsettled,
        _ => Settling::Waiting(stretch),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    /// Waits up to 5 s for `check` to hold.
    fn eventually(check: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_forked_child_left_in_a_group_whose_script_died_is_reported_as_an_orphan_by_pid() {
        // The shape of forking-node: a start script that forks the node and waits, in a group of
        // its own. Only the script dies: its child lives on in the group.
        let mut script = Command::new("/bin/sh")
            .args(["-c", "sleep 600 & wait"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("sh starts");
        let pgid = script.id() as i32;
        assert!(eventually(|| procs::live_in_group(pgid).len() == 2), "sh and sleep in the group");
        assert!(left_of_groups("a", &[pgid], "now").len() == 1);
        script.kill().expect("kill sh");
        script.wait().expect("reap sh");
        let left = left_of_groups("a", &[pgid], "after the handover");
        let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(
            left[0].starts_with(&format!(
                "orphan: 1 process(es) of a's old node group {pgid} still alive after the handover: pid "
            )),
            "{left:?}"
        );
        assert!(left[0].contains("(sleep 600)"), "{left:?}");
        assert!(eventually(|| left_of_groups("a", &[pgid], "now").is_empty()), "the group is empty once killed");
    }

    /// Feeds `samples` (milliseconds after `t0`, producers signing) to the settle rule with the
    /// limit at `limit_ms` and a 1.5 s hold; where it stands after the last.
    fn settle(samples: &[(u64, &[usize])], limit_ms: u64) -> Settling {
        let t0 = Instant::now();
        let end = t0 + Duration::from_millis(limit_ms);
        let mut stretch = None;
        let mut last = Settling::Waiting(None);
        for &(at, signing) in samples {
            last = settle_step(stretch, signing, t0 + Duration::from_millis(at), end, Duration::from_millis(1500));
            match last {
                Settling::Waiting(s) => stretch = s,
                _ => return last,
            }
        }
        last
    }

    #[test]
    fn a_producer_seen_signing_once_and_then_never_again_does_not_settle_the_run() {
        // full-disk in CI: the old active's last signature was still fresh at the first sample,
        // its daemon had failed, and nobody signed for the next 1.5 s.
        let samples: Vec<(u64, &[usize])> =
            (0..40).map(|i| (i * 100, if i == 0 { &[0][..] } else { &[][..] })).collect();
        assert_eq!(settle(&samples, 3000), Settling::Unsettled);
    }

    #[test]
    fn one_producer_signing_alone_throughout_the_hold_settles_the_run() {
        let samples: Vec<(u64, &[usize])> = (0..=15).map(|i| (i * 100, &[1][..])).collect();
        assert_eq!(settle(&samples, 3000), Settling::Settled(1));
        assert!(matches!(settle(&samples[..15], 3000), Settling::Waiting(Some(Stretch { who: 1, .. }))));
    }

    #[test]
    fn a_gap_two_signers_or_a_handover_within_the_hold_starts_the_stretch_again() {
        let gap: &[(u64, &[usize])] = &[(0, &[0]), (1000, &[]), (1100, &[0]), (2500, &[0])];
        assert!(matches!(settle(gap, 5000), Settling::Waiting(Some(Stretch { who: 0, .. }))));
        let two: &[(u64, &[usize])] = &[(0, &[0]), (1000, &[0, 1]), (1100, &[0]), (2500, &[0])];
        assert!(matches!(settle(two, 5000), Settling::Waiting(Some(_))));
        let handover: &[(u64, &[usize])] = &[(0, &[0]), (1000, &[1]), (2400, &[1]), (2500, &[1])];
        assert_eq!(settle(handover, 5000), Settling::Settled(1));
    }

    #[test]
    fn a_stretch_must_begin_before_the_limit_but_may_end_after_it() {
        let begun_before: &[(u64, &[usize])] = &[(2900, &[0]), (3500, &[0]), (4400, &[0])];
        assert_eq!(settle(begun_before, 3000), Settling::Settled(0));
        let begun_after: &[(u64, &[usize])] = &[(2900, &[]), (3100, &[0])];
        assert_eq!(settle(begun_after, 3000), Settling::Unsettled);
        let broken_after: &[(u64, &[usize])] = &[(2900, &[0]), (3500, &[])];
        assert_eq!(settle(broken_after, 3000), Settling::Unsettled);
    }
}
