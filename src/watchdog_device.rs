//! The optional Linux watchdog device (`failover.watchdog`, docs/design.md §6): a timer outside
//! the daemon, usually in hardware, that resets the host unless it is petted in time. It covers
//! what nothing inside the host can: a whole host that stops (a kernel hang, a paused VM) while
//! its node holds the key.
//!
//! Owns the open device while this member holds the lease, and nothing else. The device is
//! opened when the promotion guard activates the producer and closed when the producer is
//! confirmed inactive, never kept open while not holding. Its timeout is the largest whole
//! number of seconds strictly below the holder's validity, read back after setting it. It is
//! petted at activation and after each committed renew, and only when the pet keeps the reset
//! within that lease's validity (now + timeout ≤ valid_until), so a host that freezes is reset
//! before any other member can be granted the lease. A clean stand-down writes the magic
//! character `V` before closing, which disarms it. This module never decides anything about the
//! lease or the producer; it never pets for a lease it does not hold; and a failure to open or
//! configure the device is a refusal under `required` and an INFO line, once, under `automatic`.
//!
//! What the device cannot tell apart: a daemon that crashed, was killed or cannot reach the store
//! for a whole timeout while holding looks like a frozen host, and the host is reset too.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc::c_int;
use tokio::sync::watch;

use crate::config::{Backend, Config, CoordinatorConfig, WatchdogMode, duration_text};
use crate::domain::{Epoch, MonoTime};

/// The character that, written before `close`, tells a watchdog driver the close is intended.
pub const MAGIC_CLOSE: u8 = b'V';

/// The device timeout for a holder whose lease is valid for `validity` after each committed
/// renew: the largest whole number of seconds strictly below it, at most `i32::MAX` (the ioctl
/// takes a C int). `None` when that is less than one second.
pub fn device_timeout(validity: Duration) -> Option<u32> {
    let below = if validity.subsec_nanos() == 0 { validity.as_secs().saturating_sub(1) } else { validity.as_secs() };
    let secs = u32::try_from(below.min(i32::MAX as u64)).unwrap_or(i32::MAX as u32);
    (secs >= 1).then_some(secs)
}

/// The device timeout `coordinator` leaves room for, or why there is none: it must be at least
/// one second, below the holder's validity, and longer than `renew_interval`, since pets come
/// only after committed renews and a shorter timeout would reset a healthy host between two.
pub fn usable_timeout(coordinator: &CoordinatorConfig) -> Result<u32, String> {
    let c = coordinator;
    let d = duration_text::format;
    let (ttl_name, ttl) = match c.backend {
        Backend::Raft => ("lease_ttl", c.lease_ttl),
        Backend::Consul => ("coordinator.consul.check_ttl", c.consul.check_ttl),
    };
    let validity = c.holder_validity();
    let formula = format!("{ttl_name} − safety_margin = {} − {} = {}", d(ttl), d(c.safety_margin), d(validity));
    match device_timeout(validity) {
        None => Err(format!(
            "the holder's validity ({formula}) leaves no whole second for the watchdog device's timeout, which must be at least 1s and below it; raise {ttl_name} or lower safety_margin"
        )),
        Some(secs) if Duration::from_secs(u64::from(secs)) <= c.renew_interval => Err(format!(
            "the watchdog device's timeout would be {secs}s, the largest whole second below the holder's validity ({formula}), which is not longer than renew_interval ({}): the device is petted only after committed renews and would reset a healthy host between two; lower renew_interval or raise {ttl_name}",
            d(c.renew_interval)
        )),
        Some(secs) => Ok(secs),
    }
}

/// What [`WatchdogDevice`] needs to know, from the config or set by a test.
#[derive(Clone, Debug)]
pub struct WatchdogSettings {
    pub mode: WatchdogMode,
    pub path: PathBuf,
    /// The device timeout in seconds, or why the timings leave none ([`usable_timeout`]).
    pub timeout: Result<u32, String>,
    /// The holder's validity after a committed renew: the driver's timeout must stay below it.
    pub validity: Duration,
    /// The driver's timeout must stay above it, or it fires between two renews.
    pub renew_interval: Duration,
    /// How long arming waits for a renew recent enough that the timeout fits in its validity:
    /// one renew interval plus the store's call timeout.
    pub arm_wait: Duration,
}

impl WatchdogSettings {
    pub fn from_config(config: &Config) -> WatchdogSettings {
        let c = &config.coordinator;
        WatchdogSettings {
            mode: config.failover.watchdog,
            path: config.failover.watchdog_device.clone(),
            timeout: usable_timeout(c),
            validity: c.holder_validity(),
            renew_interval: c.renew_interval,
            arm_wait: c.renew_interval.saturating_add(c.call_timeout),
        }
    }
}

