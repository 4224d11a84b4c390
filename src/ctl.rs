//! `failoverctl`: the operator's client for a running member's control API. It parses the
//! command line, makes one call (or a few), and prints what happened or why it was refused —
//! a table for people, JSON with `--json`.
//!
//! Exit codes: 0 done, 1 refused (a guard, the store, or the daemon said no) or a handover
//! waited for with `--wait` that failed or did not finish in time, 2 usage or config error, 3
//! the daemon could not be reached. It never decides anything itself: every check is
//! the daemon's, so a refusal reads the same from every client.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tonic::Code;

use crate::api::MAX_IMPORT_ENTRIES;
use crate::domain::{Hrs, KeyId, MemberId, Step};
use crate::proto::v1::{
    DemoteRequest, Event, EventsRequest, Hrs as WireHrs, LeaseState, MemberRow, MembersReply, MembersRequest,
    PauseRequest, PromoteReply, PromoteRequest, StatusReply, StatusRequest, Watermark as WireWatermark, WatermarkEntry,
    WatermarkExportRequest, WatermarkImportReply, WatermarkImportRequest,
};

/// Output for people and scripts on stdout. Shadows `std::println!` in this module so that
/// every line failoverctl prints — the status table included — goes through [`say`], which ends
/// the process quietly when the reader has gone (`failoverctl members | head -1`) instead of
/// panicking as `std::println!` does.
macro_rules! println {
    () => {
        say(format_args!(""))
    };
    ($($arg:tt)*) => {
        say(format_args!($($arg)*))
    };
}

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
/// `--wait`: the handover was started but had not finished when the wait ended (it may still).
pub const EXIT_UNFINISHED: u8 = 4;

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
    json: bool,
    /// Give up on each call to the daemon after this long, such as 5s.
    #[arg(long, global = true, default_value = "5s", value_name = "DURATION")]
    timeout: String,
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

/// How failoverctl reaches the member, shared by every command: its unix socket (the default),
/// or its TCP control API with mutual TLS (`--address` and an operator certificate).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Connection (the member's unix socket, or its TCP control API with mutual TLS)")]
struct Connection {
    /// The member's control socket (default: api.socket of --config, else /run/failoverd/control.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Read the socket path (and, with --address, the CA) from this member config.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Reach the member's TCP control API (api.listen) at HOST:PORT over mutual TLS instead of
    /// its socket. Needs an operator certificate (`failoverd tls operator NAME`).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    address: Option<String>,
    /// CA that signs the member's certificate (default: tls.ca_file of --config).
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This operator's certificate, made by `failoverd tls operator NAME`.
    #[arg(long, global = true, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This operator's private key (mode 0600).
    #[arg(long, global = true, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The member the server's certificate must name (default: any member of the cluster's CA).
    #[arg(long, global = true, value_name = "MEMBER")]
    tls_member: Option<String>,
}

/// `--wait` for the commands that start a handover.
#[derive(Debug, clap::Args)]
struct Wait {
    /// Wait until the handover has finished (the new holder is active) or failed, and say
    /// which; exit 1 when it did not finish.
    #[arg(long)]
    wait: bool,
    /// With --wait, give up waiting after this long, such as 30s (the handover may still finish).
    #[arg(long, default_value = "30s", value_name = "DURATION", requires = "wait")]
    wait_timeout: String,
}

#[derive(Debug, Subcommand)]
enum Command {
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
enum WatermarkCommand {
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

/// The watermark interchange format, modelled on the slashing-protection interchange of
/// EIP-3076: versioned metadata and one entry per key, and — as there — every integer written
/// as a decimal string ("4304"), so that no JSON parser rounds it.
///
/// Version 2 (what `watermark export` writes) follows that rule for height, round and epoch.
/// Version 1, written by older releases, had the round as a JSON number; `watermark import`
/// still reads it, each version in its own form only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interchange {
    pub metadata: Metadata,
    pub data: Vec<KeyWatermark>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub interchange_format_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_by: Option<String>,
}

/// One key's watermark. The round of "every round of this height" (what a key-holding
/// checkpoint records) is written as "4294967295", the highest round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWatermark {
    pub key: String,
    /// A decimal u64.
    pub height: String,
    /// A decimal u32.
    pub round: String,
    /// propose, prevote or precommit.
    pub step: String,
    /// A decimal u64; informational, ignored on import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// What `watermark export` writes.
pub const FORMAT_VERSION: &str = "2";

/// The interchange versions `watermark import` reads: they differ only in how the round is
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormatVersion {
    /// Older releases: the round as a JSON number.
    V1,
    /// Every integer a decimal string.
    V2,
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_USAGE, message: message.into() }
    }
}

fn from_status(target: &str, s: tonic::Status) -> Failure {
    let mut message = s.message().to_string();
    // "transport error" alone hides why (a refused certificate, say): add the causes.
    if let Some(cause) = std::error::Error::source(&s) {
        message = format!("{message}: {}", causes_once(cause));
    }
    match s.code() {
        Code::FailedPrecondition | Code::AlreadyExists | Code::PermissionDenied | Code::Unimplemented => {
            Failure { code: EXIT_REFUSED, message: format!("refused: {message}") }
        }
        Code::InvalidArgument => Failure::usage(message),
        Code::Unavailable if message.contains("store") => {
            Failure { code: EXIT_REFUSED, message: format!("not done: {message}") }
        }
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => Failure {
            code: EXIT_UNREACHABLE,
            message: format!(
                "the daemon at {target} did not answer: {message}; is failoverd running and does it accept this client?"
            ),
        },
        _ => Failure { code: EXIT_REFUSED, message: format!("not done: {message}") },
    }
}

