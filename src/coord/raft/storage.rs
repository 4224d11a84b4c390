//! Durable raft state on raft-engine: the log, the hard state, the conf state and the latest
//! snapshot of the state machine, under `data_dir/raft`. Everything raft acknowledges (entries,
//! term, vote, snapshots) is fsynced first; a write that only moves the commit index is not.
//!
//! raft reads the log from a copy in memory, never from raft-engine's files: raft-engine caches
//! the last block it read in a thread-local keyed by file and offset but not by engine, so two
//! members in one process (tests, benchmarks) could be answered from each other's logs. The files
//! are read only when the log is opened, on a thread of its own. The copy is small: the log is
//! compacted every `snapshot_every` applied entries.
//!
//! This module owns `data_dir`. It refuses to start from a directory that was initialised but
//! whose log is missing, corrupt or truncated: an empty state there would silently forget
//! committed watermarks (S3). A fresh directory is initialised with the static membership and a
//! marker naming the member, so the two cases can never be confused.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use raft_engine::{Command as EngineCommand, Engine, LogBatch, MessageExt, ReadableSize, RecoveryMode};
use serde::{Deserialize, Serialize};

use crate::domain::MemberId;

/// The raft group id inside raft-engine: there is one group.
const GROUP: u64 = 1;
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const MARKER: &str = "member.json";
/// Written at every compaction: how far this member's log is known to have reached.
const PROGRESS: &str = "progress.json";

/// Why the durable state could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data_dir {path}: {detail}")]
    DataDir { path: PathBuf, detail: String },
    #[error(
        "the raft log under {path} is unreadable ({detail}); it may be corrupt or truncated. Restore it from a backup, \
         or replace this member (README: replacing a member whose disk was lost). Starting empty would forget committed \
         watermarks, so failoverd will not"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path} was initialised for member {member} but its raft log is empty or missing; restore it, or replace this \
         member (README: replacing a member whose disk was lost)"
    )]
    LostLog { path: PathBuf, member: String },
    #[error("data_dir {path} belongs to member {found}, not {expected}; check `member` and `data_dir` in the config")]
    WrongMember { path: PathBuf, expected: String, found: String },
    #[error("cannot write the raft log under {path}: {detail}")]
    Write { path: PathBuf, detail: String },
}

#[derive(Serialize, Deserialize)]
struct Marker {
    member: MemberId,
}

/// A lower bound on the recovered log, fsynced outside raft-engine: committed entries are never
/// removed by raft, so a log found to end before `commit` lost acknowledged data.
#[derive(Serialize, Deserialize, Default)]
struct Progress {
    commit: u64,
    term: u64,
}

/// How often, at most, the progress marker is rewritten for new commits (two fsyncs, a rename
/// and a directory fsync: an idle member's most expensive write, 10 % of a witness's CPU when it
/// went out with each commit). A marker that lags is still a lower bound; it only detects a
/// smaller loss. What it is there for — raft-engine's files lost or replaced under a kept data
/// directory — loses far more than a few seconds, and a tail lost with the marker itself (a disk
/// that lies about fsync) escapes any cadence; the leader's heartbeat check catches at run time
/// what it knows this member acknowledged (`NodeTask::on_message`). A new term is written at once.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// raft-engine's view of raft entries.
#[derive(Clone)]
pub struct EntryCodec;

impl MessageExt for EntryCodec {
    type Entry = Entry;
    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// How the directory was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Empty or absent: initialised now with the configured membership.
    Fresh,
    /// Existing state was recovered.
    Recovered,
}

/// The raft log and state of one member. Implements [`raft::Storage`].
pub struct RaftLog {
    engine: Arc<Engine>,
    path: PathBuf,
    data_dir: PathBuf,
    progress: Progress,
    progress_written: Option<std::time::Instant>,
    progress_every: std::time::Duration,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Exactly the entries raft-engine holds, in index order: what raft reads.
    entries: VecDeque<Entry>,
}

