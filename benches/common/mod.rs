//! What the benchmarks share: percentiles and their report lines ([`stats`]), a 3-member raft
//! cluster of in-process members at chosen timings with its peer links ([`cluster`]), and the
//! `/proc` readings of a process ([`proc_stat`]).
//!
//! Benchmark support only: nothing here is used by a test or by failoverd itself, and nothing
//! here judges correctness (the tests do).
#![allow(dead_code)]

#[path = "../../tests/common/pki.rs"]
pub mod pki;
#[path = "../../tests/common/raft_cluster.rs"]
pub mod raft_cluster;

pub mod cluster;
pub mod proc_stat;
pub mod stats;

/// Whether cargo ran this target as a benchmark (`cargo bench` passes `--bench`); under
/// `cargo test --all-targets` a benchmark only says how to run it.
pub fn benchmarking(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    println!("{name} benchmark: run it with `cargo bench --bench {name}`");
    false
}

/// A whole number from the environment variable `name`, or `default` when it is unset. A value
/// that is not a number stops the benchmark with a sentence naming it.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            eprintln!("error: {name}={text:?} is not a whole number; unset it or give one such as {default}");
            std::process::exit(2)
        }),
    }
}

/// A small seeded generator (xorshift64*) for the benchmarks' jitter: the seed is printed, so a
/// run can be repeated.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed.max(1))
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

/// The machine's load averages (1, 5, 15 min) from `/proc/loadavg`: other work on the machine
/// while a benchmark runs is noise in its figures.
pub fn machine_load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    format!("machine load (1/5/15 min): {}", fields.join(" / "))
}