/// `e` and its causes, joined by ": ", each text once: transport errors wrap an I/O error in a
/// layer that repeats its text ("No such file or directory (os error 2): No such file or
/// directory (os error 2)"), which reads as two failures.
fn causes_once(e: &(dyn std::error::Error + 'static)) -> String {
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

/// Where failoverctl reaches the member.
enum Target {
    Socket(PathBuf),
    Tls { address: String, member: Option<MemberId>, ca: PathBuf, cert: PathBuf, key: PathBuf },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Socket(p) => p.display().to_string(),
            Target::Tls { address, .. } => format!("{address} (TLS)"),
        }
    }

    async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<crate::proto::v1::control_client::ControlClient<tonic::transport::Channel>, Failure> {
        let unreachable = |e: String| Failure {
            code: EXIT_UNREACHABLE,
            message: format!("cannot reach the daemon at {}: {e}; is failoverd running?", self.describe()),
        };
        match self {
            Target::Socket(socket) => {
                crate::api::client::connect(socket, timeout).await.map_err(|e| unreachable(causes_once(&e)))
            }
            Target::Tls { address, member, ca, cert, key } => {
                let operator =
                    crate::tls::TlsMaterial::from_files(("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key))
                        .map_err(|e| Failure::usage(e.to_string()))?;
                operator.expect_operator(cert).map_err(|e| Failure::usage(format!("--tls-cert: {e}")))?;
                crate::api::client::connect_tls(address, &operator, member.clone(), timeout)
                    .await
                    .map_err(|e| unreachable(causes_once(&e)))
            }
        }
    }
}

fn target_of(args: &Connection) -> Result<Target, Failure> {
    let Some(address) = &args.address else { return socket_of(args).map(Target::Socket) };
    // Only the CA comes from a member's config: its certificate is a member's, and the control
    // API accepts operators only.
    let config_ca = match &args.config {
        Some(path) => crate::config::Config::load(path)
            .map_err(|e| Failure::usage(format!("--config: {e}")))?
            .tls
            .map(|t| t.ca_file),
        None => None,
    };
    let required = |given: &Option<PathBuf>, flag: &str| {
        given.clone().ok_or_else(|| {
            Failure::usage(format!(
                "--address needs {flag}: the TCP control API requires an operator certificate (`failoverd tls operator NAME`)"
            ))
        })
    };
    let member = match &args.tls_member {
        None => None,
        Some(m) => Some(MemberId::new(m.clone()).map_err(|e| Failure::usage(format!("--tls-member: {e}")))?),
    };
    Ok(Target::Tls {
        address: address.clone(),
        member,
        ca: args.tls_ca.clone().or(config_ca).ok_or_else(|| {
            Failure::usage("--address needs --tls-ca (or --config with a [tls] section): the cluster's CA".to_string())
        })?,
        cert: required(&args.tls_cert, "--tls-cert")?,
        key: required(&args.tls_key, "--tls-key")?,
    })
}

fn socket_of(args: &Connection) -> Result<PathBuf, Failure> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    if let Some(path) = &args.config {
        let config = crate::config::Config::load(path).map_err(|e| Failure::usage(format!("--config: {e}")))?;
        return Ok(config.api.socket);
    }
    Ok(crate::config::defaults::api_socket())
}

fn run_inner(args: &Args) -> Result<(), Failure> {
    if let Command::Completions { shell } = &args.command {
        use clap::CommandFactory;
        // Into memory first: clap_complete panics when it cannot write (`| head -1`).
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Args::command(), "failoverctl", &mut script);
        return write_out(&script);
    }
    let timeout = duration_option("--timeout", &args.timeout)?.max(Duration::from_millis(100));
    let wait = match &args.command {
        Command::Promote { wait, .. } | Command::Demote { wait } if wait.wait => {
            Some(duration_option("--wait-timeout", &wait.wait_timeout)?)
        }
        _ => None,
    };
    let target = target_of(&args.connection)?;
    // Read an import file before connecting: bad input is reported as such, whatever the daemon.
    let import = match &args.command {
        Command::Watermark(WatermarkCommand::Import { file, .. }) => Some(read_import(file)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure { code: EXIT_REFUSED, message: format!("cannot start a runtime: {e}") })?;
    runtime.block_on(async {
        let mut client = target.connect(timeout).await?;
        let described = target.describe();
        let fail = |s| from_status(&described, s);
        match &args.command {
            Command::Status { watch } => loop {
                let own = client.status(StatusRequest {}).await.map_err(fail)?.into_inner();
                let members = client.members(MembersRequest {}).await.map_err(fail)?.into_inner();
                if !watch {
                    print_status(&own, &members, args.json);
                    break;
                }
                if args.json {
                    println!("{}", serde_json::json!({"self": status_json(&own), "cluster": members_json(&members)}));
                } else {
                    println!(
                        "--- {}",
                        crate::domain::rfc3339::format_unix_nanos(crate::domain::rfc3339::now_unix_nanos())
                    );
                    print_status(&own, &members, false);
                }
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            },
            Command::Events { follow } => {
                let mut stream = client.events(EventsRequest { follow: *follow }).await.map_err(fail)?.into_inner();
                while let Some(event) = stream.message().await.map_err(fail)? {
                    print_event(&event, args.json);
                }
            }
            Command::Members => {
                let members = client.members(MembersRequest {}).await.map_err(fail)?.into_inner();
                print_members(&members, args.json);
            }
            Command::Promote { member, force, .. } => {
                let request = PromoteRequest { target: member.clone(), force: *force };
                let r = client.promote(request).await.map_err(fail)?.into_inner();
                hand_over(&mut client, r, wait, args.json, &fail).await?;
            }
            Command::Demote { .. } => {
                let r = client.demote(DemoteRequest {}).await.map_err(fail)?.into_inner();
                hand_over(&mut client, r, wait, args.json, &fail).await?;
            }
            Command::Pause | Command::Resume => {
                let paused = matches!(args.command, Command::Pause);
                let r = if paused { client.pause(PauseRequest {}).await } else { client.resume(PauseRequest {}).await }
                    .map_err(fail)?
                    .into_inner();
                if args.json {
                    print_json(&serde_json::json!({"paused": r.paused}));
                } else if r.paused {
                    println!("paused: nothing happens automatically until `failoverctl resume`");
                } else {
                    println!("resumed: automatic failover is on");
                }
            }
            Command::Watermark(WatermarkCommand::Export) => {
                let r = client.watermark_export(WatermarkExportRequest {}).await.map_err(fail)?.into_inner();
                let data = r
                    .watermark
                    .and_then(|w| Some((w.hrs?, w.epoch)))
                    .map(|(h, epoch)| vec![entry(&r.key, h, Some(epoch))])
                    .unwrap_or_default();
                print_json(&Interchange {
                    metadata: Metadata {
                        interchange_format_version: FORMAT_VERSION.into(),
                        exported_by: Some(format!("failoverd {}", env!("CARGO_PKG_VERSION"))),
                    },
                    data,
                });
            }
            Command::Completions { .. } => {}
            Command::Watermark(WatermarkCommand::Import { dry_run, force, .. }) => {
                let request = WatermarkImportRequest {
                    entries: import
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, hrs)| WatermarkEntry { key: key.to_string(), hrs: Some(hrs.into()) })
                        .collect(),
                    dry_run: *dry_run,
                    force: *force,
                };
                let r = client.watermark_import(request).await.map_err(fail)?.into_inner();
                print_import(&r, args.json);
            }
        }
        Ok(())
    })
}

