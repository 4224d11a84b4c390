//! The node's side of privval for the simulated chain (signer mode): listens where a CometBFT
//! node's `priv_validator_laddr` would, accepts the remote signer's connection over a real
//! SecretConnection (tendermint-p2p), and asks it for a precommit at each new height. A signed
//! answer is what the node records in the ledger; an error answer or no answer is a missed
//! height.
//!
//! Blocking, like the signer's side: one accept thread, and requests made from the block loop
//! through `spawn_blocking`. Only the newest connection is used (a signer that redials replaces
//! the old one). Every read and write has a timeout. Its SecretConnection key is fixed, so a
//! signer can name its [`node_id`] in `priv_validator_laddr` and have it checked, as with a
//! real node.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tendermint_p2p::secret_connection::{SecretConnection, Version};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{Message, SignVoteRequest, message::Sum};
use tendermint_proto::v0_38::types::{BlockId, PartSetHeader, Vote};

use crate::producer::privval::connection::WholeChunks;
use crate::producer::privval::frame::{self, FrameError};

const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The simulated node's SecretConnection key: fixed, so that a signer can be told its node id.
const NODE_KEY_SEED: [u8; 32] = [0x51; 32];

/// The id of the simulated node's privval listener key. Unlike stock CometBFT, whose listener
/// key is new at every start, it is fixed, so tests can pin it as `tcp://<node id>@host:port`.
pub fn node_id() -> tendermint::node::Id {
    tendermint_p2p::secret_connection::PublicKey::from(&ed25519_consensus::SigningKey::from(NODE_KEY_SEED)).peer_id()
}

/// A signer connection, read a whole SecretConnection chunk at a time (see
/// [`WholeChunks`]) and framed by the signer's own codec.
type Client = WholeChunks<SecretConnection<TcpStream>>;

fn exchange(client: &mut Client, request: &Message) -> Result<Message, FrameError> {
    frame::write_message(client, request)?;
    frame::read_message(client)
}

/// The newest signer connection, and a signal for whoever waits for one.
#[derive(Default)]
struct Slot {
    client: Mutex<Option<Client>>,
    filled: Condvar,
}

/// The simulated node's connection to its remote signer.
#[derive(Clone)]
pub struct PrivvalRequester {
    slot: Arc<Slot>,
}

impl PrivvalRequester {
    /// Accepts signer connections on `listener` from now on (a thread for the process's life).
    pub fn listen(listener: TcpListener) -> PrivvalRequester {
        let slot = Arc::new(Slot::default());
        let filling = Arc::clone(&slot);
        let spawned = std::thread::Builder::new().name("privval-node".into()).spawn(move || {
            let identity = ed25519_consensus::SigningKey::from(NODE_KEY_SEED);
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_nodelay(true);
                match SecretConnection::new(stream, identity.clone(), Version::V0_34) {
                    Ok(conn) => {
                        *filling.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(WholeChunks::new(conn));
                        filling.filled.notify_all();
                    }
                    Err(e) => tracing::warn!(error = %e, "a remote signer's handshake failed"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the privval listener thread");
        }
        PrivvalRequester { slot }
    }

    /// Waits up to `timeout` for a signer to have completed its handshake; whether one has.
    pub fn wait_for_signer(&self, timeout: Duration) -> bool {
        let client = self.slot.client.lock().unwrap_or_else(|e| e.into_inner());
        let (client, _) =
            self.slot.filled.wait_timeout_while(client, timeout, |c| c.is_none()).unwrap_or_else(|e| e.into_inner());
        client.is_some()
    }

    /// Asks the connected signer for a precommit on `block` at `height`, round 0; the signature,
    /// or `None` (no signer, an error answer, a broken connection — which is then dropped).
    pub fn precommit(&self, chain_id: &str, height: u64, block: [u8; 32], now_unix_ns: i64) -> Option<Vec<u8>> {
        let mut slot = self.slot.client.lock().unwrap_or_else(|e| e.into_inner());
        let client = slot.as_mut()?;
        let vote = Vote {
            r#type: 2,
            height: i64::try_from(height).ok()?,
            round: 0,
            block_id: Some(BlockId {
                hash: block.to_vec(),
                part_set_header: Some(PartSetHeader { total: 1, hash: block.to_vec() }),
            }),
            timestamp: Some(Timestamp {
                seconds: now_unix_ns.div_euclid(1_000_000_000),
                nanos: i32::try_from(now_unix_ns.rem_euclid(1_000_000_000)).unwrap_or(0),
            }),
            validator_address: vec![0; 20],
            validator_index: 0,
            ..Vote::default()
        };
        let request = Message {
            sum: Some(Sum::SignVoteRequest(SignVoteRequest { vote: Some(vote), chain_id: chain_id.into() })),
        };
        match exchange(client, &request) {
            Ok(Message { sum: Some(Sum::SignedVoteResponse(r)) }) => match (r.vote, r.error) {
                (Some(v), None) if v.signature.len() == 64 => Some(v.signature),
                _ => None,
            },
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "privval connection to the signer lost");
                *slot = None;
                None
            }
        }
    }
}
