//! The hostile client of the `rogue-peer` scenario: from a host that is no member, it sends
//! every member's peer port a mix of forged and spoofed traffic for a while — connections in
//! plaintext and without a certificate, an operator's certificate, a member's certificate
//! speaking for another member (a raft batch, a message inside a batch, ~300 statuses claiming a
//! far-ahead height), a nested protobuf group bomb, and forged snapshots of all three kinds sent
//! honestly from a member's certificate — and keeps every answer it got, by target and attack.
//!
//! It only talks to peer ports and judges nothing: `verdict` decides from these answers and
//! from what the members themselves show (their refusal counters, views, lease and signatures)
//! whether the cluster held. It never touches the lab's processes or files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use failover::config::TlsConfig;
use failover::domain::MemberId;
use failover::sim::rogue_peer::{self, Answer, ForgedSnapshot, RoguePeer};
use failover::tls::TlsMaterial;
use serde::Serialize;

/// Rounds of attacks, spread evenly over the attack's duration.
const ROUNDS: u32 = 10;
/// Spoofed statuses sent to each member per round: 300 in all.
const STATUSES_PER_ROUND: u32 = 30;
/// Nested groups in the group bomb: parsed by protobuf 2.28, enough to overflow a stack.
const BOMB_DEPTH: usize = 100_000;

/// One kind of hostile traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// A raft batch over a connection without TLS.
    Plaintext,
    /// A status over TLS without a client certificate.
    NoCertificate,
    /// A raft batch and a status sent with the operator's certificate.
    OperatorCertificate,
    /// Member o's certificate, a batch whose `from` is member x.
    SpoofedBatch,
    /// Member o's certificate, a batch from o holding a message from member x.
    SpoofedMessage,
    /// Member o's certificate, a status in member x's name at a far-ahead height.
    SpoofedStatus,
    /// Member o's certificate, a heartbeat followed by 100,000 nested groups.
    GroupBomb,
    /// Member o's certificate, honestly from o: a snapshot making the target a one-voter
    /// cluster that holds the lease.
    SnapshotTakeover,
    /// Likewise: a ConfState raft-rs panics on (a voter that is also a learner).
    SnapshotInvalidConf,
    /// Likewise: the configured voters with a state machine that does not decode.
    SnapshotUndecodable,
}

impl Attack {
    pub const ALL: [Attack; 10] = [
        Attack::Plaintext,
        Attack::NoCertificate,
        Attack::OperatorCertificate,
        Attack::SpoofedBatch,
        Attack::SpoofedMessage,
        Attack::SpoofedStatus,
        Attack::GroupBomb,
        Attack::SnapshotTakeover,
        Attack::SnapshotInvalidConf,
        Attack::SnapshotUndecodable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::Plaintext => "plaintext",
            Attack::NoCertificate => "no certificate",
            Attack::OperatorCertificate => "operator certificate",
            Attack::SpoofedBatch => "spoofed batch sender",
            Attack::SpoofedMessage => "spoofed message sender",
            Attack::SpoofedStatus => "spoofed status",
            Attack::GroupBomb => "group bomb",
            Attack::SnapshotTakeover => "forged snapshot (one-voter takeover)",
            Attack::SnapshotInvalidConf => "forged snapshot (invalid ConfState)",
            Attack::SnapshotUndecodable => "forged snapshot (undecodable state)",
        }
    }

    fn snapshot(self) -> Option<ForgedSnapshot> {
        match self {
            Attack::SnapshotTakeover => Some(ForgedSnapshot::SingleVoterTakeover),
            Attack::SnapshotInvalidConf => Some(ForgedSnapshot::InvalidConfState),
            Attack::SnapshotUndecodable => Some(ForgedSnapshot::UndecodableState),
            _ => None,
        }
    }
}

/// How a member answered one request, without the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Accepted,
    /// Refused with this gRPC code (as an integer: `tonic::Code` has no order).
    Refused(i32),
    /// No connection, or one the member dropped.
    Unreachable,
}

impl Outcome {
    pub fn of(answer: &Answer) -> Outcome {
        match answer {
            Answer::Accepted => Outcome::Accepted,
            Answer::Refused { code, .. } => Outcome::Refused(*code as i32),
            Answer::Unreachable(_) => Outcome::Unreachable,
        }
    }

    /// As an operator reads it: `accepted`, `refused PERMISSION_DENIED`, `unreachable`.
    pub fn describe(self) -> String {
        match self {
            Outcome::Accepted => "accepted".into(),
            Outcome::Refused(code) => format!("refused {}", code_name(tonic::Code::from_i32(code))),
            Outcome::Unreachable => "unreachable".into(),
        }
    }
}

/// gRPC's canonical name of `code`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How often each outcome came back for one attack on one member, with the first answer's text
/// of each outcome (the evidence a report quotes).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub outcomes: BTreeMap<Outcome, (u64, String)>,
}

impl Tally {
    fn add(&mut self, answer: &Answer) {
        let text = match answer {
            Answer::Accepted => String::new(),
            Answer::Refused { message, .. } => message.clone(),
            Answer::Unreachable(why) => why.clone(),
        };
        self.outcomes.entry(Outcome::of(answer)).or_insert((0, text)).0 += 1;
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).map_or(0, |(n, _)| *n)
    }

    pub fn total(&self) -> u64 {
        self.outcomes.values().map(|(n, _)| n).sum()
    }
}