type Client = crate::proto::v1::control_client::ControlClient<tonic::transport::Channel>;

/// `text` of option `flag` as a duration, or a usage failure naming the option.
fn duration_option(flag: &str, text: &str) -> Result<Duration, Failure> {
    crate::config::duration_text::parse(text).map_err(|e| Failure::usage(format!("{flag}: {e}")))
}

/// Writes `bytes` to stdout. A reader that stopped early (`| head -1`) is not an error: it has
/// read all it wanted.
fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure { code: EXIT_REFUSED, message: format!("cannot write to standard output: {e}") })
        }
        _ => Ok(()),
    }
}

/// How a handover that failoverctl waited for ended.
#[derive(Debug, Clone, PartialEq)]
enum Handover {
    /// The target holds the lease at `epoch` and publishes itself active.
    Finished { holder: String, epoch: u64 },
    /// The lease moved on without the target becoming active: why, in words.
    Failed(String),
    /// Neither within the wait: where it stands, in words.
    TimedOut(String),
}

/// Prints what a promote or demote started; with `wait`, waits at most that long for the
/// handover to finish or fail and prints how it ended (a failure or a timeout exits 1).
async fn hand_over(
    client: &mut Client,
    r: PromoteReply,
    wait: Option<Duration>,
    json: bool,
    fail: impl Fn(tonic::Status) -> Failure + Copy,
) -> Result<(), Failure> {
    let started = json!({"target": r.target, "epoch": r.epoch, "message": r.message});
    let Some(limit) = wait else {
        if json {
            print_json(&started);
        } else {
            println!("{} (target {}, epoch {})", r.message, r.target, r.epoch);
        }
        return Ok(());
    };
    if !json {
        println!("{} (target {}, epoch {}); waiting up to {:.0} s", r.message, r.target, r.epoch, limit.as_secs_f64());
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    let clock = tokio::time::Instant::now();
    let outcome = wait_for_handover(client, &r, limit, fail).await?;
    let waited_s = (clock.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let mut report = started;
    let (finished, detail) = match &outcome {
        Handover::Finished { holder, epoch } => {
            report["holder"] = json!(holder);
            report["new_epoch"] = json!(epoch);
            (true, format!("handover finished: {holder} is active at epoch {epoch} (after {waited_s:.1} s)"))
        }
        Handover::Failed(why) => (false, format!("the handover to {} failed: {why}", r.target)),
        Handover::TimedOut(now) => {
            (false, format!("the handover to {} did not finish within {:.0} s: {now}", r.target, limit.as_secs_f64()))
        }
    };
    report["finished"] = json!(finished);
    report["waited_s"] = json!(waited_s);
    if !finished {
        report["reason"] = json!(detail);
    }
    if json {
        print_json(&report);
    } else if finished {
        println!("{detail}");
    }
    let code = if matches!(outcome, Handover::TimedOut(_)) { EXIT_UNFINISHED } else { EXIT_REFUSED };
    if finished { Ok(()) } else { Err(Failure { code, message: detail }) }
}

/// Polls the member's view of the lease and of the target's published status until the
/// handover `r` started has finished or failed, or `limit` has passed. A poll, not a watch:
/// the target's "active" is its published status, which this member's event stream does not
/// carry.
async fn wait_for_handover(
    client: &mut Client,
    r: &PromoteReply,
    limit: Duration,
    fail: impl Fn(tonic::Status) -> Failure + Copy,
) -> Result<Handover, Failure> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        // A poll that fails (a store blip, the old active's member restarting) is asked again
        // until the wait ends: the handover goes on whether or not this client sees it.
        let polled = async {
            let status = client.status(StatusRequest {}).await?.into_inner();
            let members = client.members(MembersRequest {}).await?.into_inner();
            Ok::<_, tonic::Status>((status, members))
        };
        let (status, members) = match polled.await {
            Ok(both) => both,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(fail(e)),
            Err(_) => continue,
        };
        let row = members.members.iter().find(|m| m.id == r.target);
        match handover_state(&r.target, r.epoch, status.lease.as_ref(), row) {
            Ok(Some(done)) => return Ok(done),
            Err(why) => return Ok(Handover::Failed(why)),
            Ok(None) if tokio::time::Instant::now() >= deadline => {
                return Ok(Handover::TimedOut(handover_progress(&r.target, status.lease.as_ref(), row)));
            }
            Ok(None) => {}
        }
    }
}

/// What the lease (as this member reads it) and `target`'s row say about a handover away from
/// epoch `from`: finished, failed (the lease moved past `from` to anyone else, or is free
/// again), or `Ok(None)` while it is under way or cannot be told.
fn handover_state(
    target: &str,
    from: u64,
    lease: Option<&LeaseState>,
    row: Option<&MemberRow>,
) -> Result<Option<Handover>, String> {
    let Some(lease) = lease.filter(|l| l.epoch > from) else { return Ok(None) };
    if lease.holder == target {
        let active = row.is_some_and(|m| reachable(m) && m.role == "active");
        return Ok(active.then(|| Handover::Finished { holder: lease.holder.clone(), epoch: lease.epoch }));
    }
    let now = if lease.holder.is_empty() {
        format!("the lease moved on to epoch {} and is free again", lease.epoch)
    } else {
        format!("the lease went to {} at epoch {} instead", lease.holder, lease.epoch)
    };
    Err(format!("{now}; {}; `failoverctl events` on {target} says why", target_state(target, row)))
}

