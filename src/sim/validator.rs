//! A simulated validator shaped like a real one (`failoverd sim-node --sign-while-running`): like
//! CometBFT with a FilePV key, nodeos, agave or geth, it signs from the moment its process starts
//! until its process dies, with no deadline and no on/off control. Whoever wants it to stop must
//! end its process; `POST /sim/produce` and `POST /sim/extend` are refused with 409.
//!
//! It signs each new height once: the heights its sentry (an ordinary [`super::node::SimNode`]
//! that never produces, the node the daemon probes and the tests stall or slow down) reports on
//! `GET /sim/state`, polled every block interval / 5 with a deadline as short. A stalled or
//! unreachable sentry means no new heights, so nothing new is signed; a sentry catching up means
//! none either, as a CometBFT node in block sync does not vote.
//!
//! With a home (the `cometbft-filepv` shape) it reads `config/priv_validator_key.json` once at
//! start, refusing to start without it, and signs only strictly above the height in
//! `data/priv_validator_state.json`, which it rewrites (temporary file, fsync, rename) before each
//! signature leaves for the ledger, as CometBFT saves its state before returning a signature.
//! Without a home (the `process` producer's shape) it signs only heights that began after its
//! process started. On start it records an `Activate` with its pid in the activation log; its end
//! is recorded from outside by [`super::death_watch`], never by itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::activation::{ActivationEvent, ActivationLog, ActivationRecord};
use super::chain::SimChain;
use super::jsonl::JsonLinesError;
use super::ledger::{LedgerWriter, SignatureRecord};
use super::node::{NodeState, Reported, SimNodeConfig, StateReport, signature, status_body};
use crate::domain::{Hrs, MonoTime, Step};
use crate::producer::cometbft_filepv::{parse_state, state_json, write_private};

/// What a sign-while-running validator is.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// Chain, member, key, block interval, ledger and activation log, as for any simulated node;
    /// `privval_listen` is not used.
    pub node: SimNodeConfig,
    /// The sentry whose heights it signs.
    pub follow: reqwest::Url,
    /// The CometBFT-style home (`config/priv_validator_key.json`,
    /// `data/priv_validator_state.json`), if it has one.
    pub home: Option<PathBuf>,
}

/// Why a validator refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(
        "cannot read the validator key {path}: {source}; install it (the cometbft-filepv producer does) before starting the node"
    )]
    KeyUnreadable { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not a priv_validator_key.json (expected a JSON object with priv_key); refusing to start without a key"
    )]
    KeyInvalid { path: PathBuf },
    #[error(
        "cannot read the signing state {path}: {source}; refusing to sign without knowing what was signed (the cometbft-filepv producer writes it at the floor)"
    )]
    StateUnreadable { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a priv_validator_state.json: {problem}; refusing to sign without knowing what was signed")]
    StateInvalid { path: PathBuf, problem: String },
    #[error(transparent)]
    Log(#[from] JsonLinesError),
    #[error("cannot set up the HTTP client for the sentry: {0}")]
    Client(String),
}

#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    config: ValidatorConfig,
    chain: SimChain,
    /// Never sign at or below this height.
    floor: u64,
    /// Where the signing state is rewritten after each signature, with a home.
    state_path: Option<PathBuf>,
    view: Mutex<View>,
    ledger: Mutex<LedgerWriter>,
    client: reqwest::Client,
    poll_every: Duration,
}

/// What the sentry last said, and what this validator last signed.
#[derive(Clone, Copy, Debug, Default)]
struct View {
    height: u64,
    catching_up: bool,
    last_signed: Option<u64>,
}

impl Validator {
    /// Reads the key and the signing state once (with a home), opens the ledger and records this
    /// process's `Activate`. From here on the node may sign.
    pub fn start(config: ValidatorConfig) -> Result<Validator, ValidatorError> {
        let started = MonoTime::now();
        let chain = SimChain::new(config.node.block_interval);
        let (floor, state_path) = match &config.home {
            Some(home) => {
                check_key(&home.join("config").join("priv_validator_key.json"))?;
                let state_path = home.join("data").join("priv_validator_state.json");
                (read_floor(&state_path)?.height, Some(state_path))
            }
            // Every height that began before this process existed may have been signed by another.
            None => (chain.height_at(started), None),
        };
        let ledger = LedgerWriter::open(&config.node.ledger)?;
        let poll_every = (config.node.block_interval / 5).max(Duration::from_millis(1));
        let client = crate::http::client(poll_every).map_err(|e| ValidatorError::Client(e.to_string()))?;
        if let Some(path) = &config.node.activations {
            let record = ActivationRecord {
                member: config.node.member.clone(),
                event: ActivationEvent::Activate,
                mono_ns: MonoTime::now().as_nanos(),
                until_mono_ns: None,
                pid: Some(std::process::id()),
            };
            ActivationLog::open(path)?.append(&record)?;
        }
        Ok(Validator {
            inner: Arc::new(Inner {
                config,
                chain,
                floor,
                state_path,
                view: Mutex::new(View::default()),
                ledger: Mutex::new(ledger),
                client,
                poll_every,
            }),
        })
    }