/// Why the device could not be armed. Under `required` this refuses the activation; under
/// `automatic` it is the reason logged once.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("the watchdog device is not used: {0}")]
    NoTimeout(String),
    #[error("watchdog device {}: cannot open it: {source}{}", path.display(), open_hint(source))]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "watchdog device {}: not a watchdog device (ioctl WDIOC_SETTIMEOUT: {source}); set failover.watchdog_device to the watchdog's device node, such as /dev/watchdog0",
        path.display()
    )]
    NotAWatchdog { path: PathBuf, source: std::io::Error },
    #[error("watchdog device {}: cannot set its timeout to {secs}s: {source}; check the driver's range (wdctl shows it)", path.display())]
    SetTimeout { path: PathBuf, secs: u32, source: std::io::Error },
    #[error("watchdog device {}: cannot read its timeout back: {source}", path.display())]
    GetTimeout { path: PathBuf, source: std::io::Error },
    #[error(
        "watchdog device {}: asked for a {asked}s timeout, the driver set {got}s, which is not above renew_interval ({renew_interval}) and below the holder's validity ({validity}): the device could reset a healthy host, or reset one only after another member took over; choose lease_ttl and renew_interval so the driver keeps the timeout asked for (wdctl shows its range)",
        path.display()
    )]
    Rounded { path: PathBuf, asked: u32, got: c_int, renew_interval: String, validity: String },
    #[error("watchdog device {}: cannot pet it: {source}", path.display())]
    Pet { path: PathBuf, source: std::io::Error },
    #[error(
        "watchdog device {}: not armed: its {secs}s timeout would run past this lease's validity (epoch {epoch}), and no renew committed within {waited}; the lease is renewed too slowly for the device",
        path.display()
    )]
    OutlastsLease { path: PathBuf, secs: u32, epoch: Epoch, waited: String },
}

fn open_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT) => {
            "; load the board's watchdog driver (or softdog) so the device exists, or set failover.watchdog_device to its path"
        }
        Some(Errno::EACCES | Errno::EPERM) => {
            "; give the daemon's user access (a udev rule with GROUP and MODE) and, under systemd, allow the device in a drop-in (systemd/README.md, \"The watchdog device\")"
        }
        Some(Errno::EBUSY) => {
            "; another process holds it (systemd's RuntimeWatchdogSec=, a watchdog daemon): a watchdog device has one user at a time"
        }
        _ => "",
    }
}

/// What arming did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Armed {
    /// `watchdog = "off"`.
    Off,
    /// The device is open, set to this many seconds and petted.
    Device { secs: u32 },
    /// `automatic`, and the device could not be armed for this reason: the member goes on
    /// without it.
    Without { why: String },
}

struct OpenDevice {
    file: File,
    epoch: Epoch,
    secs: u32,
    /// A pet skipped or failed has been logged in this episode.
    told: bool,
}

/// The device and its state, shared by the guard (arm), the renew task (pet) and the tasks that
/// confirm the producer stopped (disarm).
pub struct WatchdogDevice {
    settings: WatchdogSettings,
    open: Mutex<Option<OpenDevice>>,
    /// The latest committed renew this member saw: its epoch and validity end.
    latest: watch::Sender<(Epoch, MonoTime)>,
    /// `automatic` said once why it runs without the device.
    told_without: AtomicBool,
}

impl WatchdogDevice {
    pub fn new(settings: WatchdogSettings) -> WatchdogDevice {
        WatchdogDevice {
            settings,
            open: Mutex::new(None),
            latest: watch::Sender::new((Epoch::ZERO, MonoTime::ZERO)),
            told_without: AtomicBool::new(false),
        }
    }