/// Where an unfinished handover to `target` stands, for a timeout.
fn handover_progress(target: &str, lease: Option<&LeaseState>, row: Option<&MemberRow>) -> String {
    let lease = match lease {
        None => "the store did not answer".to_string(),
        Some(l) if l.holder.is_empty() => format!("the lease is free (epoch {})", l.epoch),
        Some(l) if l.holder == target => format!("{target} holds the lease at epoch {}", l.epoch),
        Some(l) => format!("{} still holds the lease at epoch {}", l.holder, l.epoch),
    };
    format!("{lease}; {}; it may still finish", target_state(target, row))
}

/// "b is standby and healthy", "b is unreachable (last heard 8.3 s ago)".
fn target_state(target: &str, row: Option<&MemberRow>) -> String {
    match row {
        None => format!("{target} is not a member"),
        Some(m) if !reachable(m) => format!("{target} is {}", unreachable_text(m)),
        Some(m) => format!("{target} is {} and {}", m.role, if m.healthy { "healthy" } else { "not healthy" }),
    }
}

fn entry(key: &str, h: WireHrs, epoch: Option<u64>) -> KeyWatermark {
    KeyWatermark {
        key: key.to_string(),
        height: h.height.to_string(),
        round: h.round.to_string(),
        step: step_name(h.step).to_string(),
        epoch: epoch.map(|e| e.to_string()),
    }
}

fn step_name(step: u32) -> &'static str {
    match step {
        1 => "propose",
        2 => "prevote",
        3 => "precommit",
        _ => "unknown",
    }
}

/// An HRS from the daemon as every part of failoverd writes one (`Hrs`'s Display:
/// `4304/0/precommit`, `4304/*/precommit` for every round of height 4304).
fn describe(h: &WireHrs) -> String {
    match Hrs::try_from(*h) {
        Ok(h) => h.to_string(),
        // Only a daemon that numbers steps differently sends this; show what it sent.
        Err(_) => format!("{}/{}/step {}", h.height, h.round, h.step),
    }
}

/// Parses an interchange document into its (key, HRS) entries, in file order, naming the first
/// field that is wrong (`data[3].height`). It checks the form only: every bound is the daemon's.
pub fn parse_interchange(text: &str) -> Result<Vec<(KeyId, Hrs)>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not a watermark interchange document: {e}"))?;
    let top = fields_of(&doc, "", &["metadata", "data"])?;
    let meta = fields_of(required(top, "", "metadata")?, "metadata", &["interchange_format_version", "exported_by"])?;
    let version = match required(meta, "metadata", "interchange_format_version")? {
        Value::String(v) if v == "2" => FormatVersion::V2,
        Value::String(v) if v == "1" => FormatVersion::V1,
        other => {
            return Err(format!(
                "metadata.interchange_format_version: expected \"{FORMAT_VERSION}\" (or \"1\", as older releases \
                 wrote), found {}",
                shown(other)
            ));
        }
    };
    if let Some(by) = meta.get("exported_by").filter(|v| !v.is_string()) {
        return Err(format!("metadata.exported_by: expected a string, found {}", shown(by)));
    }
    let data = match required(top, "", "data")? {
        Value::Array(data) => data,
        other => return Err(format!("data: expected an array of entries, found {}", shown(other))),
    };
    if data.is_empty() {
        return Err("data: no watermark to import".into());
    }
    data.iter().enumerate().map(|(i, entry)| parse_entry(i, entry, version)).collect()
}

/// One entry of `data`: key, height (a decimal string), round (a decimal string in version 2,
/// a number in version 1), step and an optional epoch (a decimal string).
fn parse_entry(i: usize, entry: &Value, version: FormatVersion) -> Result<(KeyId, Hrs), String> {
    let path = format!("data[{i}]");
    let map = fields_of(entry, &path, &["key", "height", "round", "step", "epoch"])?;
    let key = match required(map, &path, "key")? {
        Value::String(name) => KeyId::new(name.clone()).map_err(|e| format!("{path}.key: {e}"))?,
        other => return Err(format!("{path}.key: expected the key's name as a string, found {}", shown(other))),
    };
    let height = required(map, &path, "height")?;
    let height = decimal(height).ok_or_else(|| {
        format!(
            "{path}.height: expected a decimal height as a string, such as \"4304\" (at most {}), found {}",
            u64::MAX,
            shown(height)
        )
    })?;
    let round = parse_round(required(map, &path, "round")?, version).map_err(|e| format!("{path}.round: {e}"))?;
    let step = required(map, &path, "step")?;
    let step = match step.as_str() {
        Some("propose") => Step::Propose,
        Some("prevote") => Step::Prevote,
        Some("precommit") => Step::Precommit,
        _ => return Err(format!("{path}.step: expected propose, prevote or precommit, found {}", shown(step))),
    };
    if let Some(epoch) = map.get("epoch").filter(|e| decimal(e).is_none()) {
        return Err(format!(
            "{path}.epoch: expected a decimal epoch as a string, such as \"3\", found {}",
            shown(epoch)
        ));
    }
    Ok((key, Hrs::new(height, round, step)))
}

