//! Which executable a keeper runs. `failoverd-keeper` is the keeper alone: when one of this very
//! build lies beside the daemon's binary, keepers run it; otherwise they run the daemon's own
//! binary (`failoverd keeper`), as before it existed. Both take the same arguments.
//!
//! Why a second binary: a process started from the daemon's binary carries that binary's
//! relocated data, about 0.8 MB of private memory, and a member holds one keeper per validator it
//! is active for; the keeper alone carries about 0.15 MB. The choice is made once per process, at
//! start. The chosen file is held open and every keeper is started from that open file
//! (`/proc/self/fd/N`), so an upgrade that replaces the files on disk never pairs this daemon with
//! another build's keeper. This module must never pick a keeper whose build it has not confirmed:
//! anything else — absent, unreadable, not runnable, another build, no answer in time — means the
//! daemon's own binary, with the reason logged.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

/// The keeper-alone binary's file name, beside the daemon's.
pub const KEEPER_BINARY: &str = "failoverd-keeper";

/// What `failoverd-keeper --version` prints: the package version and a fingerprint of the
/// keeper's sources (`build.rs`), so two builds that could disagree on the spec or the control
/// lines never pass for one another.
pub const KEEPER_VERSION_LINE: &str =
    concat!("failoverd-keeper ", env!("CARGO_PKG_VERSION"), " keeper-sources ", env!("FAILOVERD_KEEPER_FINGERPRINT"));

/// How long the keeper binary may take to say its version at start.
const VERSION_DEADLINE: Duration = Duration::from_secs(5);

/// An executable keepers are started from.
#[derive(Clone)]
pub struct KeeperProgram {
    /// The path given to exec.
    exec: PathBuf,
    /// What logs and errors call it.
    shown: String,
    /// The open file behind a `/proc/self/fd/N` path, kept open for the process's life, and
    /// what `fstat` said of it when its version was checked.
    held: Option<Arc<(File, FileStamp)>>,
}

/// What identifies a file's contents without reading them: an in-place overwrite (`cp` onto it
/// while no keeper runs it) changes its size or modification time. Not its change time: an
/// upgrade that renames a new file over the path unlinks this one, which changes only that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: (i64, i64),
}

impl FileStamp {
    fn of(file: &File) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(FileStamp { dev: m.dev(), ino: m.ino(), size: m.size(), mtime_ns: (m.mtime(), m.mtime_nsec()) })
    }
}

impl fmt::Display for KeeperProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl KeeperProgram {
    /// The executable at `path`, as it is (tests, and the daemon's own binary).
    pub fn at(path: impl Into<PathBuf>) -> KeeperProgram {
        let exec = path.into();
        KeeperProgram { shown: exec.display().to_string(), exec, held: None }
    }

    /// This process's own executable.
    pub fn this_executable() -> KeeperProgram {
        KeeperProgram { exec: PathBuf::from("/proc/self/exe"), shown: "this daemon's own binary".into(), held: None }
    }

    /// The path to exec.
    pub fn exec(&self) -> &Path {
        &self.exec
    }

    /// Whether keepers run the keeper-alone binary.
    pub fn is_keeper_alone(&self) -> bool {
        self.held.is_some()
    }

    /// This program, if the file it was checked as is still unchanged; otherwise the daemon's own
    /// binary, with the reason logged: the keeper-alone binary was overwritten in place since
    /// the daemon checked it, and what it holds now is unchecked.
    pub fn still_checked(&self) -> KeeperProgram {
        let Some(held) = &self.held else { return self.clone() };
        let reason = match FileStamp::of(&held.0) {
            Ok(now) if now == held.1 => return self.clone(),
            Ok(_) => format!("{} was overwritten in place since it was checked", self.shown),
            Err(e) => format!("{} cannot be examined again ({e})", self.shown),
        };
        tracing::warn!(%reason, "this keeper runs the daemon's own binary; restart the daemon to check the new one");
        KeeperProgram::this_executable()
    }

