//! Who may speak on the peer port, and as whom (docs/design.md §5, trust model).
//!
//! With TLS, a caller is the member its verified certificate names (`failoverd://member/<id>`),
//! and nothing else: a raft batch whose `from`, a message whose `from`, a status or lease refresh
//! whose `member` or a rejoin notice whose id is another member's is refused with
//! PERMISSION_DENIED. Operator
//! certificates, certificates of members outside this cluster and certificates without an
//! identity are refused before any field is read. Without TLS (`insecure_plaintext_peers`, on
//! loopback only) there is no identity to check, and a claim is only checked against the
//! configured membership.
//!
//! Every refusal is counted (`failoverd_peer_refusals_total{reason}`) and logged once per
//! connection, with the identity presented and the one claimed, so a flood of forged messages
//! costs a counter, not the log. This module never reads raft state and never changes it.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::{Request, Status};

use crate::domain::MemberId;
use crate::tls::{PeerIdentity, identity_of};

/// Sources whose refusal was logged, at most; then the set starts again.
const LOGGED_CONNECTIONS: usize = 4096;

/// Member certificates remembered after they were read, at most; then the list starts again.
const KNOWN_CERTIFICATES: usize = 32;

/// A member certificate's bytes and the caller they were read as.
type KnownCertificate = (Vec<u8>, Caller);

/// Why a peer request was refused: the `reason` label of `failoverd_peer_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The certificate is not a member of this cluster's (an operator, a stranger, none).
    NotAMember,
    /// A member claimed to be another member.
    SpoofedSender,
    /// The bytes are not what they claim to be (not a raft message, a group bomb).
    Malformed,
    /// A snapshot whose membership or state this member refuses to install.
    Snapshot,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [Refusal::NotAMember, Refusal::SpoofedSender, Refusal::Malformed, Refusal::Snapshot];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAMember => "not_a_member",
            Refusal::SpoofedSender => "spoofed_sender",
            Refusal::Malformed => "malformed",
            Refusal::Snapshot => "snapshot",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub reason: String,
}

/// Where refused traffic came from, for logging it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A connection, by its remote address.
    Connection(SocketAddr),
    /// A member, by the raft id its messages carry (what reaches the raft node has no address).
    RaftId(u64),
    Unknown,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Connection(addr) => write!(f, "{addr}"),
            Source::RaftId(id) => write!(f, "raft id {id}"),
            Source::Unknown => f.write_str("an unknown address"),
        }
    }
}

impl From<Option<SocketAddr>> for Source {
    fn from(addr: Option<SocketAddr>) -> Source {
        addr.map_or(Source::Unknown, Source::Connection)
    }
}

/// The refusal counters and the sources already logged. Cheap to clone (shared).
#[derive(Clone)]
pub struct PeerRefusals {
    counts: Family<RefusalLabel, Counter>,
    logged: Arc<Mutex<HashSet<(Source, Refusal)>>>,
}

impl Default for PeerRefusals {
    fn default() -> Self {
        let counts = Family::<RefusalLabel, Counter>::default();
        // Every series exists from the start, so an alert's increase() sees the first refusal.
        for r in Refusal::ALL {
            let _ = counts.get_or_create(&RefusalLabel { reason: r.as_str().to_string() });
        }
        PeerRefusals { counts, logged: Arc::new(Mutex::new(HashSet::new())) }
    }
}

impl PeerRefusals {
    /// The counter family, for the metrics registry.
    pub fn family(&self) -> Family<RefusalLabel, Counter> {
        self.counts.clone()
    }

    /// How many refusals of `reason` so far.
    pub fn count(&self, reason: Refusal) -> u64 {
        self.counts.get_or_create(&RefusalLabel { reason: reason.as_str().to_string() }).get()
    }

    /// Counts a refusal and logs it, once per source and reason, at warn: it is either an
    /// attack or a misconfigured member, and both need a person; the rest go to debug.
    pub fn record(&self, reason: Refusal, from: impl Into<Source>, what: &str) {
        let from = from.into();
        self.counts.get_or_create(&RefusalLabel { reason: reason.as_str().to_string() }).inc();
        let first = {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            if logged.len() >= LOGGED_CONNECTIONS {
                logged.clear();
            }
            logged.insert((from, reason))
        };
        if first {
            tracing::warn!(reason = reason.as_str(), %from, "peer request refused: {what}");
        } else {
            tracing::debug!(reason = reason.as_str(), %from, "peer request refused: {what}");
        }
    }
}

