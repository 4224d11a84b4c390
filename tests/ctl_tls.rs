//! failoverctl over the TCP control API (api.listen) with mutual TLS, against three running
//! members whose peers also use TLS: an operator certificate from the cluster's CA works and
//! its operator is named in the log of every mutating call; a member's certificate, a
//! certificate from another CA, or none, is refused and changes nothing.

mod common;

use std::process::Output;
use std::time::Duration;

use common::lab::{Lab, Store, free_port};
use common::pki::write_cluster;
use failover::config::TlsConfig;

fn ctl(address: &str, id: &TlsConfig, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .args(["--address", address])
        .arg("--tls-ca")
        .arg(&id.ca_file)
        .arg("--tls-cert")
        .arg(&id.cert_file)
        .arg("--tls-key")
        .arg(&id.key_file)
        .args(args)
        .output()
        .expect("failoverctl runs")
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn paused(address: &str, alice: &TlsConfig) -> bool {
    let o = ctl(address, alice, &["--json", "status"]);
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    s["self"]["lease"]["paused"].as_bool().expect("paused is a bool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_control_api_serves_operators_only() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let tweak =
        |i: usize, text: String| text.replacen("[api]\n", &format!("[api]\nlisten = \"127.0.0.1:{}\"\n", ports[i]), 1);
    let lab = Lab::start_each(Store::Raft, &tweak, &[]).await;
    let active = lab.wait_active(Duration::from_secs(20)).await;
    let address = format!("127.0.0.1:{}", ports[2]);
    let alice = lab.pki.operators["ops"].clone();

    // An operator certificate from the cluster's CA: status works, and a mutating call is logged
    // with the operator it names.
    let o = ctl(&address, &alice, &["--json", "status"]);
    assert!(o.status.success(), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(status["self"]["member"], "c");
    assert_eq!(status["self"]["lease"]["holder"], ["a", "b"][active]);
    for call in ["pause", "resume"] {
        let o = ctl(&address, &alice, &[call]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let log = lab.log(2);
    assert!(
        log.lines().any(|l| l.contains("pause requested") && l.contains("operator ops")),
        "the pause was not logged with the operator's name:\n{log}"
    );

    // A member's certificate is refused by failoverctl itself, before it connects.
    let o = ctl(&address, &lab.pki.member("b"), &["pause"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("names member b") && text(&o).contains("failoverd tls operator"), "{}", text(&o));
    // And by the member, for a client that presents one anyway.
    let refused = member_certificate_on_the_control_api(&address, &lab.pki.member("b")).await;
    assert!(
        refused.contains("PermissionDenied") || refused.contains("only operator certificates"),
        "a member's certificate was not refused: {refused}"
    );
    assert!(!paused(&address, &alice), "the member's certificate changed something");

    // A certificate from another CA is refused: exit 3, nothing done.
    let rogue_dir = tempfile::tempdir().expect("dir");
    let rogue = write_cluster(rogue_dir.path(), &[], &["mallory"]);
    let mallory = TlsConfig { ca_file: lab.pki.ca_file.clone(), ..rogue.operators["mallory"].clone() };
    let o = ctl(&address, &mallory, &["pause"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!lab.log(2).contains("operator mallory"), "a refused client reached the service");

    // No client certificate at all: nothing gets through.
    let anonymous = failover::sim::rogue_peer::RoguePeer::connect(&address, None, true).await;
    let answer = anonymous
        .publish(failover::sim::rogue_peer::spoofed_status(&failover::domain::MemberId::new("a").expect("id")))
        .await;
    assert!(!answer.is_accepted(), "{answer:?}");
    assert!(!paused(&address, &alice), "the client without a certificate changed something");
}

/// Calls `Pause` on the control API at `address` presenting `member`'s certificate, as a
/// client that skips failoverctl's own check would; returns what came back.
async fn member_certificate_on_the_control_api(address: &str, member: &TlsConfig) -> String {
    let material = failover::tls::TlsMaterial::load(member).expect("member files");
    let config = failover::tls::client_config(&material, None).expect("client config");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("uri")
        .timeout(Duration::from_secs(5))
        .connect_with_connector(failover::tls::TlsConnector::new(config))
        .await;
    let mut client = match channel {
        Ok(c) => failover::proto::v1::control_client::ControlClient::new(c),
        Err(e) => return format!("connect: {e}"),
    };
    match client.pause(failover::proto::v1::PauseRequest {}).await {
        Ok(_) => "accepted".to_string(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}