/// An entry's round as `version` writes it: a decimal string (2) or a JSON number (1). The
/// other version's form is refused with the way to fix it, not read silently: a file that
/// mixes them was not written by failoverd.
fn parse_round(round: &Value, version: FormatVersion) -> Result<u32, String> {
    let max = u32::MAX;
    match version {
        FormatVersion::V2 => decimal(round).and_then(|r| u32::try_from(r).ok()).ok_or_else(|| match round {
            Value::Number(n) => format!(
                "expected a decimal round as a string, such as \"{n}\", found the number {n}: format version 2 \
                 writes every integer as a string (a file with numeric rounds is format version 1: set \
                 interchange_format_version to \"1\")"
            ),
            other => {
                format!("expected a decimal round as a string, such as \"0\" (at most {max}), found {}", shown(other))
            }
        }),
        FormatVersion::V1 => round.as_u64().and_then(|r| u32::try_from(r).ok()).ok_or_else(|| match round {
            Value::String(_) => format!(
                "expected a whole number from 0 to {max} in format version 1, found {}: rounds as strings are \
                 format version 2's form; set interchange_format_version to \"2\"",
                shown(round)
            ),
            other => format!("expected a whole number from 0 to {max}, found {}", shown(other)),
        }),
    }
}

/// `value` as an object whose fields are all in `known`; `path` names it in messages.
fn fields_of<'a>(value: &'a Value, path: &str, known: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let what = if path.is_empty() { "the document" } else { path };
    let Value::Object(map) = value else {
        return Err(format!("{what}: expected a JSON object with {}, found {}", known.join(", "), shown(value)));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("{}: unknown field; {what} has {}", field_path(path, unknown), known.join(", ")));
    }
    Ok(map)
}

fn required<'a>(map: &'a Map<String, Value>, path: &str, name: &str) -> Result<&'a Value, String> {
    map.get(name).ok_or_else(|| format!("{}: missing", field_path(path, name)))
}

fn field_path(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

/// A JSON string of decimal digits that fits a u64 ("+5", "-1", "0x10" and "" do not).
fn decimal(value: &Value) -> Option<u64> {
    value.as_str().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse().ok())
}

/// A JSON value as the file spells it, cut short when long.
fn shown(value: &Value) -> String {
    const LIMIT: usize = 40;
    let text = value.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// One entry per key, the highest HRS the entries give it, sorted by key: what an import sends.
pub fn highest_per_key(entries: Vec<(KeyId, Hrs)>) -> Vec<(KeyId, Hrs)> {
    let mut highest: std::collections::BTreeMap<KeyId, Hrs> = std::collections::BTreeMap::new();
    for (key, hrs) in entries {
        let top = highest.entry(key).or_insert(hrs);
        *top = (*top).max(hrs);
    }
    highest.into_iter().collect()
}

/// The import file (or stdin), parsed and checked whole, as one entry per key.
fn read_import(file: &Path) -> Result<Vec<(KeyId, Hrs)>, Failure> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::usage(format!("stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?
    };
    let nothing_sent = |e: String| Failure::usage(format!("{}: {e}; nothing was sent", file.display()));
    let entries = highest_per_key(parse_interchange(&text).map_err(nothing_sent)?);
    if entries.len() > MAX_IMPORT_ENTRIES {
        return Err(nothing_sent(format!(
            "data: {} keys, more than the {MAX_IMPORT_ENTRIES} one import may carry; split the file by key",
            entries.len()
        )));
    }
    Ok(entries)
}

/// What an import did (or, for a dry run, would do): one line per key, or one JSON object.
fn print_import(r: &WatermarkImportReply, json: bool) {
    if json {
        let keys: Vec<serde_json::Value> = r
            .changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "key": c.key, "before": watermark_json(c.before.as_ref()),
                    "after": watermark_json(c.after.as_ref()), "changed": c.changed,
                })
            })
            .collect();
        print_json(&serde_json::json!({"dry_run": r.dry_run, "keys": keys}));
        return;
    }
    for c in &r.changes {
        let hrs_of = |w: Option<&WireWatermark>| w.and_then(|w| w.hrs).map_or("none".to_string(), |h| describe(&h));
        let after = hrs_of(c.after.as_ref());
        let line = if c.changed {
            format!("{}: {} → {after}", c.key, hrs_of(c.before.as_ref()))
        } else {
            format!("{}: {after}, unchanged (the file is not above it)", c.key)
        };
        if r.dry_run {
            println!("dry run: {line} (nothing written)");
        } else {
            println!("{line}");
        }
    }
}

fn watermark_json(w: Option<&WireWatermark>) -> serde_json::Value {
    match w.and_then(|w| w.hrs.map(|h| (h, w.epoch))) {
        Some((h, epoch)) => serde_json::json!({
            "height": h.height, "round": h.round, "step": step_name(h.step), "epoch": epoch,
        }),
        None => serde_json::Value::Null,
    }
}

fn print_event(e: &Event, json: bool) {
    use std::io::Write;
    if json {
        let line = serde_json::json!({
            "seq": e.seq, "unix_ms": e.unix_ms, "member": e.member, "kind": e.kind, "epoch": e.epoch,
            "cause": (!e.cause.is_empty()).then_some(&e.cause), "message": e.message,
        });
        println!("{line}");
    } else {
        let at = crate::domain::rfc3339::format_unix_nanos(i128::from(e.unix_ms) * 1_000_000);
        let epoch = e.epoch.map_or(String::new(), |n| format!(" epoch {n}"));
        println!("{} {} {:<8} {}{epoch}", &at[..23], e.member, e.kind, e.message);
    }
    // A follower is often piped: each event must leave at once.
    let _ = std::io::stdout().flush();
}

fn print_json<T: Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// One line on stdout; see [`println!`] above. A reader that stopped early ends failoverctl
/// with success: it read all it wanted, and nothing printed later would reach anyone.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "failoverctl: cannot write to standard output: {e}");
        std::process::exit(i32::from(EXIT_REFUSED));
    }
}

