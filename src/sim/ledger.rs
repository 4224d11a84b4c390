//! The shared, append-only signature ledger: one JSON line per signature, written with a single
//! `write` on an `O_APPEND` descriptor and fsynced before the call returns, so that records from
//! several processes never interleave and a record that was reported written survives a crash.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::jsonl::{self, JsonLines, JsonLinesError, Kind};
use crate::domain::{Hrs, KeyId, MemberId, Step};

/// One signature as the simulated node made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    pub key: KeyId,
    pub height: u64,
    pub round: u32,
    pub step: Step,
    /// Hex SHA-256 of what was signed. Two records at one key and HRS with different payloads
    /// are a double sign.
    pub payload: String,
    /// The member whose producer signed.
    pub member: MemberId,
    /// `CLOCK_BOOTTIME` (`MonoTime`) at signing, comparable across processes on this machine.
    pub mono_ns: u64,
    /// Wall-clock Unix milliseconds, for people reading the ledger; never used by checks.
    pub wall_ms: i64,
}

impl SignatureRecord {
    pub fn hrs(&self) -> Hrs {
        Hrs::new(self.height, self.round, self.step)
    }
}

/// Why the ledger could not be opened, written or read.
pub type LedgerError = JsonLinesError;

const WHAT: Kind = Kind { file: "ledger", record: "signature record" };

/// Appends records to a ledger file shared with other writers.
pub struct LedgerWriter {
    file: JsonLines,
}

impl LedgerWriter {
    /// Opens (creating if needed) the ledger at `path` for appending.
    pub fn open(path: &Path) -> Result<LedgerWriter, LedgerError> {
        Ok(LedgerWriter { file: JsonLines::open(WHAT, path)? })
    }

    /// Writes one record as one line and fsyncs. Blocking: call from a blocking context.
    pub fn append(&mut self, record: &SignatureRecord) -> Result<(), LedgerError> {
        self.file.append(record)?;
        self.file.sync()
    }
}

/// Reads every record of a ledger, failing on the first line that is not a record, with its
/// line number. A missing file is an empty ledger: nothing was signed.
pub fn read(path: &Path) -> Result<Vec<SignatureRecord>, LedgerError> {
    jsonl::read(WHAT, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(height: u64, member: &str) -> SignatureRecord {
        SignatureRecord {
            key: KeyId::new("validator").expect("valid"),
            height,
            round: 0,
            step: Step::Precommit,
            payload: format!("{height:064x}"),
            member: MemberId::new(member).expect("valid"),
            mono_ns: height * 1000,
            wall_ms: 0,
        }
    }

    #[test]
    fn appended_records_read_back_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ledger.jsonl");
        let mut w = LedgerWriter::open(&path).expect("open");
        for h in 1..=3 {
            w.append(&record(h, "a")).expect("append");
        }
        let mut w2 = LedgerWriter::open(&path).expect("second writer");
        w2.append(&record(4, "b")).expect("append");
        let got = read(&path).expect("read");
        assert_eq!(got.iter().map(|r| r.height).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(got[3].member.as_str(), "b");
    }

    #[test]
    fn concurrent_writers_never_interleave_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ledger.jsonl");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut w = LedgerWriter::open(&path).expect("open");
                    for h in 0..50 {
                        w.append(&record(t * 1000 + h, "a")).expect("append");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        assert_eq!(read(&path).expect("every line parses").len(), 200);
    }

    #[test]
    fn a_torn_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ledger.jsonl");
        let good = serde_json::to_string(&record(1, "a")).expect("serialise");
        std::fs::write(&path, format!("{good}\n{}\n", &good[..20])).expect("write fixture");
        match read(&path) {
            Err(LedgerError::Malformed { line: 2, .. }) => {}
            other => panic!("expected a malformed line 2, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_ledger_is_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(read(&dir.path().join("none.jsonl")).expect("missing is empty").is_empty());
    }
}
