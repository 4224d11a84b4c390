//! The CometBFT FilePV producer: the node signs with its own `priv_validator_key.json`, which
//! exists in the node's config dir only while this member is active.
//!
//! Activation writes `data/priv_validator_state.json` seeded at the guard's floor (never lower
//! than what the file already says), then the key from the protected `key_file`, each through a
//! temporary file that is fsynced, made mode 0600 and renamed, with the directory fsynced; then it
//! starts the node (a supervised child, or a systemd unit). CometBFT refuses to sign at or below
//! the state file's height/round/step, so the node cannot sign anything the watermark may cover.
//! Deactivation stops the node, removes the key and reads the state file's height for the
//! checkpoint. The fence kills the node and removes the key, without the async runtime.
//!
//! Never logs, quotes or copies key material anywhere but the node's key path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::process::ProcessProducer;
use super::{Grant, Producer, ProducerError, ProducerStatus, SignFloor};
use crate::domain::{Hrs, MonoTime, Step};
use crate::keeper::{Keeper, KeeperLauncher, KeeperSpec, Target};
use crate::operator_command;

/// How the node process is run.
pub enum NodeRunner {
    /// As this daemon's supervised child.
    Process(ProcessProducer),
    /// As a systemd unit, through `systemctl` (the argv prefix; `["systemctl"]` in production).
    Systemd { systemctl: Vec<String>, unit: String },
}

pub struct FilePvProducer {
    key_source: PathBuf,
    home: PathBuf,
    runner: NodeRunner,
    command_timeout: Duration,
    /// For a systemd unit: starts the keeper that kills the unit at the deadline (a supervised
    /// process has its own keeper inside [`ProcessProducer`]).
    launcher: Option<KeeperLauncher>,
    unit_keeper: std::sync::Mutex<Option<std::sync::Arc<Keeper>>>,
}

fn failed(operation: &'static str, detail: impl Into<String>) -> ProducerError {
    ProducerError::Failed { operation, detail: detail.into() }
}

impl FilePvProducer {
    pub fn new(key_source: PathBuf, home: PathBuf, runner: NodeRunner, command_timeout: Duration) -> FilePvProducer {
        FilePvProducer {
            key_source,
            home,
            runner,
            command_timeout,
            launcher: None,
            unit_keeper: std::sync::Mutex::new(None),
        }
    }

    /// Holds a systemd unit with a keeper started by `launcher` while the node may sign.
    pub fn with_unit_keeper(mut self, launcher: KeeperLauncher) -> FilePvProducer {
        self.launcher = Some(launcher);
        self
    }

    /// Where a producer for `home` installs the key (the keeper removes it on a fence).
    pub fn key_path_in(home: &Path) -> PathBuf {
        home.join("config").join("priv_validator_key.json")
    }

    fn unit_keeper(&self) -> Option<std::sync::Arc<Keeper>> {
        self.unit_keeper.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts the keeper of a systemd unit before the unit starts.
    async fn hold_unit(&self, until: MonoTime, deadline: Instant) -> Result<(), ProducerError> {
        let (NodeRunner::Systemd { systemctl, unit }, Some(launcher)) = (&self.runner, &self.launcher) else {
            return Ok(());
        };
        if self.unit_keeper().is_some_and(|k| k.is_holding()) {
            return Ok(());
        }
        let spec = KeeperSpec {
            target: Target::Unit { systemctl: systemctl.clone(), unit: unit.clone() },
            key_file: Some(self.key_path()),
            until_ns: until.as_nanos(),
            fence_timeout_ms: u64::try_from(self.command_timeout.as_millis()).unwrap_or(u64::MAX),
            record: None,
        };
        let keeper = launcher.start(&spec, deadline).await.map_err(|e| failed("activate", e.to_string()))?;
        *self.unit_keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(keeper));
        Ok(())
    }

    pub fn key_path(&self) -> PathBuf {
        FilePvProducer::key_path_in(&self.home)
    }

    pub fn state_path(&self) -> PathBuf {
        self.home.join("data").join("priv_validator_state.json")
    }

