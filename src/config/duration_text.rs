//! Durations written as text in the config (`"3s"`, `"500ms"`, `"1m30s"`), and back.
//!
//! A bare number is refused on purpose: `lease_ttl = 3` could mean seconds or milliseconds, and
//! a wrong guess here decides how long two producers might overlap.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `"<n><unit>"` groups, units `ms`, `s`, `m`, `h`, e.g. `"1m30s"`; `"0"` is zero.
pub fn parse(text: &str) -> Result<Duration, String> {
    let expected = || format!("expected a duration such as \"3s\", \"500ms\" or \"1m30s\", found {text:?}");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(expected());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("the number in {text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(expected()),
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part).ok_or_else(|| format!("the duration {text:?} is too large"))?;
    }
    Ok(total)
}

/// Writes the shortest text that [`parse`] reads back to the same value.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".to_string();
    }
    let mut out = String::new();
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, ms) = (rem / 1000, rem % 1000);
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a duration as a quoted string such as \"3s\" or \"500ms\""))?;
    parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_words_bare_numbers_and_unknown_units() {
        for bad in ["tenseconds", "10", "", "3 s", "3sec", "-1s", "1.5s", "s", "99999999999999999999s"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn format_round_trips_whole_milliseconds(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
