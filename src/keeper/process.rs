//! The keeper process (`failoverd keeper --spec JSON`): started by a producer in its own session,
//! it starts or holds the node, then waits on two things only — its stdin (the daemon's control
//! pipe) and a `CLOCK_BOOTTIME` timerfd armed at the deadline — and stops the node when either
//! says so. Single-threaded, no async runtime; the loop reads into a fixed buffer and allocates
//! nothing, so a daemon that exhausted memory or froze cannot keep it from acting.
//!
//! It is a child subreaper: a forking start script's children, orphaned, become its children, so
//! it reaps them and a node group is confirmed empty by the kernel, not guessed. A child's end
//! wakes it through a signalfd (SIGCHLD, blocked in the keeper; std clears the mask of every
//! child it starts), so an idle keeper sleeps until something happens instead of polling.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::group::{self, GroupRecord};
use super::message::{Control, MAX_CONTROL_LINE, Report};
use super::{KeeperSpec, Target};
use crate::domain::MonoTime;

struct KeeperState {
    spec: KeeperSpec,
    timer: TimerFd,
    /// Readable when a child ended (SIGCHLD); `None` when SIGCHLD could not be blocked, and the
    /// loop then wakes every [`FALLBACK_WAKE_MS`] to reap.
    children: Option<SignalFd>,
    until: MonoTime,
    /// The node's process group (and its leader's pid) for a `Group` target.
    pgid: Option<i32>,
    /// How the leader ended, once reaped.
    leader_exit: Option<String>,
}

fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "failoverd keeper: {message}");
}

fn report(r: &Report) {
    let mut out = std::io::stdout().lock();
    // The daemon may be gone: a report nobody reads changes nothing the keeper must do.
    let _ = writeln!(out, "{r}").and_then(|_| out.flush());
}

/// How often the loop wakes to reap children when no signalfd tells it that one ended.
const FALLBACK_WAKE_MS: u16 = 50;

/// A signalfd for SIGCHLD, which it blocks first: a child that ends from then on leaves the
/// signal pending and the fd readable, so one that ends before the first wait is not missed.
fn child_signals() -> Option<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let made =
        mask.thread_block().and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC));
    match made {
        Ok(fd) => Some(fd),
        Err(e) => {
            say(format_args!("cannot watch SIGCHLD ({e}); reaping every {FALLBACK_WAKE_MS} ms instead"));
            None
        }
    }
}

/// Runs the keeper; returns the process exit status.
pub fn run(spec: KeeperSpec) -> u8 {
    let timer = match TimerFd::new(ClockId::CLOCK_BOOTTIME, TimerFlags::TFD_CLOEXEC) {
        Ok(t) => t,
        Err(e) => {
            say(format_args!("cannot create a CLOCK_BOOTTIME timer: {e}; refusing to hold a node"));
            return 1;
        }
    };
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Started from /proc/self/exe or /proc/self/fd/N, the kernel would name it "exe" or a digit in
    // `ps` and `top`; this is the name (cut to 15 bytes, as the kernel keeps it) they show instead.
    let _ = nix::sys::prctl::set_name(c"failoverd-keepe");
    let children = child_signals();
    let mut k = KeeperState {
        until: MonoTime::from_nanos(spec.until_ns),
        spec,
        timer,
        children,
        pgid: None,
        leader_exit: None,
    };
    if let Err(e) = k.arm(k.until) {
        say(format_args!("cannot arm the deadline timer: {e}; refusing to hold a node"));
        return 1;
    }
    if let Target::Group { argv } = &k.spec.target {
        match start_node(argv) {
            Ok(pgid) => {
                k.pgid = Some(pgid);
                if let Some(path) = &k.spec.record
                    && let Err(e) = GroupRecord::of(pgid).write(path)
                {
                    say(format_args!("cannot record the node group in {}: {e}", path.display()));
                }
                report(&Report::Started { pgid });
            }
            Err(e) => {
                say(format_args!("cannot start the node: {e}"));
                return 1;
            }
        }
    } else {
        report(&Report::Holding);
    }
    k.watch()
}

/// Starts the node as the leader of a new process group, dying with this keeper.
fn start_node(argv: &[String]) -> Result<i32, String> {
    let (program, args) = argv.split_first().ok_or("producer.command is empty")?;
    // The node's output goes where the keeper's log goes; stdout is the report pipe.
    let log = std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::from(log)).process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
    i32::try_from(child.id()).map_err(|_| "the node's pid does not fit".to_string())
}

