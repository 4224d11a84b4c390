//! The node's side of privval for the simulated chain (signer mode): listens where a CometBFT
//! node's `priv_validator_laddr` would, accepts the remote signer's connection over a real
//! SecretConnection (tendermint-p2p), and asks it for a precommit at each new height. A signed
//! answer is what the node records in the ledger; an error answer or no answer is a missed
//! height.
//!
//! Blocking, like the signer's side: one accept thread, and requests made from the block loop
//! through `spawn_blocking`. Only the newest connection is used (a signer that redials replaces
//! the old one). Every read and write has a timeout. What the node sees of its signers —
//! connections accepted, whether one is held open, when the newest came — is [`SignerLink`],
//! reported in `GET /sim/state`; a thread per connection notices the signer hanging up without
//! reading from the connection. Its SecretConnection key is fixed, so a
//! signer can name its [`node_id`] in `priv_validator_laddr` and have it checked, as with a
//! real node.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use tendermint_p2p::secret_connection::{SecretConnection, Version};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::privval::{Message, SignVoteRequest, message::Sum};
use tendermint_proto::v0_38::types::{BlockId, PartSetHeader, Vote};

use crate::domain::MonoTime;
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

/// The signer connections as the node sees them: `GET /sim/state`'s `signer`, so that a test can
/// tell from the node's side whether a member holds its connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignerLink {
    /// Signer connections accepted so far (handshakes completed).
    pub accepted: u64,
    /// Whether the node holds a signer connection that the signer has not closed.
    pub connected: bool,
    /// When the newest one was accepted (`CLOCK_BOOTTIME` nanoseconds, comparable across
    /// processes on this machine).
    pub accepted_at_mono_ns: Option<u64>,
}

/// The connection in use: the newest one accepted.
struct Current {
    /// Its number among those accepted.
    number: u64,
    client: Client,
    /// A handle to shut the socket down: the hangup watcher holds a copy of it, so dropping
    /// `client` alone would not close the connection.
    socket: TcpStream,
}

impl Drop for Current {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Default)]
struct Links {
    current: Option<Current>,
    /// The number of the connection `precommit` took out for an exchange: held open, but not
    /// under the lock, so that reading the links (`GET /sim/state`, on the node's async runtime)
    /// never waits for a signer's answer — in the demo the signer shares that runtime, and a
    /// runtime worker blocked here could not carry the reservation the answer waits for.
    lent: Option<u64>,
    accepted: u64,
    accepted_at: Option<MonoTime>,
    /// The number of the newest connection the signer hung up.
    hung_up: Option<u64>,
}

impl Links {
    fn view(&self) -> SignerLink {
        let held = self.current.as_ref().map(|c| c.number).or(self.lent);
        let connected = held.is_some_and(|number| self.hung_up != Some(number));
        SignerLink { accepted: self.accepted, connected, accepted_at_mono_ns: self.accepted_at.map(MonoTime::as_nanos) }
    }
}

/// The signer connections, and a signal for whoever waits for a change.
#[derive(Default)]
struct Slot {
    links: Mutex<Links>,
    changed: Condvar,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The simulated node's connection to its remote signer.
#[derive(Clone)]
pub struct PrivvalRequester {
    slot: Arc<Slot>,
}

/// `POLLRDHUP` (Linux): the peer shut its side down. nix does not name it.
const POLLRDHUP: PollFlags = PollFlags::from_bits_retain(0x2000);

/// Marks connection `number` hung up once its signer closes it (or this node shuts it down),
/// without reading from it: the requests' replies stay where `precommit` reads them.
fn watch_hangup(slot: Arc<Slot>, number: u64, socket: TcpStream) {
    let spawned = std::thread::Builder::new().name("privval-hangup".into()).spawn(move || {
        loop {
            let mut fds = [PollFd::new(socket.as_fd(), POLLRDHUP)];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                _ => break,
            }
        }
        let mut links = slot.lock();
        links.hung_up = links.hung_up.max(Some(number));
        slot.changed.notify_all();
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot watch a signer connection");
    }
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
                let (Ok(socket), Ok(watched)) = (stream.try_clone(), stream.try_clone()) else { continue };
                match SecretConnection::new(stream, identity.clone(), Version::V0_34) {
                    Ok(conn) => {
                        let mut links = filling.lock();
                        links.accepted += 1;
                        links.accepted_at = Some(MonoTime::now());
                        let number = links.accepted;
                        links.current = Some(Current { number, client: WholeChunks::new(conn), socket });
                        filling.changed.notify_all();
                        drop(links);
                        watch_hangup(Arc::clone(&filling), number, watched);
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
        self.wait_for(timeout, |link| link.connected).connected
    }

    /// The signer connections now.
    pub fn link(&self) -> SignerLink {
        self.slot.lock().view()
    }

    /// Waits up to `timeout` until `done` holds for the signer connections; their state then
    /// (or at the timeout).
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&SignerLink) -> bool) -> SignerLink {
        let links = self.slot.lock();
        let (links, _) = self
            .slot
            .changed
            .wait_timeout_while(links, timeout, |l| !done(&l.view()))
            .unwrap_or_else(|e| e.into_inner());
        links.view()
    }

    /// Asks the connected signer for a precommit on `block` at `height`, round 0; the signature,
    /// or `None` (no signer, an error answer, a broken connection — which is then dropped).
    pub fn precommit(&self, chain_id: &str, height: u64, block: [u8; 32], now_unix_ns: i64) -> Option<Vec<u8>> {
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
        let mut current = {
            let mut links = self.slot.lock();
            let current = links.current.take()?;
            links.lent = Some(current.number);
            current
        };
        let answer = exchange(&mut current.client, &request);
        let mut links = self.slot.lock();
        links.lent = None;
        // Put back unless it broke, or a newer connection came meanwhile (dropping it closes it).
        if answer.is_ok() && links.current.is_none() {
            links.current = Some(current);
        }
        self.slot.changed.notify_all();
        drop(links);
        match answer {
            Ok(Message { sum: Some(Sum::SignedVoteResponse(r)) }) => match (r.vote, r.error) {
                (Some(v), None) if v.signature.len() == 64 => Some(v.signature),
                _ => None,
            },
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "privval connection to the signer lost");
                None
            }
        }
    }
}
