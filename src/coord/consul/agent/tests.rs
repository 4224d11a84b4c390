//! Answer parsing, on answers recorded from a real Consul 1.8.7 agent
//! (tests/fixtures/consul/recorded-*, made by record.sh there) and on hostile variants of them;
//! and the wire, against a one-shot HTTP server on loopback that replays an answer and keeps the
//! request it was sent.

use super::*;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const REQUEST: &str = "GET /v1/kv/record/leader";

fn recorded(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/consul/recorded-{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn recorded_json(name: &str) -> Value {
    serde_json::from_slice(&recorded(&format!("{name}.json"))).expect("a recorded answer is JSON")
}

/// The session id of the recording (every recorded answer that names a session names this one).
fn recorded_session() -> String {
    recorded_json("session-create")["ID"].as_str().expect("recorded ID").to_string()
}

/// The X-Consul-Index header of a recorded answer.
fn recorded_index(name: &str) -> Vec<u8> {
    let headers = String::from_utf8(recorded(&format!("{name}.headers"))).expect("headers are text");
    let line = headers.lines().find_map(|l| l.strip_prefix("X-Consul-Index: ")).expect("X-Consul-Index recorded");
    line.as_bytes().to_vec()
}

/// The field a malformed-answer error names.
fn malformed_field<T: std::fmt::Debug>(result: Result<T, AgentError>) -> String {
    match result {
        Err(AgentError::Malformed { field, .. }) => field,
        other => panic!("expected a malformed-answer error, got {other:?}"),
    }
}

/// The locked leader entry with `field` replaced by `value` (removed when `None`).
fn locked_with(field: &str, value: Option<Value>) -> Vec<u8> {
    let mut answer = recorded_json("kv-get-locked");
    let entry = answer[0].as_object_mut().expect("an entry object");
    match value {
        Some(v) => entry.insert(field.to_string(), v),
        None => entry.remove(field),
    };
    answer.to_string().into_bytes()
}

#[test]
fn a_recorded_locked_key_reads_as_its_value_indexes_and_holding_session() {
    let entries = parse_kv_entries(REQUEST, &recorded("kv-get-locked.json")).expect("parses");
    let index = parse_index(REQUEST, Some(&recorded_index("kv-get-locked"))).expect("index");
    assert_eq!(
        entries,
        vec![KvEntry {
            key: "record/leader".into(),
            value: br#"{"holder":"a"}"#.to_vec(),
            modify_index: index,
            lock_index: 1,
            session: Some(recorded_session()),
        }]
    );
}

#[test]
fn a_recorded_released_key_has_no_session_and_keeps_its_lock_index() {
    let entries = parse_kv_entries(REQUEST, &recorded("kv-get-free.json")).expect("parses");
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].session.as_deref(), entries[0].lock_index), (None, 1));
    assert!(entries[0].modify_index > parse_index(REQUEST, Some(&recorded_index("kv-get-locked"))).expect("index"));
}

#[test]
fn a_recorded_recursive_read_decodes_every_entry_and_a_null_value_is_empty() {
    let entries = parse_kv_entries(REQUEST, &recorded("kv-get-recurse.json")).expect("parses");
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["record/watermarks/empty", "record/watermarks/validator"]);
    assert_eq!(entries[0].value, b"");
    let watermark: Value = serde_json::from_slice(&entries[1].value).expect("the recorded watermark is JSON");
    assert_eq!(watermark["epoch"], 1);
}

#[test]
fn recorded_session_answers_give_the_id_and_whether_it_lives() {
    let id = parse_session_created(REQUEST, &recorded("session-create.json")).expect("parses");
    assert_eq!(id, recorded_session());
    assert_eq!(parse_session_info(REQUEST, &recorded("session-info-alive.json"), &id), Ok(true));
    assert_eq!(parse_session_info(REQUEST, &recorded("session-info-gone.json"), &id), Ok(false));
    assert_eq!(parse_session_info(REQUEST, b"null", &id), Ok(false));
}

#[test]
fn a_session_info_answer_about_another_session_is_refused() {
    let answer = recorded("session-info-alive.json");
    assert_eq!(malformed_field(parse_session_info(REQUEST, &answer, "someone-else")), "[0].ID");
}

#[test]
fn recorded_kv_write_answers_are_their_booleans() {
    for (name, expected) in [
        ("kv-acquire-won", true),
        ("kv-acquire-lost", false),
        ("kv-cas-created", true),
        ("kv-cas-refused", false),
        ("kv-release-done", true),
    ] {
        assert_eq!(parse_bool(REQUEST, &recorded(&format!("{name}.json"))), Ok(expected), "{name}");
    }
}

