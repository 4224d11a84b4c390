//! Append-only JSON-lines files that several processes write at once (the signature ledger, the
//! activation log): each record is one `write` on an `O_APPEND` descriptor, so the kernel places
//! the whole line at the end and writers never split each other's lines. Reading fails on the
//! first line that is not a record, naming it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a file holds, for messages: the file ("ledger") and one line of it ("signature record").
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub file: &'static str,
    pub record: &'static str,
}

/// What went wrong with which file.
#[derive(Debug, thiserror::Error)]
pub enum JsonLinesError {
    #[error("cannot open {} {path}: {source}", what.file)]
    Open { what: Kind, path: PathBuf, source: std::io::Error },
    #[error("cannot append to {} {path}: {source}", what.file)]
    Append { what: Kind, path: PathBuf, source: std::io::Error },
    #[error("cannot read {} {path}: {source}", what.file)]
    Read { what: Kind, path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: not a {}: {problem}", what.record)]
    Malformed { what: Kind, path: PathBuf, line: usize, problem: String },
}

/// One writer of a shared JSON-lines file.
pub struct JsonLines {
    what: Kind,
    path: PathBuf,
    file: File,
}

impl JsonLines {
    /// Opens (creating it and its directory if needed) the file at `path` for appending.
    pub fn open(what: Kind, path: &Path) -> Result<JsonLines, JsonLinesError> {
        let open_err = |source| JsonLinesError::Open { what, path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(open_err)?;
        Ok(JsonLines { what, path: path.to_path_buf(), file })
    }

    /// Writes `record` as one line, in one `write` call. Blocking.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<(), JsonLinesError> {
        let err = |source| JsonLinesError::Append { what: self.what, path: self.path.clone(), source };
        let mut line = serde_json::to_vec(record).map_err(|e| err(std::io::Error::other(e)))?;
        line.push(b'\n');
        let n = self.file.write(&line).map_err(err)?;
        if n != line.len() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", line.len()),
            )));
        }
        Ok(())
    }

    /// Makes what was appended durable. Blocking.
    pub fn sync(&self) -> Result<(), JsonLinesError> {
        self.file.sync_data().map_err(|source| JsonLinesError::Append {
            what: self.what,
            path: self.path.clone(),
            source,
        })
    }
}

/// Every record of the file at `path`; a missing file holds none.
pub fn read<T: DeserializeOwned>(what: Kind, path: &Path) -> Result<Vec<T>, JsonLinesError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(JsonLinesError::Open { what, path: path.to_path_buf(), source }),
    };
    let mut records = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| JsonLinesError::Read { what, path: path.to_path_buf(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(|e| JsonLinesError::Malformed {
            what,
            path: path.to_path_buf(),
            line: i + 1,
            problem: e.to_string(),
        })?);
    }
    Ok(records)
}
