//! Real Consul agents for the tests: Debian bullseye's consul 1.8.7, which ./scripts/test unpacks
//! under target/consul (or `$FAILOVERD_CONSUL`). `dev` starts a single in-memory dev agent;
//! `cluster` three servers on loopback ports. Every agent lives in a temp dir and is killed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::lab::free_port;

pub fn consul_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAILOVERD_CONSUL") {
        return PathBuf::from(path);
    }
    let unpacked = super::repo().join("target/consul/usr/bin/consul");
    if unpacked.is_file() {
        return unpacked;
    }
    panic!(
        "consul is not installed: run ./scripts/test (it unpacks Debian bullseye's consul into {}) or set FAILOVERD_CONSUL",
        unpacked.display()
    )
}

pub struct ConsulAgent {
    child: Option<Child>,
    pub http: u16,
    /// Consul's server RPC port: the leader is named by it.
    pub server_port: u16,
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl ConsulAgent {
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// kill -9 of the agent.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(name: &str, server_port: u16, args: &[String]) -> ConsulAgent {
    let dir = tempfile::tempdir().expect("dir");
    let http = free_port();
    let log = std::fs::File::create(dir.path().join("consul.log")).expect("log");
    let mut cmd = Command::new(consul_binary());
    cmd.arg("agent")
        .args(args)
        .args(["-node", name, "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn"])
        .args(["-http-port", &http.to_string(), "-dns-port", "-1", "-grpc-port", "-1"])
        .args(["-server-port", &server_port.to_string()])
        .arg("-data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let child = cmd.spawn().expect("consul starts");
    ConsulAgent { child: Some(child), http, server_port, name: name.to_string(), dir }
}

/// The leader the agent at `http` knows, if any.
pub async fn leader(http: u16) -> Option<String> {
    let client = failover::http::client(Duration::from_millis(500)).ok()?;
    let url = format!("http://127.0.0.1:{http}/v1/status/leader");
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    let leader: String = serde_json::from_str(&text).ok()?;
    (!leader.is_empty()).then_some(leader)
}

async fn wait_leader(agent: &ConsulAgent) {
    let end = Instant::now() + Duration::from_secs(30);
    while leader(agent.http).await.is_none() {
        if Instant::now() > end {
            let log = std::fs::read_to_string(agent.dir.path().join("consul.log")).unwrap_or_default();
            panic!("consul agent {} elected no leader within 30 s:\n{log}", agent.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One dev agent (a server with in-memory state), with a leader.
pub async fn dev() -> ConsulAgent {
    dev_with(&[]).await
}

/// [`dev`] with extra agent arguments (an `-hcl` snippet, say).
pub async fn dev_with(extra: &[String]) -> ConsulAgent {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut args = extra.to_vec();
    args.extend([
        "-dev".into(),
        "-serf-lan-port".into(),
        ports[1].to_string(),
        "-serf-wan-port".into(),
        ports[2].to_string(),
    ]);
    let agent = spawn("failoverd-dev", ports[0], &args);
    wait_leader(&agent).await;
    agent
}

/// Three servers on loopback that form one cluster, with a leader.
pub async fn cluster() -> Vec<ConsulAgent> {
    let ports: Vec<[u16; 3]> = (0..3).map(|_| [free_port(), free_port(), free_port()]).collect();
    let join: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{}", p[1])).collect();
    let mut agents = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let mut args = vec![
            "-server".to_string(),
            "-bootstrap-expect=3".into(),
            // Consul's advice for production servers: elections in about a second, not five.
            "-hcl".into(),
            "performance { raft_multiplier = 1 }".into(),
            "-serf-lan-port".into(),
            p[1].to_string(),
            "-serf-wan-port".into(),
            p[2].to_string(),
        ];
        for j in &join {
            args.push(format!("-retry-join={j}"));
        }
        agents.push(spawn(&format!("server{i}"), p[0], &args));
    }
    for a in &agents {
        wait_leader(a).await;
    }
    futures::future::join_all(agents.iter().map(wait_settled)).await;
    agents
}

/// How long Consul may stagger an agent's full sync after a server joins or a leader is elected
/// (a random delay of up to 3 s below 128 nodes), plus room.
const SYNC_STAGGER: Duration = Duration::from_millis(3500);

/// Waits until `agent` writes each change of a local check to the catalog at once, and has done
/// so for longer than Consul's full-sync stagger. A freshly formed cluster's agents schedule a
/// full sync at a random point in the 3 s after each "new leader" event and hold back partial
/// syncs while they wait: a check that goes critical in that window reaches the servers, and
/// ends the sessions bound to it, only with the full sync (measured: 1.3 s late). Tests that time
/// a handover start once every agent served partial syncs promptly for a whole stagger.
pub async fn wait_settled(agent: &ConsulAgent) {
    let client = failover::http::client(Duration::from_secs(2)).expect("client");
    let base = agent.address();
    let put = |path: String, body: Option<&'static str>| {
        let request = client.put(format!("{base}{path}"));
        let request = match body {
            Some(b) => request.body(b),
            None => request,
        };
        async move { request.send().await.and_then(|r| r.error_for_status()).expect("consul agent answers") }
    };
    put(
        "/v1/agent/check/register".into(),
        Some(r#"{"ID":"settle-probe","Name":"settle probe","TTL":"60s","Status":"passing"}"#),
    )
    .await;
    let end = Instant::now() + Duration::from_secs(30);
    let mut prompt_since: Option<Instant> = None;
    let mut want = "warning";
    while prompt_since.is_none_or(|t| t.elapsed() < SYNC_STAGGER) {
        assert!(Instant::now() < end, "consul agent {} kept holding back check updates for 30 s", agent.name);
        let verb = if want == "warning" { "warn" } else { "pass" };
        put(format!("/v1/agent/check/{verb}/settle-probe"), None).await;
        let flipped = Instant::now();
        loop {
            let url = format!("{base}/v1/health/node/{}", agent.name);
            let checks: serde_json::Value = match client.get(url).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            let seen =
                checks.as_array().into_iter().flatten().any(|c| c["CheckID"] == "settle-probe" && c["Status"] == want);
            if seen {
                break;
            }
            assert!(Instant::now() < end, "consul agent {} never synced its probe check", agent.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if flipped.elapsed() > Duration::from_millis(300) {
            prompt_since = None;
        } else if prompt_since.is_none() {
            prompt_since = Some(flipped);
        }
        want = if want == "warning" { "passing" } else { "warning" };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put("/v1/agent/check/deregister/settle-probe".into(), None).await;
}

/// The index in `agents` of the current leader, by its serf/server address.
pub async fn leader_index(agents: &[ConsulAgent]) -> Option<usize> {
    for a in agents.iter().filter(|a| a.is_running()) {
        if let Some(addr) = leader(a.http).await {
            let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
            return agents.iter().position(|b| b.server_port == port);
        }
    }
    None
}
