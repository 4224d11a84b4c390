//! The lease + reservation protocol of signer mode as a `stateright` model: the members' steps
//! (reserve windows ahead, sign, retry, release, restart), the store's (apply an Acquire, a read,
//! a delivered request; expire the lease at any moment) and the network's (deliver any message in
//! flight, in any order, or never: loss). The properties S2 and S3 and the reachability checks
//! that show the model is not vacuous are at the end. It never models time: no step waits.

use std::fmt;

use stateright::{Model, Property};

use super::bound::Bound;
use super::state::{M, Member, Msg, State};
use super::store::{self, StoreVariant};

/// How the members behave: as the protocol says, or with one seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Correct,
    /// A new holder takes its floor from its own last signed height instead of reading the
    /// watermark under its epoch.
    FloorFromOwnLastSigned,
    /// A member signs inside a window as soon as it has asked for it, before the reply.
    SignBeforeTheWindowReply,
    /// The store's release writes the holder's last signed height over the watermark.
    ReleaseOverwritesWatermark,
}

impl Variant {
    fn store(self) -> StoreVariant {
        match self {
            Variant::ReleaseOverwritesWatermark => StoreVariant::ReleaseOverwritesWatermark,
            _ => StoreVariant::Real,
        }
    }
}

pub struct Protocol {
    pub bound: Bound,
    pub variant: Variant,
    /// Whether to explore one representative per renaming of the members (symmetry reduction).
    /// Off when a counterexample should name members consistently from step to step.
    pub symmetric: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The member asks for the next window, of this many heights, above the last it asked for.
    ReserveNext(M, u8),
    /// The member sends a ReserveWindow again whose reply it still waits for: the first may be
    /// lost, or applied too, so one window may be applied twice.
    Retry(Msg),
    /// The member signs this height.
    Sign(M, u8),
    /// Planned handover: the member stops signing and releases the lease.
    Release(M),
    /// The member's process restarts: everything but its fsynced last signed height is lost.
    Restart(M),
    /// The store applies an Acquire from this member: it may have been sent at any time before,
    /// so any member's may arrive whenever the lease is free.
    Grant(M),
    /// The store applies the ReadWatermark this member sent after its grant.
    Read(M),
    /// The store expires the current lease (failure detected; the holder may well be alive).
    Expire,
    /// A message in flight arrives: at the store (a request) or at its member (a reply).
    Deliver(Msg),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::ReserveNext(m, size) => write!(f, "m{m} sends ReserveWindow for the next {size} heights"),
            Action::Retry(msg) => write!(f, "retry: {msg:?} sent again"),
            Action::Sign(m, h) => write!(f, "m{m} signs height {h}"),
            Action::Release(m) => write!(f, "m{m} stops signing and sends Release"),
            Action::Restart(m) => write!(f, "m{m} restarts"),
            Action::Grant(m) => write!(f, "the store applies m{m}'s Acquire"),
            Action::Read(m) => write!(f, "the store applies m{m}'s ReadWatermark"),
            Action::Expire => write!(f, "the store expires the lease"),
            Action::Deliver(msg) => write!(f, "delivered: {msg:?}"),
        }
    }
}

impl Protocol {
    /// The heights `m` may sign now: above its floor and its own last signed height, and inside
    /// a window it trusts.
    fn signable(&self, member: &Member) -> std::ops::RangeInclusive<u8> {
        let Some((_, floor)) = member.active() else {
            // Nothing: an inactive member signs no height.
            return std::ops::RangeInclusive::new(1, 0);
        };
        let top = match self.variant {
            Variant::SignBeforeTheWindowReply => member.requested,
            _ => member.committed,
        };
        floor.max(member.last_signed) + 1..=top
    }

    fn member_actions(&self, state: &State, m: M, actions: &mut Vec<Action>) {
        let member = &state.members[usize::from(m)];
        if member.epoch == 0 {
            return;
        }
        actions.push(Action::Restart(m));
        actions.push(Action::Release(m));
        let Some((epoch, _)) = member.active() else {
            actions.push(Action::Read(m));
            return;
        };
        for &size in self.bound.windows {
            if member.requested + size <= self.bound.heights {
                actions.push(Action::ReserveNext(m, size));
            }
        }
        let pending = Msg::ReserveWindow { member: m, epoch, top: member.requested };
        if member.requested > member.committed && !state.in_flight(&pending) {
            actions.push(Action::Retry(pending));
        }
        for h in self.signable(member) {
            actions.push(Action::Sign(m, h));
        }
    }

    /// A member's own step: it sends, signs, forgets.
    fn member_step(&self, state: &mut State, action: &Action) {
        match *action {
            Action::ReserveNext(m, size) => {
                let member = &mut state.members[usize::from(m)];
                member.requested += size;
                let msg = Msg::ReserveWindow { member: m, epoch: member.epoch, top: member.requested };
                state.send(msg);
            }
            Action::Retry(msg) => state.send(msg),
            Action::Sign(m, h) => {
                let member = &mut state.members[usize::from(m)];
                member.last_signed = h;
                let sig = (h, m, member.epoch);
                state.record(sig);
            }
            Action::Release(m) => {
                let member = &mut state.members[usize::from(m)];
                let msg = Msg::Release { member: m, epoch: member.epoch, last_signed: member.last_signed };
                member.forget();
                state.send(msg);
            }
            Action::Restart(m) => state.members[usize::from(m)].forget(),
            _ => unreachable!("{action} is not a member's step"),
        }
    }

