//! failoverctl over the TCP control API (api.listen) with mutual TLS, against three running
//! members whose peers also use TLS: an operator certificate from the cluster's CA works and is
//! named in the log of every mutating call; a certificate from another CA, or none, is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::lab::{Lab, Store, free_port};
use common::pki::Ca;

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A client identity: (ca, cert, key) paths.
fn client(pki: &Pki, issuer: &Ca, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = issuer.issue_client(cn);
    let d = pki.dir.path();
    (d.join("ca.pem"), write(d, &format!("{cn}.pem"), &cert), write(d, &format!("{cn}.key"), &key))
}

fn ctl(address: &str, id: &(PathBuf, PathBuf, PathBuf), args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_failoverctl"))
        .args(["--address", address, "--tls-server-name", "127.0.0.1"])
        .arg("--tls-ca")
        .arg(&id.0)
        .arg("--tls-cert")
        .arg(&id.1)
        .arg("--tls-key")
        .arg(&id.2)
        .args(args)
        .output()
        .expect("failoverctl runs")
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_control_api_needs_a_client_certificate_from_the_clusters_ca() {
    let pki = Pki { dir: tempfile::tempdir().expect("dir"), ca: Ca::new("failoverd test CA") };
    std::fs::write(pki.dir.path().join("ca.pem"), pki.ca.pem()).expect("ca");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let tls_dirs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let dir = pki.dir.path().join(["a", "b", "c"][i]);
            pki.ca.write(["a", "b", "c"][i], &dir);
            dir
        })
        .collect();
    let tweak = |i: usize, text: String| {
        let text = text.replacen("[api]\n", &format!("[api]\nlisten = \"127.0.0.1:{}\"\n", ports[i]), 1);
        let d = &tls_dirs[i];
        format!(
            "{text}[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            d.join("ca.pem").display(),
            d.join("member.pem").display(),
            d.join("member.key").display()
        )
    };
    let lab = Lab::start_each(Store::Raft, &tweak, &[]).await;
    let active = lab.wait_active(Duration::from_secs(20)).await;
    let address = format!("127.0.0.1:{}", ports[2]);

    // An operator certificate from the cluster's CA: status works, and a mutating call is logged
    // with the certificate's subject.
    let alice = client(&pki, &pki.ca, "operator-alice");
    let o = ctl(&address, &alice, &["--json", "status"]);
    assert!(o.status.success(), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(status["self"]["member"], "c");
    assert_eq!(status["self"]["lease"]["holder"], ["a", "b"][active]);
    let o = ctl(&address, &alice, &["pause"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ctl(&address, &alice, &["resume"]);
    assert!(o.status.success(), "{}", text(&o));
    let log = lab.log(2);
    assert!(
        log.lines().any(|l| l.contains("pause requested") && l.contains("CN=operator-alice")),
        "the pause was not logged with the certificate subject:\n{log}"
    );

    // A certificate from another CA is refused: exit 3, nothing done.
    let rogue_ca = Ca::new("someone else's CA");
    let mallory = {
        let (cert, key) = rogue_ca.issue_client("mallory");
        let d = pki.dir.path();
        (d.join("ca.pem"), write(d, "mallory.pem", &cert), write(d, "mallory.key", &key))
    };
    let o = ctl(&address, &mallory, &["pause"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!lab.log(2).contains("CN=mallory"), "a refused client reached the service");

    // No client certificate at all: the handshake fails before any call.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pki.ca.pem()))
        .domain_name("127.0.0.1");
    failover::http::install_crypto_provider();
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut c = failover::proto::v1::control_client::ControlClient::new(channel);
        c.pause(failover::proto::v1::PauseRequest {}).await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    assert!(tokio::time::timeout(Duration::from_secs(5), refused).await.expect("no hang").is_err());
    let s: serde_json::Value =
        serde_json::from_slice(&ctl(&address, &alice, &["--json", "status"]).stdout).expect("JSON");
    assert_eq!(s["self"]["lease"]["paused"], false, "the client without a certificate changed something");
}
