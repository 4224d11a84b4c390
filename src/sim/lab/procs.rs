//! A lab's view of processes it did not start itself: the keeper each daemon starts (a
//! `failoverd keeper` in a session of its own), the validator a keeper starts in a process group
//! of its own (with whatever a start script forked beside it), and what is left of a group that
//! should have been stopped. Everything comes from `/proc`, read the way `ps` does.
//!
//! It only reads: it never signals a process (the labs do) and never trusts what failoverd says
//! about its own processes — this is the evidence that judges it.

use std::path::Path;

/// One process as `/proc/<pid>/stat` and `/proc/<pid>/cmdline` describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// The state letter: `R`, `S`, `T` (stopped), `Z` (a zombie, which can no longer run).
    pub state: char,
    pub cmdline: Vec<String>,
}

impl Proc {
    /// Whether it can still run (anything but a zombie).
    pub fn live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }

    /// Whether its command line mentions `text` in any argument.
    pub fn mentions(&self, text: &str) -> bool {
        self.cmdline.iter().any(|a| a.contains(text))
    }

    /// `pid 123 (sh -c …)`, for a violation message.
    pub fn describe(&self) -> String {
        let mut cmd = self.cmdline.join(" ");
        if cmd.len() > 120 {
            let cut = (0..=117).rev().find(|&i| cmd.is_char_boundary(i)).unwrap_or(0);
            cmd.truncate(cut);
            cmd.push_str("...");
        }
        format!("pid {} ({cmd})", self.pid)
    }
}

/// The fields of a `/proc/<pid>/stat` line this module needs: state, ppid, pgrp, session.
fn parse_stat(pid: i32, stat: &str, cmdline: Vec<String>) -> Option<Proc> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    Some(Proc { pid, ppid, pgrp, session, state, cmdline })
}

/// Process `pid`, or `None` when it is gone.
pub fn read(pid: i32) -> Option<Proc> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let cmdline =
        raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    parse_stat(pid, &stat, cmdline)
}

/// Whether process `pid` can still run: it exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid).ok().and_then(read).is_some_and(|p| p.live())
}

/// Every process now (those that exit while the table is read are left out).
pub fn all() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(read)
        .collect()
}

/// The keeper daemon `daemon` started: its child `failoverd keeper` that leads a session of its
/// own.
pub fn keeper_of(daemon: i32) -> Option<Proc> {
    all()
        .into_iter()
        .find(|p| p.ppid == daemon && p.session == p.pid && p.live() && p.cmdline.get(1).is_some_and(|a| a == "keeper"))
}

/// The processes of group `pgid` that can still run.
pub fn live_in_group(pgid: i32) -> Vec<Proc> {
    all().into_iter().filter(|p| p.pgrp == pgid && p.live()).collect()
}

/// The running sign-while-running validators whose command line names `ledger` (one lab's) and
/// `member`.
pub fn validators(ledger: &str, member: &str) -> Vec<Proc> {
    all()
        .into_iter()
        .filter(|p| p.live() && p.mentions("--sign-while-running") && p.mentions(ledger))
        .filter(|p| p.cmdline.windows(2).any(|w| w[0] == "--member" && w[1] == member))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_whose_command_name_holds_spaces_and_parentheses_is_read_after_the_last_parenthesis() {
        let stat = "4242 (sh (x) y) T 17 4242 17 0 -1 4194560 100 0 0 0";
        let p = parse_stat(4242, stat, vec!["sh".into()]).expect("parses");
        assert_eq!((p.state, p.ppid, p.pgrp, p.session), ('T', 17, 4242, 17));
        assert!(p.live());
        let zombie = parse_stat(1, "1 (a) Z 0 1 1 0", Vec::new()).expect("parses");
        assert!(!zombie.live());
        assert_eq!(parse_stat(1, "1 (a) Z", Vec::new()), None);
    }

    #[test]
    fn this_process_is_found_with_its_own_command_line() {
        let me = read(std::process::id() as i32).expect("this process");
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.live());
        assert!(!me.cmdline.is_empty());
    }
}