    /// A reply arrives at its member, who acts on it only if it is for the epoch it holds now.
    fn receive(&self, state: &mut State, reply: Msg) {
        match reply {
            Msg::Granted { member: m, epoch } => {
                let member = &mut state.members[usize::from(m)];
                if member.epoch != 0 {
                    return;
                }
                member.epoch = epoch;
                if self.variant == Variant::FloorFromOwnLastSigned {
                    let floor = member.last_signed;
                    *member = Member { floor: Some(floor), committed: floor, requested: floor, ..*member };
                }
            }
            Msg::Watermark { member: m, epoch, watermark } => {
                let member = &mut state.members[usize::from(m)];
                if member.epoch == epoch && member.floor.is_none() {
                    let floor = Some(watermark);
                    *member = Member { floor, committed: watermark, requested: watermark, ..*member };
                }
            }
            Msg::Reserved { member: m, epoch, top } => {
                let member = &mut state.members[usize::from(m)];
                if member.epoch == epoch && member.floor.is_some() {
                    member.committed = member.committed.max(top);
                    member.requested = member.requested.max(top);
                }
            }
            request => unreachable!("{request:?} is not a reply"),
        }
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State::new(self.bound.members)]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for m in 0..self.bound.members {
            self.member_actions(state, m, actions);
        }
        if state.store.holder.is_some() {
            actions.push(Action::Expire);
        } else if state.store.epoch < self.bound.epochs {
            actions.extend((0..self.bound.members).map(Action::Grant));
        }
        actions.extend(state.network.iter().map(|msg| Action::Deliver(*msg)));
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut next = last.clone();
        next.previous_watermark = last.store.watermark;
        match action {
            Action::Expire => next.store = store::expire(&last.store),
            Action::Grant(m) => {
                let (store, granted) = store::acquire(&last.store, m);
                next.store = store;
                next.send(granted.expect("Grant is offered only while the lease is free"));
            }
            Action::Read(m) => {
                let epoch = last.members[usize::from(m)].epoch;
                next.send(store::read(&last.store, m, epoch));
            }
            Action::Deliver(msg) => {
                next.take(&msg);
                if msg.is_for_store() {
                    let (store, reply) = store::apply(&last.store, msg, self.variant.store());
                    next.store = store;
                    if let Some(reply) = reply {
                        next.send(reply);
                    }
                } else {
                    self.receive(&mut next, msg);
                }
            }
            member_step => self.member_step(&mut next, &member_step),
        }
        let live: Vec<Msg> = next.network.iter().filter(|msg| !self.dead(&next, msg)).copied().collect();
        next.network = live;
        Some(if self.symmetric { next.canonical() } else { next })
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(S2, no_height_signed_twice),
            Property::always(S3, watermark_not_lowered),
            Property::sometimes(TWO_SIGNERS, two_members_signed),
            Property::sometimes(OLD_HOLDER_STILL_ABLE, old_holder_still_able),
        ]
    }
}

impl Protocol {
    /// Whether delivering `msg` can change nothing, now or ever, whatever else happens: then it is
    /// taken out of the network, which only merges states that have the same futures. It rests on
    /// two facts of the real state machine — its epoch never decreases, and a lease that ended at
    /// epoch E never becomes live at E again — and on the members: a reply for epoch E only
    /// matters to a member that holds E, and a member gets E only from its one Granted. A grant of
    /// an ended epoch then lets its member sign nothing (no window of that epoch can be reserved any
    /// more, and none was: the member never held it), unless members sign before the reply.
    fn dead(&self, state: &State, msg: &Msg) -> bool {
        let store = &state.store;
        let ended = |e: u8| e < store.epoch || (e == store.epoch && store.holder.is_none());
        let member = |m: M| &state.members[usize::from(m)];
        let never_holds = |m: M, e: u8| member(m).epoch != e && !state.in_flight(&Msg::Granted { member: m, epoch: e });
        match *msg {
            Msg::ReserveWindow { epoch, .. } | Msg::Release { epoch, .. } => ended(epoch),
            Msg::Granted { epoch, .. } => ended(epoch) && self.variant != Variant::SignBeforeTheWindowReply,
            Msg::Watermark { member: m, epoch, .. } => {
                never_holds(m, epoch) || (member(m).epoch == epoch && member(m).floor.is_some())
            }
            Msg::Reserved { member: m, epoch, top } => {
                // `requested` is never below `committed`, so neither would move.
                let holder = member(m);
                never_holds(m, epoch) || (holder.epoch == epoch && holder.floor.is_some() && top <= holder.committed)
            }
        }
    }
}

pub const S2: &str = "S2: no height is signed with two different payloads";
pub const S3: &str = "S3: the watermark never decreases";
pub const TWO_SIGNERS: &str = "reachable: two different members each signed a height";
pub const OLD_HOLDER_STILL_ABLE: &str =
    "reachable: a successor signed while the old holder still trusts a window with a height it may sign";

/// S2 over the payload `(member, epoch)`: no two signatures at one height (the signatures are a
/// set, so two of them at one height always differ in payload).
fn no_height_signed_twice(_: &Protocol, state: &State) -> bool {
    state.signatures.windows(2).all(|pair| pair[0].0 != pair[1].0)
}

/// S3, checked on every transition: each step keeps the watermark it started from.
fn watermark_not_lowered(_: &Protocol, state: &State) -> bool {
    state.store.watermark >= state.previous_watermark
}

fn two_members_signed(_: &Protocol, state: &State) -> bool {
    state.signatures.iter().any(|a| state.signatures.iter().any(|b| a.1 != b.1))
}

/// An early takeover with the first holder still able to act: some member signed under a later
/// epoch than another member still believes it holds, and that one still may sign a height.
fn old_holder_still_able(model: &Protocol, state: &State) -> bool {
    state
        .members
        .iter()
        .any(|old| !model.signable(old).is_empty() && state.signatures.iter().any(|&(_, _, epoch)| epoch > old.epoch))
}
