//! What the files and directories a config names hold, checked before anything starts: key
//! files private, the validator key parsed and matching `chain.validator_address`, the TLS files
//! parsed and naming this member, and every directory the member writes in usable.
//!
//! [`Depth::Metadata`] only looks at file metadata (what `failoverctl --config` needs, run by an
//! operator who may not read the keys); [`Depth::Contents`] also reads the files, through the
//! same parsers the producer and the TLS setup use, so a check and a start can never disagree
//! about a key. Nothing here keeps, prints or quotes key material: a key is parsed, its public
//! address compared, and dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::validate::Problems;
use super::{Backend, ChainKind, Config, ConfigProblem, ProducerAdapter, SourceMap, WatchdogMode};
use crate::producer::privval::validator_key::{KeyError, ValidatorKey};
use crate::tls::{TlsFilesError, TlsMaterial};

/// How deep the file checks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Secret files exist, are regular files and are private; certificates exist.
    Metadata,
    /// And the files are read: the validator key and the TLS files parse and fit the config,
    /// and the member's directories can be written.
    Contents,
}

/// Every problem with the files `config` names, each located by `map`.
pub fn check(config: &Config, map: &SourceMap<'_>, depth: Depth) -> Vec<ConfigProblem> {
    let mut out = Problems::new(map);
    let unusable = check_metadata(config, &mut out);
    if depth == Depth::Contents {
        let usable = |key: &str| !unusable.contains(&key);
        if usable("producer.key_file") {
            check_validator_key(config, &mut out);
        }
        if ["tls.ca_file", "tls.cert_file", "tls.key_file"].iter().all(|k| usable(k)) {
            check_tls(config, &mut out);
        }
        check_directories(config, &mut out);
        check_devices(config, &mut out);
    }
    out.finish()
}

/// Refuses secret files (TLS private key, validator key source, Consul token) that are missing
/// or readable by group or others, and certificates that are missing. Returns the keys of the
/// files found unusable, whose contents are then not read.
fn check_metadata(config: &Config, out: &mut Problems<'_, '_>) -> Vec<&'static str> {
    let mut unusable = Vec::new();
    let mut secrets: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(tls) = &config.tls {
        secrets.push(("tls.key_file", &tls.key_file));
    }
    if let Some(key) = config.producer.as_ref().and_then(|p| p.key_file()) {
        secrets.push(("producer.key_file", key));
    }
    if let Some(token) = config.coordinator.consul.token_file.as_deref() {
        secrets.push(("coordinator.consul.token_file", token));
    }
    for (key, path) in secrets {
        let problem = match std::fs::metadata(path) {
            Err(e) => {
                Some(format!("cannot read {}: {e}; fix the path or create the file with mode 0600", path.display()))
            }
            Ok(meta) if !meta.is_file() => {
                Some(format!("{} is not a regular file; name the key file itself", path.display()))
            }
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                (mode & 0o077 != 0).then(|| {
                    format!(
                        "{} is readable by group or others (mode {mode:04o}); a key file must be private: run chmod 600 {}",
                        path.display(),
                        path.display()
                    )
                })
            }
        };
        if let Some(message) = problem {
            out.at(key, message);
            unusable.push(key);
        }
    }
    let mut public: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(tls) = &config.tls {
        public.extend([("tls.ca_file", &*tls.ca_file), ("tls.cert_file", &tls.cert_file)]);
    }
    if config.coordinator.backend == Backend::Consul
        && let Some(ca) = config.coordinator.consul.ca_file.as_deref()
    {
        public.push(("coordinator.consul.ca_file", ca));
    }
    for (key, path) in public {
        if let Err(e) = std::fs::metadata(path) {
            out.at(key, format!("cannot read {}: {e}; fix the path", path.display()));
            unusable.push(key);
        }
    }
    unusable
}

/// The CometBFT producers' key: parsed by the same [`ValidatorKey`] the signer signs with, and
/// its address compared with the one the probes look for in commits. A mismatch would
/// otherwise show only at the first activation, as a node signing for a validator nobody
/// watches, or not at all.
fn check_validator_key(config: &Config, out: &mut Problems<'_, '_>) {
    let Some(p) = &config.producer else { return };
    let Some(path) = p.key_file() else { return };
    if matches!(p.adapter, ProducerAdapter::CometbftFilepv(_)) {
        // The node signs with this file, not failoverd, and it may hold any key type CometBFT
        // knows (secp256k1 too): only its recorded address is compared.
        match filepv_key_address(path) {
            Ok(found) => compare_address(config, path, &found, out),
            Err(e) => out.at(
                "producer.key_file",
                format!(
                    "the validator key {}: {e}; point key_file at the validator's priv_validator_key.json (CometBFT writes it to config/ in the node's home), restored from a backup if it is damaged",
                    path.display()
                ),
            ),
        }
        return;
    }
    let key = match ValidatorKey::load(path) {
        Ok(key) => key,
        Err(e) => {
            let fix = match e {
                KeyError::Unreadable { .. } => "give the user failoverd runs as read access to it",
                KeyError::TooOpen { .. } => "make it private",
                KeyError::Invalid { .. } => {
                    "point key_file at the validator's priv_validator_key.json (CometBFT writes it to config/ in the node's home), restored from a backup if it is damaged"
                }
            };
            out.at("producer.key_file", format!("{e}; {fix}"));
            return;
        }
    };
    compare_address(config, path, &key.address(), out);
}

