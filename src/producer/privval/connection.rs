//! The signer's side of a node connection: dial the node's `priv_validator_laddr`
//! (`tcp://<node id>@host:port` or `tcp://host:port` with SecretConnection, or `unix:///path` in
//! the clear, as CometBFT has it), then answer request after request until the node hangs up, a
//! frame is bad, the member closes the connection (on demotion), or a request arrives while the
//! member may not sign (closed unanswered, so that the node asks its next signer). When to dial
//! is [`super::dialer`]'s.
//!
//! A node id in the address is checked against the key the node proves in the handshake, and a
//! node with another id is refused before any request is read: nothing is signed for it. An
//! address without one is dialled with a warning per connection that the node is not
//! authenticated. A unix socket has no id; its file permissions are what protect it.
//!
//! Blocking on purpose: SecretConnection is a blocking stream, and a signer thread that does
//! not depend on the async runtime keeps answering "not active" even when the runtime stalls.
//! Every read and write has a timeout; a bad frame closes the connection and is reported, never
//! a panic.
//!
//! **Silence is normal.** A CometBFT node asks its signer nothing between heights except a ping,
//! every two thirds of its 5 s read/write timeout (about 3.3 s). So the wait for the next
//! request is allowed [`NODE_SILENCE_LIMIT`], far above that, while the handshake and every
//! answer keep the short dial timeout. A silence beyond the limit (a node that died without
//! closing, a half-open TCP connection) ends the connection as [`ConnectionError::Idle`], logged
//! as information, and the signer dials again; it is never reported as a bad frame.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tendermint::node::Id as NodeId;
use tendermint_p2p::secret_connection::{SecretConnection, Version};

use super::frame::{self, FrameError};
use super::signer::{PrivvalSigner, SignGate};

/// Where the node listens for its remote signer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAddress {
    /// `tcp://[ID@]host:port`, over SecretConnection. With an ID, the key the node presents in
    /// the handshake must have that node id, or the connection is closed before any request is
    /// read. Without one, any process listening there is answered (and a warning says so).
    Tcp { node_id: Option<NodeId>, host_port: String },
    /// `unix:///path`, in the clear: the socket file's permissions decide who may listen there,
    /// so there is no node id to check.
    Unix(PathBuf),
}

/// The hexadecimal digits of a CometBFT node id: 20 bytes, the start of SHA-256 of the node's
/// ed25519 key.
const NODE_ID_HEX_LEN: usize = 40;

/// Reads the `ID` of `tcp://ID@host:port`. Upper-case digits are accepted (CometBFT decodes the
/// id with Go's hex decoder, which takes either case) and the id is kept, shown and compared
/// as its 20 bytes, so it always reads back in lower case.
fn parse_node_id(id: &str, address: &str) -> Result<NodeId, String> {
    let how = "a node id is 40 hexadecimal characters, the id of the key the node's privval listener \
               presents (stock CometBFT makes that key anew at every start, so pin an id only for a node whose \
               listener key is stable)";
    if id.is_empty() {
        return Err(format!("\"{address}\" has an empty node id before '@': {how}, or leave out the '@'"));
    }
    if let Some(bad) = id.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("the node id \"{id}\" in \"{address}\" has '{bad}', not a hexadecimal digit: {how}"));
    }
    if id.len() != NODE_ID_HEX_LEN {
        return Err(format!(
            "the node id \"{id}\" in \"{address}\" has {} characters, not {NODE_ID_HEX_LEN}: {how}",
            id.len()
        ));
    }
    id.to_ascii_lowercase()
        .parse()
        .map_err(|e| format!("the node id \"{id}\" in \"{address}\" is not a node id ({e}): {how}"))
}

impl FromStr for NodeAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeAddress, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (node_id, host_port) = match rest.split_once('@') {
                Some((id, host_port)) => (Some(parse_node_id(id, s)?), host_port),
                None => (None, rest),
            };
            match host_port.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(NodeAddress::Tcp { node_id, host_port: host_port.to_string() })
                }
                _ => Err(format!("expected tcp://host:port or tcp://<node id>@host:port, found \"{s}\"")),
            }
        } else if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                Ok(NodeAddress::Unix(PathBuf::from(path)))
            } else {
                Err(format!("expected unix:///absolute/path, found \"{s}\""))
            }
        } else {
            Err(format!(
                "expected tcp://<node id>@host:port, tcp://host:port or unix:///path (the node's priv_validator_laddr), found \"{s}\""
            ))
        }
    }
}

