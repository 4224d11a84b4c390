//! `failoverd`: parses the command line and hands over to `failover::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    failover::cli::run(failover::cli::Args::parse())
}