fn engine_config(dir: &Path) -> raft_engine::Config {
    raft_engine::Config {
        dir: dir.display().to_string(),
        // A crash can tear the last, unacknowledged batch: that tail is dropped. Damage anywhere
        // else is refused, and so is a log that ends before the progress marker.
        recovery_mode: RecoveryMode::TolerateTailCorruption,
        recovery_threads: 1,
        // Small files so that compaction can give disk space back quickly: the state machine is
        // tiny and the log is compacted after every snapshot.
        target_file_size: ReadableSize::mb(1),
        purge_threshold: ReadableSize::mb(4),
        enable_log_recycle: false,
        ..raft_engine::Config::default()
    }
}

impl RaftLog {
    /// Opens `data_dir` for `member`, initialising it with `voters` when it is empty.
    pub fn open(data_dir: &Path, member: &MemberId, voters: &[u64]) -> Result<(RaftLog, Opened), StoreError> {
        let dir_err = |detail: String| StoreError::DataDir { path: data_dir.to_path_buf(), detail };
        std::fs::create_dir_all(data_dir).map_err(|e| dir_err(e.to_string()))?;
        let marker_path = data_dir.join(MARKER);
        let raft_dir = data_dir.join("raft");
        let has_marker = marker_path.exists();
        let is_empty = std::fs::read_dir(data_dir).map_err(|e| dir_err(e.to_string()))?.next().is_none();
        if !has_marker && !is_empty {
            return Err(dir_err(format!(
                "it is not empty and has no {MARKER}; point data_dir at an empty directory or at this member's own"
            )));
        }
        if has_marker {
            let text = std::fs::read_to_string(&marker_path).map_err(|e| dir_err(format!("{MARKER}: {e}")))?;
            let marker: Marker = serde_json::from_str(&text).map_err(|e| dir_err(format!("{MARKER}: {e}")))?;
            if &marker.member != member {
                return Err(StoreError::WrongMember {
                    path: data_dir.to_path_buf(),
                    expected: member.to_string(),
                    found: marker.member.to_string(),
                });
            }
        }
        let engine = Engine::open(engine_config(&raft_dir))
            .map_err(|e| StoreError::Corrupt { path: raft_dir.clone(), detail: e.to_string() })?;
        let corrupt = |detail: String| StoreError::Corrupt { path: raft_dir.clone(), detail };
        let mut log = RaftLog {
            engine: Arc::new(engine),
            path: raft_dir.clone(),
            data_dir: data_dir.to_path_buf(),
            progress: Progress::default(),
            progress_written: None,
            progress_every: PROGRESS_EVERY,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: Snapshot::default(),
            entries: VecDeque::new(),
        };
        if has_marker {
            let conf =
                log.engine.get_message::<ConfState>(GROUP, KEY_CONF_STATE).map_err(|e| corrupt(e.to_string()))?;
            let Some(conf) = conf else {
                return Err(StoreError::LostLog { path: raft_dir, member: member.to_string() });
            };
            log.conf_state = conf;
            log.hard_state = log
                .engine
                .get_message::<HardState>(GROUP, KEY_HARD_STATE)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or_default();
            log.snapshot = log
                .engine
                .get_message::<Snapshot>(GROUP, KEY_SNAPSHOT)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or_default();
            log.entries = read_entries(&log.engine).map_err(corrupt)?;
            let progress: Progress = match std::fs::read_to_string(data_dir.join(PROGRESS)) {
                Ok(text) => serde_json::from_str(&text).map_err(|e| corrupt(format!("{PROGRESS}: {e}")))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress::default(),
                Err(e) => return Err(corrupt(format!("{PROGRESS}: {e}"))),
            };
            if log.last() < progress.commit || log.hard_state.term < progress.term {
                return Err(corrupt(format!(
                    "the log ends at index {} (term {}) but this member had committed index {} (term {}): it was truncated",
                    log.last(),
                    log.hard_state.term,
                    progress.commit,
                    progress.term
                )));
            }
            log.progress = progress;
            return Ok((log, Opened::Recovered));
        }
        let conf = ConfState { voters: voters.to_vec(), ..ConfState::default() };
        let mut batch = LogBatch::default();
        batch.put_message(GROUP, KEY_CONF_STATE.to_vec(), &conf).map_err(|e| log.write_err(e))?;
        log.engine.write(&mut batch, true).map_err(|e| log.write_err(e))?;
        log.conf_state = conf;
        let marker = serde_json::to_vec(&Marker { member: member.clone() }).map_err(|e| dir_err(e.to_string()))?;
        write_synced(&marker_path, &marker).map_err(|e| dir_err(format!("{MARKER}: {e}")))?;
        Ok((log, Opened::Fresh))
    }

