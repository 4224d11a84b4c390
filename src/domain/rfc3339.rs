//! RFC 3339 timestamps (`2026-11-21T13:48:16.123456789Z`), as CometBFT prints
//! `latest_block_time` and Antelope `head_block_time` (the latter without the `Z`): formatting
//! from Unix time and parsing back. Display only: nothing in failoverd decides by wall-clock time.

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

/// Proleptic Gregorian date to days since 1970-01-01 (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` into Unix milliseconds. A timestamp with
/// no zone is taken as UTC, as Antelope prints it. Says what is wrong instead of panicking.
pub fn parse_unix_millis(text: &str) -> Result<i64, String> {
    let bad = |what: &str| format!("{text:?} is not an RFC 3339 timestamp: {what}");
    if !text.is_ascii() {
        return Err(bad("expected ASCII only"));
    }
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad("expected HH:MM:SS after the date"));
    }
    let num = |range: std::ops::Range<usize>, name: &str| -> Result<u32, String> {
        let part = &text[range];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad(&format!("{name} {part:?} is not a number")));
        }
        part.parse::<u32>().map_err(|_| bad(name))
    };
    let (year, month, day) = (num(0..4, "year")?, num(5..7, "month")?, num(8..10, "day")?);
    let (hour, minute, second) = (num(11..13, "hour")?, num(14..16, "minute")?, num(17..19, "second")?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad("a field is out of range"));
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected digits after the decimal point"));
        }
        for (i, c) in frac.bytes().take(3).take_while(u8::is_ascii_digit).enumerate() {
            millis += i64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "" | "Z" | "z" => 0,
        zone if zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) && &zone[3..4] == ":" => {
            let zone_at = text.len() - 6;
            let hours = i64::from(num(zone_at + 1..zone_at + 3, "zone hours")?);
            let minutes = i64::from(num(zone_at + 4..zone_at + 6, "zone minutes")?);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
        other => return Err(bad(&format!("unexpected {other:?} after the time"))),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second) - offset_secs;
    Ok(secs * 1000 + millis)
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

    #[test]
    fn parses_what_the_chains_print() {
        assert_eq!(parse_unix_millis("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_unix_millis("2026-11-21T13:48:16.000000001Z"), Ok(1_795_268_896_000));
        assert_eq!(parse_unix_millis("2000-02-29T12:34:56.5Z"), Ok(951_827_696_500));
        // Antelope: no zone, milliseconds.
        assert_eq!(parse_unix_millis("2026-11-21T13:48:16.500"), Ok(1_795_268_896_500));
        assert_eq!(parse_unix_millis("2026-11-21T15:48:16+02:00"), Ok(1_795_268_896_000));
        assert_eq!(parse_unix_millis("0001-01-01T00:00:00Z").map(|ms| ms < 0), Ok(true));
    }

    #[test]
    fn round_trips_through_the_formatter() {
        for nanos in [0i128, 951_827_696_500_000_000, 1_795_268_896_123_000_000, 4_102_444_800_000_000_000] {
            let text = format_unix_nanos(nanos);
            assert_eq!(parse_unix_millis(&text), Ok((nanos / 1_000_000) as i64), "{text}");
        }
    }

    #[test]
    fn malformed_timestamps_are_errors_not_panics() {
        for bad in [
            "",
            "2026",
            "2026-13-01T00:00:00Z",
            "2026-11-21 13:48",
            "2026-11-21T13:48:16.Z",
            "2026-11-21T1x:48:16Z",
            "2026-11-21T13:48:16+0200",
            "é026-11-21T13:48:16Z",
            "2026-11-21T13:48:16Zjunk",
        ] {
            assert!(parse_unix_millis(bad).is_err(), "{bad:?} accepted");
        }
    }
}
