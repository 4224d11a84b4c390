//! The Linux watchdog device (`failover.watchdog`) against what a machine without one offers.
//!
//! Limit, stated once: this machine has no /dev/watchdog and cannot load softdog, so no test here
//! arms a real watchdog, sets a driver's timeout, pets one or disarms one with the magic close.
//! What runs for real: the refusals (a missing path, a regular file, /dev/null, a FIFO), the
//! `automatic` fallback, the wait for a renew that leaves room for the timeout, the timeout
//! derivation, the config rules, and two clusters of real daemons (`required` never activates
//! without the device; `automatic` activates and says why once).

mod common;

use std::time::Duration;

use common::lab::{Lab, Store};
use failover::config::{Config, WatchdogMode};
use failover::domain::{Epoch, MonoTime};
use failover::watchdog_device::{Armed, WatchdogDevice, WatchdogError, WatchdogSettings, device_timeout};
use tokio::time::Instant;

/// Settings for `path`: a 2 s timeout for a 2.5 s validity with 1 s renewals (the defaults).
fn settings(mode: WatchdogMode, path: &std::path::Path) -> WatchdogSettings {
    WatchdogSettings {
        mode,
        path: path.to_path_buf(),
        timeout: Ok(2),
        validity: Duration::from_millis(2500),
        renew_interval: Duration::from_secs(1),
        arm_wait: Duration::from_millis(200),
    }
}

/// A lease that leaves room for the 2 s timeout.
fn roomy_lease() -> MonoTime {
    MonoTime::now().saturating_add(Duration::from_millis(2500))
}

#[test]
fn the_device_timeout_is_the_largest_whole_second_strictly_below_the_validity() {
    let ms = Duration::from_millis;
    let cases: &[(Duration, Option<u32>)] = &[
        (ms(2500), Some(2)),
        (ms(3000), Some(2)),
        (ms(3001), Some(3)),
        (ms(2999), Some(2)),
        (ms(1001), Some(1)),
        (ms(1000), None),
        (ms(999), None),
        (Duration::from_nanos(1), None),
        (Duration::ZERO, None),
        (Duration::from_secs(3600), Some(3599)),
        (Duration::from_secs(i32::MAX as u64) + ms(1), Some(i32::MAX as u32)),
        (Duration::from_secs(u64::MAX), Some(i32::MAX as u32)),
        (Duration::MAX, Some(i32::MAX as u32)),
    ];
    for (validity, want) in cases {
        assert_eq!(device_timeout(*validity), *want, "validity {validity:?}");
    }
}

#[tokio::test]
async fn required_with_no_device_refuses_naming_the_path_and_the_os_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("watchdog");
    let device = WatchdogDevice::new(settings(WatchdogMode::Required, &path));
    let err = device.arm(Epoch::new(3), roomy_lease()).await.expect_err("no device");
    assert!(matches!(err, WatchdogError::Open { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("watchdog device {}: cannot open it", path.display())), "{message}");
    assert!(message.contains("No such file or directory (os error 2)"), "{message}");
    assert!(message.contains("load the board's watchdog driver"), "{message}");
    assert!(!device.is_armed());
}

