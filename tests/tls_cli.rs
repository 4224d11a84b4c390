//! `failoverd tls ca|member|operator` run as the real binary in a temp dir: the files and their
//! modes, what it prints, the identity each certificate names, and real chain verification with
//! rustls' webpki verifiers (a member's certificate serves both ends of a connection, an
//! operator's only the client end, and another CA's certificates verify against nothing here).
//! And the refusals: overwriting, a bad id, an open CA key, a validity out of range.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failover::config::TlsConfig;
use failover::domain::MemberId;
use failover::tls::{OperatorName, PeerIdentity, date_text, identity_of};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, Error as TlsError};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `failoverd tls ARGS…` with `cwd` as its working directory.
fn tls(cwd: &Path, args: &[&str]) -> Run {
    let out = common::failoverd().current_dir(cwd).arg("tls").args(args).output().expect("failoverd runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(run: Run) -> String {
    assert_eq!(run.code, Some(0), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    run.stdout
}

fn text(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

fn der(p: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `wrote …` paths a command printed, without the key's "(private: …)" note.
fn written(stdout: &str) -> Vec<PathBuf> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .map(|l| PathBuf::from(l.split(" (private").next().expect("a path")))
        .collect()
}

/// Checks the `expires YYYY-MM-DD (N days)` line against the certificate's own not_after.
fn assert_expiry(stdout: &str, cert: &Path, days: u64) {
    let cert_der = der(cert);
    let (_, parsed) = x509_parser::parse_x509_certificate(cert_der.as_ref()).expect("X.509");
    let not_after = UNIX_EPOCH + Duration::from_secs(parsed.validity().not_after.timestamp().unsigned_abs());
    let noun = if days == 1 { "day" } else { "days" };
    let line = format!("expires {} ({days} {noun})", date_text(not_after));
    assert!(stdout.lines().any(|l| l == line), "expected {line:?} in:\n{stdout}");
    let asked = SystemTime::now() + Duration::from_secs(days * 86_400);
    let off = asked.duration_since(not_after).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(60), "{} expires {off:?} away from {days} days from now", cert.display());
}

/// A CA in `dir` (made with the default `--dir .`), member `a` with extra names, operator `alice`.
fn make_cluster(dir: &Path) -> (String, String, String) {
    let ca = ok(tls(dir, &["ca", "--name", "lab"]));
    let member = ok(tls(dir, &["member", "a", "--dir", text(dir), "--dns", "a.example", "--ip", "127.0.0.1"]));
    let operator = ok(tls(dir, &["operator", "alice", "--dir", text(dir), "--days", "30"]));
    (ca, member, operator)
}

fn member(s: &str) -> MemberId {
    MemberId::new(s).expect("id")
}

struct Verifiers {
    server: Arc<WebPkiServerVerifier>,
    client: Arc<dyn ClientCertVerifier>,
}

/// rustls' webpki verifiers trusting only the CA in `ca_file`.
fn trusting(ca_file: &Path) -> Verifiers {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca_file)).expect("the CA is a usable trust anchor");
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Verifiers {
        server: WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build().expect("verifier"),
        client: WebPkiClientVerifier::builder_with_provider(roots, provider).build().expect("verifier"),
    }
}

impl Verifiers {
    fn as_server(&self, cert: &Path, name: &str) -> Result<(), TlsError> {
        let name = ServerName::try_from(name.to_string()).expect("server name");
        self.server.verify_server_cert(&der(cert), &[], &name, &[], UnixTime::now()).map(|_| ())
    }

    fn as_client(&self, cert: &Path) -> Result<(), TlsError> {
        self.client.verify_client_cert(&der(cert), &[], UnixTime::now()).map(|_| ())
    }
}

fn is_wrong_purpose(e: &TlsError) -> bool {
    matches!(
        e,
        TlsError::InvalidCertificate(CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. })
    )
}

