//! `failoverctl`: the operator's client for a running failoverd. Its subcommands arrive with the
//! control API; for now it only identifies itself.

use clap::Parser;

/// Drive a running failoverd: status, planned switchover, maintenance pause.
#[derive(Debug, Parser)]
#[command(name = "failoverctl", version)]
struct Args {}

fn main() {
    let _ = Args::parse();
    println!("failoverctl {}: no subcommands yet; see `failoverctl --help`", env!("CARGO_PKG_VERSION"));
}
