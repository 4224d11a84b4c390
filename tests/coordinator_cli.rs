//! `failoverd coordinator`: real member processes form a quorum with a member in this test.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::raft_cluster::{NAMES, member_config, within};
use failover::coord::Coordinator;
use failover::coord::raft::{RaftCoordinator, RaftOptions};
use tokio::net::TcpListener;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_processes_form_a_quorum_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let own = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    // The member processes bind theirs: ports outside the ephemeral range, so no outgoing
    // connection can take them first.
    let ports: Vec<u16> =
        vec![own.local_addr().expect("addr").port(), common::lab::free_port(), common::lab::free_port()];
    let (_pki_dir, pki) = common::raft_cluster::cluster_pki();
    let mut children = Vec::new();
    for (i, name) in NAMES.iter().enumerate().take(3).skip(1) {
        let config = member_config(i, &ports, &dir.path().join(format!("data{i}")), &pki.member(name));
        let path = common::write(dir.path(), &format!("m{i}.toml"), &config.to_toml());
        let child = common::failoverd()
            .args(["coordinator", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failoverd coordinator starts");
        children.push(Killed(child));
    }
    let me = RaftCoordinator::start(
        &member_config(0, &ports, &dir.path().join("data0"), &pki.member("a")),
        own,
        RaftOptions::default(),
    )
    .await
    .expect("in-test member starts");
    let deadline = within(Duration::from_secs(20));
    let lease = loop {
        match me.acquire(&common::raft_cluster::id("a"), within(Duration::from_millis(500))).await {
            Ok(l) => break l,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no quorum with the member processes: {e}"),
        }
    };
    me.release(&lease, None, within(Duration::from_secs(5))).await.expect("release");

    for Killed(child) in &mut children {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    }
    for mut k in children {
        let status = k.0.wait().expect("wait");
        assert!(status.success(), "member process exit: {status:?}");
    }
}

#[test]
fn coordinator_with_a_bad_config_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = common::write(dir.path(), "bad.toml", "member = \"a\"\n");
    let out = common::run_failoverd(&["coordinator", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing field `members`"));
}
