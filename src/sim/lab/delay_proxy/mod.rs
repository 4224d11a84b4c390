//! The WAN lab's delay proxy (`failoverd delay-proxy`, hidden): a TCP proxy that holds what it
//! carries for a one-way delay plus a random jitter in each direction, so that members on one
//! machine talk as if they were regions apart. Kernel netem is not available on the machines
//! the labs run on; this is the userspace stand-in, one process per directed link.
//!
//! It owns the proxy's settings and their checks ([`Delay`], [`ProxyFlags`]), the process's
//! entry point ([`main`]), and the carrying itself ([`serve`], in `carry`). It must never reorder
//! bytes (each chunk leaves at max(previous release, arrival + delay + jitter)), never hold more
//! than [`QUEUE_CHUNKS`] × [`CHUNK_BYTES`] per direction (a full queue stops reading, so the
//! sender feels TCP's back-pressure), and never wait on an upstream connect past
//! [`CONNECT_DEADLINE`]. Nothing here is used by a real deployment.

mod carry;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::duration_text;

pub use carry::serve;

/// The longest one-way delay the proxy accepts: a WAN link is tens to hundreds of
/// milliseconds, so anything longer is a wrong unit, not a lab.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// The most one read takes from a socket, and so the size of one held chunk.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks held per direction before the proxy stops reading: at most 1 MiB in flight each way.
pub const QUEUE_CHUNKS: usize = 64;
/// How long a connection to the upstream may take before the client's connection is closed.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// What one direction of a link adds to everything it carries: `delay`, plus up to `jitter`
/// drawn uniformly for each chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    pub delay: Duration,
    pub jitter: Duration,
}

/// A setting of the proxy (or of a lab's WAN) that cannot be used, named by its flag.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("{flag}: {reason}")]
    Unreadable { flag: &'static str, reason: String },
    #[error(
        "{flag}: {given} is over the limit of {max}; a WAN link delays by tens to hundreds of milliseconds, so check the unit"
    )]
    TooLong { flag: &'static str, given: String, max: String },
    #[error(
        "{flag}: {jitter} is more than {of} {delay}; the jitter may be at most the delay: lower {flag} or raise {of}"
    )]
    JitterOverDelay { flag: &'static str, jitter: String, of: &'static str, delay: String },
    #[error("{flag}: \"{given}\" is not an ip:port address such as 127.0.0.1:7100")]
    Address { flag: &'static str, given: String },
}

/// Reads a duration as failoverd's config does ("50ms", "1s"), or in whole microseconds
/// ("12500us"): half of an odd round trip in milliseconds is not a whole millisecond.
pub fn read_duration(flag: &'static str, text: &str) -> Result<Duration, FlagError> {
    let unreadable = |reason: String| FlagError::Unreadable { flag, reason };
    match text.trim().strip_suffix("us") {
        Some(n) => n.parse::<u64>().map(Duration::from_micros).map_err(|_| {
            unreadable(format!("expected a duration such as \"50ms\" or \"12500us\", found \"{}\"", text.trim()))
        }),
        None => duration_text::parse(text).map_err(unreadable),
    }
}

/// `d` as [`read_duration`] reads it back: milliseconds when whole, else microseconds.
pub fn show_duration(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) { duration_text::format(d) } else { format!("{}us", d.as_micros()) }
}

impl Delay {
    /// No delay at all: the proxy only forwards.
    pub const NONE: Delay = Delay { delay: Duration::ZERO, jitter: Duration::ZERO };

    /// A delay of `delay` plus up to `jitter`, refused when the delay is over [`MAX_DELAY`] or
    /// the jitter over the delay (the messages name `--delay` and `--jitter`).
    pub fn new(delay: Duration, jitter: Duration) -> Result<Delay, FlagError> {
        Delay::checked(delay, jitter, ("--delay", "--jitter"), MAX_DELAY)
    }

