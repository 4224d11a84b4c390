//! `Dialer`: the connections of the `cometbft-signer` producer to its nodes — when to dial,
//! when to close, and the log lines that say why.
//!
//! A CometBFT node keeps one signer connection at a time, so a member that may not sign holds
//! none: a node thread dials only while the [`CoordinatorGate`] has a permission, dials at once
//! when [`Dialer::activated`] wakes it (the time from activation to the first signature is
//! failover time), redials a node that is unreachable after a short backoff ([`FIRST_RETRY`]
//! doubling to [`LAST_RETRY`]), and leaves every node alone while the member is a standby. A
//! revocation closes every connection ([`Dialer::close_all`]); a permission that runs out with
//! no renewal is noticed by a watch thread that wakes at its deadline. A request that reaches a
//! connection anyway after the permission is gone is not answered: the connection closes, so
//! the node retries with its next signer ([`NodeConnection::serve`]).
//!
//! One thread per node: each node (a validator's sentries) has its own connection, all answered
//! through the one shared [`PrivvalSigner`], whose double-sign rule gives a second node asking
//! for the same HRS the stored signature, never a second one. A node that dies costs nothing but
//! its connection: the others go on signing.
//!
//! It never signs and never grants or revokes a permission: the producer does, and tells it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::connection::{Closer, ConnectionError, NodeAddress, NodeConnection};
use super::coordinator_gate::CoordinatorGate;
use super::signer::{PrivvalSigner, SignGate};
use crate::domain::MonoTime;

/// The pause after the first failed dial while active: short, because the node may be a moment
/// from listening (a restart) and every pause is time without signatures.
pub const FIRST_RETRY: Duration = Duration::from_millis(20);
/// The longest pause between dials of an unreachable node while active.
pub const LAST_RETRY: Duration = Duration::from_millis(200);

/// Why the connections were closed, for the node threads' log lines.
const NO_LONGER_ACTIVE: &str = "this member is no longer active";
const RAN_OUT: &str = "this member's permission to sign ran out with no renewal";

pub struct Dialer {
    shared: Arc<Shared>,
}

struct Shared {
    signer: Arc<PrivvalSigner<CoordinatorGate>>,
    state: Mutex<State>,
    /// Signalled on every activation, closing and stop, and by a renew that revives a
    /// permission that had run out.
    changed: Condvar,
}

struct State {
    stop: bool,
    /// When this member last became active: the start of the failover time a node thread
    /// reports with its first connection after it.
    activated_at: Option<MonoTime>,
    /// Why the connections were last closed; cleared by an activation.
    closed_because: Option<&'static str>,
    /// The open connection of each node, by its index in the address list.
    open: Vec<Option<Closer>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain flags and handles: no invariant a panicking holder could break halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn may_sign(&self) -> bool {
        self.signer.gate().may_sign()
    }
}

impl State {
    fn close_all(&mut self, why: &'static str) {
        for closer in self.open.iter_mut().filter_map(Option::take) {
            closer.close();
        }
        self.closed_because.get_or_insert(why);
    }
}

impl Dialer {
    /// Starts one thread per node in `addresses` and the watch thread; none dials before
    /// [`Dialer::activated`].
    pub fn start(
        signer: Arc<PrivvalSigner<CoordinatorGate>>,
        addresses: Vec<NodeAddress>,
        identity: ed25519_consensus::SigningKey,
        dial_timeout: Duration,
    ) -> std::io::Result<Dialer> {
        let state = State { stop: false, activated_at: None, closed_because: None, open: vec![None; addresses.len()] };
        let shared = Arc::new(Shared { signer, state: Mutex::new(state), changed: Condvar::new() });
        let dialer = Dialer { shared };
        for (index, address) in addresses.into_iter().enumerate() {
            let node = NodeThread {
                shared: Arc::clone(&dialer.shared),
                index,
                address,
                identity: identity.clone(),
                dial_timeout,
            };
            std::thread::Builder::new().name(format!("privval-{index}")).spawn(move || node.run())?;
        }
        let shared = Arc::clone(&dialer.shared);
        std::thread::Builder::new().name("privval-watch".into()).spawn(move || watch(&shared))?;
        Ok(dialer)
    }

    /// The permission was just granted: every node thread dials now.
    pub fn activated(&self) {
        let mut state = self.shared.lock();
        state.activated_at = Some(MonoTime::now());
        state.closed_because = None;
        self.shared.changed.notify_all();
    }

    /// The permission was revoked: closes every connection, and no thread dials until the next
    /// activation. `fenced` only changes the reason logged.
    pub fn close_all(&self, fenced: bool) {
        let mut state = self.shared.lock();
        state.close_all(if fenced { "this member was fenced" } else { NO_LONGER_ACTIVE });
        self.shared.changed.notify_all();
    }

    /// A renew revived a permission that had run out: wakes the node threads, which dial again,
    /// and the watch thread, which re-reads the deadline. Keeps the activation instant.
    pub fn permission_changed(&self) {
        let _state = self.shared.lock();
        self.shared.changed.notify_all();
    }

    /// How many nodes this member holds a connection to now.
    pub fn connected(&self) -> usize {
        self.shared.lock().open.iter().flatten().count()
    }
}

impl Drop for Dialer {
    /// Closes every connection and ends the threads (a thread in the middle of a dial ends when
    /// the dial does, within its timeout).
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stop = true;
        state.close_all("the member is shutting down");
        self.shared.changed.notify_all();
    }
}

