//! The interchange format's tests: round trips (export → import → export is identical),
//! version 1 files, and hostile input refused by the field it gets wrong.

use serde_json::Value;

use super::*;

fn key(name: &str) -> KeyId {
    KeyId::new(name).expect("valid")
}

fn entry(name: &str, hrs: Hrs, epoch: Option<u64>) -> Entry {
    Entry { key: key(name), hrs, epoch: epoch.map(Epoch::new) }
}

/// What an import takes from `text`: (key, HRS) per entry, in file order; or the message.
fn positions(text: &str) -> Result<Vec<(KeyId, Hrs)>, String> {
    parse(text).map(|entries| entries.into_iter().map(|e| (e.key, e.hrs)).collect()).map_err(|e| e.to_string())
}

#[test]
fn an_exported_document_parses_back_to_its_entries() {
    let doc = Interchange::export(
        Some("failoverd".into()),
        &[entry("validator", Hrs::new(u64::MAX, 2, Step::Prevote), Some(9))],
    );
    let text = serde_json::to_string(&doc).expect("serialise");
    // The form is the format's to check; the ceiling is the daemon's.
    assert_eq!(positions(&text).expect("parses"), vec![(key("validator"), Hrs::new(u64::MAX, 2, Step::Prevote))]);
}

// Export → import → export gives the same text, byte for byte, for every kind of entry.
#[test]
fn export_then_import_then_export_is_identical() {
    let documents: Vec<Vec<Entry>> = vec![
        vec![entry("validator", Hrs::new(4304, 0, Step::Precommit), Some(7))],
        vec![entry("validator", Hrs::end_of_height(4304), Some(1))],
        vec![entry("validator", Hrs::ZERO, None)],
        vec![entry("validator", Hrs::new(u64::MAX, u32::MAX, Step::Precommit), Some(u64::MAX))],
        vec![
            entry("a", Hrs::new(10, 3, Step::Prevote), Some(2)),
            entry("b", Hrs::new(9, 0, Step::Propose), None),
            entry("a", Hrs::new(11, 0, Step::Propose), Some(3)),
        ],
    ];
    for entries in documents {
        let first = Interchange::export(Some("failoverd 9.9.9".into()), &entries).render();
        let imported = parse(&first).unwrap_or_else(|e| panic!("{first}: {e}"));
        assert_eq!(imported, entries, "the import read other entries than were exported");
        let second = Interchange::export(Some("failoverd 9.9.9".into()), &imported).render();
        assert_eq!(second, first, "a re-export differs");
    }
}

