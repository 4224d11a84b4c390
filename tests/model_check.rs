//! A model check of signer mode's lease + reservation protocol (issue 21; docs/design.md §3, S2
//! and S3; §8): every interleaving of the steps below, up to a stated bound, is explored
//! breadth-first by the `stateright` crate, and S2 and S3 are checked in every state reached.
//!
//! **Modelled** (`tests/model/protocol.rs`). Members that acquire the lease, read the watermark
//! under their new epoch (their floor), reserve windows of 1 or 2 heights ahead of signing —
//! pipelined: further ReserveWindows may leave while they sign inside a window, and a window is
//! trusted only once its reply arrived — and sign any height above their floor and their own
//! last signed height inside a trusted window (the node may ask for any height). A planned
//! handover: the holder stops signing and releases. Restarts at any moment: epoch, floor and
//! windows are lost, the fsynced last signed height is kept. The store expires the lease at any
//! moment (early takeover on failure detection, the holder alive or frozen). Messages are
//! delivered in any order and after any delay; a retry sends a ReserveWindow again, so one may
//! be applied twice. A frozen holder that wakes up with stale beliefs is a member whose steps and
//! messages simply come late. The payload of a signature is `(member, epoch)`. S2: no height
//! carries two payloads. S3: no step lowers the watermark (the state keeps the one before it).
//!
//! **The store is the real one.** Each command is applied by `FsmState::apply` from
//! `src/coord/raft/fsm.rs`, the raft backend's state machine (`tests/model/store.rs` translates),
//! so its rules — a grant only on a free lease, with a greater epoch; a reservation only under
//! the current epoch and strictly above the watermark; a release that raises, never lowers — are
//! the shipped code, not a copy. A window (floor, top] is a Reserve of the end of height `top`.
//!
//! **Abstracted, and why that is sound for safety** (each only adds behaviours, or merges states
//! with the same futures):
//! - Raft is one sequential state machine: a command takes effect at one instant between its
//!   send and its reply. Raft gives exactly that: every command and every read goes through the
//!   log and is applied in log order by the deterministic `apply`; the contract suite
//!   (`tests/common/contract.rs`, on a real 3-member cluster) checks the consequences — racing
//!   acquires and racing reserves granted once, a stale holder refused after a new grant.
//! - No time. Expire may happen at any moment, so TTLs, renewals and the holder's own deadline
//!   are left out (with Renew): they only ever stop a member sooner.
//! - Refusals send no reply and a member never gives up: a real member stops on a refusal.
//!   Acquire omits `seen_epoch` and Expire `refreshes`, their more permissive forms; a fenced
//!   `TakeOver` is an Expire followed by a grant, both of which may happen at any moment.
//! - Loss: delivery is never forced, so a lost message is one that is never delivered.
//! - Acquire and ReadWatermark are store steps, not messages: any member's Acquire may be applied
//!   whenever the lease is free (one sent long ago included), and a member's read at any moment
//!   after its grant while it waits for the answer. The real grant's reply carries the watermark
//!   of its own log entry; a read applied right after the grant gives the same value, so the
//!   model covers it, and also later reads (which only see a higher watermark).
//! - A message whose delivery can change nothing any more (a request under an ended epoch, a
//!   reply its member can never act on) leaves the network; see `Protocol::dead`.
//! - States that differ only in the members' names are checked once (symmetry reduction).
//! - Heights stand for whole HRS. States are told apart by a 64-bit fingerprint (`stateright`'s),
//!   so a collision could hide a state; at these counts the chance is below one in 10^7.
//!
//! **Bound** (`tests/model/bound.rs`). Two members, at most 3 lease grants, heights 1 to 4,
//! windows of 1 or 2 heights: every reachable state within it, about 519,000, in about 15 s of
//! checking in a debug build on two cores. `FAILOVERD_MODEL_BOUND=large` (3 members, otherwise
//! the same: about 4.8 million states, 4.5 minutes) is for a manual run.
//!
//! **The check can fail.** Seeded bugs — a successor that takes its floor from its own last
//! signed height, signing before a window's reply, a release that overwrites the watermark — are
//! each caught by the same checker with a counterexample, asserted below.

mod model;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use stateright::{Checker, HasDiscoveries, Model};

use model::bound::{self, Bound};
use model::protocol::{Action, OLD_HOLDER_STILL_ABLE, Protocol, S2, S3, TWO_SIGNERS, Variant};

/// The default bound's state count when this was written, rounded down: a change that makes the
/// model much smaller (so much less is checked) fails the test instead of passing quietly.
const EXPECTED_MIN_STATES: usize = 500_000;

struct Outcome {
    bound: Bound,
    unique_states: usize,
    max_depth: usize,
    elapsed: Duration,
    discoveries: HashMap<&'static str, Vec<Action>>,
}