#[tokio::test]
async fn required_with_a_regular_file_refuses_it_as_not_a_watchdog_and_leaves_it_unchanged() {
    let dir = tempfile::tempdir().expect("dir");
    let path = common::write(dir.path(), "not-a-device", "contents\n");
    let device = WatchdogDevice::new(settings(WatchdogMode::Required, &path));
    let err = device.arm(Epoch::new(1), roomy_lease()).await.expect_err("a regular file");
    assert!(matches!(err, WatchdogError::NotAWatchdog { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("watchdog device {}: not a watchdog device", path.display())), "{message}");
    assert!(message.contains("Inappropriate ioctl for device"), "{message}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "contents\n", "nothing was written to it");
    assert!(!device.is_armed());
}

#[tokio::test]
async fn required_with_a_character_device_that_is_not_a_watchdog_refuses_it() {
    let path = std::path::Path::new("/dev/null");
    let device = WatchdogDevice::new(settings(WatchdogMode::Required, path));
    let err = device.arm(Epoch::new(1), roomy_lease()).await.expect_err("/dev/null");
    assert!(err.to_string().starts_with("watchdog device /dev/null: not a watchdog device"), "{err}");
    assert!(!device.is_armed());
}

#[tokio::test]
async fn a_fifo_named_as_the_device_is_refused_at_once_instead_of_waiting_for_a_reader() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let device = WatchdogDevice::new(settings(WatchdogMode::Required, &path));
    let started = Instant::now();
    let err = device.arm(Epoch::new(1), roomy_lease()).await.expect_err("a FIFO");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(err.to_string().contains("No such device or address"), "{err}");
}

#[tokio::test]
async fn automatic_with_no_device_activates_without_it_and_says_why() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("watchdog");
    let device = WatchdogDevice::new(settings(WatchdogMode::Automatic, &path));
    let armed = device.arm(Epoch::new(1), roomy_lease()).await.expect("automatic goes on");
    let Armed::Without { why } = armed else { panic!("expected to run without the device: {armed:?}") };
    assert!(why.contains(&path.display().to_string()) && why.contains("No such file or directory"), "{why}");
    assert!(!device.is_armed());
    // A clean stand-down with nothing open is a no-op.
    device.disarm();
}

#[tokio::test]
async fn automatic_whose_timings_leave_no_timeout_runs_without_and_says_which_numbers() {
    let text = short_lease();
    let config = Config::parse(&text.replace("[failover]\n", "[failover]\nwatchdog = \"automatic\"\n")).expect("valid");
    let device = WatchdogDevice::from_config(&config);
    let armed = device.arm(Epoch::new(1), roomy_lease()).await.expect("automatic goes on");
    let Armed::Without { why } = armed else { panic!("expected to run without the device: {armed:?}") };
    assert!(why.contains("lease_ttl − safety_margin = 1s200ms − 500ms = 700ms"), "{why}");
}

#[tokio::test]
async fn off_never_touches_the_device() {
    let dir = tempfile::tempdir().expect("dir");
    let path = common::write(dir.path(), "not-a-device", "contents\n");
    let device = WatchdogDevice::new(settings(WatchdogMode::Off, &path));
    assert_eq!(device.arm(Epoch::new(1), MonoTime::ZERO).await.expect("off"), Armed::Off);
    device.lease_renewed(Epoch::new(1), roomy_lease());
    device.disarm();
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "contents\n");
}

