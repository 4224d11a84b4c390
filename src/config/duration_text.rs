//! Durations written as text in the config (`"3s"`, `"500ms"`, `"1m30s"`), and back.
//!
//! A bare number is refused on purpose: `lease_ttl = 3` could mean seconds or milliseconds, and
//! a wrong guess here decides how long two producers might overlap. Anything above [`CEILING`]
//! is refused while it is read, before any arithmetic on it could overflow or saturate: no
//! setting of this daemon needs a year, and a value that large is a typo or an attack.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// The longest duration any text may name: 365 days. Settings have their own, smaller maxima
/// (see `validate`); this one only keeps every number small enough to compute with.
pub const CEILING: Duration = Duration::from_secs(365 * 24 * 3600);

/// Written as [`format`] writes it, for messages.
const CEILING_TEXT: &str = "8760h (365 days)";

/// Parses `"<n><unit>"` groups, units `ms`, `s`, `m`, `h`, e.g. `"1m30s"`; `"0"` is zero.
/// Refuses any text that adds up to more than [`CEILING`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let shown = super::excerpt(text);
    let expected = || format!("expected a duration such as \"3s\", \"500ms\" or \"1m30s\", found {shown:?}");
    let too_large =
        || format!("the duration {shown:?} is longer than the ceiling of {CEILING_TEXT} that any duration may have");
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(expected());
    }
    // Milliseconds, kept at or below the ceiling after every group: nothing can overflow.
    let ceiling_ms = CEILING.as_millis();
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected());
        }
        let number = &rest[..digits];
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(expected()),
        };
        rest = &rest[unit_len..];
        // More digits than the ceiling has in milliseconds can only be above it (leading zeros
        // aside, which are stripped first so that "0005s" still reads as 5s).
        let significant = number.trim_start_matches('0');
        if significant.len() > 12 {
            return Err(too_large());
        }
        let n: u128 = if significant.is_empty() { 0 } else { significant.parse().map_err(|_| expected())? };
        total_ms += n * unit_ms;
        if total_ms > ceiling_ms {
            return Err(too_large());
        }
    }
    let millis = u64::try_from(total_ms).map_err(|_| too_large())?;
    Ok(Duration::from_millis(millis))
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

/// The same text form for an optional duration (`skip_serializing_if = "Option::is_none"`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
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

    #[test]
    fn leading_zeros_do_not_count_toward_the_ceiling() {
        assert_eq!(parse("00000000000000000005s"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn the_ceiling_itself_parses_and_a_millisecond_more_is_refused_naming_it() {
        assert_eq!(parse("8760h"), Ok(CEILING));
        assert_eq!(parse("365h8395h"), Ok(CEILING));
        for above in ["8760h1ms", "8761h", "525601m", "31536000001ms", "8760h8760h"] {
            let err = parse(above).expect_err(above);
            assert!(err.contains("8760h (365 days)"), "{above}: {err}");
            assert!(err.contains(&format!("{above:?}")), "{above}: {err}");
        }
    }

    #[test]
    fn numbers_that_would_saturate_are_refused_not_clamped() {
        for huge in ["18446744073709551615h", "18446744073709551615s", "18446744073709551616ms", &"9".repeat(400)] {
            let text = format!("{huge}s");
            assert!(parse(huge).is_err() && parse(&text).is_err(), "{huge}");
        }
    }

    #[test]
    fn a_huge_text_is_quoted_only_in_part() {
        let text = "1".repeat(1_000_000) + "h";
        let err = parse(&text).expect_err("above the ceiling");
        assert!(err.len() < 300, "the message quotes {} bytes", err.len());
    }

    proptest! {
        #[test]
        fn format_round_trips_whole_milliseconds(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }

        // Whatever the text, it either comes out at or below the ceiling or is refused with a
        // message: never a saturated or wrapped value.
        #[test]
        fn any_text_parses_to_at_most_the_ceiling_or_is_refused(
            text in "([0-9]{0,25}(ms|s|m|h|x|)){0,4}|.{0,40}"
        ) {
            match parse(&text) {
                Ok(d) => prop_assert!(d <= CEILING, "{text:?} parsed to {d:?}"),
                Err(message) => prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn sums_of_groups_are_refused_exactly_when_above_the_ceiling(
            groups in proptest::collection::vec((0u64..20_000_000_000_000, 0usize..4), 1..4)
        ) {
            let units = [("ms", 1u128), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];
            let text: String = groups.iter().map(|(n, u)| format!("{n}{}", units[*u].0)).collect();
            let total: u128 = groups.iter().map(|(n, u)| u128::from(*n) * units[*u].1).sum();
            match parse(&text) {
                Ok(d) => prop_assert_eq!(d.as_millis(), total),
                Err(_) => prop_assert!(total > CEILING.as_millis(), "{text:?} refused at {total} ms"),
            }
        }
    }
}
