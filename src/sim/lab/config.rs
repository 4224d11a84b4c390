//! A lab member's config file, written from typed parts: the same text for the demo, the tests
//! and the chaos suite, so that a lab member is configured the way an operator's is.
//!
//! It only renders text: it never writes a file, picks a port or starts anything. The text it
//! renders is parsed by the member like any operator's file, so a mistake here is a start-up
//! error of that member, never a silent default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::TlsConfig;

use super::validator::{ValidatorCommand, ValidatorKind};

/// The timings a lab's members run with, each written into every member's config.
#[derive(Clone, Debug)]
pub struct Timings {
    /// The simulated chain's block interval.
    pub block: Duration,
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub safety_margin: Duration,
    pub call_timeout: Duration,
    /// `[coordinator.raft]`.
    pub tick: Duration,
    pub election_ticks: u32,
    pub cooldown: Duration,
    pub priority_delay: Duration,
    pub max_lag_on_failover: u64,
    pub floor_margin: u64,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub unhealthy_after: u32,
    pub max_lag: u64,
    pub stall_after: Duration,
    pub fence_timeout: Duration,
}

impl Timings {
    /// `failoverd demo`'s: 500 ms blocks and a 2 s lease, slow enough to watch.
    pub fn demo() -> Timings {
        Timings {
            block: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(2),
            renew_interval: Duration::from_millis(500),
            safety_margin: Duration::from_millis(300),
            call_timeout: Duration::from_millis(800),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            cooldown: Duration::from_secs(5),
            priority_delay: Duration::from_secs(1),
            max_lag_on_failover: 2,
            floor_margin: 1,
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(400),
            unhealthy_after: 3,
            max_lag: 5,
            stall_after: Duration::from_secs(2),
            fence_timeout: Duration::from_secs(1),
        }
    }

    /// The integration tests': 200 ms blocks and a 1 s lease, so that a failover takes a second
    /// or two.
    pub fn tests() -> Timings {
        Timings {
            block: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(1),
            renew_interval: Duration::from_millis(250),
            safety_margin: Duration::from_millis(200),
            call_timeout: Duration::from_millis(400),
            tick: Duration::from_millis(50),
            election_ticks: 10,
            cooldown: Duration::from_secs(1),
            priority_delay: Duration::from_millis(300),
            max_lag_on_failover: 2,
            floor_margin: 1,
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(150),
            unhealthy_after: 3,
            max_lag: 5,
            stall_after: Duration::from_millis(700),
            fence_timeout: Duration::from_millis(500),
        }
    }

    /// These timings with blocks every `block`, and the stall limit three and a half blocks.
    pub fn with_block(self, block: Duration) -> Timings {
        Timings { block, stall_after: block * 7 / 2, ..self }
    }

    /// The longest a raft election may take: two randomized election timeouts.
    pub fn election(&self) -> Duration {
        self.tick * self.election_ticks * 2
    }
}

/// Where the members keep the lease.
#[derive(Clone, Debug)]
pub enum Store {
    /// The embedded raft quorum of the members.
    Raft,
    /// Consul: member `i` talks to the agent at `agents[i]`, under the prefix `lab`.
    Consul { agents: Vec<String>, check_ttl: Duration, lock_delay: Duration },
}

/// One member as every member's `[[members]]` lists it.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: String,
    /// `host:port` of its peer listener.
    pub address: String,
    /// A producer, or else a witness.
    pub producer: bool,
    pub priority: u32,
}

impl Peer {
    /// The labs' cluster: the first member a producer of priority 200, then producers of
    /// priority 100, the last one a witness (of priority 100).
    pub fn cluster(ids: &[&str], addresses: &[String]) -> Vec<Peer> {
        ids.iter()
            .zip(addresses)
            .enumerate()
            .map(|(j, (id, address))| Peer {
                id: id.to_string(),
                address: address.clone(),
                producer: j + 1 < ids.len(),
                priority: if j == 0 { 200 } else { 100 },
            })
            .collect()
    }
}

/// `[metrics]`.
#[derive(Clone, Debug)]
pub enum Metrics {
    Disabled,
    /// Served on `host:port`.
    Listen(String),
}

/// The simulated node a member's daemon runs inside itself (`[chain.sim]`).
#[derive(Clone, Debug)]
pub struct SimChain {
    pub ledger: PathBuf,
    /// Signer mode: where the node listens for its member's remote signer.
    pub privval_listen: Option<String>,
}

/// `[chain]`: the node a producer's daemon probes.
#[derive(Clone, Debug)]
pub struct Chain {
    /// Its `http://host:port`.
    pub rpc: String,
    pub reference_rpcs: Vec<String>,
    /// Run the node inside the daemon; `None` when it is a process of its own.
    pub sim: Option<SimChain>,
}

/// `[producer]`.
#[derive(Clone, Debug)]
pub enum Producer {
    /// `cometbft-filepv` or `process`: the daemon starts a real-shaped validator.
    Validator(ValidatorCommand),
    /// `cometbft-signer`: the daemon is the remote signer of the node at `node_address`, whose
    /// SecretConnection id is `node_id`.
    Signer { key_file: PathBuf, node_id: String, node_address: String },
}