    fn write_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Write { path: self.path.clone(), detail: e.to_string() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state-machine bytes of the latest snapshot, if one was taken.
    pub fn snapshot_data(&self) -> Option<&[u8]> {
        let data = &self.snapshot.data;
        (!data.is_empty()).then_some(data.as_ref())
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Appends `entries` (overwriting any conflicting suffix) and stores `hard_state`, in one
    /// write. It is fsynced whenever it carries entries, a term or a vote: raft acknowledges
    /// those to peers and must never forget them. A write that only moves the commit index is
    /// not: the commit index is something a member can learn again from the leader, every
    /// entry below it is already on disk, and the next fsynced write makes it durable too
    /// (raft-engine is one append-only log). This keeps an fsync off the path of every commit.
    pub fn persist(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StoreError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        if let Some(e) = entries.first() {
            // raft-engine panics on a hole or on rewriting compacted entries; refuse instead.
            let (first, last) = (self.first(), self.last());
            if e.index < first || e.index > last + 1 {
                return Err(self.write_err(format!(
                    "entries from index {} do not continue a log that holds {first}..={last}",
                    e.index
                )));
            }
        }
        let mut batch = LogBatch::default();
        batch.add_entries::<EntryCodec>(GROUP, entries).map_err(|e| self.write_err(e))?;
        if let Some(hs) = hard_state {
            batch.put_message(GROUP, KEY_HARD_STATE.to_vec(), hs).map_err(|e| self.write_err(e))?;
        }
        let sync = must_sync(entries, hard_state, &self.hard_state);
        self.engine.write(&mut batch, sync).map_err(|e| self.write_err(e))?;
        if let Some(e) = entries.first() {
            while self.entries.back().is_some_and(|last| last.index >= e.index) {
                self.entries.pop_back();
            }
            self.entries.extend(entries.iter().cloned());
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        self.maybe_write_progress(false)
    }

    /// Records how far the log is committed, at most every `progress_every` unless `now`.
    fn maybe_write_progress(&mut self, now: bool) -> Result<(), StoreError> {
        let commit = self.hard_state.commit.min(self.last()).max(self.snapshot_index());
        let term = self.hard_state.term;
        if commit <= self.progress.commit && term <= self.progress.term {
            return Ok(());
        }
        // A new term goes out at once: the marker's term is what keeps a member that lost its
        // hard state from voting again in a term it already voted in.
        let now = now || term > self.progress.term;
        if !now && self.progress_written.is_some_and(|at| at.elapsed() < self.progress_every) {
            return Ok(());
        }
        let progress = Progress { commit: commit.max(self.progress.commit), term: term.max(self.progress.term) };
        let bytes = serde_json::to_vec(&progress).map_err(|e| self.write_err(e))?;
        write_synced(&self.data_dir.join(PROGRESS), &bytes).map_err(|e| self.write_err(e))?;
        self.progress = progress;
        self.progress_written = Some(std::time::Instant::now());
        Ok(())
    }

    /// Records a new commit index (from a light ready).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.persist(&[], Some(&hs))
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let meta = snapshot.get_metadata();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        let mut batch = LogBatch::default();
        batch.add_command(GROUP, EngineCommand::Clean);
        batch.put_message(GROUP, KEY_CONF_STATE.to_vec(), meta.get_conf_state()).map_err(|e| self.write_err(e))?;
        batch.put_message(GROUP, KEY_HARD_STATE.to_vec(), &hs).map_err(|e| self.write_err(e))?;
        batch.put_message(GROUP, KEY_SNAPSHOT.to_vec(), snapshot).map_err(|e| self.write_err(e))?;
        self.engine.write(&mut batch, true).map_err(|e| self.write_err(e))?;
        self.hard_state = hs;
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot = snapshot.clone();
        self.entries.clear();
        self.maybe_write_progress(true)
    }

    /// Stores a snapshot of the state machine at `index` (already applied) and drops the log up
    /// to it, then lets raft-engine give back the disk space.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        if index <= self.snapshot_index() {
            return Ok(());
        }
        let term = raft::Storage::term(self, index).map_err(|e| self.write_err(e))?;
        let mut snapshot = Snapshot { data: data.into(), ..Snapshot::default() };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        let mut batch = LogBatch::default();
        batch.put_message(GROUP, KEY_SNAPSHOT.to_vec(), &snapshot).map_err(|e| self.write_err(e))?;
        batch.add_command(GROUP, EngineCommand::Compact { index: index + 1 });
        self.engine.write(&mut batch, true).map_err(|e| self.write_err(e))?;
        self.snapshot = snapshot;
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.entries.pop_front();
        }
        // Purging may rewrite live entries, which reads them through the block cache.
        let engine = &self.engine;
        on_fresh_thread("purge the raft log", || engine.purge_expired_files().map(drop).map_err(|e| e.to_string()))
            .map_err(|e| self.write_err(e))?;
        self.maybe_write_progress(true)
    }

    fn first(&self) -> u64 {
        self.entries.front().map_or(self.snapshot_index() + 1, |e| e.index)
    }

    fn last(&self) -> u64 {
        self.entries.back().map_or(self.snapshot_index(), |e| e.index)
    }

    /// The entry at `idx`, which must lie within `first()..=last()`.
    fn entry_at(&self, idx: u64) -> Option<&Entry> {
        let offset = idx.checked_sub(self.first())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }
}

