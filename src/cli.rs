//! The `failoverd` subcommands behind the thin binary: argument types (clap) and one function
//! per subcommand, each returning the process exit status.
//!
//! Exit statuses: 0 done, 1 a check found a violation or a command failed, 2 usage or config
//! error. Errors are printed to stderr as one line per problem; nothing here panics on input.

pub mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ListenAddress, duration_text};
use crate::domain::{KeyId, MemberId};
use crate::sim::node::{SimNode, SimNodeConfig};
use crate::sim::{checker, ledger};

/// Exit status for usage and config errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when a check found a violation.
pub const EXIT_VIOLATION: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "failoverd",
    version,
    about = "Keeps exactly one block producer active across regions, without double signing."
)]
pub struct Args {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Run this member (the same as `failoverd run --config FILE`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run this member: coordination, probes, decisions, the producer. Stops on SIGTERM,
    /// releasing the lease if it holds it.
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// This member lost its disk and rejoins with the same id and an empty data_dir.
        #[arg(long)]
        rejoin: bool,
    },
    /// A whole cluster on this machine: members on loopback, simulated nodes, a fault schedule,
    /// a live timeline and a summary judged from the signature ledger. Exit 1 on a double sign.
    Demo {
        /// Members: all but one are producers, the last is a witness.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// How long to run, such as 60s or 2m.
        #[arg(long, default_value = "60s")]
        duration: String,
        /// Faults in order, spread over the run: kill, stall, handover.
        #[arg(long, default_value = "kill,stall,handover", value_delimiter = ',')]
        faults: Vec<String>,
        /// Print the summary as JSON (the timeline goes to stderr).
        #[arg(long)]
        json: bool,
        /// `key-holding` (producers turn their nodes on and off) or `signer` (each node asks its
        /// member's remote signer, cometbft-signer, for every signature).
        #[arg(long, default_value = "key-holding", value_parser = ["key-holding", "signer"])]
        mode: String,
        /// Keep the work dir (configs, each member's log, the ledger) and print where it is;
        /// without it the dir is removed after a clean run.
        #[arg(long)]
        keep: bool,
    },
    /// Check a config file and the files it names (keys, certificates, directories), reporting
    /// every problem at once; print the effective settings (defaults filled in, relative paths
    /// resolved against the file's directory, only what the chosen kinds use).
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Check a simulated-chain signature ledger for double signs (S2) and gaps.
    CheckLedger {
        /// The ledger file (JSON lines).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run only this member's coordination service (the embedded raft quorum member), as a
    /// witness does; stops on SIGTERM.
    Coordinator {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// This member lost its disk and rejoins with the same id and an empty data_dir: it
        /// neither votes nor campaigns until it has caught up with the leader.
        #[arg(long)]
        rejoin: bool,
    },
    /// Make the cluster's certificates for mutual TLS: a CA, then one certificate per member
    /// and per operator.
    Tls {
        #[command(subcommand)]
        command: tls::TlsCommand,
    },
    /// Internal: hold a node for a producer (started by the daemon, never by hand).
    #[command(hide = true)]
    Keeper {
        /// What to hold, as JSON.
        #[arg(long)]
        spec: String,
    },
    /// Internal: a TCP proxy that delays both directions of every connection (the WAN lab's
    /// links: `chaos/run --rtt`), never used by a deployment.
    #[command(hide = true)]
    DelayProxy {
        /// Where to accept connections (ip:port; port 0 picks one, printed as `listening ADDR`).
        #[arg(long)]
        listen: String,
        /// Where to carry them (ip:port).
        #[arg(long)]
        upstream: String,
        /// One-way delay added in each direction, such as 50ms or 12500us (at most 10s).
        #[arg(long, default_value = "0")]
        delay: String,
        /// Extra delay drawn uniformly up to this much per chunk (at most --delay).
        #[arg(long, default_value = "0")]
        jitter: String,
        /// Seeds the jitter, so that a run can be replayed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run one simulated node: CometBFT-style `/status` plus `/sim/*` controls. By default an
    /// API node turned on and off over `POST /sim/produce`; with --sign-while-running a
    /// validator shaped like a real one.
    SimNode {
        /// Where to serve HTTP (loopback), e.g. 127.0.0.1:26657.
        #[arg(long)]
        listen: String,
        /// The shared signature ledger to append to.
        #[arg(long)]
        ledger: PathBuf,
        /// The member whose node this is.
        #[arg(long)]
        member: String,
        /// The signing key's name.
        #[arg(long, default_value = "validator")]
        key: String,
        #[arg(long, default_value = "sim")]
        chain_id: String,
        /// Block interval, such as 1s or 500ms.
        #[arg(long, default_value = "1s")]
        block_interval: String,
        /// Record here when this node could sign (turned on and off, or with --sign-while-running
        /// its start and pid): the S1 evidence of the tests and the chaos suite.
        #[arg(long)]
        activations: Option<PathBuf>,
        /// Signer mode: listen here (ip:port) for the remote signer, as a CometBFT node's
        /// priv_validator_laddr, and ask it for a precommit at each height.
        #[arg(long, conflicts_with = "sign_while_running")]
        privval_listen: Option<String>,
        /// Sign every new height the sentry (--follow) reports, from the moment this process
        /// starts until it dies: no deadline, no on/off control, as a real validator. Records an
        /// activation with its pid in --activations.
        #[arg(long, requires = "follow")]
        sign_while_running: bool,
        /// The sentry to follow (an always-on sim-node's URL, such as http://127.0.0.1:26657).
        #[arg(long, requires = "sign_while_running")]
        follow: Option<String>,
        /// CometBFT-style home: read config/priv_validator_key.json once at start (refusing to
        /// start without it) and sign only above data/priv_validator_state.json, rewriting it
        /// after each signature. Without it, only heights that begin after the start are signed.
        #[arg(long, requires = "sign_while_running")]
        home: Option<PathBuf>,
    },
}

/// Sets up tracing on stderr in the chosen format; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: journald, log files and collectors get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a parsed command line.
pub fn run(args: Args) -> ExitCode {
    init_logging(args.log_format);
    let command = match (args.command, args.config) {
        (Some(c), None) => c,
        (None, Some(config)) => Command::Run { config, rejoin: false },
        (Some(_), Some(_)) => return usage_error("--config goes with `run` or alone, not with another subcommand"),
        (None, None) => {
            return usage_error("nothing to do: give --config FILE to run a member, or a subcommand (see --help)");
        }
    };
    match command {
        Command::Run { config, rejoin } => run_member(&config, rejoin),
        Command::CheckConfig { file } => check_config(&file),
        Command::CheckLedger { file, json } => check_ledger(&file, json),
        Command::Coordinator { config, rejoin } => coordinator(&config, rejoin),
        Command::Demo { members, duration, faults, json, mode, keep } => {
            demo(members, &duration, &faults, json, mode == "signer", keep)
        }
        Command::Tls { command } => tls::run(command),
        Command::Keeper { spec } => keeper(&spec),
        Command::DelayProxy { listen, upstream, delay, jitter, seed } => {
            crate::sim::lab::delay_proxy::main(&crate::sim::lab::delay_proxy::ProxyFlags {
                listen,
                upstream,
                delay,
                jitter,
                seed,
            })
        }
        Command::SimNode {
            listen,
            ledger,
            member,
            key,
            chain_id,
            block_interval,
            activations,
            privval_listen,
            sign_while_running: _,
            follow,
            home,
        } => sim_node(SimNodeArgs {
            listen,
            ledger,
            member,
            key,
            chain_id,
            block_interval,
            activations,
            privval_listen,
            follow,
            home,
        }),
    }
}

/// `failoverd keeper --spec JSON`: runs the keeper until the node it holds is stopped.
fn keeper(spec: &str) -> ExitCode {
    match serde_json::from_str::<crate::keeper::KeeperSpec>(spec) {
        Ok(spec) => ExitCode::from(crate::keeper::process::run(spec)),
        Err(e) => usage_error(format!("keeper: --spec is not a keeper spec: {e}")),
    }
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// `failoverd check-config FILE`: every problem at once, one line each on stderr, exit 2; or
/// the effective settings on stdout, exit 0.
pub fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load_for_member(file) {
        Ok(config) => {
            let base = crate::config::paths::base_dir(file)
                .map_or_else(|_| "its directory".into(), |d| d.display().to_string());
            println!(
                "# The effective settings of {}: defaults filled in, relative paths resolved against {base},\n\
                 # and only the settings the chosen coordinator, chain and producer kinds use.",
                file.display()
            );
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => config_error(&e),
    }
}

/// Prints a config error, one line per problem, and says when checking stopped before the
/// settings and files: a file that does not parse has nothing else to check yet.
fn config_error(e: &crate::config::ConfigError) -> ExitCode {
    for line in e.to_string().lines() {
        eprintln!("error: {line}");
    }
    if let crate::config::ConfigError::Unparsed { file, .. } = e {
        eprintln!(
            "note: {} could not be parsed, so checking stopped there: no other setting and no file it names was checked; fix the line above and run `failoverd check-config {}` again",
            file.display(),
            file.display()
        );
    }
    ExitCode::from(EXIT_USAGE)
}

/// `failoverd check-ledger FILE`: exit 1 when S2 is violated.
pub fn check_ledger(file: &std::path::Path, json: bool) -> ExitCode {
    let records = match ledger::read(file) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let report = checker::check(&records);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return usage_error(format!("cannot render the report as JSON: {e}")),
        }
    } else {
        print!("{report}");
    }
    if report.is_safe() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_VIOLATION) }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    runtime_with_workers(2)
}

