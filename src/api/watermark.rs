//! The key's watermark in and out (`WatermarkExport`, `WatermarkImport`).
//!
//! An import is checked here, by the member that serves the call, before anything is written:
//! the request's shape, this cluster's key only, the highest entry per key, the 2^53 ceiling
//! (which nothing lifts) and `failover.import_max_ahead` above the best height the cluster knows
//! (which `force` lifts). Then it is one store command, all or nothing
//! ([`crate::coord::Coordinator::import_watermarks`]), which itself refuses anything that would
//! lower a watermark (S3). A dry run stops before that command and writes nothing. This module
//! never writes a watermark any other way.

use std::collections::BTreeMap;

use tokio::time::Instant;
use tonic::Status;

use super::{ControlService, refuse};
use crate::coord::plan_import;
use crate::domain::{Hrs, KeyId, Watermark, check_import_height};
use crate::proto::v1::{
    WatermarkChange, WatermarkEntry, WatermarkExportReply, WatermarkImportReply, WatermarkImportRequest,
};

/// The most entries one import request may carry. failoverctl sends one entry per key (the
/// highest of its file), so only a file with more keys than this comes near it.
pub const MAX_IMPORT_ENTRIES: usize = 1000;

impl ControlService {
    pub(super) async fn export_watermark(&self) -> Result<WatermarkExportReply, Status> {
        let deadline = Instant::now() + self.call_timeout;
        let w = self.coord.watermark(&self.key, deadline).await.map_err(refuse)?;
        Ok(WatermarkExportReply { key: self.key.to_string(), watermark: w.map(Into::into) })
    }

    pub(super) async fn import_watermarks(&self, req: WatermarkImportRequest) -> Result<WatermarkImportReply, Status> {
        let wanted = import_entries(&self.key, &req.entries)?;
        let deadline = Instant::now() + self.call_timeout;
        let mut before = Vec::with_capacity(wanted.len());
        for (key, _) in &wanted {
            before.push(self.coord.watermark(key, deadline).await.map_err(refuse)?);
        }
        let cluster = self.coord.cluster_status(deadline).await.map_err(refuse)?;
        let cluster_best = crate::role::best_height(&cluster, self.status_stale_after, []);
        for ((key, hrs), current) in wanted.iter().zip(&before) {
            let best = cluster_best.max(current.map(|w| w.hrs.height));
            check_import_bound(key, hrs.height, best, self.import_max_ahead, req.force)
                .map_err(Status::failed_precondition)?;
        }
        let after = if req.dry_run {
            let stored: BTreeMap<&KeyId, Watermark> =
                wanted.iter().zip(&before).filter_map(|((key, _), w)| w.map(|w| (key, w))).collect();
            plan_import(&wanted, |key| stored.get(key).copied())
        } else {
            self.coord.import_watermarks(&wanted, deadline).await
        }
        .map_err(refuse)?;
        let changes: Vec<WatermarkChange> = wanted
            .iter()
            .zip(before)
            .zip(after)
            .map(|(((key, _), before), after)| WatermarkChange {
                key: key.to_string(),
                before: before.map(Into::into),
                after: Some(after.into()),
                changed: before != Some(after),
            })
            .collect();
        if !req.dry_run {
            for ((key, hrs), _) in wanted.iter().zip(&changes).filter(|(_, c)| c.changed) {
                tracing::info!(key = %key, watermark = %hrs, "watermark imported");
            }
        }
        Ok(WatermarkImportReply { changes, dry_run: req.dry_run })
    }
}