    /// [`Delay::new`] with the flags and the limit of whoever asked (a lab's `--rtt`, say).
    pub fn checked(
        delay: Duration,
        jitter: Duration,
        (delay_flag, jitter_flag): (&'static str, &'static str),
        max: Duration,
    ) -> Result<Delay, FlagError> {
        if delay > max {
            return Err(FlagError::TooLong { flag: delay_flag, given: show_duration(delay), max: show_duration(max) });
        }
        if jitter > delay {
            return Err(FlagError::JitterOverDelay {
                flag: jitter_flag,
                jitter: show_duration(jitter),
                of: delay_flag,
                delay: show_duration(delay),
            });
        }
        Ok(Delay { delay, jitter })
    }

    /// Reads `--delay` and `--jitter` as given on a command line.
    pub fn parse(delay: &str, jitter: &str) -> Result<Delay, FlagError> {
        Delay::new(read_duration("--delay", delay)?, read_duration("--jitter", jitter)?)
    }

    /// The arguments after the `failoverd` binary that run a proxy on `listen` to `upstream`
    /// with this delay each way.
    pub fn proxy_args(&self, listen: &str, upstream: SocketAddr, seed: u64) -> Vec<String> {
        vec![
            "delay-proxy".into(),
            "--listen".into(),
            listen.to_string(),
            "--upstream".into(),
            upstream.to_string(),
            "--delay".into(),
            show_duration(self.delay),
            "--jitter".into(),
            show_duration(self.jitter),
            "--seed".into(),
            seed.to_string(),
        ]
    }

    /// This delay for one chunk, with its jitter drawn from `rng`.
    fn draw(&self, rng: &mut SplitMix) -> Duration {
        let span = u64::try_from(self.jitter.as_micros()).unwrap_or(u64::MAX);
        let extra = if span == 0 { 0 } else { rng.next() % (span + 1) };
        self.delay + Duration::from_micros(extra)
    }
}

/// A small seeded generator (splitmix64): a proxy's jitter replays from its `--seed`.
#[derive(Clone, Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `failoverd delay-proxy`'s flags, as given.
#[derive(Clone, Debug)]
pub struct ProxyFlags {
    pub listen: String,
    pub upstream: String,
    pub delay: String,
    pub jitter: String,
    /// Seeds the jitter; without it, one from the clock and the pid.
    pub seed: Option<u64>,
}

/// The flags, checked: every problem a flag has is refused before anything is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub delay: Delay,
    pub seed: u64,
}

impl ProxyFlags {
    pub fn check(&self) -> Result<ProxySettings, FlagError> {
        let address = |flag: &'static str, given: &str| {
            given.trim().parse::<SocketAddr>().map_err(|_| FlagError::Address { flag, given: given.to_string() })
        };
        let listen = address("--listen", &self.listen)?;
        let upstream = address("--upstream", &self.upstream)?;
        let delay = Delay::parse(&self.delay, &self.jitter)?;
        let seed = self.seed.unwrap_or_else(|| {
            crate::domain::MonoTime::now().as_nanos() ^ u64::from(std::process::id()).rotate_left(32)
        });
        Ok(ProxySettings { listen, upstream, delay, seed })
    }
}

