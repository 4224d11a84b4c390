//! A simulated node with an on/off production API, like an Antelope producer's: serves
//! CometBFT-style JSON-RPC `/status` on loopback, follows the [`SimChain`] height, can be told to
//! stall, fall behind or report catching up, and — while turned on — signs each new height once,
//! above its floor, appending a record to the shared ledger. It has no deadline of its own: once
//! on, it signs until it is turned off or its process dies. The same node, never turned on, is
//! the sentry a sign-while-running validator follows ([`super::validator`]).
//!
//! With an activation log configured, every time it is turned on or off is recorded there (the
//! S1 evidence, see [`super::activation`]).
//!
//! Control is in-process ([`SimNode`] methods) or over HTTP (`POST /sim/control`,
//! `POST /sim/produce`, `GET /sim/state`) so tests and the chaos suite can drive a node in
//! another process. The node never decides whether it should produce: it is told.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::activation::{ActivationEvent, ActivationLog, ActivationRecord};
use super::chain::SimChain;
use super::jsonl::JsonLinesError;
use super::ledger::{LedgerWriter, SignatureRecord};
use crate::domain::rfc3339;
use crate::domain::{KeyId, MemberId, MonoTime, Step};

/// What a simulated node is.
#[derive(Clone, Debug)]
pub struct SimNodeConfig {
    pub chain_id: String,
    /// The member whose node this is; recorded in every signature.
    pub member: MemberId,
    /// The signing key; all producers of one validator share it, which is what makes a second
    /// active producer a double sign.
    pub key: KeyId,
    pub block_interval: Duration,
    pub ledger: PathBuf,
    /// Where to record changes of the permission to sign, if anywhere.
    pub activations: Option<PathBuf>,
    /// Signer mode: listen here for the remote signer (privval over SecretConnection) and ask it
    /// for a precommit at each new height, instead of signing by itself when told to produce.
    pub privval_listen: Option<std::net::SocketAddr>,
}

/// The node's controllable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Height frozen at this value (a stalled node).
    pub stalled_at: Option<u64>,
    /// Blocks behind the chain.
    pub behind: u64,
    pub catching_up: bool,
    pub producing: bool,
    /// Never sign at or below this height.
    pub floor: u64,
    pub last_signed: Option<u64>,
}

/// Changes to apply with `POST /sim/control`; absent fields are left alone.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub stall: Option<bool>,
    pub behind: Option<u64>,
    pub catching_up: Option<bool>,
}

/// `POST /sim/produce`: turn production on (above `floor`) or off. Sending it again while on
/// raises the floor.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Produce {
    pub active: bool,
    #[serde(default)]
    pub floor: u64,
}

/// `GET /sim/state`: the node's state and its current height.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StateReport {
    pub height: u64,
    #[serde(flatten)]
    pub state: NodeState,
    /// Signer mode: the remote signer's connections as this node sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<super::privval_node::SignerLink>,
}

#[derive(Clone)]
pub struct SimNode {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimNodeConfig,
    chain: SimChain,
    state: Mutex<NodeState>,
    ledger: Mutex<LedgerWriter>,
    activations: Option<Mutex<ActivationLog>>,
    /// Signer mode: the last height a signature was asked for.
    last_requested: std::sync::atomic::AtomicU64,
    /// Signer mode: the connection to the remote signer, once [`SimNode::serve`] listens.
    privval: std::sync::OnceLock<super::privval_node::PrivvalRequester>,
}