/// Everything one member's config says.
#[derive(Clone, Debug)]
pub struct MemberConfig<'a> {
    pub id: &'a str,
    /// This member's index in `peers` (and in a Consul store's agents).
    pub index: usize,
    pub data_dir: &'a Path,
    pub peers: &'a [Peer],
    pub timings: &'a Timings,
    pub store: &'a Store,
    pub socket: &'a Path,
    pub metrics: Metrics,
    pub tls: Option<&'a TlsConfig>,
    pub chain: Option<Chain>,
    pub producer: Option<Producer>,
}

/// A TOML string.
fn q(text: impl std::fmt::Display) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A TOML duration in milliseconds: the coordinator's timings, as the labs have always written
/// them (tests find and change them by their text, e.g. `lease_ttl = "1000ms"`).
fn ms(t: Duration) -> String {
    format!("\"{}ms\"", t.as_millis())
}

/// A TOML duration in failoverd's words: "2s" when whole seconds, else "250ms".
fn d(t: Duration) -> String {
    match t.subsec_millis() {
        0 => format!("\"{}s\"", t.as_secs()),
        _ => format!("\"{}ms\"", t.as_millis()),
    }
}

impl MemberConfig<'_> {
    /// The config file's text.
    pub fn render(&self) -> String {
        let mut text = format!("member = {}\ndata_dir = {}\n", q(self.id), q(self.data_dir.display()));
        for p in self.peers {
            text.push_str(&format!(
                "[[members]]\nid = {}\npeer_address = {}\nkind = \"{}\"\npriority = {}\n",
                q(&p.id),
                q(&p.address),
                if p.producer { "producer" } else { "witness" },
                p.priority
            ));
        }
        text.push_str(&self.coordination());
        if let Some(chain) = &self.chain {
            text.push_str(&self.chain(chain));
        }
        if let Some(producer) = &self.producer {
            text.push_str(&self.producer(producer));
        }
        if let Some(tls) = self.tls {
            text.push_str(&format!(
                "[tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
                q(tls.ca_file.display()),
                q(tls.cert_file.display()),
                q(tls.key_file.display())
            ));
        }
        text
    }

    /// `[coordinator]`, `[failover]`, `[api]` and `[metrics]`.
    fn coordination(&self) -> String {
        let t = self.timings;
        let backend = match self.store {
            Store::Raft => "",
            Store::Consul { .. } => "backend = \"consul\"\n",
        };
        let mut text = format!(
            "[coordinator]\n{backend}lease_ttl = {}\nrenew_interval = {}\nsafety_margin = {}\ncall_timeout = {}\n\
             [coordinator.raft]\ntick = {}\nelection_ticks = {}\n\
             [failover]\ncooldown = {}\npriority_delay = {}\nmax_lag_on_failover = {}\nfloor_margin = {}\n\
             [api]\nsocket = {}\n",
            ms(t.lease_ttl),
            ms(t.renew_interval),
            ms(t.safety_margin),
            ms(t.call_timeout),
            d(t.tick),
            t.election_ticks,
            d(t.cooldown),
            d(t.priority_delay),
            t.max_lag_on_failover,
            t.floor_margin,
            q(self.socket.display()),
        );
        text.push_str(&match &self.metrics {
            Metrics::Disabled => "[metrics]\nenabled = false\n".to_string(),
            Metrics::Listen(addr) => format!("[metrics]\nlisten = {}\n", q(addr)),
        });
        if let Store::Consul { agents, check_ttl, lock_delay } = self.store {
            let agent = agents.get(self.index).map_or("", String::as_str);
            text.push_str(&format!(
                "[coordinator.consul]\naddress = {}\nprefix = \"lab\"\ncheck_ttl = {}\nlock_delay = {}\n",
                q(agent),
                d(*check_ttl),
                d(*lock_delay)
            ));
        }
        text
    }

    fn chain(&self, chain: &Chain) -> String {
        let t = self.timings;
        let references: Vec<String> = chain.reference_rpcs.iter().map(q).collect();
        let mut text = format!(
            "[chain]\nkind = \"sim\"\nrpc = {}\nreference_rpcs = [{}]\nprobe_interval = {}\nprobe_timeout = {}\n\
             unhealthy_after = {}\nmax_lag = {}\nstall_after = {}\n",
            q(&chain.rpc),
            references.join(", "),
            d(t.probe_interval),
            d(t.probe_timeout),
            t.unhealthy_after,
            t.max_lag,
            d(t.stall_after),
        );
        if let Some(sim) = &chain.sim {
            text.push_str(&format!(
                "[chain.sim]\nledger = {}\nblock_interval = {}\n",
                q(sim.ledger.display()),
                d(t.block)
            ));
            if let Some(listen) = &sim.privval_listen {
                text.push_str(&format!("privval_listen = {}\n", q(listen)));
            }
        }
        text
    }

    fn producer(&self, producer: &Producer) -> String {
        let fence = d(self.timings.fence_timeout);
        match producer {
            Producer::Signer { key_file, node_id, node_address } => format!(
                "[producer]\nkind = \"cometbft-signer\"\nkey_file = {}\nchain_id = \"sim\"\n\
                 priv_validator_laddr = {}\nfence_timeout = {fence}\n",
                q(key_file.display()),
                q(format!("tcp://{node_id}@{node_address}")),
            ),
            Producer::Validator(validator) => {
                let command = toml::Value::Array(validator.argv().into_iter().map(toml::Value::String).collect());
                match &validator.kind {
                    ValidatorKind::FilePv { key_file } => format!(
                        "[producer]\nkind = \"cometbft-filepv\"\nkey_file = {}\nhome = {}\ncommand = {command}\n\
                         fence_timeout = {fence}\n",
                        q(key_file.display()),
                        q(validator.home.display()),
                    ),
                    ValidatorKind::Process => {
                        format!("[producer]\nkind = \"process\"\ncommand = {command}\nfence_timeout = {fence}\n")
                    }
                }
            }
        }
    }
}

