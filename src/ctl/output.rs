//! Everything failoverctl prints: the status and members tables, events, import results,
//! and their JSON forms. Every line goes through [`say`] (the `println!` of this module tree),
//! so a reader that stops early (`| head -1`) ends failoverctl quietly. Nothing here calls the
//! daemon or decides anything.

use serde::Serialize;
use serde_json::{Value, json};

use super::failure::{EXIT_REFUSED, Failure};
use crate::domain::Hrs;
use crate::proto::v1::{
    Event, Hrs as WireHrs, MemberRow, MembersReply, StatusReply, Watermark as WireWatermark, WatermarkImportReply,
};

/// Writes `bytes` to stdout. A reader that stopped early (`| head -1`) is not an error: it has
/// read all it wanted.
pub(super) fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure { code: EXIT_REFUSED, message: format!("cannot write to standard output: {e}") })
        }
        _ => Ok(()),
    }
}

pub(super) fn step_name(step: u32) -> &'static str {
    match step {
        1 => "propose",
        2 => "prevote",
        3 => "precommit",
        _ => "unknown",
    }
}

/// An HRS from the daemon as every part of failoverd writes one (`Hrs`'s Display:
/// `4304/0/precommit`, `4304/*/precommit` for every round of height 4304).
pub(super) fn describe(h: &WireHrs) -> String {
    match Hrs::try_from(*h) {
        Ok(h) => h.to_string(),
        // Only a daemon that numbers steps differently sends this; show what it sent.
        Err(_) => format!("{}/{}/step {}", h.height, h.round, h.step),
    }
}

/// What an import did (or, for a dry run, would do): one line per key, or one JSON object.
pub(super) fn print_import(r: &WatermarkImportReply, json: bool) {
    if json {
        let keys: Vec<serde_json::Value> = r
            .changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "key": c.key, "before": watermark_json(c.before.as_ref()),
                    "after": watermark_json(c.after.as_ref()), "changed": c.changed,
                })
            })
            .collect();
        print_json(&serde_json::json!({"dry_run": r.dry_run, "keys": keys}));
        return;
    }
    for c in &r.changes {
        let hrs_of = |w: Option<&WireWatermark>| w.and_then(|w| w.hrs).map_or("none".to_string(), |h| describe(&h));
        let after = hrs_of(c.after.as_ref());
        let line = if c.changed {
            format!("{}: {} → {after}", c.key, hrs_of(c.before.as_ref()))
        } else {
            format!("{}: {after}, unchanged (the file is not above it)", c.key)
        };
        if r.dry_run {
            println!("dry run: {line} (nothing written)");
        } else {
            println!("{line}");
        }
    }
}

pub(super) fn watermark_json(w: Option<&WireWatermark>) -> serde_json::Value {
    match w.and_then(|w| w.hrs.map(|h| (h, w.epoch))) {
        Some((h, epoch)) => serde_json::json!({
            "height": h.height, "round": h.round, "step": step_name(h.step), "epoch": epoch,
        }),
        None => serde_json::Value::Null,
    }
}

pub(super) fn print_event(e: &Event, json: bool) {
    use std::io::Write;
    if json {
        let line = serde_json::json!({
            "seq": e.seq, "unix_ms": e.unix_ms, "member": e.member, "kind": e.kind, "epoch": e.epoch,
            "cause": (!e.cause.is_empty()).then_some(&e.cause), "message": e.message,
            "validator": (!e.validator.is_empty()).then_some(&e.validator),
        });
        println!("{line}");
    } else {
        let at = crate::domain::rfc3339::format_unix_nanos(i128::from(e.unix_ms) * 1_000_000);
        let epoch = e.epoch.map_or(String::new(), |n| format!(" epoch {n}"));
        let validator = if e.validator.is_empty() { String::new() } else { format!(" [{}]", e.validator) };
        println!("{} {}{validator} {:<8} {}{epoch}", &at[..23], e.member, e.kind, e.message);
    }
    // A follower is often piped: each event must leave at once.
    let _ = std::io::stdout().flush();
}

pub(super) fn print_json<T: Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// One line on stdout; see [`println!`] above. A reader that stopped early ends failoverctl
/// with success: it read all it wanted, and nothing printed later would reach anyone.
pub(super) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "failoverctl: cannot write to standard output: {e}");
        std::process::exit(i32::from(EXIT_REFUSED));
    }
}

