//! Relative paths in a config file are relative to the directory the file is named in, never to
//! the working directory of whoever runs the daemon, `check-config` or `failoverctl`: the same
//! file means the same files wherever it is used from.
//!
//! [`resolve`] makes every file and directory setting absolute once, at load, so nothing after
//! it ever sees a relative path. It only rewrites paths; it never touches the file system
//! beyond resolving the config's own directory.

use std::path::{Component, Path, PathBuf};

use super::{Config, ProducerAdapter};

/// The directory relative paths of the config at `path` are resolved against: the directory
/// it is named in, with symlinks resolved, so a leading `..` means what the kernel would make
/// of it.
pub fn base_dir(path: &Path) -> std::io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir)
}

/// Makes every relative file or directory setting of `config` absolute against `base`.
///
/// `failover.watchdog_device` is left as written: it names a device, and validation refuses a
/// relative one. Commands (`producer.command` and the like) are argv, run as given.
pub fn resolve(config: &mut Config, base: &Path) {
    for path in paths_mut(config) {
        if path.is_relative() && !path.as_os_str().is_empty() {
            *path = join(base, path);
        }
    }
}

/// Why a relative `data_dir` must not be used as it now resolves: it named a directory under
/// the working directory before relative paths followed the config file, that directory holds
/// a member's data, and the new place holds none. Starting there would begin a member with an
/// empty raft log beside its real one (its watermark and log left behind), so the member is
/// refused until the data is moved or the path made absolute.
pub fn data_left_behind(written: &Path, resolved: &Path) -> Option<String> {
    if !written.is_relative() {
        return None;
    }
    let old = std::env::current_dir().ok()?.join(written);
    let has_data = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    let same = std::fs::canonicalize(&old).ok() == std::fs::canonicalize(resolved).ok();
    (!same && has_data(&old) && !has_data(resolved)).then(|| {
        format!(
            "\"{}\" is relative to the config file's directory, so it is {}, which holds no data; {} (the same path relative to the working directory, as older versions read it) holds a member's data: move that directory to {}, or write data_dir as an absolute path",
            written.display(),
            resolved.display(),
            old.display(),
            resolved.display()
        )
    })
}

/// Every path setting a config has, except the watchdog device.
fn paths_mut(c: &mut Config) -> Vec<&mut PathBuf> {
    let mut paths = vec![&mut c.data_dir, &mut c.api.socket];
    let consul = &mut c.coordinator.consul;
    paths.extend(consul.token_file.as_mut());
    paths.extend(consul.ca_file.as_mut());
    if let Some(sim) = c.chain.as_mut().and_then(|ch| ch.sim.as_mut()) {
        paths.push(&mut sim.ledger);
    }
    match c.producer.as_mut().map(|p| &mut p.adapter) {
        Some(ProducerAdapter::CometbftFilepv(f)) => paths.extend([&mut f.key_file, &mut f.home]),
        Some(ProducerAdapter::CometbftSigner(s)) => paths.push(&mut s.key_file),
        _ => {}
    }
    if let Some(tls) = c.tls.as_mut() {
        paths.extend([&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]);
    }
    paths
}

/// `base` joined with `relative`, its leading `.` and `..` folded into `base`. That is exact
/// because `base` has no symlinks; later `..` (after a name that may be a symlink) are kept.
fn join(base: &Path, relative: &Path) -> PathBuf {
    let mut out = base.to_path_buf();
    let mut components = relative.components().peekable();
    while let Some(c) = components.peek() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            _ => break,
        }
        components.next();
    }
    out.extend(components);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_dots_fold_into_the_base_and_later_ones_stay() {
        let base = Path::new("/etc/failoverd");
        assert_eq!(join(base, Path::new("data")), Path::new("/etc/failoverd/data"));
        assert_eq!(join(base, Path::new("./data")), Path::new("/etc/failoverd/data"));
        assert_eq!(join(base, Path::new("../../var/lib/f")), Path::new("/var/lib/f"));
        assert_eq!(join(base, Path::new("../../../x")), Path::new("/x"));
        assert_eq!(join(base, Path::new("link/../x")), Path::new("/etc/failoverd/link/../x"));
    }

    #[test]
    fn every_relative_path_setting_is_resolved_and_absolute_ones_are_kept() {
        let text = "member = \"a\"\ndata_dir = \"data\"\n[[members]]\nid = \"a\"\npeer_address = \"127.0.0.1:1\"\n[[members]]\nid = \"b\"\npeer_address = \"127.0.0.1:2\"\n[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:3\"\nkind = \"witness\"\n[coordinator]\nbackend = \"consul\"\n[coordinator.consul]\ntoken_file = \"token\"\nca_file = \"/abs/ca.pem\"\n[chain]\nkind = \"sim\"\nrpc = \"http://127.0.0.1:4\"\n[chain.sim]\nledger = \"../ledger.jsonl\"\n[producer]\nkind = \"cometbft-filepv\"\nkey_file = \"keys/k.json\"\nhome = \"home\"\ncommand = [\"./node\"]\n[api]\nsocket = \"c.sock\"\n[tls]\nca_file = \"tls/ca.pem\"\ncert_file = \"tls/a.pem\"\nkey_file = \"tls/a.key\"\n";
        let mut config = Config::parse(text).expect("valid");
        resolve(&mut config, Path::new("/etc/f"));
        let mut seen = Vec::new();
        for path in paths_mut(&mut config) {
            assert!(path.is_absolute(), "{} stayed relative", path.display());
            seen.push(path.display().to_string());
        }
        assert_eq!(
            seen,
            [
                "/etc/f/data",
                "/etc/f/c.sock",
                "/etc/f/token",
                "/abs/ca.pem",
                "/etc/ledger.jsonl",
                "/etc/f/keys/k.json",
                "/etc/f/home",
                "/etc/f/tls/ca.pem",
                "/etc/f/tls/a.pem",
                "/etc/f/tls/a.key",
            ]
        );
        let Some(ProducerAdapter::CometbftFilepv(filepv)) = config.producer.as_ref().map(|p| &p.adapter) else {
            panic!("a cometbft-filepv producer")
        };
        assert_eq!(filepv.command.as_deref(), Some(&["./node".to_string()][..]), "argv is run as given");
    }
}