/// A single-validator member config `text`, as [`MemberConfig::render`] writes it, split into
/// what every validator of a `[[validators]]` config shares and this validator's own `[chain]`,
/// `[chain.*]` and `[producer]` tables, renamed as a `[[validators]]` entry's
/// (`[validators.chain]`, …): the labs that serve several validators are configured from the one
/// renderer.
pub fn split_validator_tables(text: &str) -> (String, String) {
    let (mut shared, mut own) = (String::new(), String::new());
    let mut in_own = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_own = ["[chain]", "[chain.", "[producer]"].iter().any(|h| line.starts_with(h));
        }
        let out = if in_own { &mut own } else { &mut shared };
        match line.strip_prefix('[') {
            Some(rest) if in_own => out.push_str(&format!("[validators.{rest}\n")),
            _ => out.push_str(&format!("{line}\n")),
        }
    }
    (shared, own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(store: &Store, producer: Option<Producer>) -> crate::config::Config {
        let dir = Path::new("/tmp/lab");
        let peers =
            Peer::cluster(&["a", "b", "c"], &["127.0.0.1:1".into(), "127.0.0.1:2".into(), "127.0.0.1:3".into()]);
        let timings = Timings::tests();
        let tls = TlsConfig {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("member-a.pem"),
            key_file: dir.join("member-a.key"),
        };
        let text = MemberConfig {
            id: "a",
            index: 0,
            data_dir: &dir.join("data-a"),
            peers: &peers,
            timings: &timings,
            store,
            socket: &dir.join("a.sock"),
            metrics: Metrics::Listen("127.0.0.1:9".into()),
            tls: Some(&tls),
            chain: Some(Chain { rpc: "http://127.0.0.1:4".into(), reference_rpcs: vec![], sim: None }),
            producer,
        }
        .render();
        crate::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"))
    }

    #[test]
    fn a_rendered_member_config_parses_with_every_timing_the_lab_chose() {
        let producer = Producer::Signer {
            key_file: "/tmp/lab/key.json".into(),
            node_id: crate::sim::privval_node::node_id().to_string(),
            node_address: "127.0.0.1:5".into(),
        };
        let config = render(&Store::Raft, Some(producer));
        let t = Timings::tests();
        assert_eq!(config.members.len(), 3);
        assert_eq!(config.coordinator.lease_ttl, t.lease_ttl);
        assert_eq!(config.failover.cooldown, t.cooldown);
    }

    #[test]
    fn a_consul_lab_member_names_its_own_agent() {
        let store = Store::Consul {
            agents: vec!["http://127.0.0.1:8501".into(), "http://127.0.0.1:8502".into()],
            check_ttl: Duration::from_secs(2),
            lock_delay: Duration::from_secs(2),
        };
        let validator = ValidatorCommand {
            exe: "/bin/failoverd".into(),
            kind: ValidatorKind::Process,
            forking: true,
            sentry: "http://127.0.0.1:4".into(),
            home: "/tmp/lab/home-a".into(),
            member: "a".into(),
            ledger: "/tmp/lab/ledger.jsonl".into(),
            activations: "/tmp/lab/activations-a.jsonl".into(),
            block: Duration::from_millis(200),
        };
        let config = render(&store, Some(Producer::Validator(validator)));
        assert_eq!(config.coordinator.consul.address.to_string(), "http://127.0.0.1:8501", "member a talks to agent 0");
    }

    #[test]
    fn a_rendered_config_splits_into_shared_tables_and_a_validators_entry() {
        let producer = Producer::Signer {
            key_file: "/tmp/lab/key.json".into(),
            node_id: crate::sim::privval_node::node_id().to_string(),
            node_address: "127.0.0.1:5".into(),
        };
        let single = render(&Store::Raft, Some(producer)).to_toml();
        let (shared, own) = split_validator_tables(&single);
        let text = format!("{shared}[[validators]]\nid = \"x\"\n{own}");
        let config = crate::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let (_, effective) = config.validator_configs().pop().expect("one validator");
        let alone = crate::config::Config::parse(&single).expect("parses");
        assert_eq!((effective.chain, effective.producer), (alone.chain, alone.producer));
    }
}