/// Every answer the rogue got: by (member index, attack).
pub type Answers = BTreeMap<(usize, Attack), Tally>;

/// One member as the rogue sees it.
#[derive(Clone)]
pub struct Target {
    pub id: MemberId,
    /// Where its peer port is, from the outsider's host.
    pub peer: SocketAddr,
    /// Its member certificate: the one the rogue has stolen.
    pub tls: TlsConfig,
}

/// What the rogue is given: the members (raft ids are positions in id order, as every member
/// derives them), the operator's certificate and how long to attack.
pub struct Plan {
    pub targets: Vec<Target>,
    pub operator: TlsConfig,
    pub duration: Duration,
    /// Set by the runner to end the attack early (interrupted).
    pub stop: Arc<AtomicBool>,
}

/// The far-ahead height every spoofed status claims.
pub fn spoofed_height() -> u64 {
    let status = rogue_peer::spoofed_status(&MemberId::new("x").expect("a literal id is valid"));
    status.height.unwrap_or(u64::MAX)
}

/// The term every forged snapshot carries: a member that adopted it would have let one forged
/// message depose the raft leader.
pub fn forged_term() -> u64 {
    let id = MemberId::new("x").expect("a literal id is valid");
    rogue_peer::forged_snapshot(ForgedSnapshot::SingleVoterTakeover, 1, 2, &[1, 2], &id).term
}

/// Runs the attack to its end (or until `stop`), on the calling thread.
pub fn run(plan: Plan) -> Result<Answers, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the rogue's runtime: {e}"))?;
    let load = |tls: &TlsConfig| {
        TlsMaterial::load(tls).map_err(|e| format!("the rogue cannot load {}: {e}", tls.cert_file.display()))
    };
    let stolen = plan.targets.iter().map(|t| load(&t.tls)).collect::<Result<Vec<_>, _>>()?;
    let operator = load(&plan.operator)?;
    let mut answers = Answers::new();
    let start = Instant::now();
    for round in 0..ROUNDS {
        let begin = start + plan.duration * round / ROUNDS;
        std::thread::sleep(begin.saturating_duration_since(Instant::now()));
        for t in 0..plan.targets.len() {
            if plan.stop.load(Ordering::Relaxed) {
                return Ok(answers);
            }
            let sent = runtime.block_on(attack(&plan, &stolen, &operator, t, round));
            for (attack, answer) in sent {
                answers.entry((t, attack)).or_default().add(&answer);
            }
        }
    }
    Ok(answers)
}

/// Raft ids: members sorted by id, numbered from 1 (what every member derives).
fn raft_id(targets: &[Target], i: usize) -> u64 {
    targets.iter().filter(|t| t.id < targets[i].id).count() as u64 + 1
}

/// One round of every attack on member `t`; returns each request's answer.
async fn attack(
    plan: &Plan,
    stolen: &[TlsMaterial],
    operator: &TlsMaterial,
    t: usize,
    round: u32,
) -> Vec<(Attack, Answer)> {
    let targets = &plan.targets;
    // Whose certificate is stolen (o) and whom it speaks for (x) alternate between the others.
    let others: Vec<usize> = (0..targets.len()).filter(|&j| j != t).collect();
    let o = others[round as usize % others.len()];
    let x = others[(round as usize + 1) % others.len()];
    let (to, from, spoofed) = (raft_id(targets, t), raft_id(targets, o), raft_id(targets, x));
    let voters: Vec<u64> = (0..targets.len()).map(|j| raft_id(targets, j)).collect();
    let target = &targets[t].id;
    let address = targets[t].peer.to_string();
    let takeover =
        |sender| rogue_peer::forged_snapshot(ForgedSnapshot::SingleVoterTakeover, sender, to, &voters, target);
    let mut out = Vec::new();

    let plain = RoguePeer::connect(&address, None, false).await;
    out.push((Attack::Plaintext, plain.send(from, &takeover(from)).await));
    let anonymous = RoguePeer::connect(&address, None, true).await;
    out.push((Attack::NoCertificate, anonymous.publish(rogue_peer::spoofed_status(&targets[x].id)).await));
    let ops = RoguePeer::connect(&address, Some(operator), true).await;
    out.push((Attack::OperatorCertificate, ops.send(from, &takeover(from)).await));
    out.push((Attack::OperatorCertificate, ops.publish(rogue_peer::spoofed_status(&targets[o].id)).await));

    let member = RoguePeer::connect(&address, Some(&stolen[o]), true).await;
    out.push((Attack::SpoofedBatch, member.send(spoofed, &takeover(spoofed)).await));
    out.push((Attack::SpoofedMessage, member.send(from, &takeover(spoofed)).await));
    for _ in 0..STATUSES_PER_ROUND {
        out.push((Attack::SpoofedStatus, member.publish(rogue_peer::spoofed_status(&targets[x].id)).await));
    }
    out.push((Attack::GroupBomb, member.send_bytes(from, vec![rogue_peer::group_bomb(from, to, BOMB_DEPTH)]).await));
    for kind in [Attack::SnapshotTakeover, Attack::SnapshotInvalidConf, Attack::SnapshotUndecodable] {
        if let Some(forged) = kind.snapshot() {
            out.push((kind, member.send(from, &rogue_peer::forged_snapshot(forged, from, to, &voters, target)).await));
        }
    }
    out
}