impl NodeAddress {
    /// Where the node listens, without the node id: two addresses with one endpoint are one
    /// node, whether or not either pins its id.
    pub fn endpoint(&self) -> String {
        match self {
            NodeAddress::Tcp { host_port, .. } => format!("tcp://{}", host_port.to_ascii_lowercase()),
            NodeAddress::Unix(path) => format!("unix://{}", path.display()),
        }
    }
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeAddress::Tcp { node_id: Some(id), host_port } => write!(f, "tcp://{id}@{host_port}"),
            NodeAddress::Tcp { node_id: None, host_port } => write!(f, "tcp://{host_port}"),
            NodeAddress::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// How long the signer waits for the node's next request before it takes the connection for
/// dead: three times the node's own read/write timeout (5 s in CometBFT), so a node that pings at
/// two thirds of it is never cut off, even with a ping or two late on a busy host.
pub const NODE_SILENCE_LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot reach the node at {address}: {detail}")]
    Dial { address: String, detail: String },
    #[error("SecretConnection handshake with {address} failed: {detail}")]
    Handshake { address: String, detail: String },
    #[error("the node at {address} sent a bad frame: {source}")]
    Frame { address: String, source: FrameError },
    #[error("the node at {address} sent a message a signer does not answer; connection closed")]
    Unexpected { address: String },
    #[error(
        "the node at {address} sent nothing for {} s (a CometBFT node pings its signer about every 3.3 s): closing the connection and dialling again",
        silent_for.as_secs()
    )]
    Idle { address: String, silent_for: Duration },
    #[error(
        "the node at {address} stopped part-way through a message ({received} bytes received) and sent nothing more for {} s: connection closed; check the network between the member and the node",
        silent_for.as_secs()
    )]
    Stalled { address: String, received: usize, silent_for: Duration },
    #[error(
        "the node at {address} presented node id {presented}, but priv_validator_laddr expects {expected}: connection closed, nothing signed. Stock CometBFT presents a new privval listener key at every start (not its p2p node id), so a pinned id stops matching when the node restarts: write producer.priv_validator_laddr as tcp://{host_port} on a private network, or use unix:// beside the node; otherwise check which node is listening at {host_port}"
    )]
    WrongNode { address: String, host_port: String, expected: NodeId, presented: NodeId },
}

/// Something that can close the connection from another thread.
#[derive(Clone)]
pub struct Closer(std::sync::Arc<dyn Fn() + Send + Sync>);

impl Closer {
    pub fn close(&self) {
        (self.0)()
    }
}

/// An open connection to the node. Dropping it shuts the socket down, so the node sees the
/// connection end even while a [`Closer`] still holds a handle to it.
pub struct NodeConnection {
    address: NodeAddress,
    stream: Box<dyn ReadWrite>,
    closer: Closer,
    /// The read timeout while waiting for a request.
    silence: Duration,
}