    /// The program this daemon's keepers run, chosen at the first call and logged once.
    pub async fn for_this_daemon() -> KeeperProgram {
        static CHOSEN: OnceCell<KeeperProgram> = OnceCell::const_new();
        CHOSEN
            .get_or_init(|| async {
                let chosen = match std::fs::read_link("/proc/self/exe") {
                    Ok(own) => choose_beside(&own).await,
                    Err(e) => {
                        Err(Unused::Refused(format!("this daemon's path cannot be read from /proc/self/exe ({e})")))
                    }
                };
                match chosen {
                    Ok(program) => {
                        tracing::info!(keeper = %program, "keepers run the keeper-alone binary of this build");
                        program
                    }
                    // An install without the keeper-alone binary is an older layout, not a fault.
                    Err(Unused::Absent(reason)) => {
                        tracing::info!(%reason, "keepers run this daemon's own binary (about 0.8 MB more memory each)");
                        KeeperProgram::this_executable()
                    }
                    Err(Unused::Refused(reason)) => {
                        tracing::warn!(
                            %reason,
                            "keepers run this daemon's own binary; install the failoverd-keeper of this build beside it"
                        );
                        KeeperProgram::this_executable()
                    }
                }
            })
            .await
            .clone()
    }
}

/// Why the keeper-alone binary is not used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unused {
    /// There is none beside the daemon's binary.
    Absent(String),
    /// There is one, but it cannot be confirmed as this build's.
    Refused(String),
}

impl fmt::Display for Unused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unused::Absent(reason) | Unused::Refused(reason) => f.write_str(reason),
        }
    }
}

/// The keeper-alone binary beside `own` (the daemon's binary), opened and confirmed to be of
/// this build; the error says why it is not used.
pub async fn choose_beside(own: &Path) -> Result<KeeperProgram, Unused> {
    let path = own.with_file_name(KEEPER_BINARY);
    let shown = path.display().to_string();
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Unused::Absent(format!("there is no {shown}")),
        _ => Unused::Refused(format!("{shown} cannot be opened ({e})")),
    })?;
    let stamp = FileStamp::of(&file).map_err(|e| Unused::Refused(format!("{shown} cannot be examined ({e})")))?;
    let exec = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let said =
        say_version(&exec).await.map_err(|e| Unused::Refused(format!("{shown} did not say its version: {e}")))?;
    if said != KEEPER_VERSION_LINE {
        return Err(Unused::Refused(format!(
            "{shown} is another build: it says {said:?}, this daemon needs {KEEPER_VERSION_LINE:?}"
        )));
    }
    // Examined again after the run: a file changed while it answered is not the one that did.
    if FileStamp::of(&file).ok() != Some(stamp) {
        return Err(Unused::Refused(format!("{shown} changed while its version was asked")));
    }
    Ok(KeeperProgram { exec, shown, held: Some(Arc::new((file, stamp))) })
}

