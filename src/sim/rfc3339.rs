//! RFC 3339 timestamps (`2026-11-21T13:48:16.123456789Z`) from Unix time, as CometBFT prints
//! `latest_block_time`. Display only: nothing in failoverd decides by wall-clock time.

/// Formats Unix nanoseconds as an RFC 3339 UTC timestamp with nanoseconds.
pub fn format_unix_nanos(nanos: i128) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

/// The current wall-clock time as Unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_nanos() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_unix_nanos(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.5
        assert_eq!(format_unix_nanos(951_827_696_500_000_000), "2000-02-29T12:34:56.500000000Z");
        assert_eq!(format_unix_nanos(1_795_268_896_000_000_001), "2026-11-21T13:48:16.000000001Z");
    }
}