impl SimNode {
    /// Opens the ledger (and activation log) and makes a node that is synced, not stalled and
    /// not producing.
    pub fn new(config: SimNodeConfig) -> Result<SimNode, JsonLinesError> {
        let ledger = LedgerWriter::open(&config.ledger)?;
        let activations = config.activations.as_deref().map(ActivationLog::open).transpose()?.map(Mutex::new);
        Ok(SimNode {
            inner: Arc::new(Inner {
                chain: SimChain::new(config.block_interval),
                config,
                state: Mutex::new(NodeState::default()),
                ledger: Mutex::new(ledger),
                activations,
                last_requested: std::sync::atomic::AtomicU64::new(0),
                privval: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Records that production was turned on or off. A failed write is logged, not returned: the
    /// log is evidence for the tests, and the node's behaviour must not depend on it.
    fn record(&self, event: ActivationEvent, at: MonoTime) {
        let Some(log) = &self.inner.activations else { return };
        let record = ActivationRecord {
            member: self.inner.config.member.clone(),
            event,
            mono_ns: at.as_nanos(),
            until_mono_ns: None,
            pid: None,
        };
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = log.append(&record) {
            tracing::error!(error = %e, "simulated node could not record an activation change");
        }
    }

    pub fn config(&self) -> &SimNodeConfig {
        &self.inner.config
    }

    pub fn chain(&self) -> SimChain {
        self.inner.chain
    }

    fn state_lock(&self) -> MutexGuard<'_, NodeState> {
        // The state is plain data with no invariant a panicking writer could break halfway.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The height this node reports at `now`.
    pub fn height_at(&self, now: MonoTime) -> u64 {
        let s = self.state_lock();
        height_of(&s, self.inner.chain.height_at(now))
    }

    pub fn state(&self) -> NodeState {
        self.state_lock().clone()
    }

    pub fn report(&self) -> StateReport {
        let now = MonoTime::now();
        let s = self.state_lock();
        StateReport {
            height: height_of(&s, self.inner.chain.height_at(now)),
            state: s.clone(),
            signer: self.inner.privval.get().map(super::privval_node::PrivvalRequester::link),
        }
    }

    /// Applies stall / behind / catching-up changes.
    pub fn control(&self, c: &Control) {
        let chain_height = self.inner.chain.height_at(MonoTime::now());
        let mut s = self.state_lock();
        if let Some(behind) = c.behind {
            s.behind = behind;
        }
        match c.stall {
            Some(true) if s.stalled_at.is_none() => s.stalled_at = Some(height_of(&s, chain_height)),
            Some(false) => s.stalled_at = None,
            _ => {}
        }
        if let Some(cu) = c.catching_up {
            s.catching_up = cu;
        }
    }

    /// Starts (or keeps) signing new heights above `floor`, until told to stop.
    pub fn start_producing(&self, floor: u64) {
        let mut s = self.state_lock();
        s.producing = true;
        s.floor = s.floor.max(floor);
        // Recorded under the state lock, so that the log's order is the order of the changes.
        self.record(ActivationEvent::Activate, MonoTime::now());
    }

    /// Stops signing; returns the last height signed, if any.
    pub fn stop_producing(&self) -> Option<u64> {
        let mut s = self.state_lock();
        if s.producing {
            self.record(ActivationEvent::Deactivate, MonoTime::now());
        }
        s.producing = false;
        s.last_signed
    }

    /// The signature this node makes at `now`, if it is producing and has not yet signed its
    /// current height; marks that height signed. The caller appends it to the ledger.
    pub fn sign_due(&self, now: MonoTime) -> Option<SignatureRecord> {
        let chain_height = self.inner.chain.height_at(now);
        let mut s = self.state_lock();
        let height = height_of(&s, chain_height);
        if !s.producing
            || s.stalled_at.is_some()
            || s.catching_up
            || height <= s.floor
            || s.last_signed.is_some_and(|l| height <= l)
        {
            return None;
        }
        s.last_signed = Some(height);
        drop(s);
        Some(self.record_at(height, now))
    }

    /// Signer mode: the next height to ask the remote signer about, once per height, while the
    /// node follows the chain.
    fn privval_height_due(&self, now: MonoTime) -> Option<u64> {
        let chain_height = self.inner.chain.height_at(now);
        let s = self.state_lock();
        let height = height_of(&s, chain_height);
        if s.stalled_at.is_some() || s.catching_up {
            return None;
        }
        drop(s);
        let previous = self.inner.last_requested.fetch_max(height, std::sync::atomic::Ordering::Relaxed);
        (height > previous).then_some(height)
    }

    /// Signer mode: the remote signer signed `height`.
    fn privval_signed(&self, height: u64, now: MonoTime) -> SignatureRecord {
        let mut s = self.state_lock();
        s.last_signed = s.last_signed.max(Some(height));
        drop(s);
        self.record_at(height, now)
    }

    fn record_at(&self, height: u64, now: MonoTime) -> SignatureRecord {
        signature(&self.inner.config, height, now)
    }

    /// Signer mode: binds the address the node's signer dials (`privval_listen`), so that a
    /// taken port is a start-up error of whoever starts the node, not a node that dies later.
    pub fn bind_privval(&self) -> std::io::Result<Option<std::net::TcpListener>> {
        self.inner.config.privval_listen.map(std::net::TcpListener::bind).transpose()
    }

    /// Serves HTTP on `listener` (and, in signer mode, asks the signer that connects to
    /// `privval`, from [`SimNode::bind_privval`]) and runs the block loop until `shutdown` is
    /// cancelled.
    pub async fn serve(
        self,
        listener: TcpListener,
        privval: Option<std::net::TcpListener>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let privval = privval.map(super::privval_node::PrivvalRequester::listen);
        if let Some(requester) = &privval {
            let _ = self.inner.privval.set(requester.clone());
        }
        let blocks = tokio::spawn(self.clone().run_blocks(privval, shutdown.clone()));
        let app = axum::Router::new()
            .route("/status", get(status))
            .route("/sim/state", get(state))
            .route("/sim/control", post(control))
            .route("/sim/produce", post(produce))
            .route("/sim/extend", post(no_deadline))
            .with_state(self);
        let result = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
        shutdown.cancel();
        let _ = blocks.await;
        result
    }

    async fn run_blocks(self, privval: Option<super::privval_node::PrivvalRequester>, shutdown: CancellationToken) {
        let tick = (self.inner.chain.block_interval / 4).max(Duration::from_millis(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = MonoTime::now();
            let record = match &privval {
                None => self.sign_due(now),
                Some(pv) => {
                    let Some(height) = self.privval_height_due(now) else { continue };
                    let cfg = &self.inner.config;
                    let mut block = [0u8; 32];
                    let _ = hex::decode_to_slice(payload_hash(&cfg.chain_id, height, &cfg.member), &mut block);
                    let (pv, chain_id) = (pv.clone(), cfg.chain_id.clone());
                    let unix_ns = i64::try_from(rfc3339::now_unix_nanos()).unwrap_or(i64::MAX);
                    let signed = tokio::task::spawn_blocking(move || pv.precommit(&chain_id, height, block, unix_ns))
                        .await
                        .ok()
                        .flatten();
                    signed.map(|_| self.privval_signed(height, now))
                }
            };
            let Some(record) = record else { continue };
            let node = self.clone();
            let written = tokio::task::spawn_blocking(move || {
                let mut ledger = node.inner.ledger.lock().unwrap_or_else(|p| p.into_inner());
                ledger.append(&record)
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "simulated node could not record a signature"),
                Err(e) => tracing::error!(error = %e, "ledger writer task failed"),
            }
        }
    }
}

/// The precommit `config`'s member makes at `height`, signed at `now`.
pub(crate) fn signature(config: &SimNodeConfig, height: u64, now: MonoTime) -> SignatureRecord {
    SignatureRecord {
        key: config.key.clone(),
        height,
        round: 0,
        step: Step::Precommit,
        payload: payload_hash(&config.chain_id, height, &config.member),
        member: config.member.clone(),
        mono_ns: now.as_nanos(),
        wall_ms: i64::try_from(rfc3339::now_unix_nanos() / 1_000_000).unwrap_or(i64::MAX),
    }
}

fn height_of(s: &NodeState, chain_height: u64) -> u64 {
    s.stalled_at.unwrap_or_else(|| chain_height.saturating_sub(s.behind))
}

/// What a member signs at a height: distinct per member, so two active producers at one
/// height leave two payloads — a double sign the checker sees.
pub fn payload_hash(chain_id: &str, height: u64, member: &MemberId) -> String {
    let mut h = Sha256::new();
    h.update(chain_id.as_bytes());
    h.update([0]);
    h.update(height.to_be_bytes());
    h.update(member.as_str().as_bytes());
    hex::encode(h.finalize())
}

async fn status(State(node): State<SimNode>) -> Response {
    let now = MonoTime::now();
    let s = node.state();
    let height = node.height_at(now);
    Json(status_body(
        node.config(),
        node.chain(),
        Reported { height, catching_up: s.catching_up, producing: s.producing, now },
    ))
    .into_response()
}

/// What a node's `/status` says.
pub(crate) struct Reported {
    pub height: u64,
    pub catching_up: bool,
    pub producing: bool,
    pub now: MonoTime,
}

/// A CometBFT-style `/status` answer for `config`'s node on `chain`.
pub(crate) fn status_body(config: &SimNodeConfig, chain: SimChain, r: Reported) -> serde_json::Value {
    // The wall time of block `height`: now, minus how long ago the chain made it.
    let age = r.now.saturating_since(chain.time_of(r.height));
    let block_time = rfc3339::now_unix_nanos() - age.as_nanos() as i128;
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": -1,
        "result": {
            "node_info": {
                "network": config.chain_id,
                "moniker": config.member.as_str(),
                "version": "sim"
            },
            "sync_info": {
                "latest_block_hash": payload_hash(&config.chain_id, r.height, &config.member).to_uppercase(),
                "latest_block_height": r.height.to_string(),
                "latest_block_time": rfc3339::format_unix_nanos(block_time),
                "catching_up": r.catching_up
            },
            "validator_info": {
                "address": hex::encode_upper(&Sha256::digest(config.key.as_str().as_bytes())[..20]),
                "voting_power": if r.producing { "10" } else { "0" }
            }
        }
    })
}

async fn state(State(node): State<SimNode>) -> Json<StateReport> {
    Json(node.report())
}

async fn control(
    State(node): State<SimNode>,
    body: Result<Json<Control>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(c)) => {
            node.control(&c);
            Json(node.report()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    }
}

/// `POST /sim/extend`, which earlier nodes took as a new deadline: this one has none.
async fn no_deadline() -> Response {
    (
        StatusCode::CONFLICT,
        "this node has no deadline: it signs while turned on, until POST /sim/produce {\"active\":false} or its process ends\n",
    )
        .into_response()
}

async fn produce(
    State(node): State<SimNode>,
    body: Result<Json<Produce>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(p)) => {
            if p.active {
                node.start_producing(p.floor);
            } else {
                node.stop_producing();
            }
            Json(node.report()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dir: &tempfile::TempDir, member: &str) -> SimNode {
        SimNode::new(SimNodeConfig {
            chain_id: "sim".into(),
            member: MemberId::new(member).expect("valid"),
            key: KeyId::new("validator").expect("valid"),
            block_interval: Duration::from_secs(1),
            ledger: dir.path().join("ledger.jsonl"),
            activations: Some(dir.path().join("activations.jsonl")),
            privval_listen: None,
        })
        .expect("node")
    }

    fn at(height: u64) -> MonoTime {
        MonoTime::from_nanos(height * 1_000_000_000 + 1)
    }

    #[test]
    fn signs_each_height_once_and_only_while_producing() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        assert_eq!(n.sign_due(at(10)), None, "not producing");
        n.start_producing(0);
        assert_eq!(n.sign_due(at(10)).map(|r| r.height), Some(10));
        assert_eq!(n.sign_due(at(10)), None, "height 10 already signed");
        assert_eq!(n.sign_due(at(11)).map(|r| r.height), Some(11));
        assert_eq!(n.stop_producing(), Some(11));
        assert_eq!(n.sign_due(at(12)), None);
    }

    #[test]
    fn never_signs_at_or_below_the_floor() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.start_producing(20);
        assert_eq!(n.sign_due(at(20)), None);
        assert_eq!(n.sign_due(at(21)).map(|r| r.height), Some(21));
    }

    #[test]
    fn a_stalled_or_catching_up_node_does_not_sign() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.start_producing(0);
        n.control(&Control { stall: Some(true), ..Control::default() });
        assert_eq!(n.sign_due(MonoTime::now()), None);
        n.control(&Control { stall: Some(false), catching_up: Some(true), ..Control::default() });
        assert_eq!(n.sign_due(MonoTime::now()), None);
    }

    #[test]
    fn once_on_it_signs_until_turned_off_with_no_deadline_of_its_own() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.start_producing(0);
        assert_eq!(n.sign_due(at(11)).map(|r| r.height), Some(11));
        assert_eq!(n.sign_due(at(1_000_000)).map(|r| r.height), Some(1_000_000), "still on, much later");
        n.stop_producing();
        assert_eq!(n.sign_due(at(1_000_001)), None);
    }

