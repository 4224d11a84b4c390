//! The signer's side of a node connection: dial the node's `priv_validator_laddr`
//! (`tcp://host:port` with SecretConnection, or `unix:///path` in the clear, as CometBFT has it),
//! then answer request after request until the node hangs up, a frame is bad, or the member
//! closes the connection (on demotion).
//!
//! Blocking on purpose: SecretConnection is a blocking stream, and a signer thread that does
//! not depend on the async runtime keeps answering "not active" even when the runtime stalls.
//! Every read and write has a timeout; a bad frame closes the connection and is reported, never
//! a panic.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::frame::{self, FrameError};
use super::signer::{PrivvalSigner, SignGate};

/// Where the node listens for its remote signer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAddress {
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for NodeAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeAddress, String> {
        if let Some(hostport) = s.strip_prefix("tcp://") {
            // A node id before '@' (tcp://ID@host:port) names the node's SecretConnection key;
            // it is accepted and not checked here.
            let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(NodeAddress::Tcp(hostport.to_string()))
                }
                _ => Err(format!("expected tcp://host:port, found {s:?}")),
            }
        } else if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                Ok(NodeAddress::Unix(PathBuf::from(path)))
            } else {
                Err(format!("expected unix:///absolute/path, found {s:?}"))
            }
        } else {
            Err(format!("expected tcp://host:port or unix:///path (the node's priv_validator_laddr), found {s:?}"))
        }
    }
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeAddress::Tcp(a) => write!(f, "tcp://{a}"),
            NodeAddress::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

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
    /// Dials `address` with `timeout` for the connection and for every later read and write;
    /// over TCP, completes the SecretConnection handshake with `identity`.
    pub fn dial(
        address: &NodeAddress,
        identity: &ed25519_consensus::SigningKey,
        timeout: Duration,
    ) -> Result<(NodeConnection, Closer), ConnectionError> {
        let dial_error = |detail: String| ConnectionError::Dial { address: address.to_string(), detail };
        match address {
            NodeAddress::Tcp(hostport) => {
                let addr = hostport
                    .to_socket_addrs()
                    .map_err(|e| dial_error(e.to_string()))?
                    .next()
                    .ok_or_else(|| dial_error("the name has no address".into()))?;
                let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| dial_error(e.to_string()))?;
                tcp.set_read_timeout(Some(timeout)).map_err(|e| dial_error(e.to_string()))?;
                tcp.set_write_timeout(Some(timeout)).map_err(|e| dial_error(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                let handle = tcp.try_clone().map_err(|e| dial_error(e.to_string()))?;
                let secret = tendermint_p2p::secret_connection::SecretConnection::new(
                    tcp,
                    identity.clone(),
                    tendermint_p2p::secret_connection::Version::V0_34,
                )
                .map_err(|e| ConnectionError::Handshake { address: address.to_string(), detail: e.to_string() })?;
                let closer = Closer(std::sync::Arc::new(move || {
                    let _ = handle.shutdown(Shutdown::Both);
                }));
                let stream = WholeChunks::new(secret);
                Ok((
                    NodeConnection { address: address.clone(), stream: Box::new(stream), closer: closer.clone() },
                    closer,
                ))
            }
            NodeAddress::Unix(path) => {
                let unix = UnixStream::connect(path).map_err(|e| dial_error(e.to_string()))?;
                unix.set_read_timeout(Some(timeout)).map_err(|e| dial_error(e.to_string()))?;
                unix.set_write_timeout(Some(timeout)).map_err(|e| dial_error(e.to_string()))?;
                let handle = unix.try_clone().map_err(|e| dial_error(e.to_string()))?;
                let closer = Closer(std::sync::Arc::new(move || {
                    let _ = handle.shutdown(Shutdown::Both);
                }));
                Ok((
                    NodeConnection { address: address.clone(), stream: Box::new(unix), closer: closer.clone() },
                    closer,
                ))
            }
        }
    }

    /// Answers requests until the node hangs up (`Ok`), the connection is closed, or it fails.
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
                Err(source) => return Err(ConnectionError::Frame { address, source }),
            };
            let Some(answer) = signer.answer(request) else {
                return Err(ConnectionError::Unexpected { address });
            };
            if let Err(source) = frame::write_message(&mut self.stream, &answer) {
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

    #[test]
    fn node_addresses_parse_as_cometbft_writes_them() {
        assert_eq!("tcp://127.0.0.1:26659".parse(), Ok(NodeAddress::Tcp("127.0.0.1:26659".into())));
        assert_eq!(
            "tcp://f00dcafe@validator.internal:26659".parse(),
            Ok(NodeAddress::Tcp("validator.internal:26659".into()))
        );
        assert_eq!("unix:///run/cometbft/pv.sock".parse(), Ok(NodeAddress::Unix("/run/cometbft/pv.sock".into())));
        for bad in ["127.0.0.1:26659", "tcp://:1", "tcp://host:port", "unix://relative", "http://x:1"] {
            assert!(bad.parse::<NodeAddress>().is_err(), "{bad}");
        }
    }
}