#[tokio::test]
async fn arming_is_refused_when_the_timeout_would_outlast_the_lease_and_no_renew_comes() {
    let device = WatchdogDevice::new(settings(WatchdogMode::Required, std::path::Path::new("/dev/null")));
    // 1 s of validity left cannot hold a 2 s timeout; a renew of another epoch does not help.
    let until = MonoTime::now().saturating_add(Duration::from_secs(1));
    device.lease_renewed(Epoch::new(6), MonoTime::now().saturating_add(Duration::from_secs(60)));
    let err = device.arm(Epoch::new(7), until).await.expect_err("no room");
    assert!(matches!(err, WatchdogError::OutlastsLease { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("/dev/null: not armed: its 2s timeout would run past this lease's validity (epoch 7)"),
        "{message}"
    );
    assert!(message.contains("no renew committed within 200ms"), "{message}");
}

#[tokio::test]
async fn arming_waits_for_a_renew_that_leaves_room_for_the_timeout() {
    let mut s = settings(WatchdogMode::Required, std::path::Path::new("/dev/null"));
    s.arm_wait = Duration::from_secs(30);
    let device = std::sync::Arc::new(WatchdogDevice::new(s));
    let until = MonoTime::now().saturating_add(Duration::from_secs(1));
    let arming = tokio::spawn({
        let device = std::sync::Arc::clone(&device);
        async move { device.arm(Epoch::new(4), until).await }
    });
    tokio::task::yield_now().await;
    assert!(!arming.is_finished(), "arming must wait for a renew");
    device.lease_renewed(Epoch::new(4), roomy_lease());
    let started = Instant::now();
    let err = arming.await.expect("task").expect_err("/dev/null is no watchdog");
    // Past the wait, it opened the device: the refusal is the device's, not the lease's.
    assert!(matches!(err, WatchdogError::NotAWatchdog { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "the renew ended the wait");
}

/// A valid config for producer "a" with the default lease timings.
const VALID: &str = "member = \"a\"\n[[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:1\"\n[[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:2\"\n[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n[coordinator]\nlease_ttl = \"3s\"\n[coordinator.raft]\ninsecure_plaintext_peers = true\n[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[producer]\nkind = \"sim\"\n[failover]\n";

/// [`VALID`] with a 1200 ms lease (700 ms of validity) and timings that fit it.
fn short_lease() -> String {
    common::replace_once(
        &common::replace_once(VALID, "lease_ttl = \"3s\"", "lease_ttl = \"1200ms\"\nrenew_interval = \"300ms\""),
        "insecure_plaintext_peers = true\n",
        "insecure_plaintext_peers = true\ntick = \"50ms\"\n",
    )
}

fn parse_with_failover(failover: &str) -> Result<Config, Vec<failover::config::ConfigProblem>> {
    Config::parse(&format!("{VALID}{failover}"))
}

#[test]
fn an_unknown_watchdog_value_is_refused_naming_the_field_and_the_allowed_values() {
    let problems = parse_with_failover("watchdog = \"sometimes\"\n").expect_err("unknown value");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key.as_deref(), Some("failover.watchdog"));
    let message = &problems[0].message;
    assert!(message.contains("sometimes"), "{message}");
    assert!(
        message.contains("`off`") && message.contains("`automatic`") && message.contains("`required`"),
        "{message}"
    );
}

#[test]
fn the_watchdog_is_off_by_default_on_dev_watchdog() {
    let c = parse_with_failover("").expect("valid");
    assert_eq!(c.failover.watchdog, WatchdogMode::Off);
    assert_eq!(c.failover.watchdog_device, std::path::PathBuf::from("/dev/watchdog"));
}

#[test]
fn required_with_the_default_timings_is_accepted_with_a_two_second_timeout() {
    let c = parse_with_failover("watchdog = \"required\"\nwatchdog_device = \"/dev/watchdog0\"\n").expect("valid");
    assert_eq!(failover::watchdog_device::usable_timeout(&c.coordinator), Ok(2));
}

#[test]
fn required_with_a_validity_under_a_second_is_refused_naming_the_numbers() {
    let text = short_lease();
    let problems = Config::parse(&format!("{text}watchdog = \"required\"\n")).expect_err("no whole second");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key.as_deref(), Some("failover.watchdog"));
    let message = &problems[0].message;
    assert!(message.contains("lease_ttl − safety_margin = 1s200ms − 500ms = 700ms"), "{message}");
    assert!(message.contains("set watchdog = \"automatic\" or \"off\""), "{message}");
    // The same timings under `automatic` load: the member runs without the device.
    assert!(Config::parse(&format!("{text}watchdog = \"automatic\"\n")).is_ok());
}

#[test]
fn required_whose_timeout_is_not_above_renew_interval_is_refused() {
    // Consul's defaults: check_ttl 2s − 500ms leaves a 1s timeout, no longer than the 1s renewals.
    let text = VALID
        .replace("[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n", "")
        .replace("[coordinator]\n", "[coordinator]\nbackend = \"consul\"\n")
        .replace("[coordinator.raft]\ninsecure_plaintext_peers = true\n", "");
    let problems = Config::parse(&format!("{text}watchdog = \"required\"\n")).expect_err("1s is not above 1s");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let message = &problems[0].message;
    assert!(message.contains("would be 1s"), "{message}");
    assert!(message.contains("coordinator.consul.check_ttl − safety_margin = 2s − 500ms = 1s500ms"), "{message}");
    assert!(message.contains("not longer than renew_interval (1s)"), "{message}");
}

#[test]
fn a_relative_watchdog_device_is_refused_naming_the_field() {
    let problems =
        parse_with_failover("watchdog = \"automatic\"\nwatchdog_device = \"dev/watchdog\"\n").expect_err("relative");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key.as_deref(), Some("failover.watchdog_device"));
    assert!(problems[0].message.contains("\"dev/watchdog\" is not an absolute path"), "{}", problems[0].message);
}

/// These tests start many processes: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A lab whose producers use the watchdog in `mode` with a device path that does not exist, and
/// a lease long enough for a whole-second timeout (2.5 s − 200 ms: 2 s, above the 250 ms renewals).
async fn lab_with_watchdog(mode: &str) -> (Lab, String) {
    let missing = std::env::temp_dir().join(format!("failoverd-no-watchdog-{}", std::process::id()));
    let missing = missing.display().to_string();
    let device = missing.clone();
    let mode = mode.to_string();
    let tweak = move |i: usize, text: String| {
        let text = common::replace_once(&text, "lease_ttl = \"1000ms\"", "lease_ttl = \"2500ms\"");
        if i < 2 {
            let with = format!("[failover]\nwatchdog = \"{mode}\"\nwatchdog_device = \"{device}\"\n");
            common::replace_once(&text, "[failover]\n", &with)
        } else {
            text
        }
    };
    (Lab::start_each(Store::Raft, &tweak, &[]).await, missing)
}

/// Waits until one of the producers' logs has a line with every one of `parts`; returns it.
async fn wait_for_log_line(lab: &Lab, parts: &[&str], limit: Duration) -> String {
    let end = Instant::now() + limit;
    loop {
        for i in 0..2 {
            if let Some(line) = lab.log(i).lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
        }
        assert!(Instant::now() < end, "no log line with {parts:?} within {limit:?}\n--- a ---\n{}", lab.log(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_without_the_device_refuses_to_start_naming_the_device() {
    let _serial = SERIAL.lock().await;
    let (mut lab, missing) = lab_with_watchdog("required").await;
    for i in 0..2 {
        let exit = lab.wait_exit(i, Duration::from_secs(10)).expect("the member exits at start");
        assert!(!exit.success(), "{}", lab.log(i));
        let log = lab.log(i);
        assert!(log.contains(&format!("failover.watchdog_device: cannot find {missing}")), "{log}");
        assert!(log.contains("watchdog = \"automatic\""), "the refusal says what to do instead:\n{log}");
    }
    assert!(lab.records().is_empty(), "a node signed although its member never started");
}

/// A required device that exists at start but cannot be opened when the member activates (here:
/// a directory where the device should be) stops every activation at the guard, which names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_device_that_cannot_be_opened_never_activates_and_the_guard_names_it() {
    let _serial = SERIAL.lock().await;
    let missing = std::env::temp_dir().join(format!("failoverd-no-watchdog-{}", std::process::id()));
    std::fs::create_dir_all(&missing).expect("a directory in the device's place");
    let (lab, missing) = lab_with_watchdog("required").await;
    let refusal = format!("watchdog device {missing}: cannot open it: Is a directory (os error 21)");
    let line =
        wait_for_log_line(&lab, &["promotion guard step", "step=activate", &refusal], Duration::from_secs(20)).await;
    assert!(line.contains("ok=false"), "{line}");
    assert!(lab.records().is_empty(), "a node signed although its member refused to activate");
    for i in 0..2 {
        assert!(!lab.signing(i).await, "node {i} signs");
    }
    let _ = std::fs::remove_dir(&missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_without_the_device_activates_and_says_why_once_at_info() {
    let _serial = SERIAL.lock().await;
    let (lab, missing) = lab_with_watchdog("automatic").await;
    let active = lab.wait_active(Duration::from_secs(20)).await;
    lab.wait_signed_above(active, 0, Duration::from_secs(5)).await;
    let log = lab.log(active);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("activating without the watchdog device")).collect();
    assert_eq!(lines.len(), 1, "said once:\n{}", lines.join("\n"));
    assert!(lines[0].contains(" INFO "), "at INFO: {}", lines[0]);
    assert!(lines[0].contains(&format!("watchdog device {missing}: cannot open it")), "{}", lines[0]);
}