    #[test]
    fn every_turn_on_and_off_is_in_the_activation_log() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.stop_producing();
        n.start_producing(0);
        n.start_producing(5);
        n.stop_producing();
        n.stop_producing();
        let log = crate::sim::activation::read(&dir.path().join("activations.jsonl")).expect("log");
        let events: Vec<_> = log.iter().map(|r| (r.event, r.until_mono_ns, r.pid)).collect();
        assert_eq!(
            events,
            vec![
                (ActivationEvent::Activate, None, None),
                (ActivationEvent::Activate, None, None),
                (ActivationEvent::Deactivate, None, None)
            ],
            "a stop while off changes nothing and records nothing"
        );
        assert_eq!(n.state().floor, 5, "told again while on raises the floor");
    }

    #[test]
    fn behind_lowers_the_reported_height() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.control(&Control { behind: Some(7), ..Control::default() });
        assert_eq!(n.height_at(at(100)), 93);
    }

    #[test]
    fn payloads_differ_between_members_at_one_height() {
        let a = MemberId::new("a").expect("valid");
        let b = MemberId::new("b").expect("valid");
        assert_ne!(payload_hash("sim", 5, &a), payload_hash("sim", 5, &b));
        assert_eq!(payload_hash("sim", 5, &a), payload_hash("sim", 5, &a));
    }
}
