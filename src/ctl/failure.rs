//! How a failed command ends: the message on stderr and the exit code, and what a failed call
//! to the daemon means. A call's failure is classified by its gRPC status code and by who made
//! the status — the daemon, which answered, or this client's transport, which could not reach
//! it — and never by the words of its message.

use tonic::{Code, Status};

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
/// `--wait`: the handover was started but had not finished when the wait ended (it may still).
pub const EXIT_UNFINISHED: u8 = 4;

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(super) fn usage(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_USAGE, message: message.into() }
    }

    pub(super) fn refused(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_REFUSED, message: message.into() }
    }
}

/// Who made a failed call's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The daemon answered with it: it is reachable and said no (or its store did not answer).
    Daemon,
    /// This client's transport made it from a local error — a refused connection, a reset, a
    /// timeout, a failed handshake — which tonic keeps as the status's source. The daemon's
    /// own answers arrive as a code and a message, without one.
    Transport,
}

fn origin(s: &Status) -> Origin {
    match std::error::Error::source(s) {
        Some(_) => Origin::Transport,
        None => Origin::Daemon,
    }
}

/// A failed call to the daemon at `target` as failoverctl reports it.
pub(super) fn from_status(target: &str, s: Status) -> Failure {
    let mut message = s.message().to_string();
    // "transport error" alone hides why (a refused certificate, say): add the causes.
    if let Some(cause) = std::error::Error::source(&s) {
        message = format!("{message}: {}", causes_once(cause));
    }
    match (s.code(), origin(&s)) {
        (Code::FailedPrecondition | Code::AlreadyExists | Code::PermissionDenied | Code::Unimplemented, _) => {
            Failure::refused(format!("refused: {message}"))
        }
        (Code::InvalidArgument, _) => Failure::usage(message),
        // The daemon answered that its store did not (the control API sends Unavailable for
        // nothing else): the request was not carried out, and the daemon is there.
        (Code::Unavailable, Origin::Daemon) => Failure::refused(format!("not done: {message}")),
        (Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded, _) => Failure {
            code: EXIT_UNREACHABLE,
            message: format!(
                "the daemon at {target} did not answer: {message}; is failoverd running and does it accept this client?"
            ),
        },
        _ => Failure::refused(format!("not done: {message}")),
    }
}

/// `e` and its causes, joined by ": ", each text once: transport errors wrap an I/O error in a
/// layer that repeats its text ("No such file or directory (os error 2): No such file or
/// directory (os error 2)"), which reads as two failures.
pub(super) fn causes_once(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as tonic's client makes one when it cannot reach the server.
    fn transport(code_of: std::io::ErrorKind) -> Status {
        let io = std::io::Error::from(code_of);
        Status::from_error(Box::new(tonic::ConnectError(Box::new(io))))
    }

    // One line per (status, who made it): the exit code and how the message starts. Messages
    // that mention (or do not mention) the store change nothing: only code and origin count.
    #[test]
    fn a_failure_is_classified_by_its_code_and_origin_not_its_words() {
        let cases: Vec<(Status, u8, &str)> = vec![
            (Status::failed_precondition("b is not caught up"), EXIT_REFUSED, "refused: b is not caught up"),
            (Status::permission_denied("only operators"), EXIT_REFUSED, "refused: "),
            (Status::already_exists("x"), EXIT_REFUSED, "refused: "),
            (Status::unimplemented("x"), EXIT_REFUSED, "refused: "),
            (Status::invalid_argument("target: empty"), EXIT_USAGE, "target: empty"),
            (Status::unavailable("the store is unavailable: no quorum"), EXIT_REFUSED, "not done: the store"),
            (Status::unavailable("no quorum"), EXIT_REFUSED, "not done: no quorum"),
            (Status::data_loss("lagged"), EXIT_REFUSED, "not done: lagged"),
            (transport(std::io::ErrorKind::ConnectionRefused), EXIT_UNREACHABLE, "the daemon at here did not answer"),
            (
                Status::from_error(Box::new(tonic::TimeoutExpired(()))),
                EXIT_UNREACHABLE,
                "the daemon at here did not answer",
            ),
            (Status::deadline_exceeded("slow"), EXIT_UNREACHABLE, "the daemon at here did not answer"),
            (Status::cancelled("gone"), EXIT_UNREACHABLE, "the daemon at here did not answer"),
        ];
        for (status, code, start) in cases {
            let said = status.to_string();
            let failure = from_status("here", status);
            assert_eq!(failure.code, code, "{said}: {}", failure.message);
            assert!(failure.message.starts_with(start), "{said}: {}", failure.message);
        }
    }
}
