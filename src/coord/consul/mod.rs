//! The Consul coordinator (docs/design.md §4, "Consul mapping"): the lease is a session lock on
//! `<prefix>/leader`, its epoch the key's `LockIndex`.
//!
//! The session is bound to a short-TTL check on the local agent plus the agent's `serfHealth`,
//! not to a session TTL: Consul's session TTLs are at least 10 s and may be reaped at twice that.
//! The holder passes the check only in [`Coordinator::renew`], so a holder whose loop stops
//! renewing loses its session one check TTL after its last renew, and the lock with it. Members
//! that do not hold the lease pass the check when they publish their status.
//!
//! **The holder stops before anyone else can start, whatever ends its session.** Its validity is
//! `sent + check_ttl − safety_margin`, where `sent` is read just before the renew (or acquire)
//! that last confirmed the lock. A session can end in several ways: its TTL check's time runs
//! out; `serfHealth` fails (the node stops answering serf's probes, or leaves, as a stopping
//! agent does); a restarted agent may bring the check back critical; an operator or Consul
//! destroys the session; the node is deregistered. Only the first waits for the check's TTL;
//! every other way ends the session at once, at any instant — just after a renew, say. The one
//! thing every way shares is Consul's lock-delay: the servers refuse to lock the key again for `lock_delay`
//! after they applied the invalidation. So validation requires `lock_delay ≥ check_ttl`, that is
//! the holder's validity (`check_ttl − safety_margin`) plus `safety_margin`, and the default is
//! `lock_delay = check_ttl`. The two intervals start at different instants on different clocks:
//! the holder counts from `sent`; the leader of the Consul servers counts from when it applied the
//! invalidation. That apply comes after `sent`: an acquire is applied after it was sent and the
//! invalidation after the acquire (one raft log), and a renew confirms the lock with a consistent
//! read served after it was sent and before the leader applied the invalidation (or the read
//! would have seen the lock free). The earliest moment another member can hold the lock is
//! therefore at least `safety_margin` after the holder's validity ends, and that margin absorbs
//! the difference in clock rates over one check TTL, the time another server may have applied
//! the invalidation before the leader did (it counts from its own apply if it becomes leader), and
//! scheduling. An invalidation by the check's TTL has even more room: the check expires on the
//! agent `check_ttl` after it received the pass, and the lock-delay still follows. Consul caps
//! lock-delay at 60 s, so `check_ttl` is at most 60 s too.
//!
//! Why the session keeps `serfHealth`: a session bound to the TTL check alone would not end when
//! the holder's whole host dies, since the agent that runs the check dies with it and the
//! servers keep its last state, passing; the lock would stay taken for good. Dropping
//! `serfHealth` would also not make the lock-delay rule unnecessary, as an explicit destroy or a
//! node deregistration is immediate. What stays outside this argument: someone writing
//! `<prefix>/leader` by hand (a delete, or a `?release` with the holder's session id, frees the
//! lock with no lock-delay; ACLs keep others off the prefix), and a Consul server that loses its
//! lock-delays (they are kept in memory: a server that restarts or installs a snapshot within
//! `lock_delay` of the invalidation and then leads forgets them).
//!
//! Watermarks live under `<prefix>/watermarks/<key>` and every write is a transaction that checks
//! the writer's session still holds the leader lock and sets the value with check-and-set on its
//! ModifyIndex; a new holder first rewrites every watermark with its own epoch, so an old
//! holder's write in flight fails its CAS. An operator's import needs no lease: it is one
//! transaction with a check-and-set per key, so it lands whole or not at all. Operator intents
//! are `<prefix>/intents` (CAS), member status `<prefix>/members/<id>`, locked by each member's
//! session so it goes with it.
//!
//! Never decides anything by a member's clock: expiry is Consul's check timer and lock-delay.
//! Never extends the holder's validity without a confirmation of the lock sent after the instant
//! the validity counts from.

pub mod agent;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::agent::{Agent, AgentError, KvEntry, TxnOp};
use super::{
    BackendStatus, CoordError, Coordinator, Holding, Intents, LeaseGrant, StatusReport, StoreView, Transfer,
    plan_import,
};
use crate::config::{Config, MemberConfig};
use crate::domain::{
    Epoch, Hrs, KeyId, Lease, LeaseView, MemberId, MemberKind, MemberStatus, MonoTime, Watermark, WatermarkRefusal,
};