#[test]
fn ca_member_and_operator_write_their_files_with_private_keys_and_say_when_they_expire() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().canonicalize().expect("temp dir path");
    let (ca, member_out, operator_out) = make_cluster(&dir);
    let file = |name: &str| dir.join(name);

    assert_eq!(written(&ca), [file("ca.pem"), file("ca.key")]);
    assert_eq!(written(&member_out), [file("member-a.pem"), file("member-a.key")]);
    assert_eq!(written(&operator_out), [file("operator-alice.pem"), file("operator-alice.key")]);
    for (cert, key) in
        [("ca.pem", "ca.key"), ("member-a.pem", "member-a.key"), ("operator-alice.pem", "operator-alice.key")]
    {
        assert_eq!(mode(&file(cert)), 0o644, "{cert}");
        assert_eq!(mode(&file(key)), 0o600, "{key}");
    }
    assert_expiry(&ca, &file("ca.pem"), 3650);
    assert_expiry(&member_out, &file("member-a.pem"), 365);
    assert_expiry(&operator_out, &file("operator-alice.pem"), 30);

    // The member's [tls] section, as printed, is the config that names the files just written.
    let section = &member_out[member_out.find("[tls]").expect("a [tls] section")..];
    #[derive(serde::Deserialize)]
    struct Section {
        tls: TlsConfig,
    }
    let parsed: Section = toml::from_str(section).expect("the printed section is TOML");
    let want = TlsConfig { ca_file: file("ca.pem"), cert_file: file("member-a.pem"), key_file: file("member-a.key") };
    assert_eq!(parsed.tls, want);
    assert!(operator_out.contains(&format!("--tls-cert {}", text(&file("operator-alice.pem")))), "{operator_out}");
}

#[test]
fn each_certificate_names_its_own_identity_and_never_the_other_kind() {
    let tmp = tempfile::tempdir().expect("temp dir");
    make_cluster(tmp.path());
    let member_id = identity_of(der(&tmp.path().join("member-a.pem")).as_ref()).expect("an identity");
    assert_eq!(member_id, PeerIdentity::Member(member("a")));
    let operator_id = identity_of(der(&tmp.path().join("operator-alice.pem")).as_ref()).expect("an identity");
    assert_eq!(operator_id, PeerIdentity::Operator(OperatorName::new("alice").expect("name")));
    // The extra names are there for other tools, and do not make a second identity.
    let member_der = der(&tmp.path().join("member-a.pem"));
    let (_, cert) = x509_parser::parse_x509_certificate(member_der.as_ref()).expect("X.509");
    let sans = cert.subject_alternative_name().expect("parses").expect("SANs").value.general_names.len();
    assert_eq!(sans, 3, "URI, DNS a.example, IP 127.0.0.1");
}

#[test]
fn a_member_certificate_verifies_for_both_ends_and_an_operator_certificate_for_the_client_end_only() {
    let tmp = tempfile::tempdir().expect("temp dir");
    make_cluster(tmp.path());
    let trust = trusting(&tmp.path().join("ca.pem"));
    let member_cert = tmp.path().join("member-a.pem");
    let operator_cert = tmp.path().join("operator-alice.pem");

    assert_eq!(trust.as_server(&member_cert, "a.example"), Ok(()));
    assert_eq!(trust.as_server(&member_cert, "127.0.0.1"), Ok(()));
    assert_eq!(trust.as_client(&member_cert), Ok(()));
    assert_eq!(trust.as_client(&operator_cert), Ok(()));
    let refused = trust.as_server(&operator_cert, "a.example").expect_err("an operator cannot serve");
    assert!(is_wrong_purpose(&refused), "refused for the wrong reason: {refused}");
}

#[test]
fn certificates_from_a_second_ca_do_not_verify_against_the_first() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    for dir in [&first, &second] {
        std::fs::create_dir(dir).expect("dir");
        make_cluster(dir);
    }
    // Both CAs are named "failoverd CA lab": the name leads to the first CA, whose key did not
    // sign the stranger's certificate.
    let trust = trusting(&first.join("ca.pem"));
    for cert in ["member-a.pem", "operator-alice.pem"] {
        let e = trust.as_client(&second.join(cert)).expect_err("a stranger's certificate");
        assert!(matches!(e, TlsError::InvalidCertificate(CertificateError::BadSignature)), "{cert}: {e}");
    }
    let e = trust.as_server(&second.join("member-a.pem"), "a.example").expect_err("a stranger's certificate");
    assert!(matches!(e, TlsError::InvalidCertificate(CertificateError::BadSignature)), "{e}");

    // A CA with another name is not even a candidate issuer.
    let third = tmp.path().join("third");
    ok(tls(tmp.path(), &["ca", "--dir", text(&third), "--name", "other"]));
    ok(tls(tmp.path(), &["member", "a", "--dir", text(&third)]));
    let e = trust.as_client(&third.join("member-a.pem")).expect_err("a stranger's certificate");
    assert!(matches!(e, TlsError::InvalidCertificate(CertificateError::UnknownIssuer)), "{e}");
}