    pub fn from_config(config: &Config) -> WatchdogDevice {
        WatchdogDevice::new(WatchdogSettings::from_config(config))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<OpenDevice>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the device is open (armed) now.
    pub fn is_armed(&self) -> bool {
        self.state().is_some()
    }

    /// Arms the device for the lease at `epoch`, valid until `until`, before the producer is
    /// activated: opens it, sets and checks its timeout, pets it. When the timeout from now would
    /// outlast `until`, it first waits (up to `arm_wait`) for a renew that moves the validity.
    pub async fn arm(&self, epoch: Epoch, until: MonoTime) -> Result<Armed, WatchdogError> {
        let secs = match (self.settings.mode, &self.settings.timeout) {
            (WatchdogMode::Off, _) => return Ok(Armed::Off),
            (_, Err(why)) => return self.unavailable(WatchdogError::NoTimeout(why.clone())),
            (_, Ok(secs)) => *secs,
        };
        if let Some(open) = self.state().as_mut() {
            // Still open from an earlier epoch whose producer was never confirmed stopped: it
            // serves this lease from now on.
            open.epoch = epoch;
            open.told = false;
        } else if let Err(source) = std::fs::metadata(&self.settings.path) {
            return self.unavailable(WatchdogError::Open { path: self.settings.path.clone(), source });
        }
        if let Err(e) = self.wait_for_room(epoch, until, secs).await {
            return self.unavailable(e);
        }
        let path = &self.settings.path;
        let mut state = self.state();
        let result = match state.take() {
            // One that cannot be petted is dropped without the magic character: it then resets
            // the host, which a producer never confirmed stopped calls for.
            Some(open) => pet(&open.file, path).map(|()| open),
            None => open_and_configure(path, secs, &self.settings).map(|(file, secs)| {
                tracing::info!(device = %path.display(), timeout_s = secs, %epoch, "watchdog device armed");
                OpenDevice { file, epoch, secs, told: false }
            }),
        };
        match result {
            Ok(open) => {
                let armed = Armed::Device { secs: open.secs };
                *state = Some(open);
                Ok(armed)
            }
            Err(e) => {
                drop(state);
                self.unavailable(e)
            }
        }
    }

    /// After a committed renew of `epoch`, valid until `until`: remembers it and pets the device
    /// if it is armed for that lease and the pet keeps the reset within `until`.
    pub fn lease_renewed(&self, epoch: Epoch, until: MonoTime) {
        self.latest.send_if_modified(|latest| {
            let newer = (epoch, until) > *latest;
            if newer {
                *latest = (epoch, until);
            }
            newer
        });
        let mut state = self.state();
        let Some(open) = state.as_mut().filter(|o| o.epoch == epoch) else { return };
        let now = MonoTime::now();
        let timeout = Duration::from_secs(u64::from(open.secs));
        if now.saturating_add(timeout) > until {
            if !std::mem::replace(&mut open.told, true) {
                tracing::warn!(
                    device = %self.settings.path.display(),
                    %epoch,
                    left_ms = until.saturating_since(now).as_millis() as u64,
                    timeout_s = open.secs,
                    "a renew committed too late to pet the watchdog device within the lease's validity: not petted, so the device resets this host unless a renew commits sooner"
                );
            }
            return;
        }
        if let Err(e) = pet(&open.file, &self.settings.path)
            && !std::mem::replace(&mut open.told, true)
        {
            tracing::error!(error = %e, timeout_s = open.secs, "the watchdog device was not petted: it resets this host unless a later pet succeeds");
        }
    }

    /// The producer is confirmed inactive: writes the magic character and closes the device,
    /// which stops it. Does nothing when it is not open.
    pub fn disarm(&self) {
        let Some(open) = self.state().take() else { return };
        magic_close(open.file, &self.settings.path);
        tracing::info!(device = %self.settings.path.display(), epoch = %open.epoch, "watchdog device disarmed");
    }

    /// `required`: the error. `automatic`: goes on without the device, and says why once.
    fn unavailable(&self, e: WatchdogError) -> Result<Armed, WatchdogError> {
        if self.settings.mode == WatchdogMode::Required {
            return Err(e);
        }
        let why = e.to_string();
        if !self.told_without.swap(true, Ordering::Relaxed) {
            tracing::info!(reason = %why, "failover.watchdog = automatic: activating without the watchdog device");
        } else {
            tracing::debug!(reason = %why, "activating without the watchdog device");
        }
        Ok(Armed::Without { why })
    }

    /// Waits until arming now keeps the reset within the lease: now + timeout ≤ the validity
    /// end of the latest committed renew of `epoch` (or `until`), for at most `arm_wait`.
    async fn wait_for_room(&self, epoch: Epoch, until: MonoTime, secs: u32) -> Result<(), WatchdogError> {
        let timeout = Duration::from_secs(u64::from(secs));
        let mut renews = self.latest.subscribe();
        let give_up = tokio::time::Instant::now() + self.settings.arm_wait;
        loop {
            let (latest_epoch, latest_until) = *renews.borrow_and_update();
            let bound = if latest_epoch == epoch { until.max(latest_until) } else { until };
            if MonoTime::now().saturating_add(timeout) <= bound {
                return Ok(());
            }
            if !matches!(tokio::time::timeout_at(give_up, renews.changed()).await, Ok(Ok(()))) {
                return Err(WatchdogError::OutlastsLease {
                    path: self.settings.path.clone(),
                    secs,
                    epoch,
                    waited: duration_text::format(self.settings.arm_wait),
                });
            }
        }
    }
}

/// Opens the device and configures it ([`configure`]); on a failure after the open, closes it
/// again, with the magic character unless the file is no watchdog at all.
fn open_and_configure(path: &Path, secs: u32, settings: &WatchdogSettings) -> Result<(File, u32), WatchdogError> {
    let file = open_device(path).map_err(|source| WatchdogError::Open { path: path.to_path_buf(), source })?;
    match configure(&file, path, secs, settings) {
        Ok(kept) => Ok((file, kept)),
        Err(e) => {
            if !matches!(e, WatchdogError::NotAWatchdog { .. }) {
                magic_close(file, path);
            }
            Err(e)
        }
    }
}

/// Opens the device for writing. Non-blocking, so that a FIFO named by mistake is refused at
/// once instead of waiting for a reader; never a controlling terminal; close-on-exec (std).
fn open_device(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY).open(path)
}