    /// Writes the state file at `max(floor, what it says now)` and the key.
    fn install(&self, floor: SignFloor) -> Result<(), ProducerError> {
        let op = "activate";
        let key = fs::read(&self.key_source)
            .map_err(|e| failed(op, format!("cannot read producer.key_file {}: {e}", self.key_source.display())))?;
        check_key(&key).map_err(|d| failed(op, format!("producer.key_file {}: {d}", self.key_source.display())))?;
        let state_path = self.state_path();
        let current = match fs::read(&state_path) {
            Ok(bytes) => Some(parse_state(&bytes).map_err(|d| {
                failed(op, format!("{}: {d}; refusing to sign without knowing what was signed", state_path.display()))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(failed(op, format!("cannot read {}: {e}", state_path.display()))),
        };
        let seed = current.map_or(floor.0, |c| c.max(floor.0));
        write_private(&state_path, state_json(seed).to_string().as_bytes())
            .map_err(|e| failed(op, format!("cannot write {}: {e}", state_path.display())))?;
        write_private(&self.key_path(), &key)
            .map_err(|e| failed(op, format!("cannot write {}: {e}", self.key_path().display())))?;
        tracing::info!(state = %seed, "seeded priv_validator_state.json and installed the key");
        Ok(())
    }

    fn remove_key(&self, operation: &'static str) -> Result<(), ProducerError> {
        let path = self.key_path();
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&path).map_err(|e| failed(operation, format!("cannot sync {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed(operation, format!("cannot remove {}: {e}", path.display()))),
        }
    }

    fn last_signed_height(&self) -> Option<u64> {
        fs::read(self.state_path()).ok().and_then(|b| parse_state(&b).ok()).map(|h| h.height)
    }

    async fn systemctl(&self, operation: &'static str, args: &[&str], deadline: Instant) -> Result<(), ProducerError> {
        let NodeRunner::Systemd { systemctl, unit } = &self.runner else { return Ok(()) };
        let argv: Vec<String> =
            systemctl.iter().cloned().chain(args.iter().map(|a| a.to_string())).chain([unit.clone()]).collect();
        let deadline = deadline.min(Instant::now() + self.command_timeout);
        operator_command::run(&argv, &[], deadline).await.map(|_| ()).map_err(|e| match e {
            operator_command::CommandError::Timeout { .. } => ProducerError::Timeout { operation },
            other => failed(operation, other.to_string()),
        })
    }
}

/// The key file must be a JSON object with a `priv_key`; its content is never quoted.
fn check_key(bytes: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(fields)) if fields.contains_key("priv_key") => Ok(()),
        Ok(_) => Err("not a priv_validator_key.json: expected an object with priv_key".into()),
        Err(_) => Err("not a priv_validator_key.json: not valid JSON".into()),
    }
}

/// `priv_validator_state.json` as CometBFT writes it: height as a decimal string, round and step
/// as numbers (step 0 means nothing signed in that round yet).
pub fn state_json(hrs: Hrs) -> Value {
    json!({ "height": hrs.height.to_string(), "round": hrs.round, "step": hrs.step.as_u8() })
}

/// Reads a `priv_validator_state.json`; step 0 counts as the lowest step of its round.
pub fn parse_state(bytes: &[u8]) -> Result<Hrs, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let height = crate::chain::rpc::decimal_string(crate::chain::rpc::field(&v, "/height")?, "height")?;
    let round = v.get("round").and_then(Value::as_u64).ok_or("round: expected a non-negative integer")?;
    let round = u32::try_from(round).map_err(|_| format!("round: {round} does not fit in 32 bits"))?;
    let step = v.get("step").and_then(Value::as_u64).ok_or("step: expected 0 to 3")?;
    let step = match step {
        0 => Step::Propose,
        n => u8::try_from(n).ok().and_then(Step::from_u8).ok_or(format!("step: expected 0 to 3, found {n}"))?,
    };
    Ok(Hrs::new(height, round, step))
}

/// Writes `bytes` to `path` durably with mode 0600: temp file, fsync, rename, fsync the directory
/// (as CometBFT saves its own state file; the simulated validator writes it the same way).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.failoverd-tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path.parent().unwrap_or(Path::new("/")))?.sync_all()
}