    /// The height at or below which this validator never signs.
    pub fn floor(&self) -> u64 {
        self.inner.floor
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // Plain data with no invariant a panicking writer could break halfway.
        self.inner.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `GET /sim/state`: the sentry's height as last seen, and this validator's signing state.
    pub fn report(&self) -> StateReport {
        let v = *self.view();
        StateReport {
            height: v.height,
            state: NodeState {
                stalled_at: None,
                behind: 0,
                catching_up: v.catching_up,
                producing: true,
                floor: self.inner.floor,
                last_signed: v.last_signed,
            },
            signer: None,
        }
    }

    /// Takes in what the sentry said; the height to sign now, if it is new and above the floor.
    /// Marks it signed: each height is signed at most once, even if writing it fails.
    fn height_due(&self, sentry: &StateReport) -> Option<u64> {
        let mut v = self.view();
        v.height = sentry.height;
        v.catching_up = sentry.state.catching_up;
        let h = sentry.height;
        if v.catching_up || h <= self.inner.floor || v.last_signed.is_some_and(|l| h <= l) {
            return None;
        }
        v.last_signed = Some(h);
        Some(h)
    }

    /// Makes the signature at `height`: the signing state first (with a home), then the ledger.
    fn sign(&self, height: u64) {
        let record: SignatureRecord = signature(&self.inner.config.node, height, MonoTime::now());
        if let Some(path) = &self.inner.state_path {
            let state = state_json(Hrs::new(height, 0, Step::Precommit)).to_string();
            if let Err(e) = write_private(path, state.as_bytes()) {
                // CometBFT does not hand out a signature it could not record: neither do we.
                tracing::error!(path = %path.display(), height, error = %e, "cannot save the signing state; signature withheld");
                return;
            }
        }
        let mut ledger = self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = ledger.append(&record) {
            tracing::error!(height, error = %e, "simulated validator could not record a signature");
        }
    }

    /// Serves HTTP on `listener` and follows the sentry until `shutdown` is cancelled.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let following = tokio::spawn(self.clone().follow(shutdown.clone()));
        let app = axum::Router::new()
            .route("/status", get(status))
            .route("/sim/state", get(state))
            .route("/sim/control", post(control))
            .route("/sim/produce", post(no_switch))
            .route("/sim/extend", post(no_switch))
            .with_state(self);
        let result = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
        shutdown.cancel();
        let _ = following.await;
        result
    }

    async fn follow(self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.inner.poll_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut reachable = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let sentry = match self.ask_sentry().await {
                Ok(s) => s,
                Err(e) => {
                    if reachable {
                        tracing::warn!(sentry = %self.inner.config.follow, error = %e, "cannot reach the sentry; no new heights to sign");
                    }
                    reachable = false;
                    continue;
                }
            };
            reachable = true;
            let Some(height) = self.height_due(&sentry) else { continue };
            let node = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || node.sign(height)).await {
                tracing::error!(height, error = %e, "the signing task failed");
            }
        }
    }

    async fn ask_sentry(&self) -> Result<StateReport, String> {
        let url = self.inner.config.follow.join("sim/state").map_err(|e| e.to_string())?;
        let work = async {
            let r = self.inner.client.get(url).send().await.map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("HTTP {}", r.status()));
            }
            r.json::<StateReport>().await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(self.inner.poll_every, work).await.unwrap_or_else(|_| Err("no answer in time".into()))
    }
}

/// The key file must be a JSON object with a `priv_key`; its content is never quoted.
fn check_key(path: &Path) -> Result<(), ValidatorError> {
    let bytes = fs::read(path).map_err(|source| ValidatorError::KeyUnreadable { path: path.to_path_buf(), source })?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(fields)) if fields.contains_key("priv_key") => Ok(()),
        _ => Err(ValidatorError::KeyInvalid { path: path.to_path_buf() }),
    }
}

fn read_floor(path: &Path) -> Result<Hrs, ValidatorError> {
    let bytes =
        fs::read(path).map_err(|source| ValidatorError::StateUnreadable { path: path.to_path_buf(), source })?;
    parse_state(&bytes).map_err(|problem| ValidatorError::StateInvalid { path: path.to_path_buf(), problem })
}

async fn status(State(v): State<Validator>) -> Json<serde_json::Value> {
    let r = v.report();
    let reported =
        Reported { height: r.height, catching_up: r.state.catching_up, producing: true, now: MonoTime::now() };
    Json(status_body(&v.inner.config.node, v.inner.chain, reported))
}

async fn state(State(v): State<Validator>) -> Json<StateReport> {
    Json(v.report())
}

async fn control(State(v): State<Validator>) -> Response {
    let message = format!(
        "this node follows its sentry at {}: stall it, slow it down or make it catch up there\n",
        v.inner.config.follow
    );
    (StatusCode::CONFLICT, message).into_response()
}