pub(super) fn status_json(s: &StatusReply) -> serde_json::Value {
    serde_json::json!({
        "member": s.member,
        "kind": s.kind,
        "role": s.role,
        "height": s.height,
        "healthy": s.healthy,
        "lease": s.lease.as_ref().map(|l| serde_json::json!({
            "holder": (!l.holder.is_empty()).then_some(&l.holder),
            "epoch": l.epoch,
            "paused": l.paused,
            "transfer_to": (!l.transfer_to.is_empty()).then_some(&l.transfer_to),
        })),
        "key": s.key,
        "watermark": s.watermark.and_then(|w| w.hrs).map(|h| serde_json::json!({
            "height": h.height, "round": h.round, "step": step_name(h.step), "epoch": s.watermark.map(|w| w.epoch),
        })),
        "raft": s.raft.as_ref().map(|r| serde_json::json!({
            "leader": (!r.leader.is_empty()).then_some(&r.leader), "term": r.term, "commit": r.commit,
        })),
        "store_error": (!s.store_error.is_empty()).then_some(&s.store_error),
        "last_reason": (!s.last_reason.is_empty()).then_some(&s.last_reason),
        "why": (!s.why.is_empty()).then_some(&s.why),
    })
}

/// Whether `m` published a status within the daemon's status_stale_after. A stale row's role,
/// height and health are what it last said, not what it is: at 3 a.m. a dead active shown as
/// "active, healthy" reads as split brain.
pub(super) fn reachable(m: &MemberRow) -> bool {
    !m.stale && m.status_age_ms.is_some()
}

/// Seconds since `m` last published a status, to a tenth.
pub(super) fn last_heard_s(m: &MemberRow) -> Option<f64> {
    m.status_age_ms.map(|ms| (ms as f64 / 100.0).round() / 10.0)
}

/// "unreachable (last heard 8.3 s ago)", or "(never heard from)".
pub(super) fn unreachable_text(m: &MemberRow) -> String {
    match last_heard_s(m) {
        Some(s) => format!("unreachable (last heard {s:.1} s ago)"),
        None => "unreachable (never heard from)".to_string(),
    }
}

pub(super) fn members_json(m: &MembersReply) -> serde_json::Value {
    let rows: Vec<Value> = m
        .members
        .iter()
        .map(|r| {
            let live = reachable(r);
            json!({
                "id": r.id, "kind": r.kind, "priority": r.priority, "region": r.region,
                "peer_address": r.peer_address, "reachable": live, "last_heard_s": last_heard_s(r),
                "role": (live && !r.role.is_empty()).then_some(&r.role),
                "height": r.height.filter(|_| live), "lag": r.lag.filter(|_| live),
                "healthy": live.then_some(r.healthy), "status_age_ms": r.status_age_ms,
            })
        })
        .collect();
    json!({
        "members": rows,
        "status_stale_after_ms": (m.status_stale_after_ms > 0).then_some(m.status_stale_after_ms),
        "store_error": (!m.store_error.is_empty()).then_some(&m.store_error),
    })
}

pub(super) fn print_status(s: &StatusReply, m: &MembersReply, json: bool) {
    if json {
        print_json(&serde_json::json!({"self": status_json(s), "cluster": members_json(m)}));
        return;
    }
    let role = if s.role.is_empty() { "starting" } else { &s.role };
    let height = s.height.map_or("unknown".to_string(), |h| h.to_string());
    println!(
        "member     {} ({}), {role}, height {height}, {}",
        s.member,
        s.kind,
        if s.healthy { "healthy" } else { "not healthy" }
    );
    match &s.lease {
        Some(l) if l.holder.is_empty() => println!("lease      free (last epoch {})", l.epoch),
        Some(l) => println!("lease      held by {} at epoch {}", l.holder, l.epoch),
        None => println!("lease      unknown"),
    }
    if let Some(l) = &s.lease {
        println!("paused     {}", if l.paused { "yes (maintenance: nothing happens automatically)" } else { "no" });
        if !l.transfer_to.is_empty() {
            println!("transfer   handing over to {}", l.transfer_to);
        }
    }
    match s.watermark.and_then(|w| w.hrs.map(|h| (h, w.epoch))) {
        Some((h, epoch)) => println!("watermark  {} at {} (epoch {epoch})", s.key, describe(&h)),
        None => println!("watermark  {}: none stored", s.key),
    }
    if let Some(r) = &s.raft {
        let leader = if r.leader.is_empty() { "none known" } else { &r.leader };
        println!("raft       leader {leader}, term {}, commit {}", r.term, r.commit);
    }
    if !s.store_error.is_empty() {
        println!("store      {}", s.store_error);
    }
    if !s.why.is_empty() {
        println!("why        {}", s.why);
    }
    if !s.last_reason.is_empty() {
        println!("last       {}", s.last_reason);
    }
    println!();
    print_members(m, false);
}