/// A member's runtime: one worker. A member waits far more than it computes, and its tasks
/// (loop, store, raft node, peer streams) hand work to each other many times a second; with a
/// second worker most of those hand-offs wake the other thread, which costs more than the work
/// (docs/design.md §7, "The daemon loop"). What must not wait behind it runs on threads of its
/// own: the signer's connections (a signature inside a reserved window never touches the
/// runtime), the self-fence deadline, the keeper (a process).
fn member_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    runtime_with_workers(1)
}

fn runtime_with_workers(workers: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn demo(members: usize, duration: &str, faults: &[String], json: bool, signer: bool, keep: bool) -> ExitCode {
    let duration = match duration_text::parse(duration) {
        Ok(d) if d >= Duration::from_secs(10) => d,
        Ok(_) => return usage_error("--duration: expected at least 10s"),
        Err(e) => return usage_error(format!("--duration: {e}")),
    };
    let faults = match faults.iter().filter(|f| !f.is_empty()).map(|f| f.parse()).collect::<Result<Vec<_>, _>>() {
        Ok(f) => f,
        Err(e) => return usage_error(format!("--faults: {e}")),
    };
    if !(3..=7).contains(&members) {
        return usage_error("--members: expected 3 to 7 (all producers but the last, a witness)");
    }
    ExitCode::from(crate::demo::run(&crate::demo::DemoOptions { members, duration, faults, json, signer, keep }))
}

/// Loads a member's config with every check `check-config` makes, so a member never starts
/// with a key or a TLS file that check-config would refuse.
fn load_or_exit(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load_for_member(path).map_err(|e| config_error(&e))
}

/// Loads the config and this member's own entry, for the subcommands that run a member.
fn load_member(path: &std::path::Path) -> Result<(Config, crate::config::MemberConfig), ExitCode> {
    let config = load_or_exit(path)?;
    match config.me().cloned() {
        Some(me) => Ok((config, me)),
        None => Err(usage_error(format!("{}: member {} is not among [[members]]", path.display(), config.member))),
    }
}

/// Binds this member's peer service: on `peer_listen` when set, else on its own peer address.
async fn bind_peer(config: &Config, me: &crate::config::MemberConfig) -> Result<TcpListener, ExitCode> {
    let (bind, field) = match &config.peer_listen {
        Some(listen) => (listen.0.to_string(), "peer_listen".to_string()),
        None => {
            (format!("{}:{}", me.peer_address.host, me.peer_address.port), format!("members[{}].peer_address", me.id))
        }
    };
    TcpListener::bind(&bind).await.map_err(|e| usage_error(format!("cannot listen on {bind} ({field}): {e}")))
}

/// Starts a runtime, binds this member's peer address, and runs `body` with the listener.
///
/// `body` runs as a task on the runtime's worker, not on this thread: a member's loop talks to
/// its tasks (store, node, producer) many times a second, and every wake-up across the
/// `block_on` thread and a worker costs a thread switch each way (docs/design.md §7, "The daemon loop").
fn with_peer_listener<F, Fut>(config: Config, me: crate::config::MemberConfig, body: F) -> ExitCode
where
    F: FnOnce(Config, crate::config::MemberConfig, TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ExitCode> + Send + 'static,
{
    let runtime = match member_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let member = tokio::spawn(async move {
            match bind_peer(&config, &me).await {
                Ok(listener) => body(config, me, listener).await,
                Err(code) => code,
            }
        });
        match member.await {
            Ok(code) => code,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                eprintln!("error: the member's task ended without an answer: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `failoverd run --config FILE`: the whole member.
fn run_member(path: &std::path::Path, rejoin: bool) -> ExitCode {
    let (config, me) = match load_member(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    with_peer_listener(config, me, move |config, me, listener| async move {
        // Every socket is bound before the member starts: a bind failure is a start-up error.
        let listeners = match crate::daemon::Listeners::bind(&config, listener).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::terminated().await;
            on_signal.cancel();
        });
        tracing::info!(member = %config.member, peer_address = %me.peer_address, "failoverd member starting");
        match crate::daemon::run(
            config,
            crate::daemon::RunOptions { rejoin, abort_on_panic: true },
            listeners,
            shutdown,
        )
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `failoverd coordinator --config FILE`: one raft member, no producer.
fn coordinator(path: &std::path::Path, rejoin: bool) -> ExitCode {
    use crate::config::Backend;
    use crate::coord::StartOptions;
    let (config, me) = match load_member(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if config.coordinator.backend != Backend::Raft {
        return usage_error(format!("{}: coordinator.backend is not \"raft\"; nothing to run", path.display()));
    }
    with_peer_listener(config, me, move |config, me, listener| async move {
        crate::panic_hook::abort_after_fencing(Vec::new(), Duration::ZERO);
        let node = match crate::coord::start(&config, listener, StartOptions { rejoin, test_hooks: false }).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(member = %config.member, peer_address = %me.peer_address, "raft member running");
        crate::signal::terminated().await;
        node.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// `failoverd sim-node`'s arguments, as given.
struct SimNodeArgs {
    listen: String,
    ledger: PathBuf,
    member: String,
    key: String,
    chain_id: String,
    block_interval: String,
    activations: Option<PathBuf>,
    privval_listen: Option<String>,
    /// With --sign-while-running (clap requires the two together).
    follow: Option<String>,
    home: Option<PathBuf>,
}

/// A simulated node ready to serve: an API node or a sign-while-running validator.
enum SimServer {
    Api(SimNode),
    Validator(crate::sim::validator::Validator),
}

fn sim_node(args: SimNodeArgs) -> ExitCode {
    let listen: ListenAddress = match args.listen.parse() {
        Ok(a) => a,
        Err(e) => return usage_error(format!("--listen: {e}")),
    };
    let server = match sim_server(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen.0).await {
            Ok(l) => l,
            Err(e) => return usage_error(format!("cannot listen on {listen}: {e}")),
        };
        // Bound before the address line, so that whoever reads it knows every port is served.
        let privval = match &server {
            SimServer::Api(node) => match node.bind_privval() {
                Ok(p) => p,
                Err(e) => return usage_error(format!("--privval-listen: cannot listen: {e}")),
            },
            SimServer::Validator(_) => None,
        };
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::terminated().await;
            on_signal.cancel();
        });
        // Tests and scripts bind port 0 and read the real address from this line.
        match listener.local_addr() {
            Ok(addr) => println!("listening {addr}"),
            Err(e) => return usage_error(format!("cannot read the bound address: {e}")),
        }
        tracing::info!(%listen, "simulated node serving");
        let served = match server {
            SimServer::Api(node) => node.serve(listener, privval, shutdown).await,
            SimServer::Validator(v) => v.serve(listener, shutdown).await,
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: simulated node stopped: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Checks the arguments and makes the node; a validator reads its key and state here, and
/// records its activation.
fn sim_server(args: SimNodeArgs) -> Result<SimServer, ExitCode> {
    let privval_listen = match args.privval_listen.as_deref().map(str::parse::<ListenAddress>).transpose() {
        Ok(a) => a.map(|a| a.0),
        Err(e) => return Err(usage_error(format!("--privval-listen: {e}"))),
    };
    let member = MemberId::new(&args.member).map_err(|e| usage_error(format!("--member: {e}")))?;
    let key = KeyId::new(&args.key).map_err(|e| usage_error(format!("--key: {e}")))?;
    let block_interval = match duration_text::parse(&args.block_interval) {
        Ok(d) if d >= Duration::from_millis(10) => d,
        Ok(_) => return Err(usage_error("--block-interval: expected at least 10ms")),
        Err(e) => return Err(usage_error(format!("--block-interval: {e}"))),
    };
    let node = SimNodeConfig {
        chain_id: args.chain_id,
        member,
        key,
        block_interval,
        ledger: args.ledger,
        activations: args.activations,
        privval_listen,
    };
    let Some(follow) = args.follow else {
        return SimNode::new(node).map(SimServer::Api).map_err(usage_error);
    };
    let follow = match follow.parse::<crate::config::HttpUrl>() {
        Ok(u) => u.0,
        Err(e) => return Err(usage_error(format!("--follow: {e}"))),
    };
    let config = crate::sim::validator::ValidatorConfig { node, follow, home: args.home };
    crate::sim::validator::Validator::start(config).map(SimServer::Validator).map_err(usage_error)
}
