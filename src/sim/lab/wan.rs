//! A lab's WAN setting: a round-trip time and jitter between every pair of members, made by one
//! delay proxy ([`super::delay_proxy`]) per directed link.
//!
//! With it, each member's config keeps its own peer address (it listens there) and names every
//! other member at a local proxy that forwards to that member's real address; the proxy runs
//! where the dialling member runs (in its network namespace, when the lab has them), so a fault
//! on a member's real link still cuts what the proxies carry. Members tell each other apart by
//! the member URI in their certificates, never by address, so TLS is unchanged.
//!
//! It plans the links, rewrites the member lists and runs the proxies' processes; it never
//! decides where a member's network is (the lab says where each proxy listens and how to start
//! a process as a member) and never stops a proxy because its member stopped: the proxies are
//! the network, and outlive the members they serve.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::config::Peer;
use super::delay_proxy::{Delay, FlagError, read_duration, show_duration};
use super::{LabError, Processes};

/// The longest round trip a lab takes: twice the proxy's longest one-way delay.
pub const MAX_RTT: Duration = Duration::from_secs(20);

/// The round trip between every pair of members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wan {
    /// What a message and its answer take together.
    pub rtt: Duration,
    /// The most a round trip is lengthened by, at random: each direction draws up to half.
    pub jitter: Duration,
}

impl Wan {
    /// Reads `--rtt` and `--rtt-jitter` (`flags` name them in the messages), refusing a round
    /// trip over [`MAX_RTT`] and a jitter over the round trip.
    pub fn parse(rtt: &str, jitter: &str, flags: (&'static str, &'static str)) -> Result<Wan, FlagError> {
        let rtt = read_duration(flags.0, rtt)?;
        let jitter = read_duration(flags.1, jitter)?;
        Delay::checked(rtt, jitter, flags, MAX_RTT)?;
        Ok(Wan { rtt, jitter })
    }

    /// What each direction of a link adds: half the round trip, up to half the jitter.
    pub fn one_way(&self) -> Delay {
        Delay { delay: self.rtt / 2, jitter: self.jitter / 2 }
    }

    /// "100ms RTT, jitter up to 10ms", for a run's header and report.
    pub fn describe(&self) -> String {
        match self.jitter.is_zero() {
            true => format!("{} RTT", show_duration(self.rtt)),
            false => format!("{} RTT, jitter up to {}", show_duration(self.rtt), show_duration(self.jitter)),
        }
    }
}

/// One directed link: a proxy in `from`'s network at `listen`, carrying `from`'s connections to
/// `to`'s real peer address `upstream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub from: usize,
    pub to: usize,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
}

/// Every directed link between `members` members.
#[derive(Clone, Debug)]
pub struct Links {
    members: usize,
    links: Vec<Link>,
}

impl Links {
    /// Plans a proxy for every ordered pair of members: `listen(from, to)` is where it listens
    /// (inside `from`'s network), `upstream(to)` the real peer address of `to`.
    pub fn plan(
        members: usize,
        mut listen: impl FnMut(usize, usize) -> Result<SocketAddr, LabError>,
        upstream: impl Fn(usize) -> SocketAddr,
    ) -> Result<Links, LabError> {
        let mut links = Vec::new();
        for from in 0..members {
            for to in (0..members).filter(|&to| to != from) {
                links.push(Link { from, to, listen: listen(from, to)?, upstream: upstream(to) });
            }
        }
        Ok(Links { members, links })
    }

    pub fn all(&self) -> &[Link] {
        &self.links
    }

    /// The links that carry member `from`'s connections.
    pub fn from(&self, from: usize) -> impl Iterator<Item = &Link> {
        self.links.iter().filter(move |l| l.from == from)
    }

    /// The members as member `i`'s config lists them: itself at its own address (where it
    /// listens), every other member at `i`'s proxy to it.
    pub fn peers_seen_by(&self, i: usize, peers: &[Peer]) -> Vec<Peer> {
        peers
            .iter()
            .enumerate()
            .map(|(j, p)| match self.links.iter().find(|l| l.from == i && l.to == j) {
                Some(link) => Peer { address: link.listen.to_string(), ..p.clone() },
                None => p.clone(),
            })
            .collect()
    }

    /// The process slot of `link` in [`Proxies`].
    fn slot(&self, link: &Link) -> usize {
        link.from * self.members + link.to
    }
}

/// The proxies' processes, one slot per directed link.
pub struct Proxies {
    links: Links,
    processes: Processes,
}