#[async_trait]
impl Producer for FilePvProducer {
    async fn activate(&self, grant: Grant, deadline: Instant) -> Result<(), ProducerError> {
        self.install(grant.floor)?;
        match &self.runner {
            NodeRunner::Process(p) => p.activate(grant, deadline).await,
            NodeRunner::Systemd { .. } => {
                self.hold_unit(grant.until, deadline).await?;
                self.systemctl("activate", &["start"], deadline).await
            }
        }
    }

    async fn extend(&self, until: MonoTime, deadline: Instant) -> Result<(), ProducerError> {
        match &self.runner {
            NodeRunner::Process(p) => p.extend(until, deadline).await,
            NodeRunner::Systemd { .. } => match self.unit_keeper() {
                Some(k) if k.is_holding() => k.extend(until).map_err(|e| failed("extend", e.to_string())),
                _ => Ok(()),
            },
        }
    }

    async fn deactivate(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        match &self.runner {
            NodeRunner::Process(p) => {
                p.deactivate(deadline).await?;
            }
            NodeRunner::Systemd { .. } => self.systemctl("deactivate", &["stop"], deadline).await?,
        }
        self.remove_key("deactivate")?;
        let keeper = self.unit_keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(k) = keeper {
            k.release(deadline).await.map_err(|e| failed("deactivate", e.to_string()))?;
        }
        Ok(ProducerStatus { active: false, last_signed_height: self.last_signed_height() })
    }