/// Every entry in `engine`.
fn read_entries(engine: &Engine) -> Result<VecDeque<Entry>, String> {
    let (Some(first), Some(last)) = (engine.first_index(GROUP), engine.last_index(GROUP)) else {
        return Ok(VecDeque::new());
    };
    on_fresh_thread("read the raft log", || {
        let mut out = Vec::new();
        engine.fetch_entries_to::<EntryCodec>(GROUP, first, last + 1, None, &mut out).map_err(|e| e.to_string())?;
        let contiguous = out.iter().zip(first..).all(|(e, i)| e.index == i);
        if out.len() as u64 != last + 1 - first || !contiguous {
            return Err(format!("the entries between {first} and {last} are not all there"));
        }
        Ok(VecDeque::from(out))
    })
}

/// Runs `work`, which reads raft-engine's files, on a thread that has never read another
/// engine's: raft-engine's thread-local block cache is keyed by file and offset only. A panic in
/// it ends a running member (`panic_hook`); only where no hook is installed (members run inside
/// tests) does it come back here, as an error.
fn on_fresh_thread<T: Send>(what: &str, work: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name("raft-log-io".into())
            .spawn_scoped(s, work)
            .map_err(|e| format!("cannot start a thread to {what}: {e}"))?;
        thread.join().unwrap_or_else(|_| Err(format!("raft-engine panicked while trying to {what}")))
    })
}

