//! The Coordinator contract suite (docs/design.md §4): behaviour every backend must show, run
//! against handles to every member of one live cluster. Each check starts from whatever state
//! the previous one left, and leaves the lease free.
#![allow(dead_code)]

use std::time::Duration;

use failover::coord::{CoordError, Coordinator, Holding};
use failover::domain::{
    Epoch, Hrs, IMPORT_HEIGHT_CEILING, KeyId, Lease, LeaseView, MemberId, MemberKind, MemberStatus, RoleName, Step,
    WatermarkRefusal,
};
use tokio::time::Instant;

/// One member's handle and id. `producers` are the first two; the third is a witness.
pub struct Member<'a> {
    pub id: MemberId,
    pub kind: MemberKind,
    pub coord: &'a dyn Coordinator,
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn key(name: &str) -> KeyId {
    KeyId::new(name).expect("valid key")
}

/// Waits until the lease is free as seen through `m` (after a release in a previous check).
async fn free_lease(m: &Member<'_>) -> Epoch {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match m.coord.lease(soon()).await {
            Ok(LeaseView::Free { epoch }) => return epoch,
            Ok(LeaseView::Held { .. }) | Err(_) => {
                assert!(Instant::now() < deadline, "the lease did not become free");
                let mut w = m.coord.watch();
                let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
            }
        }
    }
}

/// `m` acquires the lease, which the test knows is free. A raft member whose applied state has
/// not yet caught up with the release is refused as "moved on" (its acquire names the epoch it
/// saw, so a stale proposal can never grant a later lease); like the daemon's loop, it asks
/// again once its view moved.
async fn grant(m: &Member<'_>) -> Lease {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match m.coord.acquire(&m.id, soon()).await {
            Ok(lease) => return lease,
            Err(CoordError::LeaseMoved { .. } | CoordError::Unavailable(_)) if Instant::now() < deadline => {
                let mut w = m.coord.watch();
                let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
            }
            Err(e) => panic!("{} was refused a free lease: {e}", m.id),
        }
    }
}

pub async fn run_all(members: &[Member<'_>]) {
    acquire_grants_increasing_epochs_and_only_one_holder(members).await;
    renew_and_release_only_by_the_current_holder(members).await;
    reserve_needs_the_current_epoch_and_a_higher_hrs(members).await;
    checkpoint_and_release_raise_but_never_lower(members).await;
    stale_holder_is_refused_after_a_new_grant(members).await;
    import_only_raises(members).await;
    import_is_all_or_nothing(members).await;
    intents_are_replicated_and_watched(members).await;
    status_is_shared_between_members(members).await;
    calls_return_by_their_deadline(members).await;
    racing_acquires_grant_the_lease_exactly_once(members).await;
    racing_reserves_of_one_hrs_grant_it_exactly_once(members).await;
    a_grant_answers_with_the_watermark_as_of_the_grant(members).await;
    a_takeover_naming_a_wrong_or_stale_holding_is_refused_and_changes_nothing(members).await;
    a_fenced_takeover_moves_exactly_the_named_holding(members).await;
}

/// docs/design.md §4–5: `acquire_with_watermark` is an acquire whose answer also carries the
/// key's watermark as of the grant — what a read under the new epoch shows — so a takeover is one
/// store operation. A key never written answers `None`.
pub async fn a_grant_answers_with_the_watermark_as_of_the_grant(ms: &[Member<'_>]) {
    let (a, b) = (&ms[0], &ms[1]);
    let k = key("contract-grant-watermark");
    free_lease(a).await;
    let lease = grant(a).await;
    let base = a.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs.height).unwrap_or(0);
    let reserved =
        a.coord.reserve(lease.epoch, &k, Hrs::new(base + 3, 1, Step::Prevote), soon()).await.expect("reserve");
    a.coord.release(&lease, None, soon()).await.expect("release");
    free_lease(b).await;
    let granted = loop {
        match b.coord.acquire_with_watermark(&b.id, &k, soon()).await {
            Ok(g) => break g,
            Err(CoordError::LeaseMoved { .. } | CoordError::Unavailable(_)) => {
                let mut w = b.coord.watch();
                let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
            }
            Err(e) => panic!("{} was refused a free lease: {e}", b.id),
        }
    };
    assert!(granted.lease.epoch > lease.epoch);
    assert_eq!(granted.lease.holder, b.id);
    assert_eq!(granted.watermark.map(|w| w.hrs), Some(reserved.hrs), "the grant carries the last reservation");
    let read = b.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs);
    assert_eq!(granted.watermark.map(|w| w.hrs), read, "and it is what a read under the new epoch shows");
    b.coord.release(&granted.lease, None, soon()).await.expect("release");
    free_lease(a).await;
    let fresh = a.coord.acquire_with_watermark(&a.id, &key("contract-never-written"), soon()).await;
    let fresh = fresh.expect("a free lease is granted");
    assert_eq!(fresh.watermark, None, "a key never written has no watermark, not zero");
    a.coord.release(&fresh.lease, None, soon()).await.expect("release");
}

