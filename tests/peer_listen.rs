//! `peer_listen`: a member listens on one address while the others dial another (NAT, a
//! Kubernetes hostPort). Here every member's `peer_address` is a forwarding port held by the test,
//! which relays to the member's `peer_listen`; the cluster only forms through the forwarders.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::lab::{Lab, Store, free_port};

/// Relays every connection accepted on `front` to 127.0.0.1:`back`.
async fn forward(front: std::net::TcpListener, back: u16) {
    front.set_nonblocking(true).expect("nonblocking");
    let front = tokio::net::TcpListener::from_std(front).expect("tokio listener");
    loop {
        let Ok((mut inbound, _)) = front.accept().await else { return };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", back)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_behind_forwarded_addresses_listen_on_peer_listen_and_form_a_cluster() {
    // Listening port of each member → the forwarder in front of it, bound before any member
    // starts: a member that bound its peer_address instead of peer_listen would fail to start.
    let fronts: Mutex<HashMap<u16, std::net::TcpListener>> = Mutex::new(HashMap::new());
    let tweak = |i: usize, text: String| {
        let ports: Vec<u16> = text
            .lines()
            .filter_map(|l| l.strip_prefix("peer_address = \"127.0.0.1:")?.strip_suffix('"')?.parse().ok())
            .collect();
        let mut fronts = fronts.lock().expect("lock");
        let mut text = text;
        for port in &ports {
            let front = fronts
                .entry(*port)
                .or_insert_with(|| std::net::TcpListener::bind(("127.0.0.1", free_port())).expect("forwarder port"));
            let front_port = front.local_addr().expect("addr").port();
            text = text.replace(&format!("\"127.0.0.1:{port}\""), &format!("\"127.0.0.1:{front_port}\""));
        }
        text.replacen("data_dir", &format!("peer_listen = \"127.0.0.1:{}\"\ndata_dir", ports[i]), 1)
    };
    let lab = Lab::start_each(Store::Raft, &tweak, &[]).await;
    for (back, front) in fronts.into_inner().expect("lock") {
        tokio::spawn(forward(front, back));
    }
    let active = lab.wait_active(Duration::from_secs(30)).await;
    lab.wait_signed_above(active, 2, Duration::from_secs(10)).await;
    let config = std::fs::read_to_string(&lab.configs[active]).expect("config");
    assert!(config.contains("peer_listen = \"127.0.0.1:"), "{config}");
    assert!(lab.report().is_safe(), "{}", lab.report());
}