/// What `exec --version` prints on its first line, within [`VERSION_DEADLINE`].
async fn say_version(exec: &Path) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(exec);
    cmd.arg("--version").stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null()).kill_on_drop(true);
    let out = match tokio::time::timeout(VERSION_DEADLINE, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("it cannot be run ({e})")),
        Err(_) => return Err(format!("no answer within {} s", VERSION_DEADLINE.as_secs())),
    };
    if !out.status.success() {
        return Err(format!("it ended with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's binary and the keeper-alone binary that `cargo test` builds beside this
    /// test executable.
    fn built() -> (PathBuf, PathBuf) {
        let daemon = crate::keeper::test_launcher().program.exec().to_path_buf();
        let keeper = daemon.with_file_name(KEEPER_BINARY);
        assert!(keeper.exists(), "{} is missing: run `cargo test`, which builds it", keeper.display());
        (daemon, keeper)
    }

    /// A directory holding a `failoverd` (a link to the real one) and, when `keeper` is given, a
    /// `failoverd-keeper` made by it.
    fn install(keeper: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = dir.path().join("failoverd");
        std::os::unix::fs::symlink(built().0, &own).expect("link the daemon");
        keeper(&dir.path().join(KEEPER_BINARY));
        (dir, own)
    }

    fn refused_reason(unused: Option<Unused>) -> String {
        match unused {
            Some(Unused::Refused(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// [`choose_beside`] over a binary this test process has just written: another test's
    /// child, forked while the copy was open for writing, holds that write end until its own
    /// exec, and running the copy meanwhile fails with "Text file busy". Only tests write a
    /// binary and run it at once; the daemon runs one it did not write.
    async fn choose_copied(own: &Path) -> Result<KeeperProgram, Unused> {
        for _ in 0..50 {
            match choose_beside(own).await {
                Err(Unused::Refused(reason)) if reason.contains("Text file busy") => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => return other,
            }
        }
        choose_beside(own).await
    }

    #[tokio::test]
    async fn the_keeper_alone_of_this_build_is_chosen_and_held_open() {
        let (dir, own) = install(|at| {
            std::fs::copy(built().1, at).expect("copy the keeper");
        });
        let chosen = choose_copied(&own).await.expect("chosen");
        assert!(chosen.is_keeper_alone());
        assert!(chosen.exec().starts_with("/proc/self/fd/"), "started from the open file, not the path");
        assert!(chosen.still_checked().is_keeper_alone());
        // An upgrade renames a new file into place: this daemon's keepers keep the checked one.
        let next = dir.path().join("next");
        std::fs::copy(built().0, &next).expect("copy");
        std::fs::rename(&next, own.with_file_name(KEEPER_BINARY)).expect("rename over it");
        assert!(chosen.still_checked().is_keeper_alone());
        assert_eq!(say_version(chosen.exec()).await.as_deref(), Ok(KEEPER_VERSION_LINE));
    }

    /// `cp` onto the checked file while no keeper runs it writes into the very file the daemon
    /// holds: what it holds is then unchecked, and keepers run the daemon's own binary.
    #[tokio::test]
    async fn a_keeper_binary_overwritten_in_place_after_the_check_is_not_run() {
        let (_dir, own) = install(|at| {
            std::fs::copy(built().1, at).expect("copy the keeper");
        });
        let chosen = choose_copied(&own).await.expect("chosen");
        let bytes = std::fs::read(built().0).expect("read");
        std::fs::write(own.with_file_name(KEEPER_BINARY), bytes).expect("overwrite in place");
        let now = chosen.still_checked();
        assert!(!now.is_keeper_alone());
        assert_eq!(now.exec(), Path::new("/proc/self/exe"));
    }

    #[tokio::test]
    async fn a_missing_broken_or_foreign_keeper_binary_is_refused_with_the_reason() {
        let (_d, own) = install(|_| {});
        let Some(Unused::Absent(refused)) = choose_beside(&own).await.err() else { panic!("absent") };
        assert!(refused.starts_with("there is no ") && refused.ends_with("/failoverd-keeper"), "{refused}");

        // Another build: the daemon's own binary under the keeper's name says another version.
        let (_d, own) = install(|at| std::os::unix::fs::symlink(built().0, at).expect("link"));
        let refused = refused_reason(choose_beside(&own).await.err());
        let says = format!("is another build: it says \"failoverd {}\"", env!("CARGO_PKG_VERSION"));
        assert!(refused.contains(&says), "{refused}");

        // Truncated on disk: whether the kernel refuses it or it crashes, it says no version.
        let (_d, own) = install(|at| {
            let bytes = std::fs::read(built().1).expect("read");
            std::fs::write(at, &bytes[..4096]).expect("write");
            std::fs::set_permissions(at, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        });
        let refused = refused_reason(choose_copied(&own).await.err());
        assert!(refused.contains("failoverd-keeper did not say its version: it "), "{refused}");

        // Not executable, and a directory in its place.
        let (_d, own) = install(|at| {
            std::fs::copy(built().1, at).expect("copy");
            std::fs::set_permissions(at, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
        });
        let refused = refused_reason(choose_beside(&own).await.err());
        assert!(refused.contains("it cannot be run (Permission denied"), "{refused}");
        let (_d, own) = install(|at| std::fs::create_dir(at).expect("mkdir"));
        let refused = refused_reason(choose_beside(&own).await.err());
        assert!(refused.contains("it cannot be run"), "{refused}");
    }
}