impl Drop for NodeConnection {
    fn drop(&mut self) {
        self.closer.close();
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// SecretConnection's largest chunk of plaintext.
const SECRET_CHUNK: usize = 1024;

/// Reads a SecretConnection one whole chunk at a time. tendermint-p2p 0.41's `read` panics when
/// asked for less than the chunk it decrypts (it cannot keep the rest), and the frame reader
/// reads the length prefix byte by byte: this buffer sits between them.
pub(crate) struct WholeChunks<S> {
    inner: S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S> WholeChunks<S> {
    pub(crate) fn new(inner: S) -> WholeChunks<S> {
        WholeChunks { inner, buf: Vec::new(), pos: 0 }
    }
}

impl<S: Read> Read for WholeChunks<S> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let mut chunk = [0u8; SECRET_CHUNK];
            let n = self.inner.read(&mut chunk)?;
            self.buf.clear();
            self.buf.extend_from_slice(&chunk[..n]);
            self.pos = 0;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<S: Write> Write for WholeChunks<S> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.inner.write(data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl NodeConnection {
    /// Dials `address` with `timeout` for the connection, the handshake and every write, and
    /// [`NODE_SILENCE_LIMIT`] (or `timeout`, if longer) for reads;
    /// over TCP, completes the SecretConnection handshake with `identity` and, when the address
    /// names a node id, refuses a node whose key has another one.
    pub fn dial(
        address: &NodeAddress,
        identity: &ed25519_consensus::SigningKey,
        timeout: Duration,
    ) -> Result<(NodeConnection, Closer), ConnectionError> {
        match address {
            NodeAddress::Tcp { node_id, host_port } => {
                Self::dial_tcp(address, node_id.as_ref(), host_port, identity, timeout)
            }
            NodeAddress::Unix(path) => Self::dial_unix(address, path, timeout),
        }
    }

    fn dial_tcp(
        address: &NodeAddress,
        expected: Option<&NodeId>,
        host_port: &str,
        identity: &ed25519_consensus::SigningKey,
        timeout: Duration,
    ) -> Result<(NodeConnection, Closer), ConnectionError> {
        let dial_error = |detail: String| ConnectionError::Dial { address: address.to_string(), detail };
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| dial_error(e.to_string()))?
            .next()
            .ok_or_else(|| dial_error("the name has no address".into()))?;
        let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| dial_error(e.to_string()))?;
        tcp.set_read_timeout(Some(timeout)).map_err(|e| dial_error(e.to_string()))?;
        tcp.set_write_timeout(Some(timeout)).map_err(|e| dial_error(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let handle = tcp.try_clone().map_err(|e| dial_error(e.to_string()))?;
        let secret = SecretConnection::new(tcp, identity.clone(), Version::V0_34)
            .map_err(|e| ConnectionError::Handshake { address: address.to_string(), detail: e.to_string() })?;
        // The handshake proved the node holds the key it presented; its id is that key's.
        let presented = secret.remote_pubkey().peer_id();
        match expected {
            Some(expected) if *expected != presented => {
                let _ = handle.shutdown(Shutdown::Both);
                return Err(ConnectionError::WrongNode {
                    address: address.to_string(),
                    host_port: host_port.to_string(),
                    expected: *expected,
                    presented,
                });
            }
            Some(_) => {}
            // The normal case with stock CometBFT, whose privval listener key is new at every
            // start: nothing stable to pin. Said once per connection, at INFO.
            None => tracing::info!(
                node = %address,
                presented = %presented,
                "connected to the node at {host_port}; it is not authenticated (priv_validator_laddr pins no \
                 node id, and stock CometBFT's privval key changes at every start), so whatever listens there \
                 gets answers signed with the validator key: keep {host_port} on a private network, or use \
                 unix:// beside the node"
            ),
        }
        // The handshake is done: from now on a read waits for the node's next request.
        let silence = NODE_SILENCE_LIMIT.max(timeout);
        handle.set_read_timeout(Some(silence)).map_err(|e| dial_error(e.to_string()))?;
        let closer = Closer(std::sync::Arc::new(move || {
            let _ = handle.shutdown(Shutdown::Both);
        }));
        let stream = WholeChunks::new(secret);
        Ok((
            NodeConnection { address: address.clone(), stream: Box::new(stream), closer: closer.clone(), silence },
            closer,
        ))
    }

    fn dial_unix(
        address: &NodeAddress,
        path: &std::path::Path,
        timeout: Duration,
    ) -> Result<(NodeConnection, Closer), ConnectionError> {
        let dial_error = |detail: String| ConnectionError::Dial { address: address.to_string(), detail };
        let unix = UnixStream::connect(path).map_err(|e| dial_error(e.to_string()))?;
        let silence = NODE_SILENCE_LIMIT.max(timeout);
        unix.set_read_timeout(Some(silence)).map_err(|e| dial_error(e.to_string()))?;
        unix.set_write_timeout(Some(timeout)).map_err(|e| dial_error(e.to_string()))?;
        let handle = unix.try_clone().map_err(|e| dial_error(e.to_string()))?;
        let closer = Closer(std::sync::Arc::new(move || {
            let _ = handle.shutdown(Shutdown::Both);
        }));
        Ok((
            NodeConnection { address: address.clone(), stream: Box::new(unix), closer: closer.clone(), silence },
            closer,
        ))
    }

    /// Answers requests until the node hangs up (`Ok`), the connection is closed, or it fails.
    ///
    /// A request that arrives while `signer` may not sign is not answered: the connection is
    /// closed instead (`Ok`). A CometBFT node retries a request that failed on its connection
    /// with the next signer that connects — the active member — whereas an answer "not active"
    /// would be final for that vote, and a standby that kept answering would keep the node's one
    /// signer connection.
    pub fn serve<G: SignGate>(mut self, signer: &PrivvalSigner<G>) -> Result<(), ConnectionError> {
        let address = self.address.to_string();
        loop {
            let request = match frame::read_message(&mut self.stream) {
                Ok(r) => r,
                Err(FrameError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::NotConnected
                            | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Ok(());
                }
                Err(FrameError::Idle) => return Err(ConnectionError::Idle { address, silent_for: self.silence }),
                Err(FrameError::Stalled { received }) => {
                    return Err(ConnectionError::Stalled { address, received, silent_for: self.silence });
                }
                Err(source) => return Err(ConnectionError::Frame { address, source }),
            };
            if !signer.gate().may_sign() {
                return Ok(());
            }
            signer.answering();
            let written = signer.answer(request).map(|answer| frame::write_message(&mut self.stream, &answer));
            signer.answered();
            let Some(written) = written else {
                return Err(ConnectionError::Unexpected { address });
            };
            if let Err(source) = written {
                return match source {
                    FrameError::Io(_) => Ok(()),
                    source => Err(ConnectionError::Frame { address, source }),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "c0ffee0000000000000000000000000000c0ffee";

    fn tcp(node_id: Option<&str>, host_port: &str) -> NodeAddress {
        NodeAddress::Tcp { node_id: node_id.map(|id| id.parse().expect("a node id")), host_port: host_port.into() }
    }

    #[test]
    fn node_addresses_parse_as_cometbft_writes_them() {
        assert_eq!("tcp://127.0.0.1:26659".parse(), Ok(tcp(None, "127.0.0.1:26659")));
        assert_eq!(
            format!("tcp://{ID}@validator.internal:26659").parse(),
            Ok(tcp(Some(ID), "validator.internal:26659"))
        );
        assert_eq!("unix:///run/cometbft/pv.sock".parse(), Ok(NodeAddress::Unix("/run/cometbft/pv.sock".into())));
        for bad in ["127.0.0.1:26659", "tcp://:1", "tcp://host:port", "unix://relative", "http://x:1"] {
            assert!(bad.parse::<NodeAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_prints_back_as_it_parses() {
        for text in [format!("tcp://{ID}@10.0.0.5:26659"), "tcp://[::1]:26659".into(), "unix:///run/pv.sock".into()] {
            let address: NodeAddress = text.parse().expect("parses");
            assert_eq!(address.to_string(), text);
        }
    }

    #[test]
    fn a_unix_socket_is_dialled_without_a_node_id_warning() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pv.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("listen");
        let address: NodeAddress = format!("unix://{}", path.display()).parse().expect("address");
        let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = std::sync::Arc::clone(&logged);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || SharedLog(std::sync::Arc::clone(&sink)))
            .with_ansi(false)
            .finish();
        let identity = ed25519_consensus::SigningKey::from([7u8; 32]);
        let dialled = tracing::subscriber::with_default(subscriber, || {
            NodeConnection::dial(&address, &identity, Duration::from_secs(1))
        });
        assert!(dialled.is_ok(), "the socket accepts the connection");
        let text = String::from_utf8_lossy(&logged.lock().expect("log")).into_owned();
        assert!(text.is_empty(), "nothing is logged for a unix socket: {text}");
    }

    struct SharedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedLog {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_upper_case_node_id_is_accepted_and_kept_in_lower_case() {
        let address: NodeAddress = format!("tcp://{}@host:1", ID.to_uppercase()).parse().expect("upper case");
        assert_eq!(address, tcp(Some(ID), "host:1"));
        assert_eq!(address.to_string(), format!("tcp://{ID}@host:1"));
        let mixed: NodeAddress = "tcp://C0FFEE0000000000000000000000000000c0ffee@host:1".parse().expect("mixed");
        assert_eq!(mixed, address);
    }

    #[test]
    fn a_node_id_that_is_not_40_hex_characters_is_refused_saying_what_it_must_be() {
        let cases = [
            ("f00dcafe", "has 8 characters, not 40"),
            (&format!("{ID}00")[..], "has 42 characters, not 40"),
            ("c0ffee000000000000000000000000000000c0fg", "has 'g', not a hexadecimal digit"),
            ("", "empty node id"),
            ("c0ffee00000000000000000000000000000c0ff\u{e9}", "not a hexadecimal digit"),
        ];
        for (id, why) in cases {
            let text = format!("tcp://{id}@host:26659");
            let refusal = text.parse::<NodeAddress>().expect_err("refused");
            assert!(refusal.contains(why), "{text}: {refusal}");
            if !id.is_empty() {
                assert!(refusal.contains("privval listener"), "{refusal}");
            }
        }
    }
}