/// How long one blocking query of the watch waits at most.
const WATCH_WAIT: Duration = Duration::from_secs(5);

/// How often an acquire refused by Consul's lock-delay asks again.
const LOCK_DELAY_POLL: Duration = Duration::from_millis(25);

/// Attempts of a check-and-set that lost a race to another writer.
const CAS_ATTEMPTS: usize = 8;

/// The most operations Consul accepts in one transaction (`/v1/txn`).
const TXN_MAX_OPS: usize = 64;

/// The value of `<prefix>/leader`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderValue {
    pub holder: MemberId,
}

/// The value of `<prefix>/intents`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentsValue {
    pub paused: bool,
    pub transfer: Option<Transfer>,
}

pub struct ConsulCoordinator {
    me: MemberId,
    members: Vec<MemberConfig>,
    agent: std::sync::Arc<Agent>,
    prefix: String,
    check_id: String,
    check_ttl: Duration,
    lock_delay: Duration,
    safety_margin: Duration,
    /// This member's session, created on first need and again after Consul invalidated it.
    session: tokio::sync::Mutex<Option<String>>,
    /// The epoch this member holds, if any: while holding, only `renew` passes the check.
    holding: Mutex<Option<Epoch>>,
    /// Per member: the ModifyIndex of its status and when this reader first saw it.
    seen: Mutex<HashMap<MemberId, (u64, MonoTime)>>,
    view: watch::Sender<StoreView>,
    stop: CancellationToken,
}

fn unavailable(e: AgentError) -> CoordError {
    CoordError::Unavailable(e.to_string())
}

/// The value of `entry` as the JSON of a `T` (a [`LeaderValue`], [`IntentsValue`],
/// [`Watermark`] or [`MemberStatus`]), or why failoverd cannot read it. Public, with
/// [`leader_view`], for the fuzz target `consul_kv`.
pub fn decode<T: for<'de> Deserialize<'de>>(entry: &KvEntry) -> Result<T, CoordError> {
    serde_json::from_slice(&entry.value)
        .map_err(|e| CoordError::Unavailable(format!("{} holds a value failoverd cannot read: {e}", entry.key)))
}

/// The lease `<prefix>/leader`'s entry says: free without a session, else held by the holder
/// its value names, at its lock index.
pub fn leader_view(entry: Option<&KvEntry>) -> Result<LeaseView, CoordError> {
    Ok(match entry {
        None => LeaseView::Free { epoch: Epoch::ZERO },
        Some(e) if e.session.is_none() => LeaseView::Free { epoch: Epoch::new(e.lock_index) },
        Some(e) => LeaseView::Held { holder: decode::<LeaderValue>(e)?.holder, epoch: Epoch::new(e.lock_index) },
    })
}

async fn bounded<T>(
    operation: &'static str,
    deadline: Instant,
    work: impl Future<Output = Result<T, CoordError>>,
) -> Result<T, CoordError> {
    tokio::time::timeout_at(deadline, work).await.unwrap_or(Err(CoordError::Timeout { operation }))
}

