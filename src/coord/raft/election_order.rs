//! Who campaigns first when the raft leader is lost: the lease holder.
//!
//! raft-rs draws each member's election timeout at random in `[min, max)` ticks (`election_ticks`
//! and twice that). When a leader is cut off, the others' timers all run from its last heartbeat,
//! so two members that drew timeouts a tick apart both pass pre-vote and split the vote; across a
//! 100 ms WAN the next try comes one or two election timeouts later, and the chaos suite saw that
//! outlast the holder's validity in signer mode. The holder is also the member that needs a
//! leader soonest (its renews wait for one). So it campaigns first, the others later:
//!
//! - The holder's timeout is `min + 1`, not `min`: a member ignores a pre-vote while it still
//!   counts its leader alive (fewer than `min` ticks since a heartbeat), and ticks fall at a
//!   different phase in each process, so a pre-vote sent at `min` may arrive a moment too soon
//!   and be lost; its retry, a whole timeout later, could then meet another member's own try.
//! - Everyone else's is at least [`LEAD_TICKS`] longer. The holder's pre-vote reaches them after
//!   one one-way delay, and it becomes a candidate a round trip after sending it; a member that
//!   fires later than that answers its higher term instead of splitting the vote. The lead in
//!   wall-clock time is at least `(LEAD_TICKS − 1)` ticks (the phases again): 100 ms at the
//!   default tick, more than the one-way delay of a 100 ms round trip.
//!
//! The holder hands raft leadership on once it has it (`NodeTask::shed_leadership`). Mirroring a
//! low draw to the top keeps the mapping idempotent at the price of the top draws being twice as
//! likely, which slightly raises the odds of a split between two other members when the holder
//! is the one lost. Owns that choice as a pure function over the drawn timeout; never
//! campaigns, never draws.

/// How many ticks longer than the holder's a member that does not hold the lease waits at least.
pub const LEAD_TICKS: usize = 2;

/// The election timeout, in ticks, for a member whose raft drew `drawn` in `[min, max)`: `min + 1`
/// for the lease holder; for anyone else a draw below `min + 1 + LEAD_TICKS` mirrored to the top
/// of the range (so applying it again changes nothing), any other draw kept. A range too narrow
/// to give the holder its place and the others their lead is left as drawn.
pub fn election_timeout(drawn: usize, (min, max): (usize, usize), holds_lease: bool) -> usize {
    let holder = min + 1;
    let others_from = holder + LEAD_TICKS;
    // Mirrored draws land in [max − (others_from − min), max): all of them at or above others_from.
    if max < others_from + (others_from - min) || !(min..max).contains(&drawn) {
        return drawn;
    }
    match (holds_lease, drawn < others_from) {
        (true, _) => holder,
        (false, true) => max - 1 - (drawn - min),
        (false, false) => drawn,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RANGE: (usize, usize) = (10, 20);

    #[test]
    fn the_holder_campaigns_a_tick_past_the_shortest_and_everyone_else_two_ticks_later() {
        for drawn in 10..20 {
            assert_eq!(election_timeout(drawn, RANGE, true), 11, "holder, drawn {drawn}");
            let other = election_timeout(drawn, RANGE, false);
            assert!((13..20).contains(&other), "drawn {drawn} became {other}");
        }
        assert_eq!(election_timeout(10, RANGE, false), 19);
        assert_eq!(election_timeout(12, RANGE, false), 17);
        assert_eq!(election_timeout(15, RANGE, false), 15, "a draw past the holder's lead is kept");
    }

    #[test]
    fn a_range_too_narrow_or_a_draw_outside_it_is_left_alone() {
        // election_ticks 5: [5, 10) has no room for a holder at 6 and everyone else from 8 up.
        for drawn in 5..10 {
            assert_eq!(election_timeout(drawn, (5, 10), true), drawn);
            assert_eq!(election_timeout(drawn, (5, 10), false), drawn);
        }
        assert_eq!(election_timeout(6, (6, 12), true), 7, "the narrowest range that fits");
        assert_eq!(election_timeout(25, RANGE, true), 25, "never outside the range raft-rs accepts");
    }

    proptest! {
        // Over every range raft-rs may be given: the result stays in the range, applying it
        // again changes nothing, and where the range fits, the holder's timeout is a tick past
        // the shortest and every other member's at least LEAD_TICKS longer.
        #[test]
        fn the_order_holds_for_every_range(min in 1usize..200, width in 1usize..200, at in 0usize..200, holds: bool) {
            let (max, drawn) = (min + width, min + at % width);
            let t = election_timeout(drawn, (min, max), holds);
            prop_assert!((min..max).contains(&t));
            prop_assert_eq!(election_timeout(t, (min, max), holds), t);
            if width >= 2 * (1 + LEAD_TICKS) {
                if holds {
                    prop_assert_eq!(t, min + 1);
                } else {
                    prop_assert!(t >= min + 1 + LEAD_TICKS);
                }
            } else {
                prop_assert_eq!(t, drawn);
            }
        }
    }
}
