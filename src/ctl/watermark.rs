//! `watermark export` and `watermark import`: the key's watermark out as interchange JSON, and
//! in from a file checked whole before anything is sent. The format is
//! [`crate::domain::interchange`]'s; every bound on an import is the daemon's.

use std::path::Path;

use super::connect::Daemon;
use super::failure::Failure;
use super::output::print_import;
use crate::api::MAX_IMPORT_ENTRIES;
use crate::domain::interchange::{self, Entry, Interchange};
use crate::domain::{Epoch, Hrs, KeyId};
use crate::proto::v1::{WatermarkEntry, WatermarkExportRequest, WatermarkImportRequest};

/// `watermark export`: the key's watermark as a version-2 document (no entry when none is stored).
pub(super) async fn export(d: &mut Daemon) -> Result<(), Failure> {
    let r = d
        .client
        .watermark_export(super::connect::ask(&d.validator, WatermarkExportRequest {}))
        .await
        .map_err(|s| d.failure(s))?
        .into_inner();
    let entries = match r.watermark.and_then(|w| Some((w.hrs?, w.epoch))) {
        None => Vec::new(),
        Some((hrs, epoch)) => {
            let unreadable = |e: String| {
                Failure::refused(format!(
                    "the daemon sent a watermark this failoverctl cannot read ({e}); use the failoverctl of the \
                     daemon's release"
                ))
            };
            let key = KeyId::new(r.key).map_err(|e| unreadable(format!("key: {e}")))?;
            let hrs = Hrs::try_from(hrs).map_err(|e| unreadable(e.to_string()))?;
            vec![Entry { key, hrs, epoch: Some(Epoch::new(epoch)) }]
        }
    };
    let exported_by = format!("failoverd {}", env!("CARGO_PKG_VERSION"));
    println!("{}", Interchange::export(Some(exported_by), &entries).render());
    Ok(())
}

/// `watermark import`: sends `entries` (one per key, from [`read_import`]) in one request.
pub(super) async fn import(
    d: &mut Daemon,
    entries: Vec<(KeyId, Hrs)>,
    dry_run: bool,
    force: bool,
    json: bool,
) -> Result<(), Failure> {
    let request = WatermarkImportRequest {
        entries: entries
            .into_iter()
            .map(|(key, hrs)| WatermarkEntry { key: key.to_string(), hrs: Some(hrs.into()) })
            .collect(),
        dry_run,
        force,
    };
    let r = d
        .client
        .watermark_import(super::connect::ask(&d.validator, request))
        .await
        .map_err(|s| d.failure(s))?
        .into_inner();
    print_import(&r, json);
    Ok(())
}

/// The import file (or stdin), parsed and checked whole, as one entry per key.
pub(super) fn read_import(file: &Path) -> Result<Vec<(KeyId, Hrs)>, Failure> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::usage(format!("stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?
    };
    let nothing_sent = |e: String| Failure::usage(format!("{}: {e}; nothing was sent", file.display()));
    let parsed = interchange::parse(&text).map_err(|e| nothing_sent(e.to_string()))?;
    let entries = interchange::highest_per_key(parsed.into_iter().map(|e| (e.key, e.hrs)));
    if entries.len() > MAX_IMPORT_ENTRIES {
        return Err(nothing_sent(format!(
            "data: {} keys, more than the {MAX_IMPORT_ENTRIES} one import may carry; split the file by key",
            entries.len()
        )));
    }
    Ok(entries)
}
