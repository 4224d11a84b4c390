//! The lab's network: either one network namespace per member, each joined by a veth pair to a
//! bridge in a namespace of its own, with nftables rules inside a member's namespace to cut,
//! thin or flap its link; or, without root, plain loopback with no network faults at all.
//!
//! Every address lives inside the namespaces this module creates; nothing is added to the host's
//! namespace. Besides the members, a scenario may ask for an outsider: a host on the same bridge
//! that is no member (the rogue peer's). Names carry the runner's pid, so a later run can tell a leftover of a dead runner
//! from a lab in use and remove it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const NS_PREFIX: &str = "fochaos";
/// The member side of each veth pair, inside the member's namespace.
const LINK: &str = "eth0";
pub const PEER_PORT: u16 = 7100;
/// With a WAN: inside member `i`'s namespace, 127.0.0.1:`PROXY_PORT + j` is the delay proxy that
/// carries `i`'s connections to member `j`.
pub const PROXY_PORT: u16 = 7200;
/// Inside a member's namespace, validator `k`'s node listens at `NODE_PORT + 2k` and, in signer
/// mode, for its remote signer at `NODE_PORT + 2k + 1` (`k` = 0: the lab's first validator).
pub const NODE_PORT: u16 = 26657;
/// Where each member's daemon serves `/metrics`, inside its namespace.
pub const METRICS_PORT: u16 = 9464;
/// The outsider's address on the lab's bridge: a host that is no member (see
/// [`Net::spawn_outsider`]).
const OUTSIDER_IP: &str = "10.77.0.99";

/// What to do to a member's link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinkFault {
    /// Drop everything in both directions.
    Cut,
    /// Drop what arrives; what the member sends still goes out.
    DropIncoming,
    /// Drop what the member sends; what arrives still comes in.
    DropOutgoing,
    /// Drop this percentage of packets in each direction, at random.
    Loss(u8),
}

pub enum Net {
    /// Every port by member; the node and privval ports by validator, then by member.
    Loopback {
        peer_ports: Vec<u16>,
        node_ports: Vec<Vec<u16>>,
        privval_ports: Vec<Vec<u16>>,
        metrics_ports: Vec<u16>,
    },
    Namespaces(Namespaces),
}

pub struct Namespaces {
    /// The runner's pid and the lab's tag, that every name here starts with.
    prefix: String,
    bridge: String,
    members: Vec<String>,
    /// A namespace on the bridge that is no member's, made when first asked for.
    outsider: Option<String>,
    connectors: Vec<mpsc::Sender<(SocketAddr, mpsc::Sender<io::Result<TcpStream>>)>>,
}

/// Runs `ip`/`nft` style commands, failing with what the command printed.
pub fn sh(program: &str, args: &[&str]) -> io::Result<()> {
    sh_input(program, args, None)
}

fn sh_input(program: &str, args: &[&str], input: Option<&str>) -> io::Result<()> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            input.map(|t| format!("\n{t}")).unwrap_or_default()
        )))
    }
}

/// Whether this process may build namespaces: root, with `ip` and `nft` installed.
pub fn namespaces_available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err()
            && Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err()
        {
            return Err(format!("`{tool}` is not installed (Debian packages iproute2 and nftables)"));
        }
    }
    Ok(())
}

/// Removes namespaces left by runners that are no longer alive (killed with SIGKILL, say).
pub fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(&format!("{NS_PREFIX}-")) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sh("ip", &["netns", "del", &name]);
        }
    }
}

