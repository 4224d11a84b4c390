//! A simulated block-producing node: serves CometBFT-style JSON-RPC `/status` on loopback,
//! follows the [`SimChain`] height, can be told to stall, fall behind or report catching up,
//! and — while its producer is active — signs each new height once, above its floor, appending
//! a record to the shared ledger.
//!
//! With an activation log configured, every change of the permission to sign is recorded there
//! (the S1 evidence of the chaos suite, see [`super::activation`]).
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
    /// Dead man's switch: stop signing once `CLOCK_MONOTONIC` reaches this (nanoseconds), unless
    /// extended. `None`: no limit (manual use).
    pub produce_until: Option<u64>,
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

/// `POST /sim/produce`: turn production on (above `floor`, until `until_mono_ns`) or off.
/// Sending it again while active raises the floor and moves the limit.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Produce {
    pub active: bool,
    #[serde(default)]
    pub floor: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_mono_ns: Option<u64>,
}

/// `POST /sim/extend`: move the end of an active node's permission. Never turns production on:
/// an extension that arrives after a deactivation is a no-op.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Extend {
    pub until_mono_ns: u64,
}

/// `GET /sim/state`: the node's state and its current height.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StateReport {
    pub height: u64,
    #[serde(flatten)]
    pub state: NodeState,
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
            }),
        })
    }

    /// Records a change of the permission to sign. A failed write is logged, not returned: the
    /// log is evidence for the chaos suite, and the node's behaviour must not depend on it.
    fn record(&self, event: ActivationEvent, at: MonoTime, until: Option<u64>) {
        let Some(log) = &self.inner.activations else { return };
        let record = ActivationRecord {
            member: self.inner.config.member.clone(),
            event,
            mono_ns: at.as_nanos(),
            until_mono_ns: until,
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
        StateReport { height: height_of(&s, self.inner.chain.height_at(now)), state: s.clone() }
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

    /// Starts signing new heights above `floor`, with no time limit.
    pub fn start_producing(&self, floor: u64) {
        self.produce(floor, None);
    }

    /// Starts (or keeps) signing above `floor` until monotonic time `until` (if given).
    pub fn produce(&self, floor: u64, until: Option<MonoTime>) {
        let mut s = self.state_lock();
        s.producing = true;
        s.floor = s.floor.max(floor);
        s.produce_until = until.map(MonoTime::as_nanos);
        // Recorded under the state lock, so that the log's order is the order of the changes.
        self.record(ActivationEvent::Activate, MonoTime::now(), s.produce_until);
    }

    /// Moves the permission's end later if the node is producing; otherwise does nothing.
    /// Never earlier: renewals overlap, and an older one may answer after a newer one.
    pub fn extend(&self, until: MonoTime) {
        let mut s = self.state_lock();
        if s.producing && s.produce_until.is_some_and(|u| until.as_nanos() > u) {
            s.produce_until = Some(until.as_nanos());
            self.record(ActivationEvent::Extend, MonoTime::now(), s.produce_until);
        }
    }

    /// Stops signing; returns the last height signed, if any.
    pub fn stop_producing(&self) -> Option<u64> {
        let mut s = self.state_lock();
        if s.producing {
            self.record(ActivationEvent::Deactivate, MonoTime::now(), None);
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
            || s.produce_until.is_some_and(|until| now.as_nanos() >= until)
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
        let cfg = &self.inner.config;
        SignatureRecord {
            key: cfg.key.clone(),
            height,
            round: 0,
            step: Step::Precommit,
            payload: payload_hash(&cfg.chain_id, height, &cfg.member),
            member: cfg.member.clone(),
            mono_ns: now.as_nanos(),
            wall_ms: i64::try_from(rfc3339::now_unix_nanos() / 1_000_000).unwrap_or(i64::MAX),
        }
    }

    /// Serves HTTP on `listener` and runs the block loop until `shutdown` is cancelled.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
        let privval = match self.inner.config.privval_listen {
            Some(addr) => Some(super::privval_node::PrivvalRequester::listen(std::net::TcpListener::bind(addr)?)),
            None => None,
        };
        let blocks = tokio::spawn(self.clone().run_blocks(privval, shutdown.clone()));
        let app = axum::Router::new()
            .route("/status", get(status))
            .route("/sim/state", get(state))
            .route("/sim/control", post(control))
            .route("/sim/produce", post(produce))
            .route("/sim/extend", post(extend))
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
    let chain = node.chain();
    // The wall time of block `height`: now, minus how long ago the chain made it.
    let age = now.saturating_since(chain.time_of(height));
    let block_time = rfc3339::now_unix_nanos() - age.as_nanos() as i128;
    let cfg = node.config();
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": -1,
        "result": {
            "node_info": {
                "network": cfg.chain_id,
                "moniker": cfg.member.as_str(),
                "version": "sim"
            },
            "sync_info": {
                "latest_block_hash": payload_hash(&cfg.chain_id, height, &cfg.member).to_uppercase(),
                "latest_block_height": height.to_string(),
                "latest_block_time": rfc3339::format_unix_nanos(block_time),
                "catching_up": s.catching_up
            },
            "validator_info": {
                "address": hex::encode_upper(&Sha256::digest(cfg.key.as_str().as_bytes())[..20]),
                "voting_power": if s.producing { "10" } else { "0" }
            }
        }
    });
    Json(body).into_response()
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

async fn extend(
    State(node): State<SimNode>,
    body: Result<Json<Extend>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(e)) => {
            node.extend(MonoTime::from_nanos(e.until_mono_ns));
            Json(node.report()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    }
}

async fn produce(
    State(node): State<SimNode>,
    body: Result<Json<Produce>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(p)) => {
            if p.active {
                node.produce(p.floor, p.until_mono_ns.map(MonoTime::from_nanos));
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
    fn the_dead_mans_switch_stops_signing_at_its_deadline() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.produce(0, Some(at(12)));
        assert_eq!(n.sign_due(at(11)).map(|r| r.height), Some(11));
        assert_eq!(n.sign_due(at(12)), None, "the permission ended");
        n.extend(at(20));
        assert_eq!(n.sign_due(at(13)).map(|r| r.height), Some(13), "extended");
    }

    #[test]
    fn a_late_extension_never_restarts_production() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.produce(0, Some(at(12)));
        n.stop_producing();
        n.extend(at(100));
        assert!(!n.state().producing);
        assert_eq!(n.sign_due(at(13)), None);
    }

    #[test]
    fn every_change_of_the_permission_is_in_the_activation_log() {
        let dir = tempfile::tempdir().expect("dir");
        let n = node(&dir, "a");
        n.extend(at(5));
        n.produce(0, Some(at(12)));
        n.extend(at(20));
        n.stop_producing();
        n.stop_producing();
        let log = crate::sim::activation::read(&dir.path().join("activations.jsonl")).expect("log");
        let events: Vec<_> = log.iter().map(|r| (r.event, r.until_mono_ns)).collect();
        assert_eq!(
            events,
            vec![
                (ActivationEvent::Activate, Some(at(12).as_nanos())),
                (ActivationEvent::Extend, Some(at(20).as_nanos())),
                (ActivationEvent::Deactivate, None)
            ],
            "an extension while idle and a second stop change nothing and record nothing"
        );
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