    fn fence(&self, timeout: Duration) -> Result<(), ProducerError> {
        let killed = match &self.runner {
            NodeRunner::Process(p) => p.fence(timeout),
            NodeRunner::Systemd { systemctl, unit } => {
                if let Some(k) = self.unit_keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    // The keeper kills the unit too; this path below does not depend on it.
                    let _ = k.fence(timeout);
                }
                let argv = |args: &[&str]| -> Vec<String> {
                    systemctl.iter().cloned().chain(args.iter().map(|a| a.to_string())).chain([unit.clone()]).collect()
                };
                operator_command::run_blocking(&argv(&["kill", "--signal=SIGKILL"]), &[], timeout)
                    .and_then(|_| operator_command::run_blocking(&argv(&["stop"]), &[], timeout))
                    .map(|_| ())
                    .map_err(|e| failed("fence", e.to_string()))
            }
        };
        // Remove the key even when the kill is unconfirmed: a node restarted later must not find it.
        let removed = self.remove_key("fence");
        killed.and(removed)
    }

    async fn status(&self, deadline: Instant) -> Result<ProducerStatus, ProducerError> {
        let active = match &self.runner {
            NodeRunner::Process(p) => p.status(deadline).await?.active,
            NodeRunner::Systemd { .. } => self.systemctl("status", &["is-active", "--quiet"], deadline).await.is_ok(),
        };
        Ok(ProducerStatus { active, last_signed_height: self.last_signed_height() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A key in CometBFT's format (a throwaway ed25519 key made for this test).
    const KEY: &str = r#"{"address":"8C1E2C1A0B5E4D3F2A1B0C9D8E7F6A5B4C3D2E1F","pub_key":{"type":"tendermint/PubKeyEd25519","value":"nG0t0r9x9h2A6k1c0u1m6q2j4l5p8s7v3w0y2z4b6d8="},"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"dGVzdC1vbmx5LW5vdC1hLXJlYWwta2V5LXRlc3Qtb25seS1ub3QtYS1yZWFsLWtleQ=="}}"#;

    struct Node {
        dir: tempfile::TempDir,
        producer: FilePvProducer,
    }

    fn node(argv: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("secret.json");
        write_private(&source, KEY.as_bytes()).expect("key source");
        let runner = NodeRunner::Process(
            ProcessProducer::new(
                argv.iter().map(|s| s.to_string()).collect(),
                Duration::from_secs(2),
                crate::keeper::test_launcher(),
            )
            .with_key_file(FilePvProducer::key_path_in(&dir.path().join("home"))),
        );
        let producer = FilePvProducer::new(source, dir.path().join("home"), runner, Duration::from_secs(5));
        Node { dir, producer }
    }

    /// A grant at epoch 1 (the FilePV producer reads its floor and validity only).
    fn grant(floor: SignFloor, until: MonoTime) -> Grant {
        Grant { epoch: crate::domain::Epoch::new(1), floor, until }
    }

    /// A lease validity far enough away that no keeper fences during a test.
    fn valid() -> MonoTime {
        MonoTime::now().saturating_add(Duration::from_secs(60))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn activation_seeds_the_state_at_the_floor_and_installs_the_key_privately() {
        let n = node(&["sleep", "600"]);
        let floor = SignFloor(Hrs::new(1_000_002, 0, Step::Precommit));
        n.producer.activate(grant(floor, valid()), soon()).await.expect("activates");
        let state: Value = serde_json::from_slice(&fs::read(n.producer.state_path()).expect("state")).expect("json");
        assert_eq!(state, json!({"height":"1000002","round":0,"step":3}));
        for path in [n.producer.state_path(), n.producer.key_path()] {
            assert_eq!(fs::metadata(&path).expect("exists").mode() & 0o777, 0o600, "{}", path.display());
        }
        assert_eq!(fs::read_to_string(n.producer.key_path()).expect("key"), KEY);
        assert!(n.producer.status(soon()).await.expect("status").active);

        let last = n.producer.deactivate(soon()).await.expect("deactivates");
        assert!(!n.producer.key_path().exists(), "the key left the node's config dir");
        assert_eq!(last.last_signed_height, Some(1_000_002));
        assert!(!n.producer.status(soon()).await.expect("status").active);
        drop(n.dir);
    }

    #[tokio::test]
    async fn a_state_file_above_the_floor_is_never_lowered() {
        let n = node(&["sleep", "600"]);
        write_private(
            &n.producer.state_path(),
            br#"{"height":"500","round":3,"step":2,"signature":"c2ln","signbytes":"AB"}"#,
        )
        .expect("state");
        n.producer
            .activate(grant(SignFloor(Hrs::new(400, 0, Step::Precommit)), valid()), soon())
            .await
            .expect("activates");
        assert_eq!(
            parse_state(&fs::read(n.producer.state_path()).expect("state")),
            Ok(Hrs::new(500, 3, Step::Prevote))
        );
        n.producer.deactivate(soon()).await.expect("deactivates");
    }

    #[tokio::test]
    async fn an_unreadable_state_file_refuses_activation_and_installs_no_key() {
        let n = node(&["sleep", "600"]);
        write_private(&n.producer.state_path(), b"{\"height\":").expect("state");
        let err = n.producer.activate(grant(SignFloor(Hrs::ZERO), valid()), soon()).await.expect_err("refused");
        assert!(err.to_string().contains("refusing to sign"), "{err}");
        assert!(!n.producer.key_path().exists());
        assert!(!n.producer.status(soon()).await.expect("status").active, "the node was not started");
    }

    #[tokio::test]
    async fn a_bad_key_source_is_refused_without_quoting_it() {
        let n = node(&["sleep", "600"]);
        fs::write(n.dir.path().join("secret.json"), b"supersecret-not-json").expect("write");
        let err = n.producer.activate(grant(SignFloor(Hrs::ZERO), valid()), soon()).await.expect_err("refused");
        assert!(!err.to_string().contains("supersecret"), "{err}");
        assert!(!n.producer.key_path().exists());
    }

    #[tokio::test]
    async fn fence_kills_the_node_and_removes_the_key_from_a_plain_thread() {
        let n = node(&["sleep", "600"]);
        n.producer.activate(grant(SignFloor(Hrs::ZERO), valid()), soon()).await.expect("activates");
        let producer = std::sync::Arc::new(n.producer);
        let fencer = std::sync::Arc::clone(&producer);
        std::thread::spawn(move || fencer.fence(Duration::from_secs(2))).join().expect("thread").expect("fenced");
        assert!(!producer.key_path().exists());
        assert!(!producer.status(soon()).await.expect("status").active);
    }

    /// systemd cannot run here: a fake `systemctl` that records its arguments and keeps the
    /// unit's state in a file, answering `is-active` from it as systemctl does (exit 0 or 3).
    fn fake_systemctl(dir: &Path) -> Vec<String> {
        let script = dir.join("fake-systemctl");
        let body = format!(
            "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$1\" in\n start) echo active > {state};;\n stop|kill) echo inactive > {state};;\n is-active) grep -q '^active' {state} 2>/dev/null || exit 3;;\nesac\n",
            log = dir.join("calls").display(),
            state = dir.join("unit-state").display()
        );
        fs::write(&script, body).expect("script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        vec![script.display().to_string()]
    }

    #[tokio::test]
    async fn a_systemd_unit_is_started_stopped_and_killed_through_systemctl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("secret.json");
        write_private(&source, KEY.as_bytes()).expect("key source");
        let runner = NodeRunner::Systemd { systemctl: fake_systemctl(dir.path()), unit: "cometbft.service".into() };
        let p = FilePvProducer::new(source, dir.path().join("home"), runner, Duration::from_secs(5));
        p.activate(grant(SignFloor(Hrs::new(7, 0, Step::Precommit)), valid()), soon()).await.expect("activates");
        assert!(p.key_path().exists());
        assert!(p.status(soon()).await.expect("status").active);
        p.deactivate(soon()).await.expect("deactivates");
        assert!(!p.key_path().exists());
        assert!(!p.status(soon()).await.expect("status").active);
        p.activate(grant(SignFloor(Hrs::new(9, 0, Step::Precommit)), valid()), soon()).await.expect("activates");
        p.fence(Duration::from_secs(5)).expect("fenced");
        assert!(!p.key_path().exists());
        let calls = fs::read_to_string(dir.path().join("calls")).expect("calls");
        let calls: Vec<&str> = calls.lines().filter(|l| !l.starts_with("is-active")).collect();
        assert_eq!(
            calls,
            [
                "start cometbft.service",
                "stop cometbft.service",
                "start cometbft.service",
                "kill --signal=SIGKILL cometbft.service",
                "stop cometbft.service"
            ]
        );
    }

    #[tokio::test]
    async fn a_units_keeper_kills_it_and_removes_the_key_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("secret.json");
        write_private(&source, KEY.as_bytes()).expect("key source");
        let runner = NodeRunner::Systemd { systemctl: fake_systemctl(dir.path()), unit: "cometbft.service".into() };
        let p = FilePvProducer::new(source, dir.path().join("home"), runner, Duration::from_secs(5))
            .with_unit_keeper(crate::keeper::test_launcher());
        let until = MonoTime::now().saturating_add(Duration::from_millis(300));
        p.activate(grant(SignFloor(Hrs::new(7, 0, Step::Precommit)), until), soon()).await.expect("activates");
        let calls = dir.path().join("calls");
        let killed =
            || fs::read_to_string(&calls).unwrap_or_default().contains("kill --signal=SIGKILL cometbft.service");
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !killed() && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(killed(), "the keeper killed the unit at the deadline, with no daemon action");
        assert!(!p.key_path().exists(), "and removed the key");
    }

    #[test]
    fn reads_state_files_as_cometbft_writes_them() {
        assert_eq!(parse_state(br#"{"height":"0","round":0,"step":0}"#), Ok(Hrs::ZERO));
        assert_eq!(parse_state(br#"{"height":"12","round":1,"step":3}"#), Ok(Hrs::new(12, 1, Step::Precommit)));
        for bad in [&br#"{"height":"1","round":-1,"step":1}"#[..], br#"{"height":"1","round":0,"step":4}"#, b"[]"] {
            assert!(parse_state(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
