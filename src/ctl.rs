//! `failoverctl`: the operator's client for a running member's control API. It parses the
//! command line, makes one call (or a few), and prints what happened or why it was refused —
//! a table for people, JSON with `--json`.
//!
//! Exit codes: 0 done, 1 refused (a guard, the store, or the daemon said no), 2 usage or config
//! error, 3 the daemon could not be reached. It never decides anything itself: every check is
//! the daemon's, so a refusal reads the same from every client.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tonic::Code;

use crate::api::MAX_IMPORT_ENTRIES;
use crate::domain::{Hrs, KeyId, MemberId, Step};
use crate::http::error_chain;
use crate::proto::v1::{
    DemoteRequest, Event, EventsRequest, Hrs as WireHrs, MembersReply, MembersRequest, PauseRequest, PromoteRequest,
    StatusReply, StatusRequest, Watermark as WireWatermark, WatermarkEntry, WatermarkExportRequest,
    WatermarkImportReply, WatermarkImportRequest,
};

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

/// Drive a running failoverd member: status, planned switchover, maintenance pause, watermarks.
#[derive(Debug, Parser)]
#[command(
    name = "failoverctl",
    version,
    after_help = "Exit status: 0 done, 1 refused (by a guard or the store), 2 usage or config error, 3 daemon unreachable."
)]
pub struct Args {
    /// The member's control socket (default: api.socket of --config, else /run/failoverd/control.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Read the socket path (and, with --address, the CA) from this member config.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Reach the member's TCP control API (api.listen) at HOST:PORT over mutual TLS instead of
    /// its socket. Needs an operator certificate (`failoverd tls operator NAME`).
    #[arg(long, global = true)]
    address: Option<String>,
    /// CA that signs the member's certificate (default: tls.ca_file of --config).
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// This operator's certificate, made by `failoverd tls operator NAME`.
    #[arg(long, global = true)]
    tls_cert: Option<PathBuf>,
    /// This operator's private key (mode 0600).
    #[arg(long, global = true)]
    tls_key: Option<PathBuf>,
    /// The member the server's certificate must name (default: any member of the cluster's CA).
    #[arg(long, global = true)]
    tls_member: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on the daemon after this long, such as 5s.
    #[arg(long, global = true, default_value = "5s")]
    timeout: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// This member's role, node, the lease and the watermark, and every member's status.
    Status {
        /// Print it again every second until Ctrl-C (JSON: one object per line).
        #[arg(long)]
        watch: bool,
    },
    /// Every member: kind, region, role, height, lag, health, when it was last heard of.
    Members,
    /// Planned switchover to MEMBER: the active hands over through the Transfer intent and
    /// MEMBER runs every guard step; no height is missed. Refused unless MEMBER is a healthy,
    /// caught-up standby.
    Promote {
        member: String,
        /// For when the active is unreachable: also accept a free lease (naming MEMBER the next
        /// holder, even in maintenance mode) and an active that stopped publishing status. It
        /// still waits for the lease to be released or to expire, and MEMBER still runs every
        /// guard step; heights are likely missed.
        #[arg(long)]
        force: bool,
    },
    /// The active hands over to the best standby that can take over now, as `promote` would;
    /// refused when there is none.
    Demote,
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
        #[arg(long, short)]
        follow: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum WatermarkCommand {
    /// Print the key's replicated watermark as interchange JSON.
    Export,
    /// Raise the key's watermark from interchange JSON (a file, or - for stdin). The whole file
    /// is checked before anything is sent; the highest entry of each key goes in one request,
    /// which the store applies whole or not at all. Refused when it would lower the watermark,
    /// set it more than failover.import_max_ahead above the best height the cluster knows
    /// (unless --force), or above 2^53.
    Import {
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

/// The watermark interchange format, in the spirit of EIP-3076: versioned metadata and one
/// entry per key; big numbers as decimal strings so that no JSON parser rounds them.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWatermark {
    pub key: String,
    pub height: String,
    pub round: u32,
    /// propose, prevote or precommit.
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

const FORMAT_VERSION: &str = "1";

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
        message = format!("{message}: {}", error_chain(cause));
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
                crate::api::client::connect(socket, timeout).await.map_err(|e| unreachable(error_chain(&e)))
            }
            Target::Tls { address, member, ca, cert, key } => {
                let operator =
                    crate::tls::TlsMaterial::from_files(("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key))
                        .map_err(|e| Failure::usage(e.to_string()))?;
                operator.expect_operator(cert).map_err(|e| Failure::usage(format!("--tls-cert: {e}")))?;
                crate::api::client::connect_tls(address, &operator, member.clone(), timeout)
                    .await
                    .map_err(|e| unreachable(error_chain(&e)))
            }
        }
    }
}

fn target_of(args: &Args) -> Result<Target, Failure> {
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

fn socket_of(args: &Args) -> Result<PathBuf, Failure> {
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
        clap_complete::generate(*shell, &mut Args::command(), "failoverctl", &mut std::io::stdout());
        return Ok(());
    }
    let timeout = crate::config::duration_text::parse(&args.timeout)
        .map_err(|e| Failure::usage(format!("--timeout: {e}")))?
        .max(Duration::from_millis(100));
    let target = target_of(args)?;
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
            Command::Promote { .. } | Command::Demote => {
                let r = match &args.command {
                    Command::Promote { member, force } => {
                        client.promote(PromoteRequest { target: member.clone(), force: *force }).await
                    }
                    _ => client.demote(DemoteRequest {}).await,
                }
                .map_err(fail)?
                .into_inner();
                if args.json {
                    print_json(&serde_json::json!({"target": r.target, "epoch": r.epoch, "message": r.message}));
                } else {
                    println!("{} (target {}, epoch {})", r.message, r.target, r.epoch);
                }
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

fn entry(key: &str, h: WireHrs, epoch: Option<u64>) -> KeyWatermark {
    KeyWatermark {
        key: key.to_string(),
        height: h.height.to_string(),
        round: h.round,
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

fn describe(h: &WireHrs) -> String {
    format!("{}/{}/{}", h.height, h.round, step_name(h.step))
}

/// Parses an interchange document into its (key, HRS) entries, in file order, naming the first
/// field that is wrong (`data[3].height`). It checks the form only: every bound is the daemon's.
pub fn parse_interchange(text: &str) -> Result<Vec<(KeyId, Hrs)>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not a watermark interchange document: {e}"))?;
    let top = fields_of(&doc, "", &["metadata", "data"])?;
    let meta = fields_of(required(top, "", "metadata")?, "metadata", &["interchange_format_version", "exported_by"])?;
    match required(meta, "metadata", "interchange_format_version")? {
        Value::String(v) if v == FORMAT_VERSION => {}
        other => {
            return Err(format!(
                "metadata.interchange_format_version: expected \"{FORMAT_VERSION}\", found {}",
                shown(other)
            ));
        }
    }
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
    data.iter().enumerate().map(|(i, entry)| parse_entry(i, entry)).collect()
}

/// One entry of `data`: key, height (a decimal string), round, step and an optional epoch.
fn parse_entry(i: usize, entry: &Value) -> Result<(KeyId, Hrs), String> {
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
    let round = required(map, &path, "round")?;
    let round = round.as_u64().and_then(|r| u32::try_from(r).ok()).ok_or_else(|| {
        format!("{path}.round: expected a whole number from 0 to {}, found {}", u32::MAX, shown(round))
    })?;
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

fn members_json(m: &MembersReply) -> serde_json::Value {
    serde_json::json!({
        "members": m.members.iter().map(|r| serde_json::json!({
            "id": r.id, "kind": r.kind, "priority": r.priority, "region": r.region,
            "peer_address": r.peer_address, "role": (!r.role.is_empty()).then_some(&r.role),
            "height": r.height, "lag": r.lag, "healthy": r.healthy, "status_age_ms": r.status_age_ms,
        })).collect::<Vec<_>>(),
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
    let rows: Vec<[String; 8]> = m
        .members
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.kind.clone(),
                if r.region.is_empty() { "-".into() } else { r.region.clone() },
                if r.role.is_empty() { "-".into() } else { r.role.clone() },
                r.height.map_or("-".into(), |h| h.to_string()),
                r.lag.map_or("-".into(), |l| l.to_string()),
                if r.kind == "witness" {
                    "-".into()
                } else if r.healthy {
                    "healthy".into()
                } else {
                    "unhealthy".into()
                },
                r.status_age_ms.map_or("never".into(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0)),
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
            metadata: Metadata { interchange_format_version: "1".into(), exported_by: Some("failoverd".into()) },
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
}