/// Who a request on the peer port comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A member, as its verified certificate says.
    Member { id: MemberId, raft_id: u64 },
    /// A plaintext connection (`insecure_plaintext_peers`): nobody is authenticated.
    Unauthenticated,
}

/// The peer port's admission rules for one member.
#[derive(Clone)]
pub struct PeerGate {
    /// Raft ids of the other members of this cluster.
    peers: BTreeMap<MemberId, u64>,
    /// Whether callers must present a member certificate (the port serves TLS).
    require_certificates: bool,
    pub refusals: PeerRefusals,
    /// Certificates (their exact bytes, which rustls verified) already read as a member of this
    /// cluster, with who they name. A member's statuses come call after call with the same
    /// certificate, and reading it again was a few percent of an idle member's CPU. A
    /// certificate that was refused is read again each time: nothing about it is remembered.
    known: Arc<Mutex<Vec<KnownCertificate>>>,
}

impl PeerGate {
    pub fn new(peers: BTreeMap<MemberId, u64>, require_certificates: bool, refusals: PeerRefusals) -> PeerGate {
        PeerGate { peers, require_certificates, refusals, known: Arc::default() }
    }

    /// The raft id of `member`, when it is another member of this cluster.
    pub fn raft_id_of(&self, member: &MemberId) -> Option<u64> {
        self.peers.get(member).copied()
    }

    fn member_of(&self, raft_id: u64) -> Option<&MemberId> {
        self.peers.iter().find(|(_, id)| **id == raft_id).map(|(m, _)| m)
    }

    /// Names a raft id for a log line: `member b (raft id 2)` or `raft id 9 (no member)`.
    fn describe(&self, raft_id: u64) -> String {
        match self.member_of(raft_id) {
            Some(m) => format!("member {m} (raft id {raft_id})"),
            None => format!("raft id {raft_id}, which is no member of this cluster"),
        }
    }

    fn refuse(&self, reason: Refusal, from: Option<SocketAddr>, what: String) -> Status {
        self.refusals.record(reason, from, &what);
        Status::permission_denied(what)
    }

