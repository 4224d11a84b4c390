//! `failoverctl`: the operator's client for a running failoverd (see `failover::ctl`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    match failover::ctl::Args::try_parse() {
        Ok(args) => failover::ctl::run(args),
        Err(e) => {
            let _ = e.print();
            std::process::ExitCode::from(if e.use_stderr() { failover::ctl::EXIT_USAGE } else { 0 })
        }
    }
}
