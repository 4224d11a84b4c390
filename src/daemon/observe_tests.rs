//! The cluster-status refresher and the staleness bound, on paused tokio time through the
//! [`Clock`] seam: time moves only when every task waits, so each bound is checked to the
//! millisecond without sleeping for real. The probe loops' ticks run on a kernel timer, which
//! paused time does not move: their tests wait for real.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Clock, ClusterSource, LOCAL_REFRESH_INTERVAL, Observer, REFRESH_INTERVAL, Ticks, TurnBell, next_tick,
    refresh_cluster, refresh_interval, ride_early, rides_turn, store_stale_after,
};
use crate::coord::{CoordError, StatusReport};
use crate::domain::{MemberId, MemberKind, MemberStatus, RoleName};

const CALL_TIMEOUT: Duration = Duration::from_millis(800);
const STATUS_STALE_AFTER: Duration = Duration::from_secs(3);

fn member(name: &str) -> MemberId {
    MemberId::new(name).expect("member id")
}

fn status_of(name: &str) -> StatusReport {
    let status = MemberStatus {
        member: member(name),
        kind: MemberKind::Producer,
        role: RoleName::Standby,
        priority: 1,
        height: Some(10),
        healthy: true,
        epoch: None,
    };
    StatusReport { status, age: Duration::ZERO }
}

/// A store whose n-th read (from 0) takes `delay(n)` and then answers, or never answers.
fn store(delay: impl Fn(usize) -> Option<Duration> + Send + Sync + 'static) -> impl Fn(Instant) -> BoxedRead {
    let reads = Arc::new(AtomicUsize::new(0));
    let delay = Arc::new(delay);
    move |deadline| {
        let n = reads.fetch_add(1, Ordering::SeqCst);
        let delay = delay(n);
        Box::pin(async move {
            match delay {
                Some(d) => {
                    tokio::time::sleep(d).await;
                    Ok(vec![status_of("a"), status_of("b")])
                }
                None => {
                    tokio::time::sleep_until(deadline).await;
                    Err(CoordError::Timeout { operation: "cluster_status" })
                }
            }
        })
    }
}

type BoxedRead = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<StatusReport>, CoordError>> + Send>>;

/// Starts a refresher over `read` for member `a`; returns what the loop would observe.
async fn observer_over(read: impl Fn(Instant) -> BoxedRead + Send + 'static) -> (Observer, Clock, CancellationToken) {
    let clock = Clock::following_tokio();
    let (tx, rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let ask = Arc::new(Notify::new());
    tokio::spawn(refresh_cluster(
        read,
        (CALL_TIMEOUT, REFRESH_INTERVAL),
        clock.clone(),
        tx,
        Arc::clone(&ask),
        shutdown.clone(),
    ));
    let mut observer = Observer::new(
        member("a"),
        clock.clone(),
        (CALL_TIMEOUT, REFRESH_INTERVAL),
        STATUS_STALE_AFTER,
        ClusterSource::Refreshed(rx, ask),
        0,
    );
    observer.first_answer(CALL_TIMEOUT).await;
    (observer, clock, shutdown)
}

#[tokio::test(start_paused = true)]
async fn reads_each_as_slow_as_the_call_timeout_never_make_the_store_unknown() {
    let slow = CALL_TIMEOUT - Duration::from_millis(1);
    let (observer, clock, shutdown) = observer_over(store(move |_| Some(slow))).await;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(observer.cluster(clock.now()).is_some(), "a slow store counted as unknown");
    }
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn one_failed_read_never_makes_the_store_unknown() {
    // Every third read never answers; the others answer at once.
    let (observer, clock, shutdown) = observer_over(store(|n| (n % 3 != 1).then_some(Duration::ZERO))).await;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(observer.cluster(clock.now()).is_some(), "one failed read made the store unknown");
    }
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_store_that_stops_answering_is_unknown_once_its_answer_passes_the_bound() {
    let (observer, clock, shutdown) = observer_over(store(|n| (n == 0).then_some(Duration::ZERO))).await;
    let asked = clock.now();
    let bound = store_stale_after(CALL_TIMEOUT, STATUS_STALE_AFTER, REFRESH_INTERVAL);
    assert_eq!(bound, CALL_TIMEOUT * 3 + REFRESH_INTERVAL * 2);
    tokio::time::sleep(bound).await;
    assert!(observer.cluster(clock.now()).is_some(), "unknown before the bound");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(clock.now().saturating_since(asked) > bound);
    assert_eq!(observer.cluster(clock.now()), None, "a stale answer still counted as the store's");
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn statuses_age_while_their_answer_waits_and_exclude_this_member() {
    let (observer, clock, shutdown) = observer_over(store(|n| (n == 0).then_some(Duration::ZERO))).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let cluster = observer.cluster(clock.now()).expect("a fresh answer");
    assert_eq!(cluster.len(), 1, "this member's own status is not part of the cluster");
    assert_eq!(cluster[0].status.member, member("b"));
    assert_eq!(cluster[0].age, Duration::from_millis(700));
    shutdown.cancel();
}

#[test]
fn the_bound_never_exceeds_the_age_at_which_role_ignores_a_status() {
    let long_calls = Duration::from_millis(2900);
    assert_eq!(store_stale_after(long_calls, STATUS_STALE_AFTER, REFRESH_INTERVAL), STATUS_STALE_AFTER);
}

/// Counts the reads of a store that answers at once.
fn counted() -> (Arc<AtomicUsize>, impl Fn(Instant) -> BoxedRead + Send + 'static) {
    let reads = Arc::new(AtomicUsize::new(0));
    let theirs = Arc::clone(&reads);
    let read = move |_| -> BoxedRead {
        theirs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(vec![status_of("a"), status_of("b")]) })
    };
    (reads, read)
}

