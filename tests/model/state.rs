//! The model's state: the store as the replicated state machine holds it, each member's beliefs,
//! the messages in flight and the signatures made. Plain small values so that a state hashes and
//! clones cheaply; heights, epochs and member indexes fit a u8 at any bound the checker can run.

/// A member's index (0, 1, ...). Payloads are `(member, epoch)`.
pub type M = u8;

/// The lease and the one watermark, as the store's state machine keeps them
/// (`src/coord/raft/fsm.rs`'s `FsmState`, reduced to what signer mode uses).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Store {
    /// Who holds the lease; `None` when it is free, expired or released.
    pub holder: Option<M>,
    /// The last epoch granted (the current one while `holder` is set); 0: never granted.
    pub epoch: u8,
    /// The top of every window ever reserved (a height).
    pub watermark: u8,
    /// The epoch of the writer that set the watermark last (part of the real state).
    pub watermark_epoch: u8,
}

/// What one member knows. `last_signed` is on disk (fsynced before a signature leaves); every
/// other field is memory and is lost by a restart.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The local double-sign rule's record: the highest height this member ever signed (0: none).
    pub last_signed: u8,
    /// The epoch this member believes it holds (0: it believes it holds none).
    pub epoch: u8,
    /// The watermark read under `epoch`; `None` until that read's reply arrives.
    pub floor: Option<u8>,
    /// The highest window top whose ReserveWindow reply arrived under `epoch`.
    pub committed: u8,
    /// The highest window top requested under `epoch` (committed or not).
    pub requested: u8,
}

impl Member {
    pub const NEW: Member = Member { last_signed: 0, epoch: 0, floor: None, committed: 0, requested: 0 };

    /// Forgets everything but the fsynced double-sign record: a restart, or the end of a tenure.
    pub fn forget(&mut self) {
        *self = Member { last_signed: self.last_signed, ..Member::NEW };
    }

    /// Whether it believes it holds the lease and knows its floor, so it may reserve and sign.
    pub fn active(&self) -> Option<(u8, u8)> {
        self.floor.filter(|_| self.epoch > 0).map(|floor| (self.epoch, floor))
    }
}

/// A message between a member and the store. Requests go to the store, replies to `member`.
/// (Acquire and ReadWatermark are not messages but store steps: see `protocol.rs`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Msg {
    ReserveWindow { member: M, epoch: u8, top: u8 },
    Release { member: M, epoch: u8, last_signed: u8 },
    Granted { member: M, epoch: u8 },
    Watermark { member: M, epoch: u8, watermark: u8 },
    Reserved { member: M, epoch: u8, top: u8 },
}

impl Msg {
    pub fn is_for_store(&self) -> bool {
        matches!(self, Msg::ReserveWindow { .. } | Msg::Release { .. })
    }
}

/// One signature: `(height, member, epoch)`; the payload is `(member, epoch)`.
pub type Signature = (u8, M, u8);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct State {
    pub store: Store,
    /// The watermark before the last step, kept to check S3 on every transition.
    pub previous_watermark: u8,
    pub members: Vec<Member>,
    /// The messages in flight, sorted, as a set: any of them may be delivered next (reorder),
    /// dropped (loss) or left for later (delay). A retry puts a copy back once one was taken.
    pub network: Vec<Msg>,
    /// Every signature made, sorted, as a set.
    pub signatures: Vec<Signature>,
}

impl State {
    pub fn new(members: u8) -> State {
        State {
            store: Store { holder: None, epoch: 0, watermark: 0, watermark_epoch: 0 },
            previous_watermark: 0,
            members: vec![Member::NEW; usize::from(members)],
            network: Vec::new(),
            signatures: Vec::new(),
        }
    }

    pub fn in_flight(&self, msg: &Msg) -> bool {
        self.network.binary_search(msg).is_ok()
    }

    pub fn send(&mut self, msg: Msg) {
        if let Err(at) = self.network.binary_search(&msg) {
            self.network.insert(at, msg);
        }
    }

    pub fn take(&mut self, msg: &Msg) -> bool {
        match self.network.binary_search(msg) {
            Ok(at) => {
                self.network.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn record(&mut self, sig: Signature) {
        if let Err(at) = self.signatures.binary_search(&sig) {
            self.signatures.insert(at, sig);
        }
    }
}

impl Msg {
    fn renamed(self, to: &[M]) -> Msg {
        let r = |m: M| to[usize::from(m)];
        match self {
            Msg::ReserveWindow { member, epoch, top } => Msg::ReserveWindow { member: r(member), epoch, top },
            Msg::Release { member, epoch, last_signed } => Msg::Release { member: r(member), epoch, last_signed },
            Msg::Granted { member, epoch } => Msg::Granted { member: r(member), epoch },
            Msg::Watermark { member, epoch, watermark } => Msg::Watermark { member: r(member), epoch, watermark },
            Msg::Reserved { member, epoch, top } => Msg::Reserved { member: r(member), epoch, top },
        }
    }
}

impl State {
    /// The same state with member `m` renamed `to[m]`.
    fn renamed(&self, to: &[M]) -> State {
        let mut members = self.members.clone();
        for (m, member) in self.members.iter().enumerate() {
            members[usize::from(to[m])] = member.clone();
        }
        let mut network: Vec<Msg> = self.network.iter().map(|msg| msg.renamed(to)).collect();
        network.sort_unstable();
        let mut signatures: Vec<Signature> =
            self.signatures.iter().map(|&(h, m, e)| (h, to[usize::from(m)], e)).collect();
        signatures.sort_unstable();
        let holder = self.store.holder.map(|m| to[usize::from(m)]);
        State { store: Store { holder, ..self.store.clone() }, members, network, signatures, ..*self }
    }

    /// One representative of the states that differ only in the members' names (they run the
    /// same code, so such states have the same futures up to renaming): the least renaming.
    /// Checking representatives only is symmetry reduction.
    pub fn canonical(&self) -> State {
        let n = u8::try_from(self.members.len()).expect("a handful of members");
        let mut best = self.clone();
        for to in permutations(n) {
            let candidate = self.renamed(&to);
            if candidate < best {
                best = candidate;
            }
        }
        best
    }
}

/// Every ordering of `0..n` (n is at most 3 or so: n! of them).
fn permutations(n: u8) -> Vec<Vec<M>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for shorter in permutations(n - 1) {
        for at in 0..=shorter.len() {
            let mut p = shorter.clone();
            p.insert(at, n - 1);
            all.push(p);
        }
    }
    all
}