    /// The caller of `request`: a member of this cluster by its certificate, or
    /// `Unauthenticated` on a plaintext port. Anyone else is refused here.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let certs = request.peer_certs();
        let der = certs.as_ref().map(|c| c.first().map(|d| d.as_ref()));
        self.admit(der, request.remote_addr())
    }

    /// [`Self::caller`] for the certificate a connection presented: `None` without TLS,
    /// `Some(None)` for a TLS connection without a client certificate.
    fn admit(&self, der: Option<Option<&[u8]>>, from: Option<SocketAddr>) -> Result<Caller, Status> {
        if let Some(Some(der)) = der
            && let Some(caller) = self.known_caller(der)
        {
            return Ok(caller);
        }
        let caller = self.read_caller(der, from)?;
        if let Some(Some(der)) = der {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() >= KNOWN_CERTIFICATES {
                known.clear();
            }
            known.push((der.to_vec(), caller.clone()));
        }
        Ok(caller)
    }

    fn known_caller(&self, der: &[u8]) -> Option<Caller> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.iter().find(|(bytes, _)| bytes.as_slice() == der).map(|(_, caller)| caller.clone())
    }

    fn read_caller(&self, der: Option<Option<&[u8]>>, from: Option<SocketAddr>) -> Result<Caller, Status> {
        let identity = der.map(|d| d.map_or(Err(crate::tls::IdentityError::Missing), identity_of));
        match identity {
            None if self.require_certificates => Err(self.refuse(
                Refusal::NotAMember,
                from,
                "a connection without a client certificate; only members speak on the peer port".into(),
            )),
            None => Ok(Caller::Unauthenticated),
            Some(Err(e)) => Err(self.refuse(Refusal::NotAMember, from, format!("a client certificate refused: {e}"))),
            Some(Ok(PeerIdentity::Member(id))) => match self.peers.get(&id) {
                Some(raft_id) => Ok(Caller::Member { raft_id: *raft_id, id }),
                None => Err(self.refuse(
                    Refusal::NotAMember,
                    from,
                    format!("a certificate for member {id}, which is no other member of this cluster"),
                )),
            },
            Some(Ok(other)) => Err(self.refuse(
                Refusal::NotAMember,
                from,
                format!("a certificate for {other}; only members speak on the peer port"),
            )),
        }
    }

    /// Checks that `caller` may speak for raft id `claimed` (`what` says where the claim is).
    pub fn check_raft_id(
        &self,
        caller: &Caller,
        claimed: u64,
        what: &str,
        from: Option<SocketAddr>,
    ) -> Result<(), Status> {
        match caller {
            Caller::Member { id, raft_id } if *raft_id != claimed => Err(self.refuse(
                Refusal::SpoofedSender,
                from,
                format!("member {id} (by its certificate) sent {what} claiming to be {}", self.describe(claimed)),
            )),
            Caller::Member { .. } => Ok(()),
            Caller::Unauthenticated if self.member_of(claimed).is_none() => Err(self.refuse(
                Refusal::NotAMember,
                from,
                format!("{what} claims to come from {}", self.describe(claimed)),
            )),
            Caller::Unauthenticated => Ok(()),
        }
    }

    /// Checks that `caller` may send `what` (a status, a lease refresh) for `member`.
    pub fn check_member(
        &self,
        caller: &Caller,
        member: &MemberId,
        what: &str,
        from: Option<SocketAddr>,
    ) -> Result<(), Status> {
        match (caller, self.peers.get(member)) {
            (_, None) => Err(self.refuse(
                Refusal::NotAMember,
                from,
                format!("{what} for {member}, which is no other member of this cluster"),
            )),
            (Caller::Member { id, .. }, Some(_)) if id != member => Err(self.refuse(
                Refusal::SpoofedSender,
                from,
                format!("member {id} (by its certificate) sent {what} claiming to be member {member}"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tls::{CertificateAuthority, OperatorName};

    const DAY: Duration = Duration::from_secs(86_400);

    fn id(name: &str) -> MemberId {
        MemberId::new(name).expect("valid id")
    }

    fn gate() -> PeerGate {
        PeerGate::new(BTreeMap::from([(id("b"), 2), (id("c"), 3)]), true, PeerRefusals::default())
    }

    fn member_cert(ca: &CertificateAuthority, name: &str) -> Vec<u8> {
        ca.issue_member(&id(name), &[], &[], DAY).expect("issue").cert_der
    }

    #[test]
    fn a_member_certificate_read_once_is_known_by_its_exact_bytes() {
        let ca = CertificateAuthority::create("test", DAY).expect("ca");
        let (b, c) = (member_cert(&ca, "b"), member_cert(&ca, "c"));
        let gate = gate();
        let want_b = Caller::Member { id: id("b"), raft_id: 2 };
        assert_eq!(gate.admit(Some(Some(&b)), None).expect("b is a member"), want_b);
        assert_eq!(gate.admit(Some(Some(&b)), None).expect("b again"), want_b);
        assert_eq!(gate.admit(Some(Some(&c)), None).expect("c"), Caller::Member { id: id("c"), raft_id: 3 });
        assert_eq!(gate.known.lock().expect("lock").len(), 2, "one entry per certificate");
        // One byte changed (here in the signature, which rustls checked before this) is another
        // certificate: it is read on its own, never matched to b's entry.
        let mut other = b.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        gate.admit(Some(Some(&other)), None).expect("the name is still b's");
        assert_eq!(gate.known.lock().expect("lock").len(), 3, "read and remembered as a third certificate");
    }

    #[test]
    fn a_refused_certificate_is_refused_every_time_and_never_remembered() {
        let ca = CertificateAuthority::create("test", DAY).expect("ca");
        let operator = ca.issue_operator(&OperatorName::new("ops").expect("name"), DAY).expect("issue").cert_der;
        let stranger = member_cert(&ca, "z");
        let gate = gate();
        for _ in 0..2 {
            for der in [&operator, &stranger] {
                let refused = gate.admit(Some(Some(der)), None).expect_err("not a member of this cluster");
                assert_eq!(refused.code(), tonic::Code::PermissionDenied);
            }
            assert!(gate.admit(Some(None), None).is_err(), "a TLS caller without a certificate");
        }
        assert!(gate.known.lock().expect("lock").is_empty());
        assert_eq!(gate.refusals.count(Refusal::NotAMember), 6);
    }

    #[test]
    fn the_remembered_certificates_are_bounded() {
        let ca = CertificateAuthority::create("test", DAY).expect("ca");
        let gate = gate();
        for _ in 0..KNOWN_CERTIFICATES + 3 {
            gate.admit(Some(Some(&member_cert(&ca, "b"))), None).expect("a member");
        }
        assert!(gate.known.lock().expect("lock").len() <= KNOWN_CERTIFICATES);
    }
}
