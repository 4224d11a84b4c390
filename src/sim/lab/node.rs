//! A lab's simulated nodes from outside: the arguments of a `failoverd sim-node` process (a
//! sentry, a reference node, or in signer mode the node that asks the remote signer), starting
//! one and learning its address, and a small blocking client for `/sim/state` and
//! `/sim/control`.
//!
//! It never decides who may sign: it asks a node what it saw and tells it to stall or run.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::LabError;
use crate::sim::node::StateReport;

/// Largest answer read from a simulated node.
const ANSWER_LIMIT: u64 = 256 * 1024;

/// One `failoverd sim-node` process.
#[derive(Clone, Debug)]
pub struct SimNode {
    pub member: String,
    /// `host:port` to listen on; port 0 to have it pick one and announce it.
    pub listen: String,
    pub ledger: PathBuf,
    /// Signer mode: where it records its permission changes.
    pub activations: Option<PathBuf>,
    /// Signer mode: where it listens for its member's remote signer.
    pub privval_listen: Option<String>,
    pub block: Duration,
}

impl SimNode {
    /// Its arguments after the `failoverd` binary.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "sim-node".into(),
            "--listen".into(),
            self.listen.clone(),
            "--member".into(),
            self.member.clone(),
            "--block-interval".into(),
            format!("{}ms", self.block.as_millis()),
            "--ledger".into(),
            self.ledger.display().to_string(),
        ];
        if let Some(log) = &self.activations {
            args.extend(["--activations".into(), log.display().to_string()]);
        }
        if let Some(listen) = &self.privval_listen {
            args.extend(["--privval-listen".into(), listen.clone()]);
        }
        args
    }

    /// Where it writes its errors: `sim-<member>.log` beside its ledger.
    pub fn log(&self) -> PathBuf {
        self.ledger.with_file_name(format!("sim-{}.log", self.member))
    }

    /// Starts it with `program` (the `failoverd` binary) and returns the process and its
    /// `http://` address, read from the line it prints once it listens.
    pub fn spawn_announced(&self, mut program: Command) -> Result<(Child, String), LabError> {
        let log = std::fs::File::create(self.log()).map_or_else(|_| Stdio::null(), Stdio::from);
        let mut child =
            program.args(self.args()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).spawn().map_err(
                |source| LabError::Spawn { what: "the simulated node", member: self.member.clone(), source },
            )?;
        let announced = child.stdout.take().map(|out| {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).map(|_| line)
        });
        let addr = match announced {
            Some(Ok(line)) => line.trim().strip_prefix("listening ").map(str::to_string),
            _ => None,
        };
        match addr {
            Some(addr) => Ok((child, format!("http://{addr}"))),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let said = std::fs::read_to_string(self.log()).unwrap_or_default();
                Err(LabError::NodeAddress { member: self.member.clone(), reason: said.trim().to_string() })
            }
        }
    }
}

/// `method path` with `body` to the node at `addr` (`host:port`) over `stream`; the answer's
/// body, or `None` when it did not answer in time.
pub fn request(stream: TcpStream, addr: &str, method: &str, path: &str, body: &str) -> Option<String> {
    crate::http::blocking_exchange(stream, addr, (method, path, body), Duration::from_millis(500), ANSWER_LIMIT)
}

/// The `host:port` of an `http://host:port` node address.
fn host_port(rpc: &str) -> &str {
    rpc.strip_prefix("http://").unwrap_or(rpc)
}

fn loopback_request(rpc: &str, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = host_port(rpc);
    let stream = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(300)).ok()?;
    request(stream, addr, method, path, body)
}

/// What the node at `rpc` reports (`/sim/state`), or `None` when it does not answer.
pub fn state(rpc: &str) -> Option<StateReport> {
    serde_json::from_str(&loopback_request(rpc, "GET", "/sim/state", "")?).ok()
}

/// Tells the node at `rpc` to stall, fall behind or catch up (`/sim/control`); whether it
/// answered.
pub fn control(rpc: &str, body: &str) -> bool {
    loopback_request(rpc, "POST", "/sim/control", body).is_some()
}
