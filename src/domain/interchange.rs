//! The watermark interchange format: the JSON an operator moves a key's watermark in and out
//! with (`failoverctl watermark export` / `import`), modelled on the slashing-protection
//! interchange of EIP-3076: versioned metadata and one entry per key, and — as there — every
//! integer written as a decimal string ("4304"), so that no JSON parser rounds it.
//!
//! Version 2 (what [`Interchange::export`] writes) follows that rule for height, round and
//! epoch. Version 1, written by older releases, had the round as a JSON number; [`parse`] still
//! reads it, each version in its own form only.
//!
//! This module owns the format: its types, [`parse`] (both versions, naming the first wrong
//! field), rendering (version 2) and [`highest_per_key`]. It checks the form only and must
//! never apply a bound (the 2^53 ceiling, `failover.import_max_ahead`): those are the daemon's,
//! so every client is refused the same way. No I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Epoch, Hrs, KeyId, Step, Watermark};

/// What `watermark export` writes.
pub const FORMAT_VERSION: &str = "2";

/// A whole interchange document, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interchange {
    pub metadata: Metadata,
    pub data: Vec<KeyWatermark>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub interchange_format_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_by: Option<String>,
}

/// One key's watermark as written. The round of "every round of this height" (what a
/// key-holding checkpoint records) is written as "4294967295", the highest round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWatermark {
    pub key: String,
    /// A decimal u64.
    pub height: String,
    /// A decimal u32.
    pub round: String,
    /// propose, prevote or precommit.
    pub step: String,
    /// A decimal u64; informational, ignored on import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// One entry of a document: a key's watermark, read and checked, or to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: KeyId,
    pub hrs: Hrs,
    /// The epoch that raised the watermark last, when known: informational, ignored on import.
    pub epoch: Option<Epoch>,
}

impl Entry {
    /// `key`'s stored watermark as an entry.
    pub fn of_watermark(key: KeyId, w: Watermark) -> Entry {
        Entry { key, hrs: w.hrs, epoch: Some(w.epoch) }
    }
}

/// Why a text is not an interchange document failoverd can import. The message starts with
/// the field that is wrong (`data[3].height`), then what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum InterchangeError {
    /// Not JSON at all, or cut short: never read as the entries before the cut.
    #[error("not a watermark interchange document: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but `field` does not hold what the format says.
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

impl InterchangeError {
    fn field(field: impl Into<String>, problem: impl Into<String>) -> InterchangeError {
        InterchangeError::Field { field: field.into(), problem: problem.into() }
    }
}

/// The interchange versions [`parse`] reads: they differ only in how the round is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormatVersion {
    /// Older releases: the round as a JSON number.
    V1,
    /// Every integer a decimal string.
    V2,
}

impl Interchange {
    /// A version-2 document holding `entries`, in order, as `watermark export` writes it.
    pub fn export(exported_by: Option<String>, entries: &[Entry]) -> Interchange {
        let data = entries
            .iter()
            .map(|e| KeyWatermark {
                key: e.key.to_string(),
                height: e.hrs.height.to_string(),
                round: e.hrs.round.to_string(),
                step: e.hrs.step.to_string(),
                epoch: e.epoch.map(|n| n.to_string()),
            })
            .collect();
        Interchange { metadata: Metadata { interchange_format_version: FORMAT_VERSION.into(), exported_by }, data }
    }

