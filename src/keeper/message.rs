//! The keeper's two pipes, one ASCII line per message.
//!
//! Daemon → keeper (its stdin): `extend <until_ns>`, `stop <grace_ms>`, `fence`, `release`.
//! Keeper → daemon (its stdout): `started <pgid>`, `holding`, `stopped`, `released`,
//! `fenced <reason>`, `fence-failed <detail>`. Control lines are parsed without allocating (the
//! keeper's loop runs them); anything that does not parse is refused, and the keeper treats a
//! refused control line as a reason to fence: when in doubt, do not sign.

use std::fmt;
use std::time::Duration;

use crate::domain::MonoTime;

/// The longest control line the keeper accepts, newline included.
pub const MAX_CONTROL_LINE: usize = 64;

/// The longest graceful stop the keeper accepts: far above any `fence_timeout` the config allows,
/// and small enough that no deadline computed from it can overflow.
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(3600);

/// A message from the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// The right to sign now ends at `until` (a committed renew); never moves it earlier.
    Extend { until: MonoTime },
    /// Stop the node gracefully: SIGTERM to its group, SIGKILL after `grace`.
    Stop { grace: Duration },
    /// Stop the node now, by force, and remove the key.
    Fence,
    /// The daemon stopped the node itself: exit without acting.
    Release,
}

/// Why a control line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadControl {
    #[error("not ASCII text")]
    NotText,
    #[error("unknown message")]
    Unknown,
    #[error("the number is missing or not a decimal integer")]
    BadNumber,
    #[error("the stop grace is longer than an hour")]
    GraceTooLong,
}

impl Control {
    /// Writes the line (with its newline) into `buf` and returns the written part.
    pub fn encode<'a>(&self, buf: &'a mut [u8; MAX_CONTROL_LINE]) -> &'a [u8] {
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        // 20 digits and a word always fit in 64 bytes.
        let _ = match self {
            Control::Extend { until } => writeln!(cursor, "extend {}", until.as_nanos()),
            Control::Stop { grace } => writeln!(cursor, "stop {}", grace.as_millis()),
            Control::Fence => writeln!(cursor, "fence"),
            Control::Release => writeln!(cursor, "release"),
        };
        let n = usize::try_from(cursor.position()).unwrap_or(0);
        &buf[..n]
    }

    /// Parses one line without its newline.
    pub fn parse(line: &[u8]) -> Result<Control, BadControl> {
        let text = std::str::from_utf8(line).map_err(|_| BadControl::NotText)?;
        let (word, arg) = text.split_once(' ').unwrap_or((text, ""));
        let number = || arg.parse::<u64>().map_err(|_| BadControl::BadNumber);
        match (word, arg.is_empty()) {
            ("extend", _) => Ok(Control::Extend { until: MonoTime::from_nanos(number()?) }),
            ("stop", _) => match Duration::from_millis(number()?) {
                grace if grace > MAX_STOP_GRACE => Err(BadControl::GraceTooLong),
                grace => Ok(Control::Stop { grace }),
            },
            ("fence", true) => Ok(Control::Fence),
            ("release", true) => Ok(Control::Release),
            _ => Err(BadControl::Unknown),
        }
    }
}

/// A message from the keeper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The node runs as process group `pgid`.
    Started { pgid: i32 },
    /// The keeper holds a unit or a fence command (nothing to start).
    Holding,
    /// The node stopped after a `stop`; the keeper exits.
    Stopped,
    /// Released on request; the keeper exits.
    Released,
    /// The node was killed (and the key removed) for `reason`; the keeper exits.
    Fenced { reason: String },
    /// A fence did not confirm in time; the keeper keeps trying.
    FenceFailed { detail: String },
}

impl Report {
    /// Parses one line without its newline; `None` for anything else (logged by the caller).
    pub fn parse(line: &str) -> Option<Report> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "started" => rest.parse().ok().filter(|p: &i32| *p > 1).map(|pgid| Report::Started { pgid }),
            "holding" => Some(Report::Holding),
            "stopped" => Some(Report::Stopped),
            "released" => Some(Report::Released),
            "fenced" => Some(Report::Fenced { reason: rest.to_string() }),
            "fence-failed" => Some(Report::FenceFailed { detail: rest.to_string() }),
            _ => None,
        }
    }

    /// Whether the keeper exits after this report.
    pub fn is_final(&self) -> bool {
        matches!(self, Report::Stopped | Report::Released | Report::Fenced { .. })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line each: reasons never carry a newline.
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Report::Started { pgid } => write!(f, "started {pgid}"),
            Report::Holding => f.write_str("holding"),
            Report::Stopped => f.write_str("stopped"),
            Report::Released => f.write_str("released"),
            Report::Fenced { reason } => write!(f, "fenced {}", one_line(reason)),
            Report::FenceFailed { detail } => write!(f, "fence-failed {}", one_line(detail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_message_survives_its_own_encoding() {
        for c in [
            Control::Extend { until: MonoTime::from_nanos(u64::MAX) },
            Control::Extend { until: MonoTime::ZERO },
            Control::Stop { grace: Duration::from_millis(1500) },
            Control::Fence,
            Control::Release,
        ] {
            let mut buf = [0; MAX_CONTROL_LINE];
            let line = c.encode(&mut buf);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(Control::parse(&line[..line.len() - 1]), Ok(c));
        }
    }

    #[test]
    fn hostile_control_lines_are_refused_naming_what_is_wrong() {
        assert_eq!(Control::parse(b"extend"), Err(BadControl::BadNumber));
        assert_eq!(Control::parse(b"extend -1"), Err(BadControl::BadNumber));
        assert_eq!(Control::parse(b"extend 99999999999999999999999"), Err(BadControl::BadNumber));
        assert_eq!(Control::parse(b"extend 1 2"), Err(BadControl::BadNumber));
        assert_eq!(Control::parse(b"fence now"), Err(BadControl::Unknown));
        assert_eq!(Control::parse(b"stop 18446744073709551615"), Err(BadControl::GraceTooLong));
        assert_eq!(Control::parse(b"stop 3600001"), Err(BadControl::GraceTooLong));
        assert_eq!(Control::parse(b"stop 3600000"), Ok(Control::Stop { grace: MAX_STOP_GRACE }));
        assert_eq!(Control::parse(b"EXTEND 5"), Err(BadControl::Unknown));
        assert_eq!(Control::parse(b""), Err(BadControl::Unknown));
        assert_eq!(Control::parse(&[0xff, 0xfe]), Err(BadControl::NotText));
    }

    #[test]
    fn reports_round_trip_and_reasons_stay_on_one_line() {
        for r in [
            Report::Started { pgid: 4242 },
            Report::Holding,
            Report::Stopped,
            Report::Released,
            Report::Fenced { reason: "deadline passed".into() },
            Report::FenceFailed { detail: "group 7 still has 1 live process".into() },
        ] {
            assert_eq!(Report::parse(&r.to_string()), Some(r));
        }
        let r = Report::Fenced { reason: "a\nstarted 5".into() };
        assert_eq!(Report::parse(&r.to_string()), Some(Report::Fenced { reason: "a started 5".into() }));
        assert_eq!(Report::parse("started 1"), None, "pgid 1 is init, never a node");
        assert_eq!(Report::parse("started -5"), None);
        assert_eq!(Report::parse("hello"), None);
    }
}