/// An import request's entries as one (key, highest HRS) per key, sorted by key, for a
/// cluster that signs with `served`; refuses a malformed request, naming the entry. The first
/// check a `WatermarkImport` call meets (public for the fuzz target `control_request`).
pub fn import_entries(served: &KeyId, entries: &[WatermarkEntry]) -> Result<Vec<(KeyId, Hrs)>, Status> {
    if entries.is_empty() {
        return Err(Status::invalid_argument(
            "entries: none; an import names at least one key (a failoverctl older than this daemon sends a form \
             it no longer reads: use the failoverctl of the daemon's release)",
        ));
    }
    if entries.len() > MAX_IMPORT_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "entries: {} in one request, at most {MAX_IMPORT_ENTRIES}; send only the highest entry of each key \
             (failoverctl does)",
            entries.len()
        )));
    }
    let mut highest: BTreeMap<KeyId, Hrs> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let key =
            KeyId::new(entry.key.clone()).map_err(|e| Status::invalid_argument(format!("entries[{i}].key: {e}")))?;
        if key != *served {
            return Err(Status::invalid_argument(format!(
                "entries[{i}].key: this cluster signs with key {served}, not {key}; import {key}'s watermark \
                 into the cluster that signs with it"
            )));
        }
        let wire = entry.hrs.ok_or_else(|| Status::invalid_argument(format!("entries[{i}].hrs: missing")))?;
        let hrs = Hrs::try_from(wire)
            .map_err(|e| Status::invalid_argument(format!("entries[{i}].{}: {}", e.field, e.problem)))?;
        let top = highest.entry(key).or_insert(hrs);
        *top = (*top).max(hrs);
    }
    Ok(highest.into_iter().collect())
}

/// Whether an import may set `key`'s watermark to `height`, given `best`, the highest height
/// the cluster knows (fresh member statuses and the key's watermark; `None`: none). The 2^53
/// ceiling holds even with `force`; the `import_max_ahead` bound and the need for a known
/// height hold unless `force`. The error is the operator's message: the bound, the numbers, and
/// the way forward.
pub fn check_import_bound(
    key: &KeyId,
    height: u64,
    best: Option<u64>,
    max_ahead: u64,
    force: bool,
) -> Result<(), String> {
    check_import_height(height).map_err(|e| format!("key {key}: {e}"))?;
    if force {
        return Ok(());
    }
    let Some(best) = best else {
        return Err(format!(
            "key {key}: the cluster knows no height to check {height} against (no member published one lately and \
             no watermark is stored), so failover.import_max_ahead cannot be applied; start the members' nodes and \
             try again, or pass --force if {height} is right"
        ));
    };
    let limit = best.saturating_add(max_ahead);
    if height > limit {
        return Err(format!(
            "key {key}: height {height} is {} above {best}, the best height the cluster knows; \
             failover.import_max_ahead ({max_ahead}) allows at most {limit}; check the file, or pass --force if \
             {height} is right",
            height - best
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IMPORT_HEIGHT_CEILING;

    // One line per rule: (height, best known, force, refused with a message containing).
    #[test]
    fn import_bounds() {
        let key = KeyId::new("validator").expect("valid");
        let ceiling = IMPORT_HEIGHT_CEILING;
        let cases: &[(u64, Option<u64>, bool, Option<&str>)] = &[
            (5_000, Some(4_304), false, None),
            (104_304, Some(4_304), false, None),
            (104_305, Some(4_304), false, Some("failover.import_max_ahead (100000) allows at most 104304")),
            (104_305, Some(4_304), true, None),
            (5_000, None, false, Some("knows no height")),
            (5_000, None, true, None),
            (ceiling, Some(ceiling - 1), false, None),
            (ceiling, None, true, None),
            (ceiling + 1, Some(ceiling), false, Some("9007199254740992 (2^53)")),
            (u64::MAX, None, true, Some("--force or not")),
            (u64::MAX, Some(u64::MAX - 1), true, Some("the ceiling")),
        ];
        for (height, best, force, refused) in cases {
            let got = check_import_bound(&key, *height, *best, 100_000, *force);
            match (refused, &got) {
                (None, Ok(())) => {}
                (Some(part), Err(message)) if message.contains(part) && message.contains(&height.to_string()) => {}
                _ => panic!("height {height}, best {best:?}, force {force}: got {got:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_above_the_bound_names_the_numbers_and_the_way_forward() {
        let key = KeyId::new("validator").expect("valid");
        let message = check_import_bound(&key, 204_304, Some(4_304), 100_000, false).expect_err("refused");
        for part in ["validator", "204304", "4304", "200000 above", "failover.import_max_ahead (100000)", "--force"] {
            assert!(message.contains(part), "{part} missing from: {message}");
        }
    }
}