// One line per bad entry: (the entry's JSON, the field the message must start with).
#[test]
fn a_bad_entry_is_named_by_its_index_and_field() {
    let good = r#"{"key":"validator","height":"4304","round":0,"step":"precommit"}"#;
    let cases: &[(&str, &str)] = &[
        (r#"{"key":"validator","height":4304,"round":0,"step":"precommit"}"#, "data[1].height"),
        (r#"{"key":"validator","height":"-1","round":0,"step":"precommit"}"#, "data[1].height"),
        (r#"{"key":"validator","height":"+5","round":0,"step":"precommit"}"#, "data[1].height"),
        (r#"{"key":"validator","height":"18446744073709551616","round":0,"step":"precommit"}"#, "data[1].height"),
        (r#"{"key":"validator","height":"1e30","round":0,"step":"precommit"}"#, "data[1].height"),
        (r#"{"key":"validator","height":1.5,"round":0,"step":"precommit"}"#, "data[1].height"),
        (r#"{"key":"validator","round":0,"step":"precommit"}"#, "data[1].height: missing"),
        (r#"{"key":"validator","height":"1","round":"0","step":"precommit"}"#, "data[1].round"),
        (r#"{"key":"validator","height":"1","round":4294967296,"step":"precommit"}"#, "data[1].round"),
        (r#"{"key":"validator","height":"1","round":0,"step":"commit"}"#, "data[1].step"),
        (r#"{"key":"validator","height":"1","round":0,"step":3}"#, "data[1].step"),
        (r#"{"key":"no/slash","height":"1","round":0,"step":"precommit"}"#, "data[1].key"),
        (r#"{"key":7,"height":"1","round":0,"step":"precommit"}"#, "data[1].key"),
        (r#"{"key":"validator","height":"1","round":0,"step":"precommit","epoch":"x"}"#, "data[1].epoch"),
        (r#"{"key":"validator","height":"1","round":0,"step":"precommit","epoch":3}"#, "data[1].epoch"),
        (r#"{"key":"validator","height":"1","round":0,"step":"precommit","heigth":"2"}"#, "data[1].heigth"),
        (r#"["validator","1",0,"precommit"]"#, "data[1]: expected a JSON object"),
    ];
    for (bad, field) in cases {
        let text = format!(r#"{{"metadata":{{"interchange_format_version":"1"}},"data":[{good},{bad}]}}"#);
        let message = positions(&text).expect_err(bad);
        assert!(message.starts_with(field), "{bad}: {message}");
    }
}

#[test]
fn an_export_writes_every_integer_as_a_string_and_reads_back_exactly() {
    let top = Hrs::new(u64::MAX, u32::MAX, Step::Precommit);
    let doc =
        Interchange::export(None, &[entry("validator", top, Some(u64::MAX)), entry("validator", Hrs::ZERO, None)]);
    let text = serde_json::to_string(&doc).expect("serialise");
    let value: Value = serde_json::from_str(&text).expect("JSON");
    for field in ["height", "round", "epoch"] {
        assert!(value["data"][0][field].is_string(), "{field} is not a string: {text}");
    }
    assert_eq!(value["metadata"]["interchange_format_version"], "2");
    assert_eq!(value["data"][0]["round"], "4294967295");
    assert_eq!(positions(&text).expect("parses"), vec![(key("validator"), top), (key("validator"), Hrs::ZERO)]);
    // The serde form reads it back as well: the two descriptions of the format agree.
    assert_eq!(serde_json::from_str::<Interchange>(&text).expect("serde reads it"), doc);
}

#[test]
fn a_version_1_file_with_numeric_rounds_still_imports() {
    let v1 = r#"{"metadata":{"interchange_format_version":"1","exported_by":"failoverd 0.1.0"},
        "data":[{"key":"validator","height":"4304","round":4294967295,"step":"precommit","epoch":"7"}]}"#;
    let v2 = r#"{"metadata":{"interchange_format_version":"2"},
        "data":[{"key":"validator","height":"4304","round":"4294967295","step":"precommit"}]}"#;
    let want = vec![(key("validator"), Hrs::end_of_height(4304))];
    assert_eq!(positions(v1).expect("version 1"), want);
    assert_eq!(positions(v2).expect("version 2"), want);
}

// A version 1 file is re-exported as version 2 with the same entries, epoch included.
#[test]
fn a_version_1_file_re_exports_as_version_2_with_the_same_entries() {
    let v1 = r#"{"metadata":{"interchange_format_version":"1"},
        "data":[{"key":"validator","height":"4304","round":2,"step":"prevote","epoch":"7"}]}"#;
    let entries = parse(v1).expect("version 1");
    assert_eq!(entries, vec![entry("validator", Hrs::new(4304, 2, Step::Prevote), Some(7))]);
    let v2 = Interchange::export(None, &entries).render();
    let value: Value = serde_json::from_str(&v2).expect("JSON");
    assert_eq!(value["metadata"]["interchange_format_version"], "2");
    assert_eq!(value["data"][0]["round"], "2");
    assert_eq!(parse(&v2).expect("version 2"), entries);
}

// Each version reads only its own form of the round, and says how to fix the other.
#[test]
fn a_round_in_the_other_versions_form_is_refused_with_the_fix() {
    let doc = |version: &str, round: &str| {
        format!(
            r#"{{"metadata":{{"interchange_format_version":"{version}"}},"data":[{{"key":"validator","height":"1","round":{round},"step":"precommit"}}]}}"#
        )
    };
    let cases: &[(&str, &str, &str)] = &[
        ("2", "0", "set interchange_format_version to \"1\""),
        ("2", "-1", "data[0].round: expected a decimal round as a string"),
        ("2", r#""4294967296""#, "at most 4294967295"),
        ("2", r#""0x10""#, "found \"0x10\""),
        ("2", r#"" 1""#, "data[0].round"),
        ("2", "null", "found null"),
        ("1", r#""0""#, "set interchange_format_version to \"2\""),
        ("1", "1.5", "expected a whole number from 0 to 4294967295"),
        ("1", "4294967296", "found 4294967296"),
    ];
    for (version, round, part) in cases {
        let message = positions(&doc(version, round)).expect_err(round);
        assert!(message.starts_with("data[0].round") && message.contains(part), "v{version} {round}: {message}");
    }
}

// A file cut short anywhere — a copy that did not finish, a full disk — is refused, never
// read as the entries before the cut.
#[test]
fn every_truncation_of_a_document_is_refused() {
    let text = r#"{"metadata":{"interchange_format_version":"2"},"data":[{"key":"validator","height":"4304","round":"0","step":"precommit"},{"key":"validator","height":"4305","round":"0","step":"propose"}]}"#;
    assert!(parse(text).is_ok());
    for cut in 0..text.len() {
        let error = parse(&text[..cut]).expect_err(&text[..cut]);
        assert!(matches!(error, InterchangeError::NotJson(_)), "cut at {cut}: {error}");
        assert!(error.to_string().starts_with("not a watermark interchange document"), "cut at {cut}: {error}");
    }
}

#[test]
fn a_bad_document_is_named_by_its_field() {
    let cases: &[(&str, &str)] = &[
        (r#"{"metadata":{"interchange_format_version":"5"},"data":[]}"#, "metadata.interchange_format_version"),
        (r#"{"metadata":{"interchange_format_version":2},"data":[]}"#, "metadata.interchange_format_version"),
        (r#"{"metadata":{},"data":[]}"#, "metadata.interchange_format_version: missing"),
        (r#"{"metadata":{"interchange_format_version":"1","exported_by":1},"data":[]}"#, "metadata.exported_by"),
        (r#"{"metadata":{"interchange_format_version":"1"},"data":[]}"#, "data: no watermark"),
        (r#"{"metadata":{"interchange_format_version":"1"},"data":{}}"#, "data: expected an array"),
        (r#"{"metadata":{"interchange_format_version":"1"},"data":[],"extra":1}"#, "extra: unknown field"),
        (r#"{}"#, "metadata: missing"),
        ("[]", "the document: expected a JSON object"),
        ("{", "not a watermark interchange document"),
        ("", "not a watermark interchange document"),
    ];
    for (text, field) in cases {
        let message = positions(text).expect_err(text);
        assert!(message.starts_with(field), "{text}: {message}");
    }
}

// The kind says which field: a caller can tell a bad field from a file that is not JSON.
#[test]
fn a_wrong_field_is_reported_by_kind_with_its_path() {
    let text = r#"{"metadata":{"interchange_format_version":"2"},"data":[{"key":"validator","height":"x","round":"0","step":"propose"}]}"#;
    match parse(text) {
        Err(InterchangeError::Field { field, problem }) => {
            assert_eq!(field, "data[0].height");
            assert!(problem.contains("found \"x\""), "{problem}");
        }
        other => panic!("wanted a field error, got {other:?}"),
    }
}

// A long wrong value is shown cut short, so a hostile file cannot flood the message.
#[test]
fn a_long_wrong_value_is_shown_cut_short() {
    let long = "9".repeat(10_000);
    let text = format!(
        r#"{{"metadata":{{"interchange_format_version":"2"}},"data":[{{"key":"validator","height":"{long}","round":"0","step":"propose"}}]}}"#
    );
    let message = positions(&text).expect_err("too high");
    assert!(message.starts_with("data[0].height") && message.len() < 300, "{message}");
}

#[test]
fn entries_collapse_to_the_highest_per_key() {
    let entries = vec![
        (key("v"), Hrs::new(10, 0, Step::Precommit)),
        (key("w"), Hrs::new(3, 0, Step::Propose)),
        (key("v"), Hrs::new(12, 0, Step::Propose)),
        (key("v"), Hrs::new(11, 5, Step::Precommit)),
    ];
    assert_eq!(
        highest_per_key(entries),
        vec![(key("v"), Hrs::new(12, 0, Step::Propose)), (key("w"), Hrs::new(3, 0, Step::Propose))]
    );
}