#[tokio::test(start_paused = true)]
async fn unasked_the_refresher_reads_once_per_refresh_interval() {
    let (reads, read) = counted();
    let (_observer, _clock, shutdown) = observer_over(read).await;
    let first = reads.load(Ordering::SeqCst);
    tokio::time::sleep(REFRESH_INTERVAL * 10 - Duration::from_millis(1)).await;
    assert_eq!(reads.load(Ordering::SeqCst) - first, 9, "reads without a request in ten intervals");
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_turn_that_asks_gets_a_fresh_answer_at_once() {
    let (reads, read) = counted();
    let (observer, clock, shutdown) = observer_over(read).await;
    tokio::time::sleep(REFRESH_INTERVAL / 2).await;
    let before = reads.load(Ordering::SeqCst);
    observer.ask_again();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(reads.load(Ordering::SeqCst), before + 1, "a request is read at once");
    let cluster = observer.cluster(clock.now()).expect("a fresh answer");
    assert_eq!(cluster[0].age, Duration::from_millis(1), "the answer is as old as the request");
    shutdown.cancel();
}

// In memory the statuses are read once a second, but never so rarely that an answer read at one
// quiet turn is stale at the next (signer mode's chaos lab: statuses stale after 1 s).
#[test]
fn statuses_in_memory_are_read_once_a_second_at_most_a_quarter_of_their_staleness() {
    assert_eq!(refresh_interval(false, STATUS_STALE_AFTER), REFRESH_INTERVAL);
    assert_eq!(refresh_interval(true, Duration::from_secs(4)), LOCAL_REFRESH_INTERVAL);
    assert_eq!(refresh_interval(true, Duration::from_secs(1)), Duration::from_millis(250));
    let every = refresh_interval(true, Duration::from_secs(1));
    assert!(store_stale_after(CALL_TIMEOUT, Duration::from_secs(1), every) >= every * 2);
}

#[test]
fn a_tick_missed_entirely_is_delayed_not_made_up() {
    let due = Instant::now();
    let every = Duration::from_secs(1);
    assert_eq!(next_tick(due, every, due + Duration::from_millis(3)), due + every, "on time: the grid holds");
    let now = due + Duration::from_millis(950);
    assert_eq!(next_tick(due, every, now), now + every, "a late tick moves the grid: no tick 50 ms later");
    let now = due + Duration::from_millis(2500);
    assert_eq!(next_tick(due, every, now), now + every, "missed ticks are not made up in a burst");
}

/// On the kernel's clock (the ticks' timer is a timerfd), so this waits for real: 300 ms.
#[tokio::test]
async fn ticks_come_at_once_then_an_interval_apart_until_shutdown() {
    let stop = CancellationToken::new();
    let every = Duration::from_millis(300);
    let start = Instant::now();
    let mut ticks = Ticks::new("local", every, stop.clone()).expect("a timerfd");
    assert!(ticks.next().await, "the first tick comes");
    let first = start.elapsed();
    assert!(ticks.next().await, "the second tick comes");
    let second = start.elapsed();
    assert!(first < Duration::from_millis(200), "the first tick came after {first:?}, not at once");
    assert!(second >= every, "the second tick came {second:?} after the start, before an interval");
    stop.cancel();
    assert!(!ticks.next().await, "no tick after shutdown");
}

#[test]
fn a_probe_rides_a_turn_at_most_a_renew_interval_and_a_quarter_and_a_quarter_of_its_interval_early() {
    let ms = Duration::from_millis;
    let early = ride_early(ms(150), ms(1000));
    assert_eq!(early, ms(187) + Duration::from_micros(500), "signer mode: a renew interval and a quarter");
    assert_eq!(ride_early(ms(1000), ms(1000)), ms(250), "never more than a quarter of the probe interval");
    let due = Instant::now() + ms(1000);
    assert!(rides_turn(due, early, due - early), "due within the ride: taken with the turn");
    assert!(!rides_turn(due, early, due - early - ms(1)), "due later: the turn passes it by");
}

// A turn rings the bell only when a rider's tick is due within `early`: the turns far from
// every tick wake no probe loop.
#[test]
fn a_turn_far_from_every_tick_wakes_no_probe_loop() {
    let ms = Duration::from_millis;
    let early = ms(200);
    let bell = TurnBell::new(early);
    let (mut near, mut far) = (bell.rider(), bell.rider());
    let now = Instant::now();
    far.set_due(now + ms(900));
    near.set_due(now + ms(600));
    bell.turned(now);
    assert!(!near.turns.has_changed().expect("the bell") && !far.turns.has_changed().expect("the bell"));
    near.set_due(now + ms(150));
    bell.turned(now);
    assert!(near.turns.has_changed().expect("the bell"), "a tick due within the ride: rung");
    near.turns.mark_unchanged();
    far.turns.mark_unchanged();
    near.set_due(now + ms(1600));
    bell.turned(now + ms(700));
    assert!(far.turns.has_changed().expect("the bell"), "the other rider's tick came within the ride");
}

/// On the kernel's clock, so this waits for real: about 1.1 s. The member's turns are sent
/// by hand at set times, as its loop would send them.
#[tokio::test]
async fn a_tick_due_soon_is_taken_with_a_turn_and_the_next_comes_an_interval_after_it() {
    let stop = CancellationToken::new();
    let (every, early) = (Duration::from_millis(600), Duration::from_millis(200));
    let bell = TurnBell::new(early);
    let mut ticks = Ticks::new("local", every, stop.clone()).expect("a timerfd").riding(Some(bell.rider()));
    assert!(ticks.next().await, "the first tick comes at once");
    let start = Instant::now();
    let turning = tokio::spawn(async move {
        tokio::time::sleep_until(start + Duration::from_millis(100)).await;
        bell.turned(Instant::now());
        tokio::time::sleep_until(start + Duration::from_millis(400)).await;
        bell.turned(Instant::now());
        bell
    });
    assert!(ticks.next().await, "the second tick comes");
    let ridden = Instant::now();
    let at = ridden - start;
    assert!(at >= Duration::from_millis(400), "the turn 500 ms before the tick took it ({at:?} after the first)");
    assert!(
        at < Duration::from_millis(580),
        "the turn 200 ms before the tick did not take it: it came {at:?} after the first"
    );
    let bell = turning.await.expect("the turns");
    drop(bell);
    assert!(ticks.next().await, "with the member's loop ended, the timer still ticks");
    let gap = ridden.elapsed();
    assert!(gap >= every - Duration::from_millis(5), "the next tick came {gap:?} after the ridden one");
    assert!(gap < every + Duration::from_millis(200), "the next tick came {gap:?} after the ridden one");
    stop.cancel();
    assert!(!ticks.next().await, "no tick after shutdown");
}