fn status_json(s: &StatusReply) -> serde_json::Value {
    serde_json::json!({
        "member": s.member,
        "kind": s.kind,
        "role": s.role,
        "height": s.height,
        "healthy": s.healthy,
        "lease": s.lease.as_ref().map(|l| serde_json::json!({
            "holder": (!l.holder.is_empty()).then_some(&l.holder),
            "epoch": l.epoch,
            "paused": l.paused,
            "transfer_to": (!l.transfer_to.is_empty()).then_some(&l.transfer_to),
        })),
        "key": s.key,
        "watermark": s.watermark.and_then(|w| w.hrs).map(|h| serde_json::json!({
            "height": h.height, "round": h.round, "step": step_name(h.step), "epoch": s.watermark.map(|w| w.epoch),
        })),
        "raft": s.raft.as_ref().map(|r| serde_json::json!({
            "leader": (!r.leader.is_empty()).then_some(&r.leader), "term": r.term, "commit": r.commit,
        })),
        "store_error": (!s.store_error.is_empty()).then_some(&s.store_error),
        "last_reason": (!s.last_reason.is_empty()).then_some(&s.last_reason),
        "why": (!s.why.is_empty()).then_some(&s.why),
    })
}

/// Whether `m` published a status within the daemon's status_stale_after. A stale row's role,
/// height and health are what it last said, not what it is: at 3 a.m. a dead active shown as
/// "active, healthy" reads as split brain.
fn reachable(m: &MemberRow) -> bool {
    !m.stale && m.status_age_ms.is_some()
}

/// Seconds since `m` last published a status, to a tenth.
fn last_heard_s(m: &MemberRow) -> Option<f64> {
    m.status_age_ms.map(|ms| (ms as f64 / 100.0).round() / 10.0)
}

/// "unreachable (last heard 8.3 s ago)", or "(never heard from)".
fn unreachable_text(m: &MemberRow) -> String {
    match last_heard_s(m) {
        Some(s) => format!("unreachable (last heard {s:.1} s ago)"),
        None => "unreachable (never heard from)".to_string(),
    }
}

fn members_json(m: &MembersReply) -> serde_json::Value {
    let rows: Vec<Value> = m
        .members
        .iter()
        .map(|r| {
            let live = reachable(r);
            json!({
                "id": r.id, "kind": r.kind, "priority": r.priority, "region": r.region,
                "peer_address": r.peer_address, "reachable": live, "last_heard_s": last_heard_s(r),
                "role": (live && !r.role.is_empty()).then_some(&r.role),
                "height": r.height.filter(|_| live), "lag": r.lag.filter(|_| live),
                "healthy": live.then_some(r.healthy), "status_age_ms": r.status_age_ms,
            })
        })
        .collect();
    json!({
        "members": rows,
        "status_stale_after_ms": (m.status_stale_after_ms > 0).then_some(m.status_stale_after_ms),
        "store_error": (!m.store_error.is_empty()).then_some(&m.store_error),
    })
}

fn print_status(s: &StatusReply, m: &MembersReply, json: bool) {
    if json {
        print_json(&serde_json::json!({"self": status_json(s), "cluster": members_json(m)}));
        return;
    }
    let role = if s.role.is_empty() { "starting" } else { &s.role };
    let height = s.height.map_or("unknown".to_string(), |h| h.to_string());
    println!(
        "member     {} ({}), {role}, height {height}, {}",
        s.member,
        s.kind,
        if s.healthy { "healthy" } else { "not healthy" }
    );
    match &s.lease {
        Some(l) if l.holder.is_empty() => println!("lease      free (last epoch {})", l.epoch),
        Some(l) => println!("lease      held by {} at epoch {}", l.holder, l.epoch),
        None => println!("lease      unknown"),
    }
    if let Some(l) = &s.lease {
        println!("paused     {}", if l.paused { "yes (maintenance: nothing happens automatically)" } else { "no" });
        if !l.transfer_to.is_empty() {
            println!("transfer   handing over to {}", l.transfer_to);
        }
    }
    match s.watermark.and_then(|w| w.hrs.map(|h| (h, w.epoch))) {
        Some((h, epoch)) => println!("watermark  {} at {} (epoch {epoch})", s.key, describe(&h)),
        None => println!("watermark  {}: none stored", s.key),
    }
    if let Some(r) = &s.raft {
        let leader = if r.leader.is_empty() { "none known" } else { &r.leader };
        println!("raft       leader {leader}, term {}, commit {}", r.term, r.commit);
    }
    if !s.store_error.is_empty() {
        println!("store      {}", s.store_error);
    }
    if !s.why.is_empty() {
        println!("why        {}", s.why);
    }
    if !s.last_reason.is_empty() {
        println!("last       {}", s.last_reason);
    }
    println!();
    print_members(m, false);
}

