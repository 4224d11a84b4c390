//! Maps config keys to the lines they stand on, so that every problem — whether serde found it
//! while parsing or `validate` found it afterwards — is reported as `file:line:column: key: …`.
//!
//! Built from toml's spanned document tree. It never fails: a document that does not parse
//! yields an empty map, and problems then carry the position of the parse error alone.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Key paths (`coordinator.lease_ttl`, `members[1].id`) with the byte spans of their key and
/// value in the source text. Lookups by key and by line take the same time however large the
/// file, so that locating many problems in a large file stays linear.
pub struct SourceMap<'a> {
    text: &'a str,
    entries: Vec<Entry>,
    /// Index into `entries` of each path's first entry.
    by_path: HashMap<String, usize>,
    /// Byte offset where each line after the first starts.
    line_starts: Vec<usize>,
}

struct Entry {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl<'a> SourceMap<'a> {
    pub fn new(text: &'a str) -> SourceMap<'a> {
        match DeTable::parse(text) {
            Ok(doc) => SourceMap::of_document(text, doc.get_ref()),
            Err(_) => SourceMap::without_keys(text),
        }
    }

    /// The map of `text`, already parsed into `doc`: a large file is parsed only once.
    pub fn of_document(text: &'a str, doc: &DeTable<'_>) -> SourceMap<'a> {
        let mut entries = Vec::new();
        walk_table(doc, "", &mut entries);
        let mut by_path = HashMap::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            by_path.entry(entry.path.clone()).or_insert(i);
        }
        SourceMap { entries, by_path, ..SourceMap::without_keys(text) }
    }

    /// A map of `text` that knows positions but no keys: for text that does not parse.
    pub fn without_keys(text: &'a str) -> SourceMap<'a> {
        let line_starts = text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1).collect();
        SourceMap { text, entries: Vec::new(), by_path: HashMap::new(), line_starts }
    }

    /// Where `path`'s key stands, if the file sets it.
    pub fn key_position(&self, path: &str) -> Option<Position> {
        self.by_path.get(path).map(|&i| self.position(self.entries[i].key.start))
    }

    /// Whether the file sets `path` (as opposed to the default applying).
    pub fn contains(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// The most specific key path whose key or value covers `span`.
    pub fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        self.entries
            .iter()
            .filter(|e| covers(&e.key, span) || covers(&e.value, span))
            .max_by_key(|e| e.path.len())
            .map(|e| e.path.as_str())
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        // Lines that start at or before `offset`, after the first.
        let later_lines = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = if later_lines == 0 { 0 } else { self.line_starts[later_lines - 1] };
        let column = String::from_utf8_lossy(&self.text.as_bytes()[line_start..offset]).chars().count() + 1;
        Position { line: later_lines + 1, column }
    }
}

fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

fn walk_table(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        out.push(Entry { path: path.clone(), key: key.span(), value: value.span() });
        walk_value(value.get_ref(), &path, out);
    }
}

fn walk_value(value: &DeValue<'_>, path: &str, out: &mut Vec<Entry>) {
    match value {
        DeValue::Table(t) => walk_table(t, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                out.push(Entry { path: item_path.clone(), key: item.span(), value: item.span() });
                walk_value(item.get_ref(), &item_path, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "member = \"a\"\n\n[coordinator]\nlease_ttl = \"3s\"\n\n[[members]]\nid = \"a\"\n\n[[members]]\nid = \"b\"\n";

    #[test]
    fn finds_lines_of_nested_keys_and_array_tables() {
        let map = SourceMap::new(DOC);
        assert_eq!(map.key_position("member").map(|p| p.line), Some(1));
        assert_eq!(map.key_position("coordinator.lease_ttl").map(|p| p.line), Some(4));
        assert_eq!(map.key_position("members[1].id").map(|p| p.line), Some(10));
        assert!(!map.contains("coordinator.renew_interval"));
    }

    #[test]
    fn path_at_prefers_the_most_specific_key() {
        let map = SourceMap::new(DOC);
        let offset = DOC.find("\"3s\"").expect("fixture has the value");
        assert_eq!(map.path_at(&(offset..offset + 4)), Some("coordinator.lease_ttl"));
    }

    #[test]
    fn position_counts_lines_and_columns_from_one() {
        let map = SourceMap::new("a = 1\nbb = 2\n");
        assert_eq!(map.position(0), Position { line: 1, column: 1 });
        assert_eq!(map.position(9), Position { line: 2, column: 4 });
    }

    #[test]
    fn positions_agree_with_a_count_of_the_text_before_them() {
        let text = "a = 1\n\nb = \"é\"\n[t]\nk = 2";
        let map = SourceMap::new(text);
        for offset in 0..=text.len() {
            let before = &text.as_bytes()[..offset];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
            assert_eq!(map.position(offset), Position { line, column }, "offset {offset}");
        }
        assert_eq!(map.key_position("t.k"), Some(Position { line: 5, column: 1 }));
    }

    #[test]
    fn unparsable_text_yields_an_empty_map() {
        let map = SourceMap::new("this is = = not toml");
        assert!(!map.contains("this"));
    }
}
