//! `failoverctl`: the operator's client for a running member's control API. It parses the
//! command line, makes one call (or a few), and prints what happened or why it was refused —
//! a table for people, JSON with `--json`.
//!
//! Exit codes: 0 done, 1 refused (a guard, the store, or the daemon said no) or a handover
//! waited for with `--wait` that failed or did not finish in time, 2 usage or config error, 3
//! the daemon could not be reached. It never decides anything itself: every check is
//! the daemon's, so a refusal reads the same from every client.
//!
//! Layout: `args` (the command line), `connect` (where the member is), one function per
//! subcommand in `views` (status, members, events), `intents` (promote, demote, pause,
//! resume, with `handover` for `--wait`) and `watermark` (export, import), `output` (all
//! printing) and `failure` (exit codes, and what a failed call means). This file only checks
//! the options every command shares and dispatches.

use std::process::ExitCode;
use std::time::Duration;

/// Output for people and scripts on stdout. Shadows `std::println!` in this module tree so
/// that every line failoverctl prints — the status table included — goes through
/// `output::say`, which ends the process quietly when the reader has gone
/// (`failoverctl members | head -1`) instead of panicking as `std::println!` does.
macro_rules! println {
    () => {
        $crate::ctl::output::say(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::ctl::output::say(format_args!($($arg)*))
    };
}

mod args;
mod connect;
mod failure;
mod handover;
mod intents;
mod output;
mod views;
mod watermark;

pub use args::Args;
use args::{Command, WatermarkCommand};
use connect::{Daemon, target_of};
pub use failure::{EXIT_REFUSED, EXIT_UNFINISHED, EXIT_UNREACHABLE, EXIT_USAGE, Failure};

/// Runs failoverctl with `args`; prints results and errors itself.
pub fn run(args: Args) -> ExitCode {
    match run_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("failoverctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Checks the options, reads an import file, connects, and runs the command. Everything that
/// can be refused without the daemon is refused before connecting.
fn run_inner(args: &Args) -> Result<(), Failure> {
    if let Command::Completions { shell } = &args.command {
        return completions(*shell);
    }
    let timeout = duration_option("--timeout", &args.timeout)?.max(Duration::from_millis(100));
    let wait = match &args.command {
        Command::Promote { wait, .. } | Command::Demote { wait } if wait.wait => {
            Some(duration_option("--wait-timeout", &wait.wait_timeout)?)
        }
        _ => None,
    };
    let target = target_of(&args.connection)?;
    let validator = match &args.validator {
        None => None,
        Some(v) => {
            Some(crate::domain::ValidatorId::new(v.clone()).map_err(|e| Failure::usage(format!("--validator: {e}")))?)
        }
    };
    // Read an import file before connecting: bad input is reported as such, whatever the daemon.
    let import = match &args.command {
        Command::Watermark(WatermarkCommand::Import { file, .. }) => watermark::read_import(file)?,
        _ => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::refused(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        let mut daemon = target.connect(timeout).await?;
        if let Some(v) = validator {
            // A member of an earlier version ignores the header and would act on its only
            // validator, whatever was named: it must be served, or nothing is sent.
            let served = daemon.validators().await?;
            if !served.contains(&v) {
                let names: Vec<String> = served.iter().map(ToString::to_string).collect();
                return Err(Failure::refused(format!(
                    "refused: {} serves no validator {v}; it serves: {}",
                    daemon.at,
                    names.join(", ")
                )));
            }
            daemon.validator = Some(v);
        }
        dispatch(args, &mut daemon, wait, import).await
    })
}

/// One subcommand against the connected member.
async fn dispatch(
    args: &Args,
    d: &mut Daemon,
    wait: Option<Duration>,
    import: Vec<(crate::domain::KeyId, crate::domain::Hrs)>,
) -> Result<(), Failure> {
    let json = args.json;
    match &args.command {
        Command::Status { watch } => views::status(d, *watch, json).await,
        Command::Members => views::members(d, json).await,
        Command::Events { follow } => views::events(d, *follow, json).await,
        Command::Promote { member, force, .. } => intents::promote(d, member, *force, wait, json).await,
        Command::Demote { .. } => intents::demote(d, wait, json).await,
        Command::Pause => intents::pause(d, true, json).await,
        Command::Resume => intents::pause(d, false, json).await,
        Command::Watermark(WatermarkCommand::Export) => watermark::export(d).await,
        Command::Watermark(WatermarkCommand::Import { dry_run, force, .. }) => {
            watermark::import(d, import, *dry_run, *force, json).await
        }
        // Handled before connecting: it needs no daemon.
        Command::Completions { .. } => Ok(()),
    }
}

/// `completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use clap::CommandFactory;
    // Into memory first: clap_complete panics when it cannot write (`| head -1`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "failoverctl", &mut script);
    output::write_out(&script)
}

/// `text` of option `flag` as a duration, or a usage failure naming the option.
fn duration_option(flag: &str, text: &str) -> Result<Duration, Failure> {
    crate::config::duration_text::parse(text).map_err(|e| Failure::usage(format!("{flag}: {e}")))
}