/// Sets the timeout to `secs`, reads it back, refuses a value the driver moved to renew_interval
/// or less or to the holder's validity or more, and pets. Returns the timeout the driver keeps.
fn configure(file: &File, path: &Path, secs: u32, settings: &WatchdogSettings) -> Result<u32, WatchdogError> {
    let path_buf = || path.to_path_buf();
    linux::set_timeout(file, secs).map_err(|e| match e {
        Errno::ENOTTY => WatchdogError::NotAWatchdog { path: path_buf(), source: e.into() },
        _ => WatchdogError::SetTimeout { path: path_buf(), secs, source: e.into() },
    })?;
    let got = linux::get_timeout(file).map_err(|e| WatchdogError::GetTimeout { path: path_buf(), source: e.into() })?;
    let fits = |s: &u32| {
        let t = Duration::from_secs(u64::from(*s));
        *s >= 1 && t > settings.renew_interval && t < settings.validity
    };
    let Some(kept) = u32::try_from(got).ok().filter(fits) else {
        return Err(WatchdogError::Rounded {
            path: path_buf(),
            asked: secs,
            got,
            renew_interval: duration_text::format(settings.renew_interval),
            validity: duration_text::format(settings.validity),
        });
    };
    pet(file, path)?;
    Ok(kept)
}

/// Restarts the device's countdown: WDIOC_KEEPALIVE, or a one-byte write for a driver without
/// that ioctl (the byte is not the magic character, which would allow a close to disarm).
fn pet(file: &File, path: &Path) -> Result<(), WatchdogError> {
    let result = match linux::keepalive(file) {
        Err(Errno::EOPNOTSUPP) => (&*file).write_all(b"\0"),
        other => other.map_err(std::io::Error::from),
    };
    result.map_err(|source| WatchdogError::Pet { path: path.to_path_buf(), source })
}

/// Writes the magic character, then closes: a driver stops the timer on such a close (unless it
/// was loaded with nowayout, which nothing in user space can change).
fn magic_close(file: File, path: &Path) {
    if let Err(e) = (&file).write_all(&[MAGIC_CLOSE]) {
        tracing::warn!(
            device = %path.display(),
            error = %e,
            "cannot write the magic close character to the watchdog device: it may reset this host when its timeout runs out"
        );
    }
    drop(file);
}

/// The three ioctls of linux/watchdog.h this module uses, each on a file it has open.
#[allow(unsafe_code)]
mod linux {
    use std::fs::File;
    use std::os::unix::io::AsRawFd;

    use nix::errno::Errno;
    use nix::libc::c_int;

    nix::ioctl_read!(wdioc_keepalive, b'W', 5, c_int);
    nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, c_int);
    nix::ioctl_read!(wdioc_gettimeout, b'W', 7, c_int);

    pub fn keepalive(file: &File) -> Result<(), Errno> {
        let mut unused: c_int = 0;
        // SAFETY: the descriptor stays open for the borrow of `file`, and the argument points
        // to a live c_int, which is what WDIOC_KEEPALIVE is declared with.
        unsafe { wdioc_keepalive(file.as_raw_fd(), &mut unused) }.map(|_| ())
    }

    pub fn set_timeout(file: &File, secs: u32) -> Result<(), Errno> {
        let mut value = c_int::try_from(secs).map_err(|_| Errno::EINVAL)?;
        // SAFETY: as above; WDIOC_SETTIMEOUT reads and writes one c_int.
        unsafe { wdioc_settimeout(file.as_raw_fd(), &mut value) }.map(|_| ())
    }

    pub fn get_timeout(file: &File) -> Result<c_int, Errno> {
        let mut value: c_int = 0;
        // SAFETY: as above; WDIOC_GETTIMEOUT writes one c_int.
        unsafe { wdioc_gettimeout(file.as_raw_fd(), &mut value) }?;
        Ok(value)
    }
}