impl Proxies {
    pub fn new(links: Links) -> Proxies {
        let slots = links.members * links.members;
        Proxies { links, processes: Processes::new(slots) }
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Starts `link`'s proxy with `program` (the `failoverd` binary, run as the link's `from`
    /// member: inside its namespace, say), `wan`'s delay each way and its jitter seeded by
    /// `seed`; its stdout and stderr go where `program` says.
    pub fn start(
        &mut self,
        link: &Link,
        member: &str,
        mut program: Command,
        wan: &Wan,
        seed: u64,
    ) -> Result<(), LabError> {
        let slot = self.links.slot(link);
        program.args(wan.one_way().proxy_args(&link.listen.to_string(), link.upstream, seed)).stdin(Stdio::null());
        self.processes.start(slot, member, "a delay proxy", &mut program)
    }

    /// The links whose proxy has exited (each slot is then empty, ready for a new start), with
    /// their exit status.
    pub fn exited(&mut self) -> Vec<(Link, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for link in self.links.all().to_vec() {
            if let Some(status) = self.processes.exited(self.links.slot(&link)) {
                out.push((link, status));
            }
        }
        out
    }

    pub fn kill_all(&mut self) {
        self.processes.kill_all();
    }
}

/// Starts one proxy with `program` (the `failoverd` binary) on `listen` (port 0 picks one) to
/// `upstream`, and returns it with the address it announced. For labs and benchmarks that
/// pick no ports of their own. Its stderr goes where `program` says (inherited by default).
pub fn spawn_announced(
    mut program: Command,
    listen: &str,
    upstream: SocketAddr,
    delay: Delay,
    seed: u64,
) -> Result<(Child, SocketAddr), LabError> {
    let mut child = program
        .args(delay.proxy_args(listen, upstream, seed))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn { what: "a delay proxy", member: format!("to {upstream}"), source })?;
    let mut line = String::new();
    let announced = child.stdout.take().map(|out| BufReader::new(out).read_line(&mut line));
    let addr = match announced {
        Some(Ok(_)) => line.trim().strip_prefix("listening ").and_then(|a| a.parse().ok()),
        _ => None,
    };
    match addr {
        Some(addr) => Ok((child, addr)),
        None => {
            let _ = child.kill();
            let reason = match child.wait() {
                Ok(status) => format!("it ended ({status}); its errors went to its stderr"),
                Err(e) => format!("cannot wait for it: {e}"),
            };
            Err(LabError::ProxyAddress { upstream, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn each_member_names_the_others_at_its_own_proxies_and_itself_at_its_own_address() {
        let real = [addr(7100), addr(7200), addr(7300)];
        let links = Links::plan(3, |from, to| Ok(addr(9000 + (from * 10 + to) as u16)), |to| real[to]).expect("plan");
        assert_eq!(links.all().len(), 6, "one proxy per ordered pair");
        let peers = Peer::cluster(&["a", "b", "c"], &real.map(|a| a.to_string()));
        let seen = links.peers_seen_by(1, &peers);
        let addresses: Vec<&str> = seen.iter().map(|p| p.address.as_str()).collect();
        assert_eq!(addresses, ["127.0.0.1:9010", "127.0.0.1:7200", "127.0.0.1:9012"]);
        assert_eq!(
            seen.iter().map(|p| (p.producer, p.priority)).collect::<Vec<_>>(),
            [(true, 200), (true, 100), (false, 100)]
        );
        assert!(links.from(1).all(|l| l.upstream == real[l.to]));
    }

    #[test]
    fn a_wan_is_half_its_round_trip_each_way_and_refuses_absurd_values_by_flag() {
        let flags = ("--rtt", "--rtt-jitter");
        let wan = Wan::parse("25ms", "5ms", flags).expect("valid");
        assert_eq!(wan.one_way(), Delay { delay: Duration::from_micros(12_500), jitter: Duration::from_micros(2_500) });
        assert_eq!(wan.describe(), "25ms RTT, jitter up to 5ms");
        assert_eq!(Wan::parse("100ms", "0", flags).expect("valid").describe(), "100ms RTT");
        let refused = |rtt: &str, jitter: &str| Wan::parse(rtt, jitter, flags).expect_err("refused").to_string();
        assert!(refused("21s", "0").starts_with("--rtt: 21s is over the limit of 20s"), "{}", refused("21s", "0"));
        assert!(refused("50ms", "60ms").starts_with("--rtt-jitter: 60ms is more than --rtt 50ms"));
        assert!(refused("fast", "0").starts_with("--rtt: expected a duration"));
    }
}
