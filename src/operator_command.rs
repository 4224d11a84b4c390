//! Commands the operator configures (a probe script, activate/deactivate/fence commands, a
//! STONITH command): run with a deadline, in their own process group so that a `sh -c` and
//! everything it started is killed on timeout, with stdout and stderr captured up to a cap.
//!
//! Owns process-running for configuration-supplied argv, nothing else: it never interprets the
//! output. The blocking form exists for the self-fence thread, where the runtime may be stalled.
//! Output is captured, not logged here; callers quote stderr's tail in their errors (a command's
//! output is the operator's, never key material of ours).

use std::io::Read;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Most bytes kept of each of stdout and stderr.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// How many bytes of stderr an error quotes.
const STDERR_TAIL: usize = 300;

/// What a finished command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the command is empty")]
    Empty,
    #[error("cannot start {program}: {detail}")]
    Spawn { program: String, detail: String },
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout { program: String, timeout: Duration },
    #[error("{program} exited with {status}{}", stderr_suffix(.stderr))]
    Failed { program: String, status: String, stderr: String },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
}

/// The last bytes of stderr, on one line.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(STDERR_TAIL)..]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check(program: &str, status: ExitStatus, out: CommandOutput) -> Result<CommandOutput, CommandError> {
    if status.success() {
        Ok(out)
    } else {
        Err(CommandError::Failed {
            program: program.to_string(),
            status: status.to_string(),
            stderr: tail(&out.stderr),
        })
    }
}

/// Runs `argv` with `env` added to the environment, until `deadline`.
pub async fn run(argv: &[String], env: &[(&str, String)], deadline: Instant) -> Result<CommandOutput, CommandError> {
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let mut child = cmd.spawn().map_err(|e| CommandError::Spawn { program: program.clone(), detail: e.to_string() })?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let work = async {
        let (out, err, status) = tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
        (CommandOutput { stdout: out, stderr: err }, status)
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok((out, Ok(status))) => check(program, status, out),
        Ok((_, Err(e))) => Err(CommandError::Spawn { program: program.clone(), detail: e.to_string() }),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            Err(CommandError::Timeout { program: program.clone(), timeout })
        }
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_OUTPUT_BYTES`]: the rest is drained, not
/// left in the pipe, or a chatty command would block on a full pipe and never exit.
async fn read_capped(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else { return kept };
    let mut chunk = [0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        keep(&mut kept, &chunk[..n]);
    }
    kept
}

fn keep(kept: &mut Vec<u8>, chunk: &[u8]) {
    let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

/// [`run`] without the async runtime, for the self-fence thread.
pub fn run_blocking(argv: &[String], env: &[(&str, String)], timeout: Duration) -> Result<CommandOutput, CommandError> {
    use std::os::unix::process::CommandExt;
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| CommandError::Spawn { program: program.clone(), detail: e.to_string() })?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = pipe {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    keep(&mut kept, &chunk[..n]);
                }
            }
            kept
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let end = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                if let Ok(pgid) = i32::try_from(child.id()) {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                }
                let _ = child.wait();
                return Err(CommandError::Timeout { program: program.clone(), timeout });
            }
        }
    };
    let output = CommandOutput { stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() };
    check(program, status, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn captures_output_and_passes_the_environment() {
        let out = run(&sh("echo \"h=$FAILOVERD_X\"; echo oops >&2"), &[("FAILOVERD_X", "7".into())], soon())
            .await
            .expect("runs");
        assert_eq!(out.stdout, b"h=7\n");
        assert_eq!(out.stderr, b"oops\n");
    }

    #[tokio::test]
    async fn a_failure_quotes_stderr() {
        let err = run(&sh("echo 'node not found' >&2; exit 3"), &[], soon()).await.expect_err("fails");
        assert!(err.to_string().contains("exit status: 3: node not found"), "{err}");
        let err = run(&["/nonexistent/cmd".to_string()], &[], soon()).await.expect_err("no program");
        assert!(matches!(err, CommandError::Spawn { .. }), "{err}");
        assert_eq!(run(&[], &[], soon()).await, Err(CommandError::Empty));
    }

    #[tokio::test]
    async fn a_command_past_its_deadline_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let err = run(&sh(&script), &[], Instant::now() + Duration::from_millis(300)).await.expect_err("killed");
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
        let grandchild: i32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("number");
        // The group was killed: the background sleep is gone (or a zombie about to be reaped by init).
        let gone = (0..200).any(|_| {
            let dead = nix::sys::signal::kill(Pid::from_raw(grandchild), None).is_err()
                || std::fs::read_to_string(format!("/proc/{grandchild}/stat")).is_ok_and(|s| s.contains(") Z"));
            if !dead {
                std::thread::sleep(Duration::from_millis(10));
            }
            dead
        });
        assert!(gone, "the grandchild {grandchild} survived");
    }

    #[test]
    fn the_blocking_form_behaves_the_same() {
        let out = run_blocking(&sh("echo fenced"), &[], Duration::from_secs(5)).expect("runs");
        assert_eq!(out.stdout, b"fenced\n");
        let err = run_blocking(&sh("exit 1"), &[], Duration::from_secs(5)).expect_err("fails");
        assert!(matches!(err, CommandError::Failed { .. }));
        let started = std::time::Instant::now();
        let err = run_blocking(&sh("sleep 600"), &[], Duration::from_millis(200)).expect_err("killed");
        assert!(matches!(err, CommandError::Timeout { .. }));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_cut_not_buffered() {
        let out = run(&sh("head -c 200000 /dev/zero"), &[], soon()).await.expect("runs");
        assert_eq!(out.stdout.len(), MAX_OUTPUT_BYTES);
    }
}