impl Namespaces {
    /// Builds a bridge namespace and one namespace per member, member `i` at 10.77.0.(i+1)/24.
    pub fn create(tag: &str, members: &[&str]) -> io::Result<Namespaces> {
        let prefix = format!("{NS_PREFIX}-{}-{tag}", std::process::id());
        let bridge = format!("{prefix}-br");
        let mut ns =
            Namespaces { prefix, bridge: bridge.clone(), members: Vec::new(), outsider: None, connectors: Vec::new() };
        sh("ip", &["netns", "add", &bridge])?;
        sh("ip", &["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &bridge, "link", "set", "br0", "up"])?;
        for (i, m) in members.iter().enumerate() {
            let name = format!("{}-{m}", ns.prefix);
            sh("ip", &["netns", "add", &name])?;
            ns.members.push(name.clone());
            ns.attach(&name, &format!("v{i}"), &Self::ip(i))?;
            ns.connectors.push(connector(&name)?);
        }
        Ok(ns)
    }

    /// Joins namespace `name` to the bridge by a veth pair (`side` on the bridge), at `ip`.
    fn attach(&self, name: &str, side: &str, ip: &str) -> io::Result<()> {
        let bridge = self.bridge.as_str();
        sh("ip", &["link", "add", side, "netns", bridge, "type", "veth", "peer", "name", LINK, "netns", name])?;
        sh("ip", &["-n", bridge, "link", "set", side, "master", "br0", "up"])?;
        sh("ip", &["-n", name, "addr", "add", &format!("{ip}/24"), "dev", LINK])?;
        sh("ip", &["-n", name, "link", "set", LINK, "up"])?;
        sh("ip", &["-n", name, "link", "set", "lo", "up"])
    }

    /// The outsider's namespace: on the bridge at [`OUTSIDER_IP`], reaching every member's peer
    /// port as any other host on their network would. Made on first use.
    fn outsider(&mut self) -> io::Result<String> {
        if let Some(name) = &self.outsider {
            return Ok(name.clone());
        }
        let name = format!("{}-outsider", self.prefix);
        sh("ip", &["netns", "add", &name])?;
        self.outsider = Some(name.clone());
        self.attach(&name, "vx", OUTSIDER_IP)?;
        Ok(name)
    }

    pub fn ip(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i]
    }

    /// Replaces member `i`'s rules with `faults` (none: the link is whole again).
    pub fn set_link(&self, i: usize, fault: Option<LinkFault>) -> io::Result<()> {
        let (input, output) = match fault {
            None => (String::new(), String::new()),
            Some(LinkFault::Cut) => (format!("iifname \"{LINK}\" drop"), format!("oifname \"{LINK}\" drop")),
            Some(LinkFault::DropIncoming) => (format!("iifname \"{LINK}\" drop"), String::new()),
            Some(LinkFault::DropOutgoing) => (String::new(), format!("oifname \"{LINK}\" drop")),
            Some(LinkFault::Loss(p)) => (
                format!("iifname \"{LINK}\" numgen random mod 100 < {p} drop"),
                format!("oifname \"{LINK}\" numgen random mod 100 < {p} drop"),
            ),
        };
        let script = format!(
            "add table inet chaos\ndelete table inet chaos\ntable inet chaos {{\n\
             chain input {{\n type filter hook input priority 0; policy accept;\n {input}\n }}\n\
             chain output {{\n type filter hook output priority 0; policy accept;\n {output}\n }}\n}}\n"
        );
        sh_input("ip", &["netns", "exec", &self.members[i], "nft", "-f", "-"], Some(&script))
    }

    /// A TCP connection made from inside member `i`'s namespace.
    pub fn connect(&self, i: usize, addr: SocketAddr) -> io::Result<TcpStream> {
        let (tx, rx) = mpsc::channel();
        self.connectors[i].send((addr, tx)).map_err(|_| io::Error::other("namespace connector stopped"))?;
        rx.recv_timeout(Duration::from_secs(2)).map_err(|_| io::Error::other("namespace connector did not answer"))?
    }

    /// Deletes every namespace; the veths, rules and sockets inside go with them.
    pub fn remove(&mut self) {
        self.connectors.clear();
        let bridge = std::mem::take(&mut self.bridge);
        let outsider = self.outsider.take();
        for name in self.members.drain(..).chain(outsider).chain(Some(bridge).filter(|b| !b.is_empty())) {
            if let Err(e) = sh("ip", &["netns", "del", &name]) {
                eprintln!("chaos: cannot remove namespace {name}: {e}");
            }
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `work` on a new thread named `thread`, inside namespace `name` when there is one: every
/// socket that thread creates belongs to that namespace.
fn spawn_inside<T: Send + 'static>(
    name: Option<&str>,
    thread: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
    let file = name.map(|n| std::fs::File::open(format!("/run/netns/{n}"))).transpose()?;
    std::thread::Builder::new().name(thread.to_string()).spawn(move || {
        if let Some(file) = file {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        }
        Ok(work())
    })
}

/// A thread that lives inside namespace `name` and opens connections for others: a socket
/// belongs to the namespace of the thread that created it, wherever it is used afterwards.
fn connector(name: &str) -> io::Result<mpsc::Sender<(SocketAddr, mpsc::Sender<io::Result<TcpStream>>)>> {
    let file = std::fs::File::open(format!("/run/netns/{name}"))?;
    let (tx, rx) = mpsc::channel::<(SocketAddr, mpsc::Sender<io::Result<TcpStream>>)>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new().name(format!("ns-{name}")).spawn(move || {
        let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
        let ok = entered.is_ok();
        let _ = ready_tx.send(entered);
        if !ok {
            return;
        }
        for (addr, reply) in rx {
            let _ = reply.send(TcpStream::connect_timeout(&addr, Duration::from_millis(500)));
        }
    })?;
    ready_rx.recv().map_err(|_| io::Error::other("namespace connector died"))??;
    Ok(tx)
}

impl Net {
    pub fn peer_addr(&self, i: usize) -> SocketAddr {
        match self {
            Net::Loopback { peer_ports, .. } => SocketAddr::from(([127, 0, 0, 1], peer_ports[i])),
            Net::Namespaces(_) => format!("{}:{PEER_PORT}", Namespaces::ip(i)).parse().expect("a literal address"),
        }
    }

    /// Where member `i`'s node of validator `k` (0: the lab's first) listens, as seen from
    /// inside the member's namespace.
    pub fn validator_node_addr(&self, i: usize, k: usize) -> SocketAddr {
        match self {
            Net::Loopback { node_ports, .. } => SocketAddr::from(([127, 0, 0, 1], node_ports[k][i])),
            Net::Namespaces(_) => SocketAddr::from(([127, 0, 0, 1], NODE_PORT + 2 * k as u16)),
        }
    }

    /// Signer mode: where member `i`'s node of validator `k` listens for its remote signer (the
    /// member's daemon, in the same namespace).
    pub fn validator_privval_addr(&self, i: usize, k: usize) -> SocketAddr {
        match self {
            Net::Loopback { privval_ports, .. } => SocketAddr::from(([127, 0, 0, 1], privval_ports[k][i])),
            Net::Namespaces(_) => SocketAddr::from(([127, 0, 0, 1], NODE_PORT + 2 * k as u16 + 1)),
        }
    }

    /// Where member `i`'s daemon serves `/metrics`, as seen from inside the member's namespace.
    pub fn metrics_addr(&self, i: usize) -> SocketAddr {
        match self {
            Net::Loopback { metrics_ports, .. } => SocketAddr::from(([127, 0, 0, 1], metrics_ports[i])),
            Net::Namespaces(_) => SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)),
        }
    }

    /// Runs `work` on a thread of its own as a host that is no member: on loopback, the
    /// runner's own; with namespaces, a namespace of its own on the members' bridge. The
    /// addresses it can reach are [`Net::peer_addr`]'s.
    pub fn spawn_outsider<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
        match self {
            Net::Loopback { .. } => spawn_inside(None, "outsider", work),
            Net::Namespaces(ns) => {
                let name = ns.outsider()?;
                spawn_inside(Some(&name), "outsider", work)
            }
        }
    }

    /// A command that runs `program` as member `i` (inside its namespace, if there are any).
    pub fn command(&self, i: usize, program: &Path) -> Command {
        match self {
            Net::Loopback { .. } => Command::new(program),
            Net::Namespaces(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name(i)]).arg(program);
                c
            }
        }
    }

    pub fn connect(&self, i: usize, addr: SocketAddr) -> io::Result<TcpStream> {
        match self {
            Net::Loopback { .. } => TcpStream::connect_timeout(&addr, Duration::from_millis(500)),
            Net::Namespaces(ns) => ns.connect(i, addr),
        }
    }

    pub fn set_link(&self, i: usize, fault: Option<LinkFault>) -> io::Result<()> {
        match self {
            Net::Loopback { .. } => Err(io::Error::other("network faults need the namespace lab (root)")),
            Net::Namespaces(ns) => ns.set_link(i, fault),
        }
    }
}