    /// The document as `watermark export` prints it: indented JSON, without a final newline.
    pub fn render(&self) -> String {
        // Only strings, objects and arrays: serialising them cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Parses an interchange document (version 2, or 1 as older releases wrote it) into its
/// entries, in file order, naming the first field that is wrong. It checks the form only:
/// every bound is the daemon's.
pub fn parse(text: &str) -> Result<Vec<Entry>, InterchangeError> {
    let doc: Value = serde_json::from_str(text).map_err(InterchangeError::NotJson)?;
    let top = fields_of(&doc, "", &["metadata", "data"])?;
    let meta = fields_of(required(top, "", "metadata")?, "metadata", &["interchange_format_version", "exported_by"])?;
    let version = match required(meta, "metadata", "interchange_format_version")? {
        Value::String(v) if v == "2" => FormatVersion::V2,
        Value::String(v) if v == "1" => FormatVersion::V1,
        other => {
            return Err(InterchangeError::field(
                "metadata.interchange_format_version",
                format!("expected \"{FORMAT_VERSION}\" (or \"1\", as older releases wrote), found {}", shown(other)),
            ));
        }
    };
    if let Some(by) = meta.get("exported_by").filter(|v| !v.is_string()) {
        return Err(InterchangeError::field("metadata.exported_by", format!("expected a string, found {}", shown(by))));
    }
    let data = match required(top, "", "data")? {
        Value::Array(data) => data,
        other => {
            return Err(InterchangeError::field(
                "data",
                format!("expected an array of entries, found {}", shown(other)),
            ));
        }
    };
    if data.is_empty() {
        return Err(InterchangeError::field("data", "no watermark to import"));
    }
    data.iter().enumerate().map(|(i, entry)| parse_entry(i, entry, version)).collect()
}

/// One entry of `data`: key, height (a decimal string), round (a decimal string in version 2,
/// a number in version 1), step and an optional epoch (a decimal string).
fn parse_entry(i: usize, entry: &Value, version: FormatVersion) -> Result<Entry, InterchangeError> {
    let path = format!("data[{i}]");
    let at = |name: &str| format!("{path}.{name}");
    let map = fields_of(entry, &path, &["key", "height", "round", "step", "epoch"])?;
    let key = match required(map, &path, "key")? {
        Value::String(name) => {
            KeyId::new(name.clone()).map_err(|e| InterchangeError::field(at("key"), e.to_string()))?
        }
        other => {
            let problem = format!("expected the key's name as a string, found {}", shown(other));
            return Err(InterchangeError::field(at("key"), problem));
        }
    };
    let height = required(map, &path, "height")?;
    let height = decimal(height).ok_or_else(|| {
        let problem = format!(
            "expected a decimal height as a string, such as \"4304\" (at most {}), found {}",
            u64::MAX,
            shown(height)
        );
        InterchangeError::field(at("height"), problem)
    })?;
    let round =
        parse_round(required(map, &path, "round")?, version).map_err(|e| InterchangeError::field(at("round"), e))?;
    let step = required(map, &path, "step")?;
    let step = match step.as_str() {
        Some("propose") => Step::Propose,
        Some("prevote") => Step::Prevote,
        Some("precommit") => Step::Precommit,
        _ => {
            let problem = format!("expected propose, prevote or precommit, found {}", shown(step));
            return Err(InterchangeError::field(at("step"), problem));
        }
    };
    let epoch = match map.get("epoch") {
        None => None,
        Some(epoch) => Some(decimal(epoch).map(Epoch::new).ok_or_else(|| {
            let problem = format!("expected a decimal epoch as a string, such as \"3\", found {}", shown(epoch));
            InterchangeError::field(at("epoch"), problem)
        })?),
    };
    Ok(Entry { key, hrs: Hrs::new(height, round, step), epoch })
}

/// An entry's round as `version` writes it: a decimal string (2) or a JSON number (1). The
/// other version's form is refused with the way to fix it, not read silently: a file that
/// mixes them was not written by failoverd.
fn parse_round(round: &Value, version: FormatVersion) -> Result<u32, String> {
    let max = u32::MAX;
    match version {
        FormatVersion::V2 => decimal(round).and_then(|r| u32::try_from(r).ok()).ok_or_else(|| match round {
            Value::Number(n) => format!(
                "expected a decimal round as a string, such as \"{n}\", found the number {n}: format version 2 \
                 writes every integer as a string (a file with numeric rounds is format version 1: set \
                 interchange_format_version to \"1\")"
            ),
            other => {
                format!("expected a decimal round as a string, such as \"0\" (at most {max}), found {}", shown(other))
            }
        }),
        FormatVersion::V1 => round.as_u64().and_then(|r| u32::try_from(r).ok()).ok_or_else(|| match round {
            Value::String(_) => format!(
                "expected a whole number from 0 to {max} in format version 1, found {}: rounds as strings are \
                 format version 2's form; set interchange_format_version to \"2\"",
                shown(round)
            ),
            other => format!("expected a whole number from 0 to {max}, found {}", shown(other)),
        }),
    }
}

/// `value` as an object whose fields are all in `known`; `path` names it in messages.
fn fields_of<'a>(value: &'a Value, path: &str, known: &[&str]) -> Result<&'a Map<String, Value>, InterchangeError> {
    let what = if path.is_empty() { "the document" } else { path };
    let Value::Object(map) = value else {
        let problem = format!("expected a JSON object with {}, found {}", known.join(", "), shown(value));
        return Err(InterchangeError::field(what, problem));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        let problem = format!("unknown field; {what} has {}", known.join(", "));
        return Err(InterchangeError::field(field_path(path, unknown), problem));
    }
    Ok(map)
}

fn required<'a>(map: &'a Map<String, Value>, path: &str, name: &str) -> Result<&'a Value, InterchangeError> {
    map.get(name).ok_or_else(|| InterchangeError::field(field_path(path, name), "missing"))
}

fn field_path(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

/// A JSON string of decimal digits that fits a u64 ("+5", "-1", "0x10" and "" do not).
fn decimal(value: &Value) -> Option<u64> {
    value.as_str().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).and_then(|s| s.parse().ok())
}

/// A JSON value as the file spells it, cut short when long.
fn shown(value: &Value) -> String {
    const LIMIT: usize = 40;
    let text = value.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// One entry per key, the highest HRS the entries give it, sorted by key: what an import sends.
pub fn highest_per_key(entries: impl IntoIterator<Item = (KeyId, Hrs)>) -> Vec<(KeyId, Hrs)> {
    let mut highest: BTreeMap<KeyId, Hrs> = BTreeMap::new();
    for (key, hrs) in entries {
        let top = highest.entry(key).or_insert(hrs);
        *top = (*top).max(hrs);
    }
    highest.into_iter().collect()
}

#[cfg(test)]
mod tests;
