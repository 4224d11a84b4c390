//! What a remote signer's answers become outside it: `failoverd_signer_requests_total{result}`,
//! and for every double sign it prevented a refusal event (`failoverctl events`, webhooks).
//!
//! Called from the signer's connection thread while it decides, so it never blocks: counters
//! and the event log's short lock only. It never decides anything about signing.

use std::sync::Arc;

use super::Metrics;
use crate::events::{EventKind, EventLog};
use crate::producer::privval::signer::{SignObserver, SignOutcome};

/// The observer a member's remote signer reports to. Creates its counters at zero.
pub fn observer(metrics: Arc<Metrics>, events: Arc<EventLog>) -> SignObserver {
    metrics.declare_signer();
    Arc::new(move |outcome, hrs, why: &str| {
        metrics.signer_answered(outcome);
        // A takeover's heights below the floor and a standby's answers are routine: no event.
        if outcome == SignOutcome::Refused {
            events.emit(EventKind::Refusal, None, format!("signature at {hrs} refused: {why}"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Hrs, MemberId, MemberKind, Step};

    fn count(text: &str, result: &str) -> Option<String> {
        let series = format!("failoverd_signer_requests_total{{result=\"{result}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(series.as_str()).map(str::to_string))
    }

    #[test]
    fn only_a_prevented_double_sign_becomes_an_event_and_every_outcome_is_counted() {
        let me = MemberId::new("a").expect("id");
        let metrics = Arc::new(Metrics::new(&me, MemberKind::Producer));
        let events = Arc::new(EventLog::new(me));
        let observe = observer(Arc::clone(&metrics), Arc::clone(&events));
        let text = metrics.encode();
        for result in ["signed", "repeated", "refused", "below_floor", "not_active"] {
            assert_eq!(count(&text, result).as_deref(), Some("0"), "{result} exists at 0:\n{text}");
        }
        let hrs = Hrs::new(7, 0, Step::Precommit);
        observe(SignOutcome::Signed, hrs, "");
        observe(SignOutcome::Repeated, hrs, "");
        observe(SignOutcome::NotActive, hrs, "this member is not the active signer");
        observe(SignOutcome::BelowFloor, hrs, "at or below the activation floor");
        observe(SignOutcome::Refused, hrs, "another block at the same height, round and step");
        let text = metrics.encode();
        for result in ["signed", "repeated", "refused", "below_floor", "not_active"] {
            assert_eq!(count(&text, result).as_deref(), Some("1"), "{result}:\n{text}");
        }
        let (history, _) = events.follow();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].kind, EventKind::Refusal);
        assert_eq!(
            history[0].message,
            format!("signature at {hrs} refused: another block at the same height, round and step")
        );
    }
}