/// How a run searches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Search {
    /// Every reachable state, one per renaming of the members, on up to two threads. A path it
    /// reports may rename the members between steps, so it is read from another search.
    Exhaustive,
    /// Until the first violation, on one thread and without symmetry reduction: breadth-first
    /// order then yields a shortest counterexample with stable member names.
    FirstFailure,
    /// Until every reachability property has an example; otherwise as `FirstFailure`.
    Examples,
}

fn check(bound: Bound, variant: Variant, search: Search) -> Outcome {
    let started = Instant::now();
    let symmetric = search == Search::Exhaustive;
    let mut builder = Protocol { bound, variant, symmetric }.checker();
    builder = match search {
        Search::Exhaustive => builder.threads(std::thread::available_parallelism().map_or(1, |n| n.get().min(2))),
        Search::FirstFailure => builder.finish_when(HasDiscoveries::AnyFailures),
        Search::Examples => builder.finish_when(HasDiscoveries::AllOf([TWO_SIGNERS, OLD_HOLDER_STILL_ABLE].into())),
    };
    let checker = builder.spawn_bfs().join();
    let discoveries = checker.discoveries().into_iter().map(|(name, path)| (name, path.into_actions())).collect();
    Outcome {
        bound,
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        elapsed: started.elapsed(),
        discoveries,
    }
}

/// The correct protocol, checked once at the bound the environment selects; the tests below
/// each assert one thing about this one run.
fn correct_run() -> &'static Outcome {
    static RUN: OnceLock<Outcome> = OnceLock::new();
    RUN.get_or_init(|| {
        let outcome = check(Bound::from_env(), Variant::Correct, Search::Exhaustive);
        println!(
            "model check of the correct protocol: {}; {} unique states, depth {}, {:.1} s",
            outcome.bound,
            outcome.unique_states,
            outcome.max_depth,
            outcome.elapsed.as_secs_f64()
        );
        outcome
    })
}

fn describe(actions: &[Action]) -> String {
    actions.iter().enumerate().map(|(i, a)| format!("  {:>2}. {a}\n", i + 1)).collect()
}

#[test]
fn no_interleaving_up_to_the_bound_signs_a_height_twice_or_lowers_the_watermark() {
    let run = correct_run();
    if [S2, S3].iter().any(|property| run.discoveries.contains_key(property)) {
        let readable = check(run.bound, Variant::Correct, Search::FirstFailure);
        let (property, path) = readable.discoveries.iter().next().expect("the violation is found again");
        panic!("{property} is violated after {} steps:\n{}", path.len(), describe(path));
    }
    if run.bound == bound::DEFAULT {
        assert!(
            run.unique_states >= EXPECTED_MIN_STATES,
            "the {} explored only {} states, fewer than the {EXPECTED_MIN_STATES} it explored when written: \
             the model lost behaviours",
            run.bound,
            run.unique_states
        );
    }
    println!("S2 and S3 hold in all {} states of the {}", run.unique_states, run.bound);
}

#[test]
fn the_model_reaches_an_early_takeover_while_the_old_holder_can_still_sign() {
    let run = correct_run();
    for property in [TWO_SIGNERS, OLD_HOLDER_STILL_ABLE] {
        assert!(
            run.discoveries.contains_key(property),
            "the model never reached \"{property}\": it is vacuous within the {}",
            run.bound
        );
    }
    let examples = check(bound::DEFAULT, Variant::Correct, Search::Examples);
    for (property, path) in &examples.discoveries {
        println!("{property}, in {} steps:\n{}", path.len(), describe(path));
    }
}

/// Checks a seeded bug and returns the counterexample to `property` it must produce.
fn counterexample(variant: Variant, property: &'static str) -> Vec<Action> {
    let run = check(bound::DEFAULT, variant, Search::FirstFailure);
    let path = run.discoveries.get(property).unwrap_or_else(|| {
        panic!("the checker missed the seeded bug {variant:?}: no counterexample to \"{property}\"")
    });
    println!(
        "{variant:?} violates \"{property}\" in {} steps ({} states explored):\n{}",
        path.len(),
        run.unique_states,
        describe(path)
    );
    path.clone()
}

#[test]
fn a_successor_taking_its_floor_from_its_own_last_signed_height_is_caught_double_signing() {
    let path = counterexample(Variant::FloorFromOwnLastSigned, S2);
    assert!(path.iter().any(|a| matches!(a, Action::Sign(1, _))), "the second member signs in the counterexample");
}

#[test]
fn signing_before_the_window_reply_arrives_is_caught_double_signing() {
    let path = counterexample(Variant::SignBeforeTheWindowReply, S2);
    assert!(path.iter().any(|a| matches!(a, Action::Expire | Action::Release(_))), "the lease moves in it");
}

#[test]
fn a_release_that_overwrites_the_watermark_is_caught_lowering_it() {
    let path = counterexample(Variant::ReleaseOverwritesWatermark, S3);
    assert!(path.iter().any(|a| matches!(a, Action::Release(_))), "a release is in the counterexample");
}
