//! failoverctl's command line: every flag, subcommand and help text (clap definitions only).
//! Nothing here connects or prints; `--help` and shell completions are generated from it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Drive a running failoverd member: status, planned switchover, maintenance pause, watermarks.
#[derive(Debug, Parser)]
#[command(
    name = "failoverctl",
    version,
    after_help = "Exit status: 0 done, 1 refused (by a guard or the store) or a handover that failed, \
                  2 usage or config error, 3 daemon unreachable, 4 a handover (--wait) not finished when the wait ended."
)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Give up on each call to the daemon after this long, such as 5s.
    #[arg(long, global = true, default_value = "5s", value_name = "DURATION")]
    pub(super) timeout: String,
    /// The validator a command is about, on a member serving several ([[validators]]). Without
    /// it, `status` shows every validator and other commands need the member to serve only one.
    #[arg(long, global = true, value_name = "ID")]
    pub(super) validator: Option<String>,
    #[command(flatten)]
    pub(super) connection: Connection,
    #[command(subcommand)]
    pub(super) command: Command,
}

/// How failoverctl reaches the member, shared by every command: its unix socket (the default),
/// or its TCP control API with mutual TLS (`--address` and an operator certificate).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Connection (the member's unix socket, or its TCP control API with mutual TLS)")]
pub(super) struct Connection {
    /// The member's control socket (default: api.socket of --config, else /run/failoverd/control.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub(super) socket: Option<PathBuf>,
    /// Read the socket path (and, with --address, the CA) from this member config.
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Reach the member's TCP control API (api.listen) at HOST:PORT over mutual TLS instead of
    /// its socket. Needs an operator certificate (`failoverd tls operator NAME`).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub(super) address: Option<String>,
    /// CA that signs the member's certificate (default: tls.ca_file of --config).
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) tls_ca: Option<PathBuf>,
    /// This operator's certificate, made by `failoverd tls operator NAME`.
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) tls_cert: Option<PathBuf>,
    /// This operator's private key (mode 0600).
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) tls_key: Option<PathBuf>,
    /// The member the server's certificate must name (default: any member of the cluster's CA).
    #[arg(long, global = true, value_name = "MEMBER")]
    pub(super) tls_member: Option<String>,
}

/// `--wait` for the commands that start a handover.
#[derive(Debug, clap::Args)]
pub(super) struct Wait {
    /// Wait until the handover has finished (the new holder is active) or failed, and say
    /// which; exit 1 when it did not finish.
    #[arg(long)]
    pub(super) wait: bool,
    /// With --wait, give up waiting after this long, such as 30s (the handover may still finish).
    #[arg(long, default_value = "30s", value_name = "DURATION", requires = "wait")]
    pub(super) wait_timeout: String,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// This member's role, node, the lease and the watermark, and every member's status.
    Status {
        /// Print it again every second until Ctrl-C (JSON: one object per line).
        #[arg(long)]
        watch: bool,
    },
    /// Every member: kind, region, role, height, lag, health, when it was last heard of. A
    /// member not heard of within the daemon's status_stale_after shows as unreachable, never
    /// with the role or health it last published.
    Members,
    /// Planned switchover to MEMBER: the active hands over through the Transfer intent and
    /// MEMBER runs every guard step; no height is missed. Refused unless MEMBER is a healthy,
    /// caught-up standby.
    Promote {
        /// The standby to hand over to: a producer's member id.
        member: String,
        /// For when the active is unreachable: also accept a free lease (naming MEMBER the next
        /// holder, even in maintenance mode) and an active that stopped publishing status. It
        /// still waits for the lease to be released or to expire, and MEMBER still runs every
        /// guard step; heights are likely missed.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Run against the active: it hands over to the best standby that can take over now, as
    /// `promote` would. Refused on any other member (naming the active), and when no standby
    /// can take over.
    Demote {
        #[command(flatten)]
        wait: Wait,
    },
    /// Maintenance mode: nothing happens automatically until `resume` (promote still works).
    Pause,
    /// Leave maintenance mode.
    Resume,
    /// The signing key's watermark, in and out.
    #[command(subcommand)]
    Watermark(WatermarkCommand),
    /// This member's recent events — role changes, guard results, fences, lease and intent
    /// changes, operator actions — oldest first; with --follow, then each new one as it happens
    /// (one JSON object per line with --json).
    Events {
        /// After the history, print each new event as it happens, until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to write the script for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum WatermarkCommand {
    /// Print the key's replicated watermark as interchange JSON (format version 2).
    Export,
    /// Raise the key's watermark from interchange JSON (a file, or - for stdin). The whole file
    /// is checked before anything is sent; the highest entry of each key goes in one request,
    /// which the store applies whole or not at all. Refused when it would lower the watermark,
    /// set it more than failover.import_max_ahead above the best height the cluster knows
    /// (unless --force), or above 2^53.
    Import {
        /// The interchange file (format version 2, or 1 as older releases wrote it), or - to
        /// read it from stdin.
        file: PathBuf,
        /// Check everything and print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Accept a height more than failover.import_max_ahead above the best height the
        /// cluster knows, or when it knows none. Never lowers a watermark, never passes 2^53.
        #[arg(long)]
        force: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_and_option_has_a_description() {
        use clap::CommandFactory;
        fn undocumented(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    found.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    found.push(format!("{path} {} (the command)", sub.get_name()));
                }
                undocumented(sub, &format!("{path} {}", sub.get_name()), found);
            }
        }
        let mut found = Vec::new();
        undocumented(&Args::command(), "failoverctl", &mut found);
        assert_eq!(found, Vec::<String>::new(), "arguments without a description in --help");
    }
}
