//! `SignStateFile`: the signer's own record of its last signature, on this machine's disk, written
//! and flushed (`fdatasync`) before a signature leaves — CometBFT's `priv_validator_state.json`
//! for the remote signer.
//!
//! Inside a reserved window (docs/design.md §6) the store is no longer asked per signature, so
//! this record is what keeps a restarted signer from signing a second, different message at an
//! HRS it already signed within the same window. It owns the file's format and nothing else: the
//! double-sign rule that reads it is [`super::double_sign`].
//!
//! Format: two fixed slots of [`SLOT`] bytes, written alternately, each
//! `magic | sequence | length | payload | sha256(sequence, length, payload)`. A write overwrites
//! the older slot only, so a crash in the middle of one leaves the other intact; loading takes
//! the valid slot with the higher sequence. A file whose slots are all invalid (truncated,
//! overwritten, another format) is refused by name: the signer does not start, rather than
//! forget what it signed.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::double_sign::LastSignature;
use crate::domain::{Hrs, Step};

/// Bytes per slot: room for the largest proposal sign-bytes a node sends (a few hundred bytes)
/// and a 64-byte signature, with margin.
const SLOT: usize = 4096;
const MAGIC: &[u8; 8] = b"FOSIGN01";
/// magic 8 + sequence 8 + length 4.
const HEADER: usize = 20;
const DIGEST: usize = 32;
/// height 8 + round 4 + step 1 + two lengths 4 + 4.
const FIXED_PAYLOAD: usize = 21;

#[derive(Debug, thiserror::Error)]
pub enum SignStateError {
    #[error("cannot open the signer's state file {path}: {detail}; check the directory exists and is writable")]
    Open { path: String, detail: String },
    #[error(
        "the signer's state file {path} holds no valid record ({detail}): it is truncated, damaged or not a \
         failoverd signer state; restore it from a backup, or remove it only after `failoverctl watermark show` \
         confirms the watermark is above every height this key signed"
    )]
    Damaged { path: String, detail: String },
    #[error("cannot write the signer's state file {path}: {detail}; the signature was not sent")]
    Write { path: String, detail: String },
    #[error(
        "the signature record for {hrs} takes {size} bytes, more than a state slot holds ({SLOT}); refusing to sign it"
    )]
    TooLarge { hrs: Hrs, size: usize },
}

/// The open state file and the slot the next write goes to.
pub struct SignStateFile {
    file: File,
    path: PathBuf,
    sequence: u64,
}

impl SignStateFile {
    /// Opens (creating, mode 600) the state file and reads its newest record: `None` when the file
    /// is new or empty.
    pub fn open(path: &Path) -> Result<(SignStateFile, Option<LastSignature>), SignStateError> {
        let shown = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| SignStateError::Open { path: shown.clone(), detail: e.to_string() })?;
        let len =
            file.metadata().map_err(|e| SignStateError::Open { path: shown.clone(), detail: e.to_string() })?.len();
        let mut state = SignStateFile { file, path: path.to_path_buf(), sequence: 0 };
        if len == 0 {
            return Ok((state, None));
        }
        let mut bytes = vec![0u8; len.min(2 * SLOT as u64) as usize];
        state
            .file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| SignStateError::Damaged { path: shown.clone(), detail: e.to_string() })?;
        let newest = bytes.chunks(SLOT).filter_map(decode_slot).max_by_key(|(sequence, _)| *sequence);
        match newest {
            Some((sequence, last)) => {
                state.sequence = sequence;
                Ok((state, Some(last)))
            }
            None => Err(SignStateError::Damaged {
                path: shown,
                detail: format!("{len} bytes, no slot with a valid checksum"),
            }),
        }
    }

    /// Records `last` durably: returns once the record is on disk.
    pub fn store(&mut self, last: &LastSignature) -> Result<(), SignStateError> {
        let sequence = self.sequence + 1;
        let slot = encode_slot(sequence, last)?;
        let offset = (sequence % 2) * SLOT as u64;
        let failed =
            |e: std::io::Error| SignStateError::Write { path: self.path.display().to_string(), detail: e.to_string() };
        self.file.write_all_at(&slot, offset).map_err(failed)?;
        self.file.sync_data().map_err(failed)?;
        self.sequence = sequence;
        Ok(())
    }
}

