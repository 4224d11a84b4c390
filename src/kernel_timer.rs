//! A one-shot deadline kept by the kernel (a `timerfd` the runtime polls), for the wake-ups a
//! member repeats every second or more often: the daemon loop's next turn, the raft node's tick
//! and expiry wakes, the probe loops' ticks, and the signer's quiet before each reservation
//! ahead ([`sleep`]).
//!
//! Why not `tokio::time::sleep_until`: tokio's timer wheel keeps a deadline more than 64 ms away
//! in a coarser level and wakes the worker at the start of that level's 64 ms slot to move it
//! down, then again when it is due; and a sleep `reset` to a later instant stays where it was
//! and wakes the worker at the old instant. At ten renews a second that was a third of a signer
//! active's wake-ups, and each wake-up costs this machine 56–78 µs of CPU whatever follows it (docs/design.md §7). The kernel's timer wakes once, at the deadline.
//!
//! Owns one file descriptor and when it is due. Never decides when that is, and never blocks:
//! the descriptor is non-blocking and read only when the runtime says it is ready. It runs on
//! the kernel's clock, so tokio's paused test time (`tokio::time::pause`) does not move it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The descriptor, in the form `AsyncFd` takes.
struct Descriptor(TimerFd);

impl AsRawFd for Descriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A deadline the kernel wakes the runtime at once. Must be created inside a tokio runtime
/// with I/O enabled.
pub struct KernelTimer {
    fd: AsyncFd<Descriptor>,
    /// The instant the kernel was last asked for: re-arming for the same one makes no call.
    due: Option<Instant>,
}