async fn no_switch() -> Response {
    (
        StatusCode::CONFLICT,
        "this node signs while it runs: it has no on/off switch and no deadline; to stop it, end its process\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyId, MemberId};

    fn config(dir: &Path, home: Option<PathBuf>) -> ValidatorConfig {
        ValidatorConfig {
            node: SimNodeConfig {
                chain_id: "sim".into(),
                member: MemberId::new("a").expect("valid"),
                key: KeyId::new("validator").expect("valid"),
                block_interval: Duration::from_secs(1),
                ledger: dir.join("ledger.jsonl"),
                activations: Some(dir.join("activations.jsonl")),
                privval_listen: None,
            },
            follow: reqwest::Url::parse("http://127.0.0.1:9").expect("url"),
            home,
        }
    }

    fn sentry(height: u64, catching_up: bool) -> StateReport {
        StateReport { height, state: NodeState { catching_up, ..NodeState::default() }, signer: None }
    }

    fn home_with(dir: &Path, key: Option<&str>, state: Option<&str>) -> PathBuf {
        let home = dir.join("home");
        fs::create_dir_all(home.join("config")).expect("config dir");
        fs::create_dir_all(home.join("data")).expect("data dir");
        if let Some(k) = key {
            fs::write(home.join("config/priv_validator_key.json"), k).expect("key");
        }
        if let Some(s) = state {
            fs::write(home.join("data/priv_validator_state.json"), s).expect("state");
        }
        home
    }

    #[test]
    fn signs_each_new_height_its_sentry_reports_once_and_none_while_it_catches_up() {
        let dir = tempfile::tempdir().expect("dir");
        let v = Validator::start(config(dir.path(), None)).expect("starts");
        let above = v.floor() + 1;
        assert_eq!(v.height_due(&sentry(v.floor(), false)), None, "a height that began before the process");
        assert_eq!(v.height_due(&sentry(above, false)), Some(above));
        assert_eq!(v.height_due(&sentry(above, false)), None, "signed once");
        assert_eq!(v.height_due(&sentry(above + 1, true)), None, "the sentry is catching up");
        assert_eq!(v.height_due(&sentry(above + 1, false)), Some(above + 1));
    }

    #[test]
    fn without_a_home_heights_that_began_before_the_process_are_below_its_floor() {
        let dir = tempfile::tempdir().expect("dir");
        let before = SimChain::new(Duration::from_secs(1)).height_at(MonoTime::now());
        let v = Validator::start(config(dir.path(), None)).expect("starts");
        assert!(v.floor() >= before);
    }

    #[test]
    fn with_a_home_it_signs_only_above_the_state_file_and_rewrites_it_per_signature() {
        let dir = tempfile::tempdir().expect("dir");
        let home =
            home_with(dir.path(), Some(r#"{"priv_key":{"value":"x"}}"#), Some(r#"{"height":"40","round":0,"step":3}"#));
        let v = Validator::start(config(dir.path(), Some(home.clone()))).expect("starts");
        assert_eq!(v.floor(), 40);
        assert_eq!(v.height_due(&sentry(40, false)), None);
        let h = v.height_due(&sentry(41, false)).expect("41 is due");
        v.sign(h);
        let state = fs::read(home.join("data/priv_validator_state.json")).expect("state");
        assert_eq!(parse_state(&state), Ok(Hrs::new(41, 0, Step::Precommit)));
        let ledger = crate::sim::ledger::read(&dir.path().join("ledger.jsonl")).expect("ledger");
        assert_eq!(ledger.iter().map(|r| r.height).collect::<Vec<_>>(), vec![41]);
        let log = crate::sim::activation::read(&dir.path().join("activations.jsonl")).expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(
            (log[0].event, log[0].pid, log[0].until_mono_ns),
            (ActivationEvent::Activate, Some(std::process::id()), None)
        );
    }

    #[test]
    fn a_missing_or_keyless_key_or_an_unreadable_state_refuses_start_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let state = Some(r#"{"height":"1","round":0,"step":3}"#);
        let cases: [(Option<&str>, Option<&str>, &str); 4] = [
            (None, state, "priv_validator_key.json"),
            (Some(r#"{"pub_key":{}}"#), state, "priv_validator_key.json"),
            (Some(r#"{"priv_key":{}}"#), None, "priv_validator_state.json"),
            (Some(r#"{"priv_key":{}}"#), Some(r#"{"height":1}"#), "priv_validator_state.json"),
        ];
        for (i, (key, state, named)) in cases.into_iter().enumerate() {
            let case = dir.path().join(i.to_string());
            let home = home_with(&case, key, state);
            let err = match Validator::start(config(&case, Some(home))) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("case {i} started"),
            };
            assert!(err.contains(named), "case {i}: {err}");
            assert!(!case.join("activations.jsonl").exists(), "case {i}: a refused node recorded an activation");
        }
    }
}