/// docs/design.md §5, fenced takeover: a request that names a holding other than the current one
/// — an earlier epoch (stale), another holder, another stamp (forged, or looked at before the
/// holding changed) — is refused as `LeaseMoved` and changes nothing: the holder still holds, renews
/// and reserves. One line per wrong request.
pub async fn a_takeover_naming_a_wrong_or_stale_holding_is_refused_and_changes_nothing(ms: &[Member<'_>]) {
    let (a, b, c) = (&ms[0], &ms[1], &ms[2]);
    let k = key("contract-takeover-refused");
    free_lease(a).await;
    let lease = grant(a).await;
    let seen = b.coord.holding(soon()).await.expect("read").expect("a holds the lease");
    assert_eq!((&seen.holder, seen.epoch), (&a.id, lease.epoch));
    let wrong: [(&str, Holding); 4] = [
        ("an earlier epoch", Holding { epoch: Epoch::new(lease.epoch.get() - 1), ..seen.clone() }),
        ("a later epoch", Holding { epoch: lease.epoch.next(), ..seen.clone() }),
        ("another holder", Holding { holder: c.id.clone(), ..seen.clone() }),
        ("another stamp", Holding { stamp: seen.stamp.wrapping_add(1), ..seen.clone() }),
    ];
    for (what, holding) in &wrong {
        match b.coord.take_over(&b.id, &k, holding, soon()).await {
            Err(CoordError::LeaseMoved { .. }) => {}
            other => panic!("a takeover naming {what} was not refused as moved: {other:?}"),
        }
        for m in ms {
            let view = m.coord.lease(soon()).await.expect("read");
            assert_eq!(
                view,
                LeaseView::Held { holder: a.id.clone(), epoch: lease.epoch },
                "after {what}, seen by {}",
                m.id
            );
        }
    }
    let renewed = a.coord.renew(&lease, soon()).await.expect("the holder still renews");
    a.coord.reserve(lease.epoch, &k, Hrs::new(1, 0, Step::Propose), soon()).await.expect("and reserves");
    a.coord.release(&renewed, None, soon()).await.expect("release");
}

/// docs/design.md §5, fenced takeover: with the holding exactly as `holding` showed it, the
/// store moves the lease to the caller at a new epoch, answers with the watermark as of the
/// grant, and the fenced holder's writes are refused from then on.
pub async fn a_fenced_takeover_moves_exactly_the_named_holding(ms: &[Member<'_>]) {
    let (a, b) = (&ms[0], &ms[1]);
    let k = key("contract-takeover");
    free_lease(a).await;
    let old = grant(a).await;
    let base = a.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs.height).unwrap_or(0);
    let reserved =
        a.coord.reserve(old.epoch, &k, Hrs::new(base + 2, 0, Step::Precommit), soon()).await.expect("reserve");
    // b looks at the holding as the daemon does before it runs fence_command.
    let fenced = b.coord.holding(soon()).await.expect("read").expect("a holds the lease");
    assert_eq!((&fenced.holder, fenced.epoch), (&a.id, old.epoch), "a linearizable read shows a's grant");
    let new = b.coord.take_over(&b.id, &k, &fenced, soon()).await.expect("the exact holding is taken over");
    assert!(new.lease.epoch > old.epoch, "a takeover is a grant at a new epoch");
    assert_eq!(new.lease.holder, b.id);
    assert_eq!(new.watermark.map(|w| w.hrs), Some(reserved.hrs), "with the watermark as of the grant");
    for m in ms {
        let view = m.coord.lease(soon()).await.expect("read");
        assert_eq!(view, LeaseView::Held { holder: b.id.clone(), epoch: new.lease.epoch }, "seen by {}", m.id);
    }
    assert!(matches!(a.coord.renew(&old, soon()).await, Err(CoordError::NotHolder { .. })));
    assert!(matches!(
        a.coord.reserve(old.epoch, &k, Hrs::new(base + 3, 0, Step::Propose), soon()).await,
        Err(CoordError::NotHolder { .. })
    ));
    match b.coord.take_over(&b.id, &k, &fenced, soon()).await {
        Err(CoordError::LeaseMoved { .. }) => {}
        other => panic!("a second takeover of the same holding was not refused: {other:?}"),
    }
    b.coord.release(&new.lease, None, soon()).await.expect("release");
}

/// Calls fired at once in each race (Lighthouse's parallel slashing-protection tests).
const RACERS: usize = 8;

/// Waits until every member's watched view shows the lease free at `epoch`, so that a race
/// starts from one view (a raft member names the epoch it saw in its acquire).
async fn views_show_free(ms: &[Member<'_>], epoch: Epoch) {
    for m in ms {
        let mut view = m.coord.watch();
        let seen =
            tokio::time::timeout(Duration::from_secs(10), view.wait_for(|v| v.lease == LeaseView::Free { epoch }))
                .await;
        assert!(matches!(seen, Ok(Ok(_))), "{}'s view never showed the lease free at epoch {epoch}", m.id);
    }
}

/// docs/design.md §4: an acquire succeeds only while nobody holds the lease. RACERS acquires
/// from both producers, several from each, fired at once: exactly one is granted, and every
/// other is refused naming that grant.
pub async fn racing_acquires_grant_the_lease_exactly_once(ms: &[Member<'_>]) {
    let producers: Vec<&Member<'_>> = ms.iter().filter(|m| m.kind == MemberKind::Producer).collect();
    let before = free_lease(producers[0]).await;
    views_show_free(ms, before).await;
    let racers = (0..RACERS).map(|i| producers[i % producers.len()]);
    let results = futures::future::join_all(racers.clone().map(|m| m.coord.acquire(&m.id, soon()))).await;
    let granted: Vec<(&Member<'_>, &Lease)> =
        racers.clone().zip(&results).filter_map(|(m, r)| r.as_ref().ok().map(|l| (m, l))).collect();
    let [(winner, lease)] = granted[..] else {
        panic!("{} of {RACERS} racing acquires were granted, not exactly one: {results:?}", granted.len())
    };
    assert!(lease.epoch > before, "the grant's epoch {} is not above {before}", lease.epoch);
    assert_eq!(lease.holder, winner.id);
    for (m, r) in racers.zip(&results) {
        match r {
            Ok(_) => {}
            Err(CoordError::LeaseHeld { holder, epoch }) => {
                assert_eq!((holder, *epoch), (&winner.id, lease.epoch), "{}'s refusal names the grant", m.id)
            }
            Err(CoordError::LeaseMoved { .. }) => {}
            Err(e) => panic!("{}'s racing acquire was neither granted nor refused: {e}", m.id),
        }
    }
    for m in ms {
        let seen = m.coord.lease(soon()).await.expect("lease read");
        assert_eq!(seen, LeaseView::Held { holder: winner.id.clone(), epoch: lease.epoch }, "as {} reads it", m.id);
    }
    winner.coord.release(lease, None, soon()).await.expect("release");
}

/// docs/design.md §4 and S3: a reservation succeeds only strictly above the watermark. RACERS
/// reservations of one HRS by the holder, fired at once: exactly one is granted, every other is
/// refused as not above the watermark it set, and the watermark is that HRS.
pub async fn racing_reserves_of_one_hrs_grant_it_exactly_once(ms: &[Member<'_>]) {
    let a = &ms[0];
    let k = key("contract-reserve-race");
    free_lease(a).await;
    let lease = grant(a).await;
    let base = a.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs.height).unwrap_or(0);
    let hrs = Hrs::new(base + 1, 0, Step::Precommit);
    let results = futures::future::join_all((0..RACERS).map(|_| a.coord.reserve(lease.epoch, &k, hrs, soon()))).await;
    let granted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(granted, 1, "{granted} of {RACERS} racing reservations of {hrs} were granted: {results:?}");
    for r in &results {
        match r {
            Ok(w) => assert_eq!((w.hrs, w.epoch), (hrs, lease.epoch)),
            Err(CoordError::Refused(WatermarkRefusal::NotAbove { current, .. })) => {
                assert_eq!(*current, hrs, "a refusal names the watermark the winner set")
            }
            Err(e) => panic!("a racing reservation was neither granted nor refused as not above: {e}"),
        }
    }
    for m in ms {
        let w = m.coord.watermark(&k, soon()).await.expect("read").map(|w| (w.hrs, w.epoch));
        assert_eq!(w, Some((hrs, lease.epoch)), "the watermark as {} reads it", m.id);
    }
    a.coord.release(&lease, None, soon()).await.expect("release");
}

pub async fn acquire_grants_increasing_epochs_and_only_one_holder(ms: &[Member<'_>]) {
    let (a, b) = (&ms[0], &ms[1]);
    let before = free_lease(a).await;
    let lease = grant(a).await;
    assert!(lease.epoch > before, "epoch {} not above {before}", lease.epoch);
    assert_eq!(lease.holder, a.id);
    match b.coord.acquire(&b.id, soon()).await {
        Err(CoordError::LeaseHeld { holder, epoch }) => assert_eq!((holder, epoch), (a.id.clone(), lease.epoch)),
        other => panic!("second acquire while held: {other:?}"),
    }
    assert!(a.coord.acquire(&a.id, soon()).await.is_err(), "the holder cannot acquire again");
    for m in ms {
        assert_eq!(
            m.coord.lease(soon()).await.expect("lease read"),
            LeaseView::Held { holder: a.id.clone(), epoch: lease.epoch }
        );
    }
    a.coord.release(&lease, None, soon()).await.expect("release");
    let next = grant(b).await;
    assert!(next.epoch > lease.epoch);
    b.coord.release(&next, None, soon()).await.expect("release");
}

pub async fn renew_and_release_only_by_the_current_holder(ms: &[Member<'_>]) {
    let (a, b) = (&ms[0], &ms[1]);
    free_lease(a).await;
    let lease = grant(a).await;
    let renewed = a.coord.renew(&lease, soon()).await.expect("holder renews");
    assert_eq!(renewed.epoch, lease.epoch);
    assert!(renewed.valid_until >= lease.valid_until, "a renew never shortens validity");
    let mut impostor = lease.clone();
    impostor.holder = b.id.clone();
    assert!(matches!(b.coord.renew(&impostor, soon()).await, Err(CoordError::NotHolder { .. })));
    assert!(matches!(b.coord.release(&impostor, None, soon()).await, Err(CoordError::NotHolder { .. })));
    let mut wrong_epoch = lease.clone();
    wrong_epoch.epoch = lease.epoch.next();
    assert!(matches!(a.coord.renew(&wrong_epoch, soon()).await, Err(CoordError::NotHolder { .. })));
    a.coord.release(&lease, None, soon()).await.expect("release");
    assert!(matches!(a.coord.renew(&lease, soon()).await, Err(CoordError::NotHolder { .. })), "released means gone");
}

pub async fn reserve_needs_the_current_epoch_and_a_higher_hrs(ms: &[Member<'_>]) {
    let a = &ms[0];
    let k = key("contract-reserve");
    free_lease(a).await;
    let lease = grant(a).await;
    let base = a.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs.height).unwrap_or(0);
    let h = |d: u64, step| Hrs::new(base + d, 0, step);
    let w = a.coord.reserve(lease.epoch, &k, h(1, Step::Prevote), soon()).await.expect("above the watermark");
    assert_eq!((w.hrs, w.epoch), (h(1, Step::Prevote), lease.epoch));
    for (req, why) in
        [(h(1, Step::Prevote), "equal"), (h(1, Step::Propose), "below"), (h(0, Step::Precommit), "lower height")]
    {
        match a.coord.reserve(lease.epoch, &k, req, soon()).await {
            Err(CoordError::Refused(WatermarkRefusal::NotAbove { .. })) => {}
            other => panic!("reserve {why}: {other:?}"),
        }
    }
    assert!(matches!(
        a.coord.reserve(lease.epoch.next(), &k, h(5, Step::Propose), soon()).await,
        Err(CoordError::NotHolder { .. })
    ));
    a.coord.reserve(lease.epoch, &k, h(1, Step::Precommit), soon()).await.expect("next step");
    for m in ms {
        assert_eq!(m.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs), Some(h(1, Step::Precommit)));
    }
    a.coord.release(&lease, None, soon()).await.expect("release");
}

pub async fn checkpoint_and_release_raise_but_never_lower(ms: &[Member<'_>]) {
    let a = &ms[0];
    let k = key("contract-checkpoint");
    free_lease(a).await;
    let lease = grant(a).await;
    let base = a.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs.height).unwrap_or(0);
    let w = a.coord.checkpoint(lease.epoch, &k, base + 100, soon()).await.expect("checkpoint");
    assert_eq!(w.hrs, Hrs::end_of_height(base + 100));
    let w = a.coord.checkpoint(lease.epoch, &k, base + 50, soon()).await.expect("a lower checkpoint is not an error");
    assert_eq!(w.hrs, Hrs::end_of_height(base + 100), "and does not lower the watermark");
    a.coord.release(&lease, Some((k.clone(), Hrs::end_of_height(base + 120))), soon()).await.expect("release");
    assert_eq!(a.coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs), Some(Hrs::end_of_height(base + 120)));
}

pub async fn stale_holder_is_refused_after_a_new_grant(ms: &[Member<'_>]) {
    let (a, b) = (&ms[0], &ms[1]);
    let k = key("contract-stale");
    free_lease(a).await;
    let old = grant(a).await;
    a.coord.release(&old, None, soon()).await.expect("release");
    let new = grant(b).await;
    assert!(matches!(a.coord.renew(&old, soon()).await, Err(CoordError::NotHolder { .. })));
    assert!(matches!(
        a.coord.reserve(old.epoch, &k, Hrs::new(1, 0, Step::Propose), soon()).await,
        Err(CoordError::NotHolder { .. })
    ));
    assert!(matches!(a.coord.checkpoint(old.epoch, &k, 1, soon()).await, Err(CoordError::NotHolder { .. })));
    assert!(matches!(a.coord.release(&old, None, soon()).await, Err(CoordError::NotHolder { .. })));
    assert_eq!(b.coord.lease(soon()).await.expect("read"), LeaseView::Held { holder: b.id.clone(), epoch: new.epoch });
    b.coord.release(&new, None, soon()).await.expect("release");
}

pub async fn import_only_raises(ms: &[Member<'_>]) {
    let a = &ms[0];
    let k = key("contract-import");
    assert_eq!(a.coord.watermark(&k, soon()).await.expect("read"), None, "never written reads as none, not zero");
    let w = a.coord.import_watermarks(&[(k.clone(), Hrs::new(500, 0, Step::Precommit))], soon()).await.expect("import");
    assert_eq!(w.iter().map(|w| w.hrs.height).collect::<Vec<_>>(), vec![500]);
    match a.coord.import_watermarks(&[(k.clone(), Hrs::new(499, 0, Step::Precommit))], soon()).await {
        Err(CoordError::ImportRefused { key, reason: WatermarkRefusal::NotAbove { .. } }) => assert_eq!(key, k),
        other => panic!("an import below the watermark: {other:?}"),
    }
    let same = a.coord.import_watermarks(&[(k.clone(), Hrs::new(500, 0, Step::Precommit))], soon()).await;
    assert_eq!(same.expect("an equal import is not an error")[0].hrs.height, 500);
    assert_eq!(ms[1].coord.watermark(&k, soon()).await.expect("read").map(|w| w.hrs.height), Some(500));
}

/// Every member reads `expected` (height per key).
async fn assert_heights(ms: &[Member<'_>], expected: &[(&KeyId, Option<u64>)], why: &str) {
    for m in ms {
        for (k, height) in expected {
            let read = m.coord.watermark(k, soon()).await.expect("read").map(|w| w.hrs.height);
            assert_eq!(read, *height, "{why}: {k} as {} reads it", m.id);
        }
    }
}

pub async fn import_is_all_or_nothing(ms: &[Member<'_>]) {
    let a = &ms[0];
    let (x, y, z) = (key("contract-atomic-x"), key("contract-atomic-y"), key("contract-atomic-z"));
    let both = [(x.clone(), Hrs::new(100, 0, Step::Precommit)), (y.clone(), Hrs::new(200, 1, Step::Prevote))];
    let w = a.coord.import_watermarks(&both, soon()).await.expect("two keys in one import");
    assert_eq!(w.iter().map(|w| w.hrs).collect::<Vec<_>>(), vec![both[0].1, both[1].1]);
    assert_heights(ms, &[(&x, Some(100)), (&y, Some(200))], "both applied").await;

    // One entry that would lower its key: the entry that would raise x is not applied either.
    let lowering = [(x.clone(), Hrs::new(150, 0, Step::Precommit)), (y.clone(), Hrs::new(150, 0, Step::Precommit))];
    match a.coord.import_watermarks(&lowering, soon()).await {
        Err(CoordError::ImportRefused { key, reason: WatermarkRefusal::NotAbove { .. } }) => assert_eq!(key, y),
        other => panic!("a batch with a lowering entry: {other:?}"),
    }
    // One entry above the ceiling, and a new key beside it: nothing is created.
    let ceiling = [
        (z.clone(), Hrs::new(5, 0, Step::Propose)),
        (x.clone(), Hrs::new(IMPORT_HEIGHT_CEILING + 1, 0, Step::Propose)),
    ];
    match a.coord.import_watermarks(&ceiling, soon()).await {
        Err(CoordError::ImportRefused { key, reason: WatermarkRefusal::AboveCeiling { .. } }) => assert_eq!(key, x),
        other => panic!("a batch above the ceiling: {other:?}"),
    }
    let twice = [(z.clone(), Hrs::new(5, 0, Step::Propose)), (z.clone(), Hrs::new(6, 0, Step::Propose))];
    assert!(matches!(a.coord.import_watermarks(&twice, soon()).await, Err(CoordError::Invalid(_))), "a key twice");
    assert!(matches!(a.coord.import_watermarks(&[], soon()).await, Err(CoordError::Invalid(_))), "no entry");
    assert_heights(ms, &[(&x, Some(100)), (&y, Some(200)), (&z, None)], "refused batches changed nothing").await;

    // Racing imports, each raising x and y together by the same step: whichever land, x and y
    // always come from the same one, and the last to land is the highest that landed.
    let imports: Vec<[(KeyId, Hrs); 2]> = (1..=8u64)
        .map(|i| [(x.clone(), Hrs::new(1000 + i, 0, Step::Propose)), (y.clone(), Hrs::new(2000 + i, 0, Step::Propose))])
        .collect();
    let results = futures::future::join_all(
        imports.iter().enumerate().map(|(i, batch)| ms[i % 2].coord.import_watermarks(batch, soon())),
    )
    .await;
    let landed: Vec<u64> = results
        .iter()
        .zip(1..)
        .filter_map(|(r, i)| match r {
            Ok(_) => Some(i),
            Err(CoordError::ImportRefused { .. } | CoordError::Unavailable(_)) => None,
            Err(e) => panic!("import {i}: {e}"),
        })
        .collect();
    let top = *landed.iter().max().expect("at least one racing import lands");
    assert_heights(ms, &[(&x, Some(1000 + top)), (&y, Some(2000 + top))], "racing imports").await;
}

pub async fn intents_are_replicated_and_watched(ms: &[Member<'_>]) {
    let (a, b, witness) = (&ms[0], &ms[1], &ms[2]);
    let mut watch_b = b.coord.watch();
    a.coord.set_paused(true, soon()).await.expect("pause");
    for m in ms {
        assert!(m.coord.intents(soon()).await.expect("read").paused);
    }
    tokio::time::timeout(Duration::from_secs(5), watch_b.wait_for(|v| v.intents.paused))
        .await
        .expect("watch sees pause")
        .expect("open");
    a.coord.set_paused(false, soon()).await.expect("resume");

    let last = free_lease(a).await;
    assert!(a.coord.request_transfer(&b.id, soon()).await.is_err(), "nothing to hand over while free");
    let forced = a.coord.request_forced_transfer(&b.id, soon()).await.expect("a forced transfer names the next holder");
    assert_eq!((forced.to.clone(), forced.epoch), (b.id.clone(), last));
    assert!(
        a.coord.request_forced_transfer(&witness.id, soon()).await.is_err(),
        "forced or not, a witness never produces"
    );
    assert_eq!(b.coord.intents(soon()).await.expect("read").transfer, Some(forced));
    let lease = grant(a).await;
    assert!(a.coord.request_transfer(&a.id, soon()).await.is_err(), "a transfer to the holder is refused");
    assert!(a.coord.request_transfer(&witness.id, soon()).await.is_err(), "a witness never produces");
    let unknown = MemberId::new("nobody").expect("valid");
    assert!(a.coord.request_transfer(&unknown, soon()).await.is_err(), "unknown member refused");
    let t = b.coord.request_transfer(&b.id, soon()).await.expect("transfer");
    assert_eq!((t.to.clone(), t.epoch), (b.id.clone(), lease.epoch));
    for m in ms {
        assert_eq!(m.coord.intents(soon()).await.expect("read").transfer, Some(t.clone()));
    }
    a.coord.release(&lease, None, soon()).await.expect("release");
    let taken = grant(b).await;
    assert_eq!(b.coord.intents(soon()).await.expect("read").transfer, None, "acquire clears the transfer");
    b.coord.release(&taken, None, soon()).await.expect("release");
}

pub async fn status_is_shared_between_members(ms: &[Member<'_>]) {
    let status = MemberStatus {
        member: ms[0].id.clone(),
        kind: ms[0].kind,
        role: RoleName::Standby,
        priority: 100,
        height: Some(1234),
        healthy: true,
        epoch: None,
    };
    ms[0].coord.publish_status(&status, soon()).await.expect("publish");
    let deadline = Instant::now() + Duration::from_secs(5);
    for m in &ms[1..] {
        loop {
            let seen = m.coord.cluster_status(soon()).await.expect("read");
            if let Some(r) = seen.iter().find(|r| r.status.member == ms[0].id) {
                assert_eq!(r.status, status);
                assert!(r.age < Duration::from_secs(5));
                break;
            }
            assert!(Instant::now() < deadline, "{} never saw {}'s status", m.id, ms[0].id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut forged = status.clone();
    forged.member = ms[1].id.clone();
    assert!(ms[0].coord.publish_status(&forged, soon()).await.is_err(), "a member publishes only its own status");
}

pub async fn calls_return_by_their_deadline(ms: &[Member<'_>]) {
    let a = &ms[0];
    let started = Instant::now();
    let r = a.coord.lease(Instant::now()).await;
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "a call with an expired deadline took {:?}",
        started.elapsed()
    );
    assert!(matches!(r, Err(CoordError::Timeout { .. }) | Ok(_)), "{r:?}");
}