impl KernelTimer {
    /// A disarmed timer on the monotonic clock (the clock `Instant` reads on Linux).
    pub fn new() -> io::Result<KernelTimer> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).map_err(io::Error::from)?;
        // SAFETY: `Descriptor` owns the timerfd's `OwnedFd`, so the descriptor stays open and
        // the same for as long as the `AsyncFd` holds it, and `as_raw_fd` always returns it.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(Descriptor(timer), Interest::READABLE) }?;
        Ok(KernelTimer { fd, due: None })
    }

    /// When the timer is due, if armed.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Arms the timer for `at`, replacing any earlier or later instant; an instant already past
    /// fires at once. A call for the instant it is already armed for costs nothing.
    pub fn arm(&mut self, at: Instant) -> io::Result<()> {
        if self.due == Some(at) {
            return Ok(());
        }
        // A zero expiry would disarm a timerfd: one nanosecond fires at once instead.
        let wait = at.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        let expiry = Expiration::OneShot(TimeSpec::from_duration(wait));
        self.fd.get_ref().0.set(expiry, TimerSetTimeFlags::empty()).map_err(io::Error::from)?;
        self.due = Some(at);
        Ok(())
    }

    /// Disarms the timer; an expiry not yet waited for is dropped with it (the kernel resets
    /// the count on every setting).
    pub fn disarm(&mut self) -> io::Result<()> {
        if self.due.take().is_some() {
            self.fd.get_ref().0.unset().map_err(io::Error::from)?;
        }
        Ok(())
    }

    /// Waits until the armed instant has passed; pending for ever while disarmed. Cancel-safe:
    /// an expiry that happens while the caller does something else is kept for the next call.
    pub async fn fired(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut count = [0u8; 8];
            match nix::unistd::read(ready.get_inner().0.as_fd(), &mut count) {
                Ok(_) => {
                    // The read took every expiry: the next one is a new edge for the runtime.
                    ready.clear_ready();
                    self.due = None;
                    return Ok(());
                }
                // Re-armed since the runtime saw it readable: the new instant has not come.
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Waits `wait` on a kernel timer of its own: one wake-up, at the end (see the module doc).
/// When the kernel gives no timer (no descriptor left) or it fails, the rest of the wait runs
/// on tokio's timer: never shorter, only costlier.
pub async fn sleep(wait: Duration) {
    let until = Instant::now() + wait;
    wait_until(KernelTimer::new(), until).await;
}

/// Waits until `until` on `timer`, or on tokio's timer when there is none or it fails.
async fn wait_until(timer: io::Result<KernelTimer>, until: Instant) {
    let on_kernel = async {
        let mut timer = timer?;
        timer.arm(until)?;
        timer.fired().await
    };
    if let Err(e) = on_kernel.await {
        tracing::debug!(error = %e, "no kernel timer for a short wait; it runs on tokio's timer");
        tokio::time::sleep_until(until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn it_fires_at_its_deadline_and_not_before() {
        let mut timer = KernelTimer::new().expect("timerfd");
        let start = Instant::now();
        timer.arm(start + Duration::from_millis(80)).expect("arm");
        timer.fired().await.expect("fires");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(80), "fired after {waited:?}, before its deadline");
        assert!(waited < Duration::from_secs(2), "fired only after {waited:?}");
        assert_eq!(timer.due(), None, "a fired timer is disarmed");
    }

    // Paused tokio time jumps over any tokio timer at once; only the kernel's makes the test
    // wait, measured on the real clock.
    #[tokio::test(start_paused = true)]
    async fn a_sleep_waits_its_whole_time_on_the_kernels_timer() {
        let start = std::time::Instant::now();
        sleep(Duration::from_millis(80)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(80), "woke after {waited:?}, before its time");
        assert!(waited < Duration::from_secs(2), "woke only after {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_kernel_timer_a_sleep_waits_its_whole_time_on_tokios() {
        let start = Instant::now();
        let none = Err(io::Error::other("no descriptor left"));
        wait_until(none, start + Duration::from_millis(80)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(80), "woke on tokio's clock, at its time");
    }

    #[tokio::test]
    async fn a_past_deadline_fires_at_once() {
        let mut timer = KernelTimer::new().expect("timerfd");
        let past = Instant::now() - Duration::from_millis(5);
        timer.arm(past).expect("arm");
        tokio::time::timeout(SLACK, timer.fired()).await.expect("fires at once").expect("reads");
    }

    #[tokio::test]
    async fn re_arming_later_moves_the_deadline_and_earlier_brings_it_forward() {
        let mut timer = KernelTimer::new().expect("timerfd");
        let start = Instant::now();
        timer.arm(start + Duration::from_millis(30)).expect("arm");
        timer.arm(start + Duration::from_millis(150)).expect("later");
        timer.fired().await.expect("fires");
        assert!(start.elapsed() >= Duration::from_millis(150), "fired at the replaced, earlier deadline");

        let start = Instant::now();
        timer.arm(start + Duration::from_secs(60)).expect("arm");
        timer.arm(start + Duration::from_millis(20)).expect("earlier");
        tokio::time::timeout(SLACK, timer.fired()).await.expect("fires at the earlier deadline").expect("reads");
    }

    #[tokio::test]
    async fn an_expiry_missed_while_busy_is_kept_for_the_next_wait() {
        use futures::FutureExt;
        let mut timer = KernelTimer::new().expect("timerfd");
        timer.arm(Instant::now() + Duration::from_millis(150)).expect("arm");
        // A wait polled and dropped before the deadline (a `select!` whose other branch won)
        // loses nothing.
        let _ = timer.fired().now_or_never();
        // Busy past the deadline, without polling the timer.
        std::thread::sleep(Duration::from_millis(200));
        tokio::time::timeout(SLACK, timer.fired()).await.expect("the expiry was kept").expect("reads");
    }

    // The runtime saw the descriptor readable (the first deadline passed), then the timer was
    // re-armed or disarmed before anyone read it: the stale readiness must not count as the new
    // deadline's expiry.
    #[tokio::test]
    async fn a_stale_expiry_does_not_fire_a_re_armed_or_disarmed_timer() {
        let mut timer = KernelTimer::new().expect("timerfd");
        timer.arm(Instant::now() + Duration::from_millis(5)).expect("arm");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let start = Instant::now();
        timer.arm(start + Duration::from_secs(1)).expect("re-arm");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), timer.fired()).await.is_err(),
            "fired at the old deadline"
        );
        timer.fired().await.expect("fires");
        assert!(start.elapsed() >= Duration::from_secs(1), "fired before the new deadline");

        timer.arm(Instant::now() + Duration::from_millis(5)).expect("arm");
        tokio::time::sleep(Duration::from_millis(30)).await;
        timer.disarm().expect("disarm");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), timer.fired()).await.is_err(),
            "a disarmed timer fired"
        );
    }

    #[tokio::test]
    async fn a_disarmed_timer_never_fires_even_after_its_deadline_passed() {
        let mut timer = KernelTimer::new().expect("timerfd");
        assert!(tokio::time::timeout(Duration::from_millis(50), timer.fired()).await.is_err());
        timer.arm(Instant::now() + Duration::from_millis(5)).expect("arm");
        std::thread::sleep(Duration::from_millis(20));
        timer.disarm().expect("disarm");
        assert!(tokio::time::timeout(Duration::from_millis(100), timer.fired()).await.is_err(), "a stale expiry fired");
    }
}