/// Closes every connection once the permission has run out without a revocation (no renewal
/// reached the producer before its deadline): the node threads only notice a permission when
/// a request arrives or a dial starts. Sleeps until the deadline, which renewals move later.
fn watch(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        state = match shared.signer.gate().permission() {
            Some(p) => {
                // Bounded: a permission without a deadline (u64::MAX) is re-read hourly.
                let left = p
                    .until
                    .saturating_since(MonoTime::now())
                    .clamp(Duration::from_millis(1), Duration::from_secs(3600));
                shared.changed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0
            }
            None => {
                if state.open.iter().any(Option::is_some) {
                    state.close_all(RAN_OUT);
                }
                shared.changed.wait(state).unwrap_or_else(|e| e.into_inner())
            }
        };
    }
}

/// One node's connection, kept while this member may sign.
struct NodeThread {
    shared: Arc<Shared>,
    index: usize,
    address: NodeAddress,
    identity: ed25519_consensus::SigningKey,
    dial_timeout: Duration,
}

impl NodeThread {
    fn run(self) {
        // The activation this thread last dialled for, and whether it has said so.
        let mut dialled_for: Option<MonoTime> = None;
        // The activation this thread last connected for: only the first connection after an
        // activation is failover time worth reporting.
        let mut connected_for: Option<MonoTime> = None;
        let mut retry = FIRST_RETRY;
        let mut failing = false;
        loop {
            let Some(activated_at) = self.wait_for_permission() else { return };
            if dialled_for != Some(activated_at) {
                dialled_for = Some(activated_at);
                (retry, failing) = (FIRST_RETRY, false);
                tracing::info!(node = %self.address, "dialling the node at {}: this member became active", self.address);
            }
            let first = connected_for != Some(activated_at);
            match self.connect_and_serve(first.then_some(activated_at)) {
                Ok(()) => (retry, failing, connected_for) = (FIRST_RETRY, false, Some(activated_at)),
                Err(e) => {
                    if !failing {
                        failing = true;
                        self.report_dial_failure(&e, retry);
                    }
                    self.pause(retry);
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        }
    }

    /// Blocks while this member may not sign; `None` once the dialer stops, else the instant
    /// of the activation the permission came with.
    fn wait_for_permission(&self) -> Option<MonoTime> {
        let mut state = self.shared.lock();
        loop {
            if state.stop {
                return None;
            }
            // Checked under the state lock, which an activation takes after granting: a grant
            // cannot slip between this check and the wait.
            if self.shared.may_sign() {
                return Some(state.activated_at.unwrap_or(MonoTime::ZERO));
            }
            state = self.shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits `retry` before the next dial, or less if an activation, closing or stop wakes it.
    fn pause(&self, retry: Duration) {
        let state = self.shared.lock();
        if !state.stop {
            drop(self.shared.changed.wait_timeout(state, retry).unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// Dials, answers the node until the connection ends, and says how it ended. `Err` only for
    /// a dial that failed. `activated_at`: the activation this is the first connection after.
    fn connect_and_serve(&self, activated_at: Option<MonoTime>) -> Result<(), ConnectionError> {
        let (conn, closer) = NodeConnection::dial(&self.address, &self.identity, self.dial_timeout)?;
        {
            let mut state = self.shared.lock();
            // Registered before the permission is checked again, and a revocation closes what is
            // registered after revoking: one of the two sees the other, so a connection made
            // while the permission was being revoked never outlives it.
            state.open[self.index] = Some(closer.clone());
            if state.stop || !self.shared.may_sign() {
                state.open[self.index] = None;
                closer.close();
                return Ok(());
            }
        }
        let address = &self.address;
        match activated_at.map(|at| MonoTime::now().saturating_since(at).as_secs_f64() * 1e3) {
            Some(ms) => tracing::info!(
                node = %address,
                after_activation_ms = ms,
                "connected to the node at {address} as its remote signer, {ms:.1} ms after this member became active"
            ),
            None => tracing::info!(node = %address, "connected to the node at {address} as its remote signer again"),
        }
        let ended = conn.serve(&self.shared.signer);
        let why = {
            let mut state = self.shared.lock();
            state.open[self.index] = None;
            state.closed_because
        };
        self.report_end(ended, why);
        Ok(())
    }

    /// Says how a connection ended. The thread then dials again at once if this member may
    /// still sign, or waits for the next activation.
    fn report_end(&self, ended: Result<(), ConnectionError>, closed_because: Option<&'static str>) {
        let address = &self.address;
        if !self.shared.may_sign() {
            let why = closed_because.unwrap_or(RAN_OUT);
            tracing::info!(node = %address, "closed the connection to the node at {address}: {why}");
            return;
        }
        match ended {
            Ok(()) => {
                tracing::info!(node = %address, "the node at {address} closed the connection; dialling it again")
            }
            // A silent node is not an error: said plainly, and dialled again.
            Err(e @ ConnectionError::Idle { .. }) => tracing::info!(node = %address, "{e}"),
            Err(e) => tracing::warn!(node = %address, "{e}; dialling the node again"),
        }
    }

    /// The first failure of a run of failed dials while active; the rest of the run is quiet.
    fn report_dial_failure(&self, e: &ConnectionError, retry: Duration) {
        let address = &self.address;
        let every = LAST_RETRY.as_millis();
        match e {
            ConnectionError::WrongNode { .. } => {
                tracing::error!(node = %address, "{e}; dialling again every {every} ms while this member is active")
            }
            _ => tracing::warn!(
                node = %address,
                "{e}: this member is active but cannot sign through this node; dialling again in {} ms, then every {every} ms",
                retry.as_millis()
            ),
        }
    }
}