fn print_members(m: &MembersReply, json: bool) {
    if json {
        print_json(&members_json(m));
        return;
    }
    let dash = || "-".to_string();
    let rows: Vec<[String; 8]> = m
        .members
        .iter()
        .map(|r| {
            let live = reachable(r);
            let health = match (r.kind.as_str(), r.healthy) {
                ("witness", _) => dash(),
                (_, true) => "healthy".into(),
                (_, false) => "unhealthy".into(),
            };
            [
                r.id.clone(),
                r.kind.clone(),
                if r.region.is_empty() { dash() } else { r.region.clone() },
                match live {
                    false => unreachable_text(r),
                    true if r.role.is_empty() => dash(),
                    true => r.role.clone(),
                },
                r.height.filter(|_| live).map_or_else(dash, |h| h.to_string()),
                r.lag.filter(|_| live).map_or_else(dash, |l| l.to_string()),
                if live { health } else { dash() },
                last_heard_s(r).map_or("never".into(), |s| format!("{s:.1} s ago")),
            ]
        })
        .collect();
    let header = ["MEMBER", "KIND", "REGION", "ROLE", "HEIGHT", "LAG", "HEALTH", "LAST STATUS"].map(String::from);
    let mut widths = header.each_ref().map(String::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    if !m.store_error.is_empty() {
        println!("store: {}", m.store_error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> KeyId {
        KeyId::new(name).expect("valid")
    }

    #[test]
    fn an_exported_document_parses_back_to_its_entries() {
        let doc = Interchange {
            metadata: Metadata {
                interchange_format_version: FORMAT_VERSION.into(),
                exported_by: Some("failoverd".into()),
            },
            data: vec![entry("validator", WireHrs { height: u64::MAX, round: 2, step: 2 }, Some(9))],
        };
        let text = serde_json::to_string(&doc).expect("serialise");
        // The form is the client's to check; the ceiling is the daemon's.
        assert_eq!(
            parse_interchange(&text).expect("parses"),
            vec![(key("validator"), Hrs::new(u64::MAX, 2, Step::Prevote))]
        );
    }

    // One line per bad entry: (the entry's JSON, the field the message must start with).
    #[test]
    fn a_bad_entry_is_named_by_its_index_and_field() {
        let good = r#"{"key":"validator","height":"4304","round":0,"step":"precommit"}"#;
        let cases: &[(&str, &str)] = &[
            (r#"{"key":"validator","height":4304,"round":0,"step":"precommit"}"#, "data[1].height"),
            (r#"{"key":"validator","height":"-1","round":0,"step":"precommit"}"#, "data[1].height"),
            (r#"{"key":"validator","height":"+5","round":0,"step":"precommit"}"#, "data[1].height"),
            (r#"{"key":"validator","height":"18446744073709551616","round":0,"step":"precommit"}"#, "data[1].height"),
            (r#"{"key":"validator","round":0,"step":"precommit"}"#, "data[1].height: missing"),
            (r#"{"key":"validator","height":"1","round":"0","step":"precommit"}"#, "data[1].round"),
            (r#"{"key":"validator","height":"1","round":4294967296,"step":"precommit"}"#, "data[1].round"),
            (r#"{"key":"validator","height":"1","round":0,"step":"commit"}"#, "data[1].step"),
            (r#"{"key":"validator","height":"1","round":0,"step":3}"#, "data[1].step"),
            (r#"{"key":"no/slash","height":"1","round":0,"step":"precommit"}"#, "data[1].key"),
            (r#"{"key":7,"height":"1","round":0,"step":"precommit"}"#, "data[1].key"),
            (r#"{"key":"validator","height":"1","round":0,"step":"precommit","epoch":"x"}"#, "data[1].epoch"),
            (r#"{"key":"validator","height":"1","round":0,"step":"precommit","heigth":"2"}"#, "data[1].heigth"),
            (r#"["validator","1",0,"precommit"]"#, "data[1]: expected a JSON object"),
        ];
        for (bad, field) in cases {
            let text = format!(r#"{{"metadata":{{"interchange_format_version":"1"}},"data":[{good},{bad}]}}"#);
            let message = parse_interchange(&text).expect_err(bad);
            assert!(message.starts_with(field), "{bad}: {message}");
        }
    }

    #[test]
    fn an_export_writes_every_integer_as_a_string_and_reads_back_exactly() {
        let top = WireHrs { height: u64::MAX, round: u32::MAX, step: 3 };
        let doc = Interchange {
            metadata: Metadata { interchange_format_version: FORMAT_VERSION.into(), exported_by: None },
            data: vec![
                entry("validator", top, Some(u64::MAX)),
                entry("validator", WireHrs { height: 0, round: 0, step: 1 }, None),
            ],
        };
        let text = serde_json::to_string(&doc).expect("serialise");
        let value: Value = serde_json::from_str(&text).expect("JSON");
        for field in ["height", "round", "epoch"] {
            assert!(value["data"][0][field].is_string(), "{field} is not a string: {text}");
        }
        assert_eq!(value["metadata"]["interchange_format_version"], "2");
        assert_eq!(value["data"][0]["round"], "4294967295");
        assert_eq!(
            parse_interchange(&text).expect("parses"),
            vec![(key("validator"), Hrs::new(u64::MAX, u32::MAX, Step::Precommit)), (key("validator"), Hrs::ZERO)]
        );
        // The serde form reads it back as well: the two descriptions of the format agree.
        assert_eq!(serde_json::from_str::<Interchange>(&text).expect("serde reads it"), doc);
    }

    #[test]
    fn a_version_1_file_with_numeric_rounds_still_imports() {
        let v1 = r#"{"metadata":{"interchange_format_version":"1","exported_by":"failoverd 0.1.0"},
            "data":[{"key":"validator","height":"4304","round":4294967295,"step":"precommit","epoch":"7"}]}"#;
        let v2 = r#"{"metadata":{"interchange_format_version":"2"},
            "data":[{"key":"validator","height":"4304","round":"4294967295","step":"precommit"}]}"#;
        let want = vec![(key("validator"), Hrs::end_of_height(4304))];
        assert_eq!(parse_interchange(v1).expect("version 1"), want);
        assert_eq!(parse_interchange(v2).expect("version 2"), want);
    }

    // Each version reads only its own form of the round, and says how to fix the other.
    #[test]
    fn a_round_in_the_other_versions_form_is_refused_with_the_fix() {
        let doc = |version: &str, round: &str| {
            format!(
                r#"{{"metadata":{{"interchange_format_version":"{version}"}},"data":[{{"key":"validator","height":"1","round":{round},"step":"precommit"}}]}}"#
            )
        };
        let cases: &[(&str, &str, &str)] = &[
            ("2", "0", "set interchange_format_version to \"1\""),
            ("2", "-1", "data[0].round: expected a decimal round as a string"),
            ("2", r#""4294967296""#, "at most 4294967295"),
            ("2", r#""0x10""#, "found \"0x10\""),
            ("2", r#"" 1""#, "data[0].round"),
            ("2", "null", "found null"),
            ("1", r#""0""#, "set interchange_format_version to \"2\""),
            ("1", "1.5", "expected a whole number from 0 to 4294967295"),
            ("1", "4294967296", "found 4294967296"),
        ];
        for (version, round, part) in cases {
            let message = parse_interchange(&doc(version, round)).expect_err(round);
            assert!(message.starts_with("data[0].round") && message.contains(part), "v{version} {round}: {message}");
        }
    }

    // A file cut short anywhere — a copy that did not finish, a full disk — is refused, never
    // read as the entries before the cut.
    #[test]
    fn every_truncation_of_a_document_is_refused() {
        let text = r#"{"metadata":{"interchange_format_version":"2"},"data":[{"key":"validator","height":"4304","round":"0","step":"precommit"},{"key":"validator","height":"4305","round":"0","step":"propose"}]}"#;
        assert!(parse_interchange(text).is_ok());
        for cut in 0..text.len() {
            let message = parse_interchange(&text[..cut]).expect_err(&text[..cut]);
            assert!(message.starts_with("not a watermark interchange document"), "cut at {cut}: {message}");
        }
    }

    #[test]
    fn a_bad_document_is_named_by_its_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"metadata":{"interchange_format_version":"5"},"data":[]}"#, "metadata.interchange_format_version"),
            (r#"{"metadata":{},"data":[]}"#, "metadata.interchange_format_version: missing"),
            (r#"{"metadata":{"interchange_format_version":"1"},"data":[]}"#, "data: no watermark"),
            (r#"{"metadata":{"interchange_format_version":"1"},"data":{}}"#, "data: expected an array"),
            (r#"{"metadata":{"interchange_format_version":"1"},"data":[],"extra":1}"#, "extra: unknown field"),
            (r#"{}"#, "metadata: missing"),
            ("[]", "the document: expected a JSON object"),
            ("{", "not a watermark interchange document"),
        ];
        for (text, field) in cases {
            let message = parse_interchange(text).expect_err(text);
            assert!(message.starts_with(field), "{text}: {message}");
        }
    }

    #[test]
    fn entries_collapse_to_the_highest_per_key() {
        let entries = vec![
            (key("v"), Hrs::new(10, 0, Step::Precommit)),
            (key("w"), Hrs::new(3, 0, Step::Propose)),
            (key("v"), Hrs::new(12, 0, Step::Propose)),
            (key("v"), Hrs::new(11, 5, Step::Precommit)),
        ];
        assert_eq!(
            highest_per_key(entries),
            vec![(key("v"), Hrs::new(12, 0, Step::Propose)), (key("w"), Hrs::new(3, 0, Step::Propose))]
        );
    }

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

    #[test]
    fn an_hrs_from_the_daemon_reads_as_everywhere_else() {
        assert_eq!(describe(&WireHrs { height: 4304, round: u32::MAX, step: 3 }), "4304/*/precommit");
        assert_eq!(describe(&WireHrs { height: 4304, round: 2, step: 1 }), "4304/2/propose");
        assert_eq!(describe(&WireHrs { height: 4304, round: 2, step: 9 }), "4304/2/step 9");
    }

    fn row(id: &str, role: &str, age_ms: Option<u64>, stale: bool) -> MemberRow {
        MemberRow {
            id: id.into(),
            kind: "producer".into(),
            role: role.into(),
            height: Some(4304),
            healthy: true,
            status_age_ms: age_ms,
            lag: Some(0),
            stale,
            ..MemberRow::default()
        }
    }

    #[test]
    fn a_stale_member_is_unreachable_without_its_last_role_or_health() {
        let reply = MembersReply {
            members: vec![
                row("a", "active", Some(8_340), true),
                row("b", "standby", Some(200), false),
                row("c", "", None, false),
            ],
            store_error: String::new(),
            status_stale_after_ms: 1_000,
        };
        let v = members_json(&reply);
        let a = &v["members"][0];
        assert_eq!((a["reachable"].clone(), a["last_heard_s"].clone()), (json!(false), json!(8.3)), "{v}");
        for field in ["role", "healthy", "height", "lag"] {
            assert!(a[field].is_null(), "a stale row shows its last {field}: {v}");
        }
        assert_eq!(unreachable_text(&reply.members[0]), "unreachable (last heard 8.3 s ago)");
        let b = &v["members"][1];
        assert_eq!(
            (b["reachable"].clone(), b["role"].clone(), b["healthy"].clone()),
            (json!(true), json!("standby"), json!(true))
        );
        // Never heard from: unreachable too, with nothing to show.
        assert_eq!(v["members"][2]["reachable"], false);
        assert_eq!(unreachable_text(&reply.members[2]), "unreachable (never heard from)");
        assert_eq!(v["status_stale_after_ms"], 1_000);
    }

    fn lease(holder: &str, epoch: u64) -> LeaseState {
        LeaseState { holder: holder.into(), epoch, ..LeaseState::default() }
    }

    // One line per moment of a handover from epoch 3 to b: (lease, b's row, expected).
    #[test]
    fn a_handover_is_finished_only_when_the_target_holds_a_newer_lease_and_is_active() {
        let active = row("b", "active", Some(100), false);
        let promoting = row("b", "promoting", Some(100), false);
        let gone = row("b", "active", Some(9_000), true);
        let standby = row("b", "standby", Some(100), false);
        type Case<'a> = (Option<LeaseState>, Option<&'a MemberRow>, Result<Option<Handover>, &'a str>);
        let cases: Vec<Case> = vec![
            (None, Some(&active), Ok(None)),
            (Some(lease("a", 3)), Some(&standby), Ok(None)),
            (Some(lease("b", 3)), Some(&active), Ok(None)),
            (Some(lease("b", 4)), Some(&promoting), Ok(None)),
            (Some(lease("b", 4)), Some(&gone), Ok(None)),
            (Some(lease("b", 4)), Some(&active), Ok(Some(Handover::Finished { holder: "b".into(), epoch: 4 }))),
            (
                Some(lease("", 4)),
                Some(&standby),
                Err("the lease moved on to epoch 4 and is free again; b is standby and healthy"),
            ),
            (Some(lease("a", 5)), Some(&standby), Err("the lease went to a at epoch 5 instead")),
            (Some(lease("a", 5)), Some(&gone), Err("b is unreachable (last heard 9.0 s ago)")),
        ];
        for (i, (lease, row, want)) in cases.into_iter().enumerate() {
            let got = handover_state("b", 3, lease.as_ref(), row);
            match (&want, &got) {
                (Ok(w), Ok(g)) if w == g => {}
                (Err(part), Err(message)) if message.contains(part) && message.contains("failoverctl events") => {}
                _ => panic!("case {i}: wanted {want:?}, got {got:?}"),
            }
        }
    }
}