/// The `address` a CometBFT `priv_validator_key.json` records, whatever its key type.
fn filepv_key_address(path: &std::path::Path) -> Result<String, String> {
    const MAX_KEY_FILE: u64 = 64 * 1024;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_KEY_FILE + 1), &mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(format!("it holds more than {MAX_KEY_FILE} bytes, which no priv_validator_key.json does"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a priv_validator_key.json: not valid JSON ({e})"))?;
    if value.get("priv_key").is_none() {
        return Err("not a priv_validator_key.json: it has no priv_key".into());
    }
    match value.get("address").and_then(serde_json::Value::as_str) {
        Some(a) if !a.is_empty() && a.chars().all(|c| c.is_ascii_hexdigit()) => Ok(a.to_ascii_uppercase()),
        _ => Err("not a priv_validator_key.json: it has no hexadecimal address".into()),
    }
}

/// Refuses a key whose address is not `chain.validator_address`, naming both.
fn compare_address(config: &Config, path: &std::path::Path, found: &str, out: &mut Problems<'_, '_>) {
    let Some(expected) = config.chain.as_ref().and_then(|c| c.validator_address.as_deref()) else { return };
    if !found.eq_ignore_ascii_case(expected) {
        let expected = expected.to_ascii_uppercase();
        out.at(
            "producer.key_file",
            format!(
                "{} holds the key of validator {found}, but chain.validator_address is {expected}: this member would sign as a validator it does not watch; point key_file at validator {expected}'s key, or, if this key is the right one, set chain.validator_address = \"{found}\"",
                path.display()
            ),
        );
    }
}

/// The `[tls]` files, read as the peer service and the control API read them at start-up: they
/// parse, and the certificate names this member.
fn check_tls(config: &Config, out: &mut Problems<'_, '_>) {
    let Some(tls) = &config.tls else { return };
    let material = match TlsMaterial::load(tls) {
        Ok(m) => m,
        Err(e) => {
            let key = match &e {
                TlsFilesError::Read { what, .. }
                | TlsFilesError::Pem { what, .. }
                | TlsFilesError::Identity { what, .. } => what,
                TlsFilesError::WrongIdentity { .. } => "tls.cert_file",
            };
            out.at(key, format!("{e}; make the member's files with `failoverd tls member {}`", config.member));
            return;
        }
    };
    if let Err(e) = material.expect_member(&tls.cert_file, &config.member) {
        out.at("tls.cert_file", e.to_string());
    }
}

/// Every directory the member writes in, or creates: each must be a directory it can write,
/// or not exist yet under one it can.
fn check_directories(config: &Config, out: &mut Problems<'_, '_>) {
    let mut dirs: Vec<(&str, PathBuf, &str)> = vec![
        ("data_dir", config.data_dir.clone(), "the raft log and snapshots live"),
        ("api.socket", parent(&config.api.socket), "the control socket is created"),
    ];
    if let Some(chain) = &config.chain
        && chain.kind == ChainKind::Sim
        && let Some(sim) = &chain.sim
    {
        dirs.push(("chain.sim.ledger", parent(&sim.ledger), "the simulated chain's ledger is written"));
    }
    // A signer's unix socket is not checked: the node creates it, often in a directory made
    // for the node when it starts.
    if let Some(ProducerAdapter::CometbftFilepv(filepv)) = config.producer.as_ref().map(|p| &p.adapter) {
        dirs.push(("producer.home", filepv.home.clone(), "the node's key and state file are installed"));
    }
    for (key, dir, what) in dirs {
        if let Err(why) = writable_dir(&dir) {
            out.at(
                key,
                format!(
                    "{} is where {what}, and {why}; create it (mkdir -p {}) owned by the user failoverd runs as, or choose another path",
                    dir.display(),
                    dir.display()
                ),
            );
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Whether `dir` is, or can be created as, a directory this process can write in: why not.
fn writable_dir(dir: &Path) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    let mut existing = dir;
    loop {
        match std::fs::metadata(existing) {
            Ok(meta) if !meta.is_dir() => return Err(format!("{} is not a directory", existing.display())),
            Ok(_) => break,
            // A missing part, or a file where a directory should be: look further up.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                match existing.parent() {
                    Some(up) => existing = up,
                    None => return Err(format!("no part of it exists: {e}")),
                }
            }
            Err(e) => return Err(format!("{} cannot be inspected: {e}", existing.display())),
        }
    }
    access(existing, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|errno| {
        if existing == dir {
            format!("this process cannot write in it ({})", errno.desc())
        } else {
            format!(
                "it does not exist and cannot be created: {} does not let this process write in it ({})",
                existing.display(),
                errno.desc()
            )
        }
    })
}

/// `failover.watchdog = "required"` refuses every activation without its device: say so now.
fn check_devices(config: &Config, out: &mut Problems<'_, '_>) {
    let f = &config.failover;
    if f.watchdog != WatchdogMode::Required || !f.watchdog_device.is_absolute() {
        return;
    }
    if let Err(e) = std::fs::metadata(&f.watchdog_device) {
        out.at(
            "failover.watchdog_device",
            format!(
                "cannot find {}: {e}; with watchdog = \"required\" this member would refuse every activation: load the watchdog driver (such as softdog), name the right device, or set watchdog = \"automatic\"",
                f.watchdog_device.display()
            ),
        );
    }
}
