//! Percentiles of samples in milliseconds, and the report line every benchmark prints.
//!
//! Percentiles are nearest-rank: p99 of n samples is the ⌈0.99·n⌉-th smallest, a sample that
//! was measured (never an interpolation), so with n < 100 it is the largest.

use std::time::Duration;

/// A distribution of samples, in milliseconds (differences may be negative).
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank `p` percentile (0 < p ≤ 1) of `sorted`, which is not empty.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The summary of `samples` (milliseconds); panics on none, since a benchmark that measured
/// nothing has nothing to report.
pub fn summarize(samples: &[f64]) -> Summary {
    assert!(!samples.is_empty(), "a benchmark produced no samples");
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Summary {
        n: sorted.len(),
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    }
}

/// One report line: `name  n=…  p50=… ms  p99=… ms  max=… ms`.
pub fn line(name: &str, s: &Summary) -> String {
    let few = if s.n < 100 { "  (n < 100: p99 is the largest sample)" } else { "" };
    format!("{name:<62} n={:<5} p50={:>9.3} ms  p99={:>9.3} ms  max={:>9.3} ms{few}", s.n, s.p50, s.p99, s.max)
}

/// The same in seconds, for failover times.
pub fn line_s(name: &str, s: &Summary) -> String {
    let few = if s.n < 100 { "  (n < 100: p99 is the largest sample)" } else { "" };
    format!(
        "{name:<62} n={:<5} p50={:>7.2} s  p99={:>7.2} s  min={:>7.2} s  max={:>7.2} s{few}",
        s.n,
        s.p50 / 1000.0,
        s.p99 / 1000.0,
        s.min / 1000.0,
        s.max / 1000.0
    )
}

/// Machine noise seen in one series: its p50 and p99 over the first and the second half of the
/// run (in the order measured), and how far they differ. What the same measurement drifts by
/// on this machine while nothing about it changes.
pub fn halves(samples: &[f64]) -> String {
    if samples.len() < 4 {
        return "noise: too few samples to split in halves".into();
    }
    let (first, second) = samples.split_at(samples.len() / 2);
    let (a, b) = (summarize(first), summarize(second));
    format!(
        "noise (first half / second half): p50 {:.3} / {:.3} ms (spread {:.3} ms), p99 {:.3} / {:.3} ms (spread {:.3} ms)",
        a.p50,
        b.p50,
        (a.p50 - b.p50).abs(),
        a.p99,
        b.p99,
        (a.p99 - b.p99).abs()
    )
}