#[test]
fn recorded_transaction_answers_say_applied_or_rolled_back() {
    let applied = recorded("txn-applied.json");
    assert_eq!(parse_txn(REQUEST, StatusCode::OK, &applied, 2), Ok(true));
    let rolled_back = recorded("txn-rolled-back.json");
    assert_eq!(parse_txn(REQUEST, StatusCode::CONFLICT, &rolled_back, 1), Ok(false));
}

#[test]
fn a_transaction_answer_that_cannot_say_whether_it_applied_is_refused() {
    let applied = recorded("txn-applied.json");
    assert_eq!(malformed_field(parse_txn(REQUEST, StatusCode::OK, &applied, 3)), "Results");
    let rolled_back = recorded("txn-rolled-back.json");
    assert_eq!(malformed_field(parse_txn(REQUEST, StatusCode::OK, &rolled_back, 1)), "Errors");
    assert_eq!(malformed_field(parse_txn(REQUEST, StatusCode::CONFLICT, &applied, 2)), "Errors");
    let results_object = br#"{"Results": {"KV": {}}, "Errors": null}"#;
    assert_eq!(malformed_field(parse_txn(REQUEST, StatusCode::OK, results_object, 1)), "Results");
    assert_eq!(malformed_field(parse_txn(REQUEST, StatusCode::OK, b"[]", 1)), "the body");
}

#[test]
fn every_truncated_recorded_answer_is_refused_as_not_json() {
    for name in ["kv-get-locked", "kv-get-recurse", "session-create", "session-info-alive", "txn-applied"] {
        let whole = recorded(&format!("{name}.json"));
        for cut in [1, whole.len() / 2, whole.len() - 3] {
            let part = &whole[..cut];
            let field = match name {
                "kv-get-locked" | "kv-get-recurse" => malformed_field(parse_kv_entries(REQUEST, part)),
                "session-create" => malformed_field(parse_session_created(REQUEST, part)),
                "session-info-alive" => malformed_field(parse_session_info(REQUEST, part, "x")),
                _ => malformed_field(parse_txn(REQUEST, StatusCode::OK, part, 2)),
            };
            assert_eq!(field, "the body", "{name} cut at {cut}");
        }
    }
    assert_eq!(malformed_field(parse_bool(REQUEST, b"tru")), "the body");
    assert_eq!(malformed_field(parse_bool(REQUEST, b"")), "the body");
}