/// `failoverd delay-proxy`: checks the flags (exit 2 naming the flag), binds `--listen`, prints
/// `listening <address>` on stdout (so that port 0 can be used), and carries connections to
/// `--upstream` until SIGTERM.
pub fn main(flags: &ProxyFlags) -> ExitCode {
    let settings = match flags.check() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(crate::cli::EXIT_USAGE);
        }
    };
    // One thread is plenty for a lab link, and leaves the cores to the members.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(settings.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: --listen: cannot listen on {}: {e}", settings.listen);
                return ExitCode::from(crate::cli::EXIT_USAGE);
            }
        };
        match listener.local_addr() {
            Ok(addr) => println!("listening {addr}"),
            Err(e) => {
                eprintln!("error: cannot read the address the proxy listens on: {e}");
                return ExitCode::FAILURE;
            }
        }
        tracing::info!(
            listen = %settings.listen,
            upstream = %settings.upstream,
            delay = %show_duration(settings.delay.delay),
            jitter = %show_duration(settings.delay.jitter),
            "delay proxy carrying connections"
        );
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            crate::signal::terminated().await;
            on_signal.cancel();
        });
        serve(listener, settings.upstream, settings.delay, settings.seed, shutdown).await;
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(listen: &str, upstream: &str, delay: &str, jitter: &str) -> ProxyFlags {
        ProxyFlags {
            listen: listen.into(),
            upstream: upstream.into(),
            delay: delay.into(),
            jitter: jitter.into(),
            seed: Some(1),
        }
    }

    #[test]
    fn each_unusable_flag_is_refused_by_its_name() {
        let cases = [
            (flags("127.0.0.1:0", "127.0.0.1:1", "11s", "0"), "--delay: 11s is over the limit of 10s"),
            (flags("127.0.0.1:0", "127.0.0.1:1", "10000001us", "0"), "--delay: 10000001us is over the limit"),
            (flags("127.0.0.1:0", "127.0.0.1:1", "12.5ms", "0"), "--delay: expected a duration"),
            (flags("127.0.0.1:0", "127.0.0.1:1", "-5us", "0"), "--delay: expected a duration"),
            (flags("127.0.0.1:0", "127.0.0.1:1", "banana", "0"), "--delay: expected a duration"),
            (flags("127.0.0.1:0", "127.0.0.1:1", "20ms", "soon"), "--jitter: expected a duration"),
            (flags("127.0.0.1:0", "127.0.0.1:1", "20ms", "30ms"), "--jitter: 30ms is more than --delay 20ms"),
            (flags("localhost", "127.0.0.1:1", "20ms", "0"), "--listen: \"localhost\" is not an ip:port"),
            (flags("127.0.0.1:0", "peer-b", "20ms", "0"), "--upstream: \"peer-b\" is not an ip:port"),
        ];
        for (given, said) in cases {
            let refused = given.check().expect_err("refused").to_string();
            assert!(refused.starts_with(said), "{given:?}: {refused}");
        }
    }

    #[test]
    fn a_delay_at_the_limit_and_a_jitter_equal_to_the_delay_are_accepted() {
        let at_limit = flags("127.0.0.1:0", "127.0.0.1:1", "10s", "10s").check().expect("accepted");
        assert_eq!(at_limit.delay, Delay { delay: MAX_DELAY, jitter: MAX_DELAY });
        assert_eq!(flags("127.0.0.1:0", "127.0.0.1:1", "0", "0").check().expect("accepted").delay, Delay::NONE);
    }

    #[test]
    fn the_proxy_arguments_read_back_to_the_same_delay_to_the_microsecond() {
        let d = Delay::new(Duration::from_micros(12_500), Duration::from_micros(2_500)).expect("valid");
        let args = d.proxy_args("127.0.0.1:0", "127.0.0.1:9".parse().expect("address"), 3);
        let value = |flag: &str| args[args.iter().position(|a| a == flag).expect("flag") + 1].clone();
        assert_eq!((value("--delay").as_str(), value("--jitter").as_str()), ("12500us", "2500us"));
        assert_eq!(Delay::parse(&value("--delay"), &value("--jitter")), Ok(d));
        assert_eq!(show_duration(Duration::from_millis(50)), "50ms");
    }

    #[test]
    fn every_drawn_delay_lies_between_the_delay_and_the_delay_plus_the_jitter() {
        let d = Delay::new(Duration::from_millis(20), Duration::from_millis(5)).expect("valid");
        let mut rng = SplitMix(7);
        let drawn: Vec<Duration> = (0..10_000).map(|_| d.draw(&mut rng)).collect();
        assert!(drawn.iter().all(|x| (d.delay..=d.delay + d.jitter).contains(x)));
        // Uniform enough to reach both ends of the range.
        assert!(drawn.iter().any(|x| *x < d.delay + Duration::from_millis(1)));
        assert!(drawn.iter().any(|x| *x > d.delay + Duration::from_millis(4)));
        assert_eq!(Delay::NONE.draw(&mut rng), Duration::ZERO);
    }
}