#[test]
fn an_existing_file_is_never_overwritten_and_is_named() {
    let tmp = tempfile::tempdir().expect("temp dir");
    make_cluster(tmp.path());
    let dir = text(tmp.path());
    for (args, file) in [
        (vec!["ca", "--dir", dir], "ca.pem"),
        (vec!["member", "a", "--dir", dir], "member-a.pem"),
        (vec!["operator", "alice", "--dir", dir], "operator-alice.pem"),
    ] {
        let before = std::fs::read(tmp.path().join(file)).expect("written before");
        let run = tls(tmp.path(), &args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        let named = tmp.path().join(file);
        assert!(run.stderr.contains(&format!("{} already exists", text(&named))), "{}", run.stderr);
        assert!(run.stderr.contains("remove it") && run.stderr.contains("--dir"), "{}", run.stderr);
        assert_eq!(std::fs::read(&named).expect("still there"), before, "{file} changed");
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

#[test]
fn a_bad_id_or_name_is_refused_naming_the_argument_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    ok(tls(tmp.path(), &["ca"]));
    let long = "x".repeat(64);
    let cases: &[(&str, &str, &str, &str)] = &[
        ("member", "", "<ID>", "must not be empty"),
        ("member", &long, "<ID>", "at most 63 characters"),
        ("member", "a/b", "<ID>", "found '/'"),
        ("member", "../ca", "<ID>", "found '/'"),
        ("operator", "", "<NAME>", "must not be empty"),
        ("operator", &long, "<NAME>", "at most 63 characters"),
        ("operator", "al/ice", "<NAME>", "found '/'"),
    ];
    for (kind, id, argument, reason) in cases {
        let run = tls(tmp.path(), &[kind, id]);
        assert_eq!(run.code, Some(2), "{kind} {id:?}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("invalid value '{id}' for '{argument}'")), "{}", run.stderr);
        assert!(run.stderr.contains(reason), "{kind} {id:?}: {}", run.stderr);
    }
    let mut files: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["ca.key", "ca.pem"]);
}

#[test]
fn a_validity_of_zero_or_beyond_the_bound_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    for args in [
        vec!["ca", "--days", "0"],
        vec!["ca", "--days", "36501"],
        vec!["member", "a", "--days", "0"],
        vec!["member", "a", "--days", "3651"],
        vec!["operator", "alice", "--days", "3651"],
    ] {
        let run = tls(tmp.path(), &args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("--days"), "{args:?}: {}", run.stderr);
    }
    assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 0, "nothing written");
}

#[test]
fn a_ca_key_readable_by_others_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().expect("temp dir");
    ok(tls(tmp.path(), &["ca"]));
    let key = tmp.path().join("ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = tls(tmp.path(), &["member", "a"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("chmod 600 {}", text(&key))), "{}", run.stderr);
    assert!(run.stderr.contains("mode 0644"), "{}", run.stderr);
    assert!(!tmp.path().join("member-a.pem").exists() && !tmp.path().join("member-a.key").exists());
}

#[test]
fn a_ca_elsewhere_is_named_with_ca_cert_and_ca_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca_dir, out) = (tmp.path().join("offline"), tmp.path().join("member-b"));
    ok(tls(tmp.path(), &["ca", "--dir", text(&ca_dir)]));
    let (ca_cert, ca_key) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    let missing = tls(tmp.path(), &["member", "b", "--dir", text(&out)]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("--ca-cert") && missing.stderr.contains("ca.pem"), "{}", missing.stderr);
    let args = ["member", "b", "--dir", text(&out), "--ca-cert", text(&ca_cert), "--ca-key", text(&ca_key)];
    let printed = ok(tls(tmp.path(), &args));
    assert!(printed.contains(&format!("ca_file = \"{}\"", text(&ca_cert))), "{printed}");
    assert_eq!(trusting(&ca_cert).as_client(&out.join("member-b.pem")), Ok(()));
}

#[test]
fn the_test_pki_writes_a_whole_cluster_as_the_command_does() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pki = common::pki::write_cluster(tmp.path(), &["a", "b", "c"], &["alice"]);
    assert_eq!(pki.ca_file, tmp.path().join("ca.pem"));
    let trust = trusting(&pki.ca_file);
    for id in ["a", "b", "c"] {
        let tls = pki.member(id);
        assert_eq!(tls.ca_file, pki.ca_file);
        assert_eq!(tls.cert_file, tmp.path().join(format!("member-{id}.pem")));
        assert_eq!(mode(&tls.key_file), 0o600);
        assert_eq!(identity_of(der(&tls.cert_file).as_ref()), Ok(PeerIdentity::Member(member(id))));
        assert_eq!(trust.as_server(&tls.cert_file, "127.0.0.1"), Ok(()));
    }
    let alice = &pki.operators["alice"];
    assert_eq!(alice.cert_file, tmp.path().join("operator-alice.pem"));
    assert_eq!(trust.as_client(&alice.cert_file), Ok(()));
}