#[test]
fn kv_entries_of_the_wrong_shape_are_refused_naming_the_field() {
    for (field, value, named) in [
        ("ModifyIndex", Some(json!("15")), "[0].ModifyIndex"),
        ("ModifyIndex", Some(json!(-1)), "[0].ModifyIndex"),
        ("ModifyIndex", Some(json!(1.5)), "[0].ModifyIndex"),
        ("ModifyIndex", None, "[0].ModifyIndex"),
        ("LockIndex", Some(json!(null)), "[0].LockIndex"),
        ("Key", Some(json!(7)), "[0].Key"),
        ("Key", None, "[0].Key"),
        ("Value", Some(json!(5)), "[0].Value"),
        ("Value", Some(json!(["eyJob2xkZXIiOiJhIn0="])), "[0].Value"),
        ("Session", Some(json!({"ID": "x"})), "[0].Session"),
    ] {
        let answer = locked_with(field, value.clone());
        assert_eq!(malformed_field(parse_kv_entries(REQUEST, &answer)), named, "{field} = {value:?}");
    }
    assert_eq!(malformed_field(parse_kv_entries(REQUEST, br#"{"Key": "a"}"#)), "the body");
    assert_eq!(malformed_field(parse_kv_entries(REQUEST, b"[3]")), "[0]");
}

#[test]
fn a_value_that_is_not_standard_base64_is_refused_naming_it() {
    // The recorded value without its padding, in the URL-safe alphabet, and with a stray byte.
    for bad in ["eyJob2xkZXIiOiJhIn0", "eyJob2xkZXIiOiJhIn0_", "eyJob2xkZXIiOiJhIn0=!", "é"] {
        let answer = locked_with("Value", Some(json!(bad)));
        assert_eq!(malformed_field(parse_kv_entries(REQUEST, &answer)), "[0].Value", "{bad}");
    }
}

#[test]
fn session_and_boolean_answers_of_the_wrong_shape_are_refused() {
    assert_eq!(malformed_field(parse_session_created(REQUEST, b"{}")), "ID");
    assert_eq!(malformed_field(parse_session_created(REQUEST, br#"{"ID": 12}"#)), "ID");
    assert_eq!(malformed_field(parse_session_created(REQUEST, br#"{"ID": ""}"#)), "ID");
    assert_eq!(malformed_field(parse_session_created(REQUEST, br#"["ID"]"#)), "the body");
    assert_eq!(malformed_field(parse_session_info(REQUEST, br#"[{"Name": "x"}]"#, "x")), "[0].ID");
    assert_eq!(malformed_field(parse_session_info(REQUEST, br#"{"ID": "x"}"#, "x")), "the body");
    assert_eq!(malformed_field(parse_bool(REQUEST, br#""true""#)), "the body");
    assert_eq!(malformed_field(parse_bool(REQUEST, b"1")), "the body");
}

#[test]
fn the_consul_index_header_must_be_a_whole_number() {
    assert_eq!(parse_index(REQUEST, Some(&recorded_index("kv-get-absent"))), Ok(1));
    for bad in [&b"abc"[..], b"-1", b"1.5", b"", b"18446744073709551616", b"\xff"] {
        assert_eq!(malformed_field(parse_index(REQUEST, Some(bad))), "the X-Consul-Index header");
    }
    assert_eq!(malformed_field(parse_index(REQUEST, None)), "the X-Consul-Index header");
}

#[test]
fn malformed_and_oversized_errors_say_what_was_asked_and_what_is_wrong() {
    let e = parse_kv_entries(REQUEST, &locked_with("LockIndex", Some(json!("1")))).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "the Consul agent's answer to GET /v1/kv/record/leader is malformed: [0].LockIndex is a string, not a whole number from 0 to 2^64-1; is coordinator.consul.address a Consul agent?"
    );
    let e = AgentError::AnswerTooLarge { request: REQUEST.into(), limit: ANSWER_LIMIT, declared: Some(5 << 20) };
    assert!(e.to_string().contains("larger than 4194304 bytes (5242880 bytes declared)"), "{e}");
}

#[test]
fn durations_in_consuls_syntax() {
    assert_eq!(go_duration(Duration::from_secs(2)), "2000ms");
    assert_eq!(go_duration(Duration::ZERO), "1ms");
}

#[test]
fn base64_is_the_standard_alphabet_with_padding() {
    // RFC 4648 §10.
    for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
    }
    assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
}

// --- the wire, against a one-shot server on loopback ------------------------------------------

/// Serves one connection: reads one request (head and body) and writes `answer` whole.
/// Returns the agent pointed at it and the request it received.
async fn one_shot(answer: Vec<u8>, token: Option<&str>) -> (Agent, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !complete(&request) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the client closed before its request was whole");
            request.extend_from_slice(&buf[..n]);
        }
        // The client may give up mid-answer (that is what a size limit does): not a failure here.
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
        String::from_utf8(request).expect("the request is text")
    });
    let config = ConsulConfig { address: format!("http://{address}").parse().expect("url"), ..Default::default() };
    (Agent::new(&config, token.map(str::to_string)).expect("agent"), server)
}

/// Whether `request` holds its head and the body its Content-Length announces.
fn complete(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse::<usize>().expect("a numeric content-length"));
    request.len() >= end + 4 + length
}

/// A recorded answer replayed as the agent sent it: its recorded head, then its body.
fn replayed(name: &str, ext: &str) -> Vec<u8> {
    let head = String::from_utf8(recorded(&format!("{name}.headers"))).expect("headers are text");
    let mut out = head.trim_end().replace('\n', "\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&recorded(&format!("{name}.{ext}")));
    out
}

fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())
        .into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn a_replayed_blocking_read_gives_the_entry_and_the_index_to_wait_on() {
    let (agent, server) = one_shot(replayed("kv-get-blocking", "json"), None).await;
    let (entries, next) = agent.read_blocking("record/leader", 15, Duration::from_secs(5)).await.expect("read");
    assert_eq!(entries.map(|e| e.len()), Some(1));
    assert_eq!(next, 15);
    let request = server.await.expect("server");
    assert!(request.starts_with("GET /v1/kv/record/leader?index=15&wait=5000ms HTTP/1.1\r\n"), "{request}");
}

#[tokio::test]
async fn a_replayed_absent_key_reads_as_none_with_consuls_index() {
    let (agent, _server) = one_shot(replayed("kv-get-absent", "txt"), None).await;
    assert_eq!(agent.read_blocking("record/leader", 0, Duration::from_secs(1)).await, Ok((None, 1)));
}

#[tokio::test]
async fn key_segments_are_percent_encoded_and_the_token_travels_in_its_header() {
    let body = recorded("kv-get-recurse.json");
    let (agent, server) = one_shot(answer("200 OK", "X-Consul-Index: 19\r\n", &body), Some("s3cret")).await;
    agent.read("fail over/a%b?c#d/", true).await.expect("read");
    let request = server.await.expect("server");
    assert!(request.starts_with("GET /v1/kv/fail%20over/a%25b%3Fc%23d/?consistent&recurse HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains("\r\nx-consul-token: s3cret\r\n"), "{request}");
}

#[tokio::test]
async fn an_acquire_puts_the_value_as_json_and_names_the_session_in_the_query() {
    let (agent, server) = one_shot(answer("200 OK", "", &recorded("kv-acquire-lost.json")), None).await;
    let won = agent.acquire("p/leader", &json!({"holder": "b"}), "sess/1").await.expect("acquire");
    assert!(!won);
    let request = server.await.expect("server");
    assert!(request.starts_with("PUT /v1/kv/p/leader?acquire=sess%2F1 HTTP/1.1\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\n{\"holder\":\"b\"}"), "{request}");
}

#[tokio::test]
async fn recorded_refusals_are_api_errors_with_consuls_words() {
    // An unknown check must be an Api error: the coordinator registers its check again on one.
    let (agent, _server) =
        one_shot(answer("500 Internal Server Error", "", &recorded("check-pass-unknown.txt")), None).await;
    assert_eq!(
        agent.pass_check("failoverd-no-such-check").await,
        Err(AgentError::Api {
            request: "PUT /v1/agent/check/pass/failoverd-no-such-check".into(),
            code: 500,
            message: r#"CheckID "failoverd-no-such-check" does not have associated TTL"#.into()
        })
    );
    for (status, code, name, message) in [
        ("403 Forbidden", 403, "acl-unknown-token", "ACL not found"),
        (
            "500 Internal Server Error",
            500,
            "kv-acquire-unknown-session",
            r#"invalid session "00000000-0000-0000-0000-000000000000""#,
        ),
    ] {
        let (agent, _server) = one_shot(answer(status, "", &recorded(&format!("{name}.txt"))), None).await;
        let refused = agent.acquire("p/leader", &json!({}), "s").await;
        let request = "PUT /v1/kv/p/leader".to_string();
        assert_eq!(refused, Err(AgentError::Api { request, code, message: message.into() }), "{name}");
    }
}

#[tokio::test]
async fn a_malformed_answer_on_the_wire_is_a_typed_error_not_a_panic() {
    let body = locked_with("Value", Some(json!("not base64!")));
    let (agent, _server) = one_shot(answer("200 OK", "X-Consul-Index: 15\r\n", &body), None).await;
    assert_eq!(malformed_field(agent.read("record/leader", false).await), "[0].Value");
    let (agent, _server) = one_shot(answer("200 OK", "", &recorded("kv-get-locked.json")), None).await;
    assert_eq!(malformed_field(agent.read("record/leader", false).await), "the X-Consul-Index header");
}

#[tokio::test]
async fn an_answer_declared_larger_than_the_limit_is_refused_unread() {
    let declared = ANSWER_LIMIT as u64 + 1;
    let head = format!("HTTP/1.1 200 OK\r\nX-Consul-Index: 1\r\nContent-Length: {declared}\r\n\r\n[");
    let (agent, _server) = one_shot(head.into_bytes(), None).await;
    assert_eq!(
        agent.read("big", false).await,
        Err(AgentError::AnswerTooLarge {
            request: "GET /v1/kv/big".into(),
            limit: ANSWER_LIMIT,
            declared: Some(declared)
        })
    );
}

#[tokio::test]
async fn a_streamed_answer_past_the_limit_is_refused_and_one_at_the_limit_is_read() {
    let chunked = |body: &[u8]| {
        let mut out = b"HTTP/1.1 200 OK\r\nX-Consul-Index: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.chunks(64 * 1024) {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    let mut at_limit = vec![b' '; ANSWER_LIMIT];
    at_limit[0] = b'[';
    at_limit[ANSWER_LIMIT - 1] = b']';
    let (agent, _server) = one_shot(chunked(&at_limit), None).await;
    assert_eq!(agent.read("big", false).await, Ok(Some(Vec::new())));

    at_limit.insert(1, b' ');
    let (agent, _server) = one_shot(chunked(&at_limit), None).await;
    assert_eq!(
        agent.read("big", false).await,
        Err(AgentError::AnswerTooLarge { request: "GET /v1/kv/big".into(), limit: ANSWER_LIMIT, declared: None })
    );
}

#[tokio::test]
async fn an_agent_that_is_not_listening_is_unreachable_naming_its_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let config = ConsulConfig { address: address.parse().expect("url"), ..Default::default() };
    let agent = Agent::new(&config, None).expect("agent");
    match agent.pass_check("c").await {
        Err(AgentError::Unreachable { address: named, detail }) => {
            assert_eq!(named, address);
            assert!(detail.starts_with("PUT /v1/agent/check/pass/c: "), "{detail}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
}