impl KeeperState {
    fn arm(&self, until: MonoTime) -> nix::Result<()> {
        let ns = until.as_nanos().max(1);
        let at = TimeSpec::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64);
        self.timer.set(Expiration::OneShot(at), TimerSetTimeFlags::TFD_TIMER_ABSTIME)
    }

    fn watch(&mut self) -> u8 {
        let mut line = [0u8; MAX_CONTROL_LINE];
        let mut len = 0;
        loop {
            self.reap();
            if let Some(how) = self.leader_exit.take() {
                return self.fence(&format!("the node exited by itself ({how})"));
            }
            let stdin = std::io::stdin();
            let (input, deadline) = {
                // Without a signalfd the third slot repeats the timer and is left out of the wait.
                let children = self.children.as_ref().map(|c| c.as_fd());
                let mut fds = [
                    PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.timer.as_fd(), PollFlags::POLLIN),
                    PollFd::new(children.unwrap_or(self.timer.as_fd()), PollFlags::POLLIN),
                ];
                let (watched, wake) = match children {
                    Some(_) => (3, PollTimeout::NONE),
                    None => (2, PollTimeout::from(FALLBACK_WAKE_MS)),
                };
                match poll(&mut fds[..watched], wake) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return self.fence(&format!("cannot wait for the daemon: {e}")),
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if deadline || MonoTime::now() >= self.until {
                return self.fence(
                    "the lease deadline passed without an extension from the daemon (frozen, starved or cut off)",
                );
            }
            if !input {
                continue;
            }
            // The raw fd, not std's buffered stdin: bytes kept in a buffer would not wake poll.
            let n = match nix::unistd::read(stdin.as_fd(), &mut line[len..]) {
                Ok(0) => {
                    return self.fence("the daemon's end of the control pipe closed (the daemon exited or was killed)");
                }
                Ok(n) => n,
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(e) => return self.fence(&format!("cannot read the daemon's control pipe: {e}")),
            };
            len += n;
            while let Some(end) = line[..len].iter().position(|b| *b == b'\n') {
                let control = Control::parse(&line[..end]);
                line.copy_within(end + 1..len, 0);
                len -= end + 1;
                match control {
                    Ok(c) => {
                        if let Some(status) = self.obey(c) {
                            return status;
                        }
                    }
                    Err(e) => return self.fence(&format!("refused a control line from the daemon: {e}")),
                }
            }
            if len == line.len() {
                return self.fence("refused a control line from the daemon: longer than 64 bytes");
            }
        }
    }

    /// Carries out one control message; `Some(status)` when the keeper is done.
    fn obey(&mut self, c: Control) -> Option<u8> {
        match c {
            Control::Extend { until } => {
                if until > self.until {
                    self.until = until;
                    if let Err(e) = self.arm(until) {
                        return Some(self.fence(&format!("cannot move the deadline timer: {e}")));
                    }
                }
                None
            }
            Control::Fence => Some(self.fence("asked by the daemon")),
            Control::Stop { grace } => Some(self.stop(grace)),
            Control::Release => {
                if self.pgid.is_some() {
                    // A node group is never left behind unheld.
                    return Some(self.stop(Duration::ZERO));
                }
                report(&Report::Released);
                Some(0)
            }
        }
    }

    /// Reaps every child that ended (the node, or orphans handed to this subreaper).
    fn reap(&mut self) {
        // Drained first: a child that ends after this leaves the fd readable for the next wait.
        if let Some(children) = &self.children {
            while let Ok(Some(_)) = children.read_signal() {}
        }
        if self.pgid.is_none() {
            return;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(WaitStatus::Exited(pid, code)) if Some(pid.as_raw()) == self.pgid => {
                    self.leader_exit = Some(format!("exit status {code}"));
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) if Some(pid.as_raw()) == self.pgid => {
                    self.leader_exit = Some(format!("killed by {}", signal.as_str()));
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// The spec's fence timeout, bounded so that no deadline computed from it can overflow
    /// (a spec is input from the command line).
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.spec.fence_timeout_ms.clamp(1, 3_600_000))
    }

    /// Kills the node and removes the key, retrying until both are confirmed; then exits.
    fn fence(&mut self, reason: &str) -> u8 {
        say(format_args!("fencing the node: {reason}"));
        loop {
            let removed = self.remove_key();
            let killed = self.kill();
            match (killed, removed) {
                (Ok(what), Ok(key)) => {
                    self.forget_record();
                    report(&Report::Fenced { reason: format!("{reason}; {what}{key}") });
                    return 0;
                }
                (Err(e), _) | (_, Err(e)) => {
                    say(format_args!("the fence is not confirmed yet, trying again: {e}"));
                    report(&Report::FenceFailed { detail: e });
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn kill(&mut self) -> Result<String, String> {
        let timeout = self.timeout();
        if let Target::Group { .. } = self.spec.target {
            let Some(pgid) = self.pgid else { return Ok("no node was started".into()) };
            let left = group::kill_until_empty(pgid, timeout, || self.reap_quietly());
            return if left == 0 {
                Ok(format!("killed the node's process group {pgid}"))
            } else {
                Err(format!("process group {pgid} still has {left} live processes after SIGKILL"))
            };
        }
        match &self.spec.target {
            Target::Group { .. } => Ok(String::new()),
            Target::Unit { systemctl, unit } => {
                let argv: Vec<String> =
                    systemctl.iter().cloned().chain(["kill".into(), "--signal=SIGKILL".into(), unit.clone()]).collect();
                crate::operator_command::run_blocking(&argv, &[], timeout)
                    .map(|_| format!("killed unit {unit}"))
                    .map_err(|e| format!("systemctl kill {unit}: {e}"))
            }
            Target::FenceCommand { argv } => crate::operator_command::run_blocking(argv, &[], timeout)
                .map(|_| "ran producer.fence_command".to_string())
                .map_err(|e| format!("producer.fence_command: {e}")),
        }
    }

    fn reap_quietly(&mut self) {
        self.reap();
        self.leader_exit = None;
    }

    fn remove_key(&self) -> Result<String, String> {
        let Some(path) = &self.spec.key_file else { return Ok(String::new()) };
        match std::fs::remove_file(path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                Ok(format!("; removed {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    fn forget_record(&self) {
        if let Some(path) = &self.spec.record {
            let _ = std::fs::remove_file(path);
        }
    }

    /// A graceful stop of the node group: SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) -> u8 {
        let Some(pgid) = self.pgid else { return self.fence("asked to stop a node it does not run") };
        let _ = group::signal_group(pgid, Signal::SIGTERM);
        let end = std::time::Instant::now() + grace;
        while std::time::Instant::now() < end {
            self.reap_quietly();
            if group::live_members(pgid).is_ok_and(|n| n == 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let timeout = self.timeout();
        if group::kill_until_empty(pgid, timeout, || self.reap_quietly()) > 0 {
            return self.fence("the node did not stop after SIGTERM and SIGKILL");
        }
        self.forget_record();
        report(&Report::Stopped);
        0
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    /// A real keeper holding `sleep 600` with a minute's deadline, once it reported the node
    /// started: the keeper, its reports, and the node's process group.
    fn keeper_holding_sleep() -> (std::process::Child, std::io::Lines<BufReader<std::process::ChildStdout>>, i32) {
        let spec = KeeperSpec {
            target: Target::Group { argv: vec!["sleep".into(), "600".into()] },
            key_file: None,
            until_ns: MonoTime::now().saturating_add(Duration::from_secs(60)).as_nanos(),
            fence_timeout_ms: 2000,
            record: None,
        };
        let mut keeper = Command::new(crate::keeper::test_launcher().program.exec())
            .args(["keeper", "--spec", &serde_json::to_string(&spec).expect("json")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("keeper starts");
        let mut reports = BufReader::new(keeper.stdout.take().expect("stdout")).lines();
        let started = reports.next().expect("a report").expect("text");
        let pgid = match Report::parse(&started) {
            Some(Report::Started { pgid }) => pgid,
            other => panic!("expected started, got {other:?}"),
        };
        (keeper, reports, pgid)
    }

    /// A real keeper holding `sleep 600`, fed `line` on its control pipe: a hostile or garbled
    /// line makes it fence (kill the group) and say why, never panic or carry on.
    fn keeper_answer_to(line: &[u8]) -> (String, i32) {
        let (mut keeper, mut reports, pgid) = keeper_holding_sleep();
        let mut control = keeper.stdin.take().expect("stdin");
        control.write_all(line).expect("write");
        let last = reports.next().expect("a final report").expect("text");
        let _ = keeper.wait();
        drop(control);
        (last, pgid)
    }

    fn voluntary_switches(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).expect("a switch count");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
    }

    /// Nothing happens for a second: the keeper sleeps through it (it used to wake every 50 ms
    /// to reap), and when its node then exits it still notices at once and fences.
    #[test]
    fn an_idle_keeper_sleeps_until_its_node_exits() {
        let (mut keeper, mut reports, pgid) = keeper_holding_sleep();
        let before = voluntary_switches(keeper.id());
        // Measuring idleness: there is no event to await, the quiet itself is the subject.
        std::thread::sleep(Duration::from_secs(1));
        let woke = voluntary_switches(keeper.id()) - before;
        assert!(woke <= 2, "an idle keeper woke {woke} times in a second");
        // Killed from outside the keeper, as an operator's `kill` or the OOM killer would.
        let at = std::time::Instant::now();
        nix::sys::signal::kill(Pid::from_raw(pgid), Signal::SIGTERM).expect("signal the node");
        let last = reports.next().expect("a final report").expect("text");
        assert!(last.starts_with("fenced the node exited by itself (killed by SIGTERM)"), "{last}");
        assert!(at.elapsed() < Duration::from_secs(1), "noticed after {:?}", at.elapsed());
        let _ = keeper.wait();
    }

    #[test]
    fn hostile_control_lines_make_the_keeper_fence_and_say_why() {
        for (line, why) in [
            (&b"stop 18446744073709551615\n"[..], "longer than an hour"),
            (b"extend soon\n", "not a decimal integer"),
            (b"reboot\n", "unknown message"),
            (&[b'x'; 80][..], "longer than 64 bytes"),
        ] {
            let (report, pgid) = keeper_answer_to(line);
            assert!(report.starts_with("fenced refused a control line"), "{report}");
            assert!(report.contains(why), "{report}");
            assert_eq!(group::live_members(pgid).expect("/proc"), 0, "the node's group is dead");
        }
    }
}