impl ConsulCoordinator {
    /// Builds the coordinator for `config.member`. Nothing is asked of the agent yet: the check
    /// and session are made on first need, so a daemon starts while its agent is down.
    pub fn start(config: &Config) -> Result<ConsulCoordinator, CoordError> {
        let consul = &config.coordinator.consul;
        let token = match &consul.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        CoordError::Invalid(format!(
                            "cannot read coordinator.consul.token_file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let agent = std::sync::Arc::new(Agent::new(consul, token).map_err(unavailable)?);
        let prefix = consul.prefix.trim_matches('/').to_string();
        let id_safe: String = prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let (view, _) = watch::channel(StoreView {
            lease: LeaseView::Free { epoch: Epoch::ZERO },
            intents: Intents::default(),
            current: false,
        });
        let coord = ConsulCoordinator {
            me: config.member.clone(),
            members: config.members.clone(),
            agent,
            check_id: format!("failoverd-{id_safe}-{}", config.member),
            prefix,
            check_ttl: consul.check_ttl,
            lock_delay: consul.lock_delay,
            safety_margin: config.coordinator.safety_margin,
            session: tokio::sync::Mutex::new(None),
            holding: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
            view,
            stop: CancellationToken::new(),
        };
        coord.spawn_watch();
        Ok(coord)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn leader_key(&self) -> String {
        self.key("leader")
    }

    fn holding(&self) -> Option<Epoch> {
        *self.holding.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_holding(&self, epoch: Option<Epoch>) {
        *self.holding.lock().unwrap_or_else(|e| e.into_inner()) = epoch;
    }

    /// Records that this member holds the lease at `epoch`, unless it already did: `false` when
    /// an earlier acquire of this process was granted this epoch.
    fn claim(&self, epoch: Epoch) -> bool {
        let mut holding = self.holding.lock().unwrap_or_else(|e| e.into_inner());
        let first = *holding != Some(epoch);
        *holding = Some(epoch);
        first
    }

    /// Passes this member's check, registering it again if the agent forgot it (a restart).
    async fn pass_check(&self) -> Result<(), AgentError> {
        match self.agent.pass_check(&self.check_id).await {
            Err(AgentError::Api { .. }) => {
                let name = format!("failoverd member {}", self.me);
                self.agent.register_ttl_check(&self.check_id, &name, self.check_ttl).await
            }
            other => other,
        }
    }

    /// This member's live session, made anew when Consul has invalidated the last one.
    async fn session(&self) -> Result<String, CoordError> {
        let mut slot = self.session.lock().await;
        if let Some(id) = slot.as_ref() {
            let alive = self.agent.session_alive(id).await.map_err(unavailable)?;
            if alive {
                return Ok(id.clone());
            }
        }
        self.pass_check().await.map_err(unavailable)?;
        let checks = vec!["serfHealth".to_string(), self.check_id.clone()];
        let id = self
            .agent
            .create_session(&format!("failoverd-{}", self.me), &checks, self.lock_delay)
            .await
            .map_err(unavailable)?;
        *slot = Some(id.clone());
        Ok(id)
    }

    /// The session id if one exists, without creating one.
    async fn current_session(&self) -> Option<String> {
        self.session.lock().await.clone()
    }

    async fn read_one(&self, key: &str) -> Result<Option<KvEntry>, CoordError> {
        let entry = self.agent.read(key, false).await.map_err(unavailable)?.and_then(|mut v| v.pop());
        match entry {
            // An answer for another key is no answer for this one: never read it as this key's.
            Some(e) if e.key != key => Err(CoordError::Unavailable(format!(
                "the Consul agent answered a read of {key} with key {}; refusing to use it",
                e.key
            ))),
            other => Ok(other),
        }
    }

    async fn read_lease(&self) -> Result<(LeaseView, Option<KvEntry>), CoordError> {
        let entry = self.read_one(&self.leader_key()).await?;
        Ok((leader_view(entry.as_ref())?, entry))
    }

    /// Checks that this member holds the lock at `epoch` with its current session.
    async fn check_holder(&self, holder: &MemberId, epoch: Epoch) -> Result<String, CoordError> {
        let (view, entry) = self.read_lease().await?;
        let session = self.current_session().await;
        let ours = holder == &self.me
            && view.is_held_by(holder, epoch)
            && session.is_some()
            && entry.as_ref().and_then(|e| e.session.as_ref()) == session.as_ref();
        match session {
            Some(s) if ours => Ok(s),
            _ => Err(CoordError::NotHolder { epoch, current: view }),
        }
    }

    fn watermark_key(&self, key: &KeyId) -> String {
        self.key(&format!("watermarks/{key}"))
    }

    /// Changes `key`'s watermark by `change` with check-and-set, retrying lost races; with
    /// `holder`, also only while that session holds the leader lock. `change` returns `None` to
    /// leave the watermark as it is.
    async fn update_watermark(
        &self,
        key: &KeyId,
        holder: Option<&str>,
        change: impl Fn(&Watermark) -> Result<Option<Watermark>, WatermarkRefusal>,
    ) -> Result<Watermark, CoordError> {
        let wm_key = self.watermark_key(key);
        for _ in 0..CAS_ATTEMPTS {
            let entry = self.read_one(&wm_key).await?;
            let current = match &entry {
                Some(e) => decode::<Watermark>(e)?,
                None => Watermark::ZERO,
            };
            let Some(next) = change(&current)? else { return Ok(current) };
            let value = serde_json::to_vec(&next).map_err(|e| CoordError::Invalid(e.to_string()))?;
            let mut ops = Vec::new();
            if let Some(session) = holder {
                ops.push(TxnOp::CheckSession { key: self.leader_key(), session: session.to_string() });
            }
            ops.push(TxnOp::Cas { key: wm_key.clone(), value, index: entry.as_ref().map_or(0, |e| e.modify_index) });
            if self.agent.txn(&ops).await.map_err(unavailable)? {
                return Ok(next);
            }
            if let Some(session) = holder {
                let (view, leader) = self.read_lease().await?;
                if leader.and_then(|l| l.session).as_deref() != Some(session) {
                    return Err(CoordError::NotHolder { epoch: view.epoch(), current: view });
                }
            }
        }
        Err(CoordError::Unavailable(format!("{wm_key}: lost {CAS_ATTEMPTS} check-and-set races in a row")))
    }

    /// An import as one transaction: every key's watermark is read just before, the batch is
    /// checked by [`plan_import`], and each key is written with a check-and-set on the
    /// ModifyIndex that read returned — also a key the import leaves as it is, so that the
    /// transaction fails if any of them moved since. Either every key moves or none does. A lost
    /// race reads again, up to `CAS_ATTEMPTS` times.
    async fn import_all(&self, entries: &[(KeyId, Hrs)]) -> Result<Vec<Watermark>, CoordError> {
        if entries.len() > TXN_MAX_OPS {
            return Err(CoordError::Invalid(format!(
                "an import of {} keys does not fit one Consul transaction (at most {TXN_MAX_OPS}); import fewer keys \
                 at once",
                entries.len()
            )));
        }
        for _ in 0..CAS_ATTEMPTS {
            let stored: HashMap<String, KvEntry> = self
                .agent
                .read(&self.key("watermarks/"), true)
                .await
                .map_err(unavailable)?
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.key.clone(), e))
                .collect();
            let mut current = HashMap::new();
            for (key, _) in entries {
                if let Some(entry) = stored.get(&self.watermark_key(key)) {
                    current.insert(key.clone(), (decode::<Watermark>(entry)?, entry.modify_index));
                }
            }
            let next = plan_import(entries, |key| current.get(key).map(|(w, _)| *w))?;
            let mut ops = Vec::with_capacity(entries.len());
            for ((key, _), w) in entries.iter().zip(&next) {
                let value = serde_json::to_vec(w).map_err(|e| CoordError::Invalid(e.to_string()))?;
                let index = current.get(key).map_or(0, |(_, index)| *index);
                ops.push(TxnOp::Cas { key: self.watermark_key(key), value, index });
            }
            if self.agent.txn(&ops).await.map_err(unavailable)? {
                return Ok(next);
            }
        }
        Err(CoordError::Unavailable(format!(
            "the import lost {CAS_ATTEMPTS} check-and-set races in a row against other writers of the same watermarks; \
             nothing was written; try again"
        )))
    }

    /// Rewrites every watermark with the new holder's epoch (values unchanged), so that a write
    /// the previous holder still has in flight fails its check-and-set. Returns the watermarks as
    /// rewritten: each was current when its check-and-set succeeded under the new holder's lock,
    /// after which no earlier holder's write can land, so they are the watermarks as of the grant.
    async fn bump_watermark_epochs(
        &self,
        epoch: Epoch,
        session: &str,
    ) -> Result<HashMap<KeyId, Watermark>, CoordError> {
        let entries = self.agent.read(&self.key("watermarks/"), true).await.map_err(unavailable)?.unwrap_or_default();
        let mut bumped = HashMap::new();
        for entry in entries {
            let Some(name) = entry.key.rsplit('/').next() else { continue };
            let Ok(key) = KeyId::new(name) else { continue };
            let w = self
                .update_watermark(&key, Some(session), |w| {
                    Ok((w.epoch < epoch).then_some(Watermark { hrs: w.hrs, epoch }))
                })
                .await?;
            bumped.insert(key, w);
        }
        Ok(bumped)
    }

    /// What follows the lock's grant, by an acquire or a takeover: the epoch claimed once, every
    /// watermark bumped to it, the transfer cleared.
    async fn complete_grant(
        &self,
        session: &str,
        sent: MonoTime,
        key: Option<&KeyId>,
    ) -> Result<LeaseGrant, CoordError> {
        let (view, entry) = self.read_lease().await?;
        if entry.as_ref().and_then(|e| e.session.as_deref()) != Some(session) {
            return Err(match view {
                LeaseView::Held { holder, epoch } => CoordError::LeaseHeld { holder, epoch },
                // Taken and at once freed again (this member's session ended in between): the
                // lease moved past what this acquire saw, as raft's refusal of a stale one.
                LeaseView::Free { epoch } => CoordError::LeaseMoved { epoch },
            });
        }
        let epoch = view.epoch();
        // Consul's lock is re-entrant: another acquire by this member, racing this one, took
        // the same lock with the same session and LockIndex. Only the first to claim the
        // epoch is granted it; the lease is held for the others.
        if !self.claim(epoch) {
            return Err(CoordError::LeaseHeld { holder: self.me.clone(), epoch });
        }
        let watermarks = self.bump_watermark_epochs(epoch, session).await?;
        self.update_intents(|i| i.transfer = None).await?;
        let lease = Lease { holder: self.me.clone(), epoch, ttl: self.check_ttl, valid_until: self.lease_until(sent) };
        Ok(LeaseGrant { lease, watermark: key.and_then(|k| watermarks.get(k).copied()) })
    }

    async fn grant(&self, member: &MemberId, key: Option<&KeyId>, deadline: Instant) -> Result<LeaseGrant, CoordError> {
        if member != &self.me {
            return Err(CoordError::Invalid(format!("this member is {}, not {member}", self.me)));
        }
        let session = self.session().await?;
        let (view, _) = self.read_lease().await?;
        if let LeaseView::Held { holder, epoch } = view {
            return Err(CoordError::LeaseHeld { holder, epoch });
        }
        let sent = loop {
            let sent = MonoTime::now();
            self.pass_check().await.map_err(unavailable)?;
            let value = LeaderValue { holder: self.me.clone() };
            if self.agent.acquire(&self.leader_key(), &value, &session).await.map_err(unavailable)? {
                break sent;
            }
            // Refused while free: Consul's lock-delay after the last holder's session ended
            // still runs (it lasts at least check_ttl, see the module doc). Ask again within
            // this call's deadline rather than fail at once.
            if let (LeaseView::Held { holder, epoch }, _) = self.read_lease().await? {
                return Err(CoordError::LeaseHeld { holder, epoch });
            }
            if Instant::now() + LOCK_DELAY_POLL >= deadline {
                return Err(CoordError::Unavailable(format!(
                    "Consul's lock-delay ({}) after the previous holder's session ended is still running; the lease \
                     can be taken once it has passed",
                    crate::config::duration_text::format(self.lock_delay)
                )));
            }
            tokio::time::sleep(LOCK_DELAY_POLL).await;
        };
        self.complete_grant(&session, sent, key).await
    }

    /// A fenced takeover as one transaction on the leader key: unchanged since the caller looked
    /// (its ModifyIndex is the stamp, and it is still locked at the named LockIndex by the named
    /// holder), the holder's lock released and this member's taken. An unlock sets no lock-delay
    /// (only an invalidated session does), and the LockIndex moves on with the new lock.
    async fn take_over_lock(&self, member: &MemberId, key: &KeyId, fenced: &Holding) -> Result<LeaseGrant, CoordError> {
        if member != &self.me {
            return Err(CoordError::Invalid(format!("this member is {}, not {member}", self.me)));
        }
        let session = self.session().await?;
        let (view, entry) = self.read_lease().await?;
        let moved = || CoordError::LeaseMoved { epoch: view.epoch() };
        let Some(entry) = entry else { return Err(moved()) };
        let (Some(holder_session), LeaseView::Held { holder, epoch }) = (entry.session.clone(), &view) else {
            return Err(moved());
        };
        if (holder, *epoch, entry.modify_index) != (&fenced.holder, fenced.epoch, fenced.stamp) || holder == &self.me {
            return Err(moved());
        }
        let sent = MonoTime::now();
        self.pass_check().await.map_err(unavailable)?;
        let value = serde_json::to_vec(&LeaderValue { holder: self.me.clone() })
            .map_err(|e| CoordError::Invalid(e.to_string()))?;
        let leader = self.leader_key();
        let ops = [
            TxnOp::CheckIndex { key: leader.clone(), index: entry.modify_index },
            TxnOp::Unlock { key: leader.clone(), value: entry.value.clone(), session: holder_session },
            TxnOp::Lock { key: leader, value, session: session.clone() },
        ];
        if !self.agent.txn(&ops).await.map_err(unavailable)? {
            return Err(CoordError::LeaseMoved { epoch: self.read_lease().await?.0.epoch() });
        }
        self.complete_grant(&session, sent, Some(key)).await
    }

    async fn update_intents(&self, change: impl Fn(&mut IntentsValue)) -> Result<IntentsValue, CoordError> {
        let key = self.key("intents");
        for _ in 0..CAS_ATTEMPTS {
            let entry = self.read_one(&key).await?;
            let mut value = match &entry {
                Some(e) => decode::<IntentsValue>(e)?,
                None => IntentsValue::default(),
            };
            change(&mut value);
            if self.agent.cas(&key, &value, entry.map_or(0, |e| e.modify_index)).await.map_err(unavailable)? {
                return Ok(value);
            }
        }
        Err(CoordError::Unavailable(format!("{key}: lost {CAS_ATTEMPTS} check-and-set races in a row")))
    }

    fn lease_until(&self, sent: MonoTime) -> MonoTime {
        sent.saturating_add(self.check_ttl.saturating_sub(self.safety_margin))
    }

    /// Blocking queries on the leader and intents keys feed [`Coordinator::watch`].
    fn spawn_watch(&self) {
        for which in ["leader", "intents"] {
            let agent = std::sync::Arc::clone(&self.agent);
            let key = self.key(which);
            let view = self.view.clone();
            let stop = self.stop.clone();
            tokio::spawn(async move {
                let mut index = 0u64;
                while !stop.is_cancelled() {
                    let read = tokio::time::timeout(WATCH_WAIT * 2, agent.read_blocking(&key, index, WATCH_WAIT));
                    let answer = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = read => a,
                    };
                    match answer {
                        Ok(Ok((entries, next))) => {
                            let entry = entries.and_then(|mut v| v.pop());
                            apply_watch(&view, which, entry.as_ref());
                            if next == index || entry.is_none() {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            // An index that goes backwards (a server restore) restarts the wait.
                            index = if next < index { 0 } else { next };
                        }
                        _ => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
            });
        }
    }

    /// Stops the watch and destroys this member's session (its locks are released with it).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(id) = self.current_session().await {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.agent.destroy_session(&id)).await;
        }
    }
}

impl Drop for ConsulCoordinator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn apply_watch(view: &watch::Sender<StoreView>, which: &str, entry: Option<&KvEntry>) {
    view.send_if_modified(|v| {
        let before = v.clone();
        match which {
            "leader" => {
                if let Ok(lease) = leader_view(entry) {
                    v.lease = lease;
                    v.current = true;
                }
            }
            _ => {
                let intents: IntentsValue =
                    entry.and_then(|e| serde_json::from_slice(&e.value).ok()).unwrap_or_default();
                v.intents = Intents { paused: intents.paused, transfer: intents.transfer };
            }
        }
        *v != before
    });
}

#[async_trait]
impl Coordinator for ConsulCoordinator {
    async fn acquire(&self, member: &MemberId, deadline: Instant) -> Result<Lease, CoordError> {
        Ok(bounded("acquire", deadline, self.grant(member, None, deadline)).await?.lease)
    }

    async fn acquire_with_watermark(
        &self,
        member: &MemberId,
        key: &KeyId,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError> {
        bounded("acquire", deadline, self.grant(member, Some(key), deadline)).await
    }

    async fn holding(&self, deadline: Instant) -> Result<Option<Holding>, CoordError> {
        bounded("holding", deadline, async {
            let (view, entry) = self.read_lease().await?;
            Ok(match (view, entry) {
                (LeaseView::Held { holder, epoch }, Some(e)) => Some(Holding { holder, epoch, stamp: e.modify_index }),
                _ => None,
            })
        })
        .await
    }

    async fn take_over(
        &self,
        member: &MemberId,
        key: &KeyId,
        fenced: &Holding,
        deadline: Instant,
    ) -> Result<LeaseGrant, CoordError> {
        bounded("take_over", deadline, self.take_over_lock(member, key, fenced)).await
    }

    async fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Lease, CoordError> {
        bounded("renew", deadline, async {
            if lease.holder != self.me || self.holding() != Some(lease.epoch) {
                let (current, _) = self.read_lease().await?;
                return Err(CoordError::NotHolder { epoch: lease.epoch, current });
            }
            let sent = MonoTime::now();
            self.pass_check().await.map_err(unavailable)?;
            if let Err(e) = self.check_holder(&lease.holder, lease.epoch).await {
                if matches!(e, CoordError::NotHolder { .. }) {
                    // The lease is gone: publish_status keeps this member's session alive again.
                    self.set_holding(None);
                }
                return Err(e);
            }
            Ok(Lease { valid_until: self.lease_until(sent), ..lease.clone() })
        })
        .await
    }

    async fn release(
        &self,
        lease: &Lease,
        final_watermark: Option<(KeyId, Hrs)>,
        deadline: Instant,
    ) -> Result<(), CoordError> {
        bounded("release", deadline, async {
            let session = match self.check_holder(&lease.holder, lease.epoch).await {
                Ok(session) => session,
                Err(e) => {
                    if matches!(e, CoordError::NotHolder { .. }) && self.holding() == Some(lease.epoch) {
                        self.set_holding(None);
                    }
                    return Err(e);
                }
            };
            if let Some((key, hrs)) = &final_watermark {
                let epoch = lease.epoch;
                self.update_watermark(key, Some(&session), |w| {
                    w.raise(epoch, epoch, *hrs).map(|n| (n != *w).then_some(n))
                })
                .await?;
            }
            let released = self
                .agent
                .release(&self.leader_key(), &LeaderValue { holder: self.me.clone() }, &session)
                .await
                .map_err(unavailable)?;
            if !released {
                let (current, _) = self.read_lease().await?;
                return Err(CoordError::NotHolder { epoch: lease.epoch, current });
            }
            self.set_holding(None);
            Ok(())
        })
        .await
    }

    async fn reserve(&self, epoch: Epoch, key: &KeyId, hrs: Hrs, deadline: Instant) -> Result<Watermark, CoordError> {
        bounded("reserve", deadline, async {
            let session = self.check_holder(&self.me, epoch).await?;
            self.update_watermark(key, Some(&session), |w| w.reserve(epoch, epoch, hrs).map(Some)).await
        })
        .await
    }

    async fn checkpoint(
        &self,
        epoch: Epoch,
        key: &KeyId,
        height: u64,
        deadline: Instant,
    ) -> Result<Watermark, CoordError> {
        bounded("checkpoint", deadline, async {
            let session = self.check_holder(&self.me, epoch).await?;
            let target = Hrs::end_of_height(height);
            self.update_watermark(key, Some(&session), |w| {
                w.raise(epoch, epoch, target).map(|n| (n != *w).then_some(n))
            })
            .await
        })
        .await
    }

    async fn watermark(&self, key: &KeyId, deadline: Instant) -> Result<Option<Watermark>, CoordError> {
        bounded("watermark", deadline, async {
            match self.read_one(&self.watermark_key(key)).await? {
                Some(e) => decode(&e).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn import_watermarks(
        &self,
        entries: &[(KeyId, Hrs)],
        deadline: Instant,
    ) -> Result<Vec<Watermark>, CoordError> {
        bounded("import_watermarks", deadline, self.import_all(entries)).await
    }

    async fn lease(&self, deadline: Instant) -> Result<LeaseView, CoordError> {
        bounded("lease", deadline, async { self.read_lease().await.map(|(v, _)| v) }).await
    }

    async fn intents(&self, deadline: Instant) -> Result<Intents, CoordError> {
        bounded("intents", deadline, async {
            let value = match self.read_one(&self.key("intents")).await? {
                Some(e) => decode::<IntentsValue>(&e)?,
                None => IntentsValue::default(),
            };
            Ok(Intents { paused: value.paused, transfer: value.transfer })
        })
        .await
    }

    fn watch(&self) -> watch::Receiver<StoreView> {
        self.view.subscribe()
    }

    async fn publish_status(&self, status: &MemberStatus, deadline: Instant) -> Result<(), CoordError> {
        bounded("publish_status", deadline, async {
            if status.member != self.me {
                return Err(CoordError::Invalid(format!(
                    "this member is {}; it cannot publish {}'s status",
                    self.me, status.member
                )));
            }
            let session = self.session().await?;
            if self.holding().is_none() {
                self.pass_check().await.map_err(unavailable)?;
            }
            let key = self.key(&format!("members/{}", status.member));
            if self.agent.acquire(&key, status, &session).await.map_err(unavailable)? {
                return Ok(());
            }
            // Refused: another session holds the key, or none does and the lock-delay after this
            // member's previous session ended still runs.
            let held_by_another = self.read_one(&key).await?.is_some_and(|e| e.session.is_some());
            Err(CoordError::Unavailable(if held_by_another {
                format!("{key} is locked by another session; is another daemon running as member {}?", self.me)
            } else {
                format!(
                    "{key}: Consul's lock-delay ({}) after this member's previous session ended is still running; \
                     the status is published again once it has passed",
                    crate::config::duration_text::format(self.lock_delay)
                )
            }))
        })
        .await
    }

    async fn cluster_status(&self, deadline: Instant) -> Result<Vec<StatusReport>, CoordError> {
        bounded("cluster_status", deadline, async {
            let entries = self.agent.read(&self.key("members/"), true).await.map_err(unavailable)?.unwrap_or_default();
            let now = MonoTime::now();
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            for entry in entries {
                let Ok(status) = serde_json::from_slice::<MemberStatus>(&entry.value) else { continue };
                let since = match seen.get(&status.member) {
                    Some((index, since)) if *index == entry.modify_index => *since,
                    _ => now,
                };
                seen.insert(status.member.clone(), (entry.modify_index, since));
                out.push(StatusReport { age: now.saturating_since(since), status });
            }
            Ok(out)
        })
        .await
    }

    async fn set_paused(&self, paused: bool, deadline: Instant) -> Result<(), CoordError> {
        bounded("set_paused", deadline, async { self.update_intents(|i| i.paused = paused).await.map(|_| ()) }).await
    }

    async fn request_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        bounded("request_transfer", deadline, self.transfer(to, false)).await
    }

    async fn request_forced_transfer(&self, to: &MemberId, deadline: Instant) -> Result<Transfer, CoordError> {
        bounded("request_transfer", deadline, self.transfer(to, true)).await
    }

    /// Consul is an external store: nothing of it fails for good on this member, and its health
    /// shows only in whether it answers.
    fn status(&self) -> BackendStatus {
        BackendStatus::default()
    }

    async fn failed(&self) -> String {
        std::future::pending().await
    }

    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    async fn shutdown(&self) {
        ConsulCoordinator::shutdown(self).await;
    }
}

impl ConsulCoordinator {
    async fn transfer(&self, to: &MemberId, forced: bool) -> Result<Transfer, CoordError> {
        {
            match self.members.iter().find(|m| &m.id == to) {
                None => return Err(CoordError::Invalid(format!("{to} is not a member of this cluster"))),
                Some(m) if m.kind == MemberKind::Witness => {
                    return Err(CoordError::Invalid(format!("{to} is a witness and never produces")));
                }
                Some(_) => {}
            }
            let (view, _) = self.read_lease().await?;
            let (holder, epoch) = match view {
                LeaseView::Held { holder, epoch } => (Some(holder), epoch),
                LeaseView::Free { epoch } if forced => (None, epoch),
                LeaseView::Free { .. } => {
                    return Err(CoordError::Invalid("the lease is free: there is nothing to hand over".into()));
                }
            };
            if holder.as_ref() == Some(to) {
                return Err(CoordError::Invalid(format!("{to} already holds the lease")));
            }
            let transfer = Transfer { to: to.clone(), epoch, forced };
            let t = transfer.clone();
            self.update_intents(move |i| i.transfer = Some(t.clone())).await?;
            Ok(transfer)
        }
    }
}