pub(super) fn print_members(m: &MembersReply, json: bool) {
    if json {
        print_json(&members_json(m));
        return;
    }
    let dash = || "-".to_string();
    let rows: Vec<[String; 8]> = m
        .members
        .iter()
        .map(|r| {
            let live = reachable(r);
            let health = match (r.kind.as_str(), r.healthy) {
                ("witness", _) => dash(),
                (_, true) => "healthy".into(),
                (_, false) => "unhealthy".into(),
            };
            [
                r.id.clone(),
                r.kind.clone(),
                if r.region.is_empty() { dash() } else { r.region.clone() },
                match live {
                    false => unreachable_text(r),
                    true if r.role.is_empty() => dash(),
                    true => r.role.clone(),
                },
                r.height.filter(|_| live).map_or_else(dash, |h| h.to_string()),
                r.lag.filter(|_| live).map_or_else(dash, |l| l.to_string()),
                if live { health } else { dash() },
                last_heard_s(r).map_or("never".into(), |s| format!("{s:.1} s ago")),
            ]
        })
        .collect();
    let header = ["MEMBER", "KIND", "REGION", "ROLE", "HEIGHT", "LAG", "HEALTH", "LAST STATUS"].map(String::from);
    let mut widths = header.each_ref().map(String::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    if !m.store_error.is_empty() {
        println!("store: {}", m.store_error);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn an_hrs_from_the_daemon_reads_as_everywhere_else() {
        assert_eq!(describe(&WireHrs { height: 4304, round: u32::MAX, step: 3 }), "4304/*/precommit");
        assert_eq!(describe(&WireHrs { height: 4304, round: 2, step: 1 }), "4304/2/propose");
        assert_eq!(describe(&WireHrs { height: 4304, round: 2, step: 9 }), "4304/2/step 9");
    }

    /// A producer's row as the daemon sends it, at height 4304.
    pub(in crate::ctl) fn row(id: &str, role: &str, age_ms: Option<u64>, stale: bool) -> MemberRow {
        MemberRow {
            id: id.into(),
            kind: "producer".into(),
            role: role.into(),
            height: Some(4304),
            healthy: true,
            status_age_ms: age_ms,
            lag: Some(0),
            stale,
            ..MemberRow::default()
        }
    }

    #[test]
    fn a_stale_member_is_unreachable_without_its_last_role_or_health() {
        let reply = MembersReply {
            members: vec![
                row("a", "active", Some(8_340), true),
                row("b", "standby", Some(200), false),
                row("c", "", None, false),
            ],
            store_error: String::new(),
            status_stale_after_ms: 1_000,
        };
        let v = members_json(&reply);
        let a = &v["members"][0];
        assert_eq!((a["reachable"].clone(), a["last_heard_s"].clone()), (json!(false), json!(8.3)), "{v}");
        for field in ["role", "healthy", "height", "lag"] {
            assert!(a[field].is_null(), "a stale row shows its last {field}: {v}");
        }
        assert_eq!(unreachable_text(&reply.members[0]), "unreachable (last heard 8.3 s ago)");
        let b = &v["members"][1];
        assert_eq!(
            (b["reachable"].clone(), b["role"].clone(), b["healthy"].clone()),
            (json!(true), json!("standby"), json!(true))
        );
        // Never heard from: unreachable too, with nothing to show.
        assert_eq!(v["members"][2]["reachable"], false);
        assert_eq!(unreachable_text(&reply.members[2]), "unreachable (never heard from)");
        assert_eq!(v["status_stale_after_ms"], 1_000);
    }
}