/// Whether a write must be on disk before it returns: it carries entries, or a term or vote
/// other than the stored ones — what raft acknowledges to peers. A change of commit index alone
/// need not be (see [`RaftLog::persist`]).
fn must_sync(entries: &[Entry], hard_state: Option<&HardState>, stored: &HardState) -> bool {
    !entries.is_empty() || hard_state.is_some_and(|hs| hs.term != stored.term || hs.vote != stored.vote)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let (Ok(from), Ok(to)) = (usize::try_from(low - self.first()), usize::try_from(high - self.first())) else {
            return Err(raft::Error::Store(StorageError::Unavailable));
        };
        let mut out: Vec<Entry> = self.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snapshot.get_metadata();
        if idx == snap.index {
            return Ok(snap.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.entry_at(idx).map(|e| e.term).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index || self.snapshot.data.is_empty() {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage;

    use super::*;

    #[test]
    fn entries_terms_and_votes_are_synced_and_a_commit_alone_is_not() {
        let stored = HardState { term: 3, vote: 2, commit: 10, ..HardState::default() };
        let with = |term, vote, commit| HardState { term, vote, commit, ..HardState::default() };
        let entries = [entry(11, 3)];
        assert!(must_sync(&entries, None, &stored), "entries");
        assert!(must_sync(&entries, Some(&with(3, 2, 11)), &stored), "entries and a commit");
        assert!(must_sync(&[], Some(&with(4, 2, 10)), &stored), "a new term");
        assert!(must_sync(&[], Some(&with(3, 1, 10)), &stored), "a new vote");
        assert!(!must_sync(&[], Some(&with(3, 2, 11)), &stored), "only the commit index moved");
        assert!(!must_sync(&[], Some(&stored), &stored), "nothing changed");
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("e{index}").into_bytes().into(), ..Entry::default() }
    }

    fn member() -> MemberId {
        MemberId::new("a").expect("valid")
    }

    #[test]
    fn fresh_directory_gets_the_membership_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, opened) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        assert_eq!(opened, Opened::Fresh);
        let hs = HardState { term: 2, vote: 1, commit: 3, ..HardState::default() };
        log.persist(&[entry(1, 1), entry(2, 1), entry(3, 2)], Some(&hs)).expect("persist");
        drop(log);
        let (log, opened) = RaftLog::open(dir.path(), &member(), &[9]).expect("reopen");
        assert_eq!(opened, Opened::Recovered);
        let st = log.initial_state().expect("state");
        assert_eq!(st.conf_state.voters, vec![1, 2, 3], "membership from the first start is kept");
        assert_eq!((st.hard_state.term, st.hard_state.vote, st.hard_state.commit), (2, 1, 3));
        assert_eq!((log.first_index().expect("first"), log.last_index().expect("last")), (1, 3));
        assert_eq!(log.term(3).expect("term"), 2);
        let ents = log.entries(1, 4, None, GetEntriesContext::empty(false)).expect("entries");
        assert_eq!(ents.len(), 3);
    }

    /// raft-engine keeps the last block it read in a thread-local cache keyed by file and
    /// offset, not by engine. Two members in one process (the tests, the benchmarks) write
    /// byte-for-byte equal layouts, so one member's read could be answered from the other's log.
    #[test]
    fn two_logs_read_on_one_thread_each_see_only_their_own_entries() {
        let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let (mut a, _) = RaftLog::open(dir_a.path(), &member(), &[1, 2, 3]).expect("open a");
        let (mut b, _) = RaftLog::open(dir_b.path(), &member(), &[1, 2, 3]).expect("open b");
        a.persist(&(1..=3).map(|i| entry(i, 1)).collect::<Vec<_>>(), None).expect("persist a");
        b.persist(&(1..=3).map(|i| entry(i, 2)).collect::<Vec<_>>(), None).expect("persist b");
        for _ in 0..2 {
            assert_eq!((a.term(2).expect("a"), b.term(2).expect("b")), (1, 2));
            let ents = b.entries(1, 4, None, GetEntriesContext::empty(false)).expect("entries of b");
            assert!(ents.iter().all(|e| e.term == 2), "b read a's entries: {ents:?}");
        }
        drop((a, b));
        let (a, _) = RaftLog::open(dir_a.path(), &member(), &[1, 2, 3]).expect("reopen a");
        assert_eq!(a.term(3).expect("a"), 1);
        let (b, _) = RaftLog::open(dir_b.path(), &member(), &[1, 2, 3]).expect("reopen b");
        assert_eq!((a.term(3).expect("a"), b.term(3).expect("b")), (1, 2));
    }

    #[test]
    fn conflicting_suffix_is_overwritten() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.persist(&[entry(1, 1), entry(2, 1), entry(3, 1)], None).expect("persist");
        log.persist(&[entry(2, 2)], None).expect("overwrite");
        assert_eq!(log.last_index().expect("last"), 2);
        assert_eq!(log.term(2).expect("term"), 2);
    }

    #[test]
    fn entries_stop_at_max_size_but_always_give_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.persist(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>(), None).expect("persist");
        let ctx = || GetEntriesContext::empty(false);
        let one = u64::from(protobuf::Message::compute_size(&entry(1, 1)));
        assert_eq!(
            log.entries(3, 8, None, ctx()).expect("all").iter().map(|e| e.index).collect::<Vec<_>>(),
            [3, 4, 5, 6, 7]
        );
        assert_eq!(log.entries(3, 8, Some(2 * one), ctx()).expect("two").len(), 2);
        assert_eq!(log.entries(3, 8, Some(0), ctx()).expect("one").len(), 1);
        assert!(matches!(log.entries(3, 12, None, ctx()), Err(raft::Error::Store(StorageError::Unavailable))));
    }

    #[test]
    fn entries_that_leave_a_hole_are_refused_and_the_log_is_unchanged() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.persist(&[entry(1, 1), entry(2, 1)], None).expect("persist");
        let err = log.persist(&[entry(4, 1)], None).expect_err("a hole is refused");
        assert!(err.to_string().contains("from index 4 do not continue a log that holds 1..=2"), "{err}");
        log.compact(1, b"state".to_vec()).expect("compact");
        assert!(log.persist(&[entry(1, 2)], None).is_err(), "a compacted index cannot be rewritten");
        drop(log);
        let (log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("reopen");
        assert_eq!((log.first_index().expect("first"), log.last_index().expect("last")), (2, 2));
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_drops_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        let ents: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
        log.persist(&ents, None).expect("persist");
        log.compact(8, b"state".to_vec()).expect("compact");
        assert_eq!(log.first_index().expect("first"), 9);
        assert_eq!(log.term(8).expect("term of the snapshot index"), 1);
        assert!(matches!(log.term(7), Err(raft::Error::Store(StorageError::Compacted))));
        assert_eq!(log.snapshot(8, 2).expect("snapshot").get_metadata().index, 8);
        drop(log);
        let (log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("reopen");
        assert_eq!(log.snapshot_data(), Some(&b"state"[..]));
        assert_eq!(log.first_index().expect("first"), 9);
    }

    #[test]
    fn a_received_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.persist(&[entry(1, 1), entry(2, 1)], None).expect("persist");
        let mut snap = Snapshot { data: b"s".to_vec().into(), ..Snapshot::default() };
        snap.mut_metadata().index = 50;
        snap.mut_metadata().term = 4;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        log.apply_snapshot(&snap).expect("apply");
        assert_eq!((log.first_index().expect("first"), log.last_index().expect("last")), (51, 50));
        log.persist(&[entry(51, 4)], None).expect("append after the snapshot");
        assert_eq!(log.last_index().expect("last"), 51);
    }

    #[test]
    fn a_directory_whose_log_vanished_is_refused_not_started_empty() {
        let dir = tempfile::tempdir().expect("dir");
        drop(RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open"));
        std::fs::remove_dir_all(dir.path().join("raft")).expect("delete the log");
        let err = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).err().expect("refused");
        assert!(matches!(err, StoreError::LostLog { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().join("raft").display().to_string()));
    }

    #[test]
    fn another_members_directory_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        drop(RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open"));
        let err = RaftLog::open(dir.path(), &MemberId::new("b").expect("valid"), &[1, 2, 3]).err().expect("refused");
        assert!(matches!(err, StoreError::WrongMember { .. }), "{err}");
    }

    #[test]
    fn a_foreign_non_empty_directory_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("something"), "x").expect("write");
        let err = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).err().expect("refused");
        assert!(err.to_string().contains("no member.json"), "{err}");
    }

    /// Log files are preallocated with zeros: the data is the prefix up to the last non-zero byte.
    fn data_len(bytes: &[u8]) -> usize {
        bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1)
    }

    fn raftlog_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("raft"))
            .expect("raft dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "raftlog"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn damage_before_the_last_file_is_refused_with_the_path() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.progress_every = std::time::Duration::ZERO;
        let mut index = 0;
        while raftlog_files(dir.path()).len() < 2 {
            let batch: Vec<Entry> = (0..100)
                .map(|_| {
                    index += 1;
                    Entry { index, term: 1, data: vec![7u8; 1024].into(), ..Entry::default() }
                })
                .collect();
            let hs = HardState { term: 1, commit: index, ..HardState::default() };
            log.persist(&batch, Some(&hs)).expect("persist");
        }
        drop(log);
        let first = raftlog_files(dir.path())[0].clone();
        let mut bytes = std::fs::read(&first).expect("read");
        let mid = data_len(&bytes) / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0xA5;
        }
        std::fs::write(&first, bytes).expect("write");
        let err = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).err().expect("damage inside the log is refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().join("raft").display().to_string()), "{err}");
    }

    #[test]
    fn a_log_truncated_below_its_progress_marker_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.persist(&(1..=100).map(|i| entry(i, 1)).collect::<Vec<_>>(), None).expect("persist");
        log.compact(90, b"state".to_vec()).expect("compact writes the marker");
        drop(log);
        for f in raftlog_files(dir.path()) {
            std::fs::OpenOptions::new().write(true).open(&f).expect("open").set_len(0).expect("truncate");
        }
        let err = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).err().expect("a truncated log is refused");
        assert!(matches!(err, StoreError::Corrupt { .. } | StoreError::LostLog { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().join("raft").display().to_string()), "{err}");
    }

    fn marker(dir: &Path) -> Progress {
        let text = std::fs::read_to_string(dir.join(PROGRESS)).expect("the progress marker");
        serde_json::from_str(&text).expect("the marker decodes")
    }

    // The marker is rewritten at most every few seconds for commits, but a new term at once: it is
    // what keeps a member whose hard state was lost from voting twice in one term.
    #[test]
    fn the_progress_marker_lags_commits_but_never_a_new_term() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.persist(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>(), None).expect("persist");
        log.persist(&[], Some(&HardState { term: 1, commit: 5, ..HardState::default() })).expect("first commit");
        assert_eq!((marker(dir.path()).commit, marker(dir.path()).term), (5, 1));
        log.persist(&[entry(6, 1)], Some(&HardState { term: 1, commit: 6, ..HardState::default() })).expect("commit");
        assert_eq!(marker(dir.path()).commit, 5, "a commit soon after waits for a later write");
        log.persist(&[], Some(&HardState { term: 2, vote: 2, commit: 6, ..HardState::default() })).expect("vote");
        assert_eq!((marker(dir.path()).commit, marker(dir.path()).term), (6, 2), "a new term is written at once");
    }

    #[test]
    fn a_torn_last_batch_from_a_crash_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("open");
        log.persist(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>(), None).expect("acknowledged");
        log.persist(&(11..=20).map(|i| entry(i, 1)).collect::<Vec<_>>(), None).expect("the batch a crash tears");
        drop(log);
        let file = raftlog_files(dir.path()).pop().expect("a log file");
        let len = data_len(&std::fs::read(&file).expect("read")) as u64;
        std::fs::OpenOptions::new().write(true).open(&file).expect("open").set_len(len - 3).expect("tear");
        let (log, _) = RaftLog::open(dir.path(), &member(), &[1, 2, 3]).expect("a torn tail is normal after a crash");
        assert_eq!(log.last_index().expect("last"), 10);
    }
}