fn encode_slot(sequence: u64, last: &LastSignature) -> Result<Vec<u8>, SignStateError> {
    let mut payload = Vec::with_capacity(FIXED_PAYLOAD + last.sign_bytes.len() + last.signature.len());
    payload.extend_from_slice(&last.hrs.height.to_be_bytes());
    payload.extend_from_slice(&last.hrs.round.to_be_bytes());
    payload.push(last.hrs.step.as_u8());
    for part in [&last.sign_bytes, &last.signature] {
        payload.extend_from_slice(&(part.len() as u32).to_be_bytes());
        payload.extend_from_slice(part);
    }
    let size = HEADER + payload.len() + DIGEST;
    if size > SLOT {
        return Err(SignStateError::TooLarge { hrs: last.hrs, size });
    }
    let mut slot = Vec::with_capacity(SLOT);
    slot.extend_from_slice(MAGIC);
    slot.extend_from_slice(&sequence.to_be_bytes());
    slot.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    slot.extend_from_slice(&payload);
    let digest = Sha256::digest(&slot[MAGIC.len()..]);
    slot.extend_from_slice(&digest);
    slot.resize(SLOT, 0);
    Ok(slot)
}

/// The record in one slot, or `None` when the slot is empty, cut short or fails its checksum.
fn decode_slot(slot: &[u8]) -> Option<(u64, LastSignature)> {
    if slot.len() < HEADER + DIGEST || &slot[..MAGIC.len()] != MAGIC {
        return None;
    }
    let sequence = u64::from_be_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(slot[16..20].try_into().ok()?) as usize;
    let end = HEADER.checked_add(len)?;
    let digest = slot.get(end..end.checked_add(DIGEST)?)?;
    if Sha256::digest(&slot[MAGIC.len()..end]).as_slice() != digest {
        return None;
    }
    let mut payload = Reader(&slot[HEADER..end]);
    let height = u64::from_be_bytes(payload.take(8)?.try_into().ok()?);
    let round = u32::from_be_bytes(payload.take(4)?.try_into().ok()?);
    let step = Step::from_u8(payload.take(1)?[0])?;
    let sign_bytes = payload.part()?;
    let signature = payload.part()?;
    Some((sequence, LastSignature { hrs: Hrs::new(height, round, step), sign_bytes, signature }))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn part(&mut self) -> Option<Vec<u8>> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(height: u64, round: u32, fill: u8) -> LastSignature {
        LastSignature {
            hrs: Hrs::new(height, round, Step::Precommit),
            sign_bytes: vec![fill; 120],
            signature: vec![fill; 64],
        }
    }

    #[test]
    fn a_new_file_holds_nothing_and_every_write_is_what_the_next_open_reads() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        let (mut file, last) = SignStateFile::open(&path).expect("open");
        assert_eq!(last, None);
        for h in 1..=5 {
            file.store(&record(h, 0, h as u8)).expect("store");
            let (_, read) = SignStateFile::open(&path).expect("reopen");
            assert_eq!(read, Some(record(h, 0, h as u8)), "after writing height {h}");
        }
        let mode = std::fs::metadata(&path).expect("meta");
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    }

    #[test]
    fn a_write_cut_short_leaves_the_previous_record() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        let (mut file, _) = SignStateFile::open(&path).expect("open");
        file.store(&record(7, 0, 7)).expect("store 7");
        file.store(&record(8, 1, 8)).expect("store 8");
        // A crash in the middle of writing height 9 into the older slot (slot 1, holding 7).
        let torn = encode_slot(3, &record(9, 0, 9)).expect("encode");
        let raw = std::fs::OpenOptions::new().write(true).open(&path).expect("raw");
        raw.write_all_at(&torn[..100], SLOT as u64).expect("tear");
        let (_, read) = SignStateFile::open(&path).expect("reopen");
        assert_eq!(read, Some(record(8, 1, 8)));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        let (mut file, _) = SignStateFile::open(&path).expect("open");
        file.store(&record(3, 0, 3)).expect("store");
        let bytes = std::fs::read(&path).expect("read");
        for damaged in [bytes[..30].to_vec(), b"{\"height\":\"3\"}".to_vec(), vec![0u8; 8192]] {
            std::fs::write(&path, &damaged).expect("damage");
            let error = SignStateFile::open(&path).err().expect("refused");
            let text = error.to_string();
            assert!(text.contains(&path.display().to_string()) && text.contains("no valid record"), "{text}");
        }
    }

    #[test]
    fn a_record_too_large_for_a_slot_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("state");
        let (mut file, _) = SignStateFile::open(&path).expect("open");
        file.store(&record(3, 0, 3)).expect("store");
        let huge =
            LastSignature { hrs: Hrs::new(4, 0, Step::Propose), sign_bytes: vec![1; SLOT], signature: vec![2; 64] };
        assert!(matches!(file.store(&huge), Err(SignStateError::TooLarge { .. })));
        assert_eq!(SignStateFile::open(&path).expect("reopen").1, Some(record(3, 0, 3)));
    }
}
