//! `failoverd check-config` against real files: the effective config for a good file, and for
//! each kind of bad input a message naming the field (with its line) and exit status 2; every
//! problem at once, the files a config names included (the validator key parsed and compared
//! with `chain.validator_address`, the TLS files, the directories); relative paths resolved
//! against the config file's directory; only the settings of the chosen kinds printed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{replace_once, run_failoverd, write};
use failover::producer::privval::validator_key::ValidatorKey;

/// What opts a raft config on loopback out of TLS.
const PLAINTEXT_OPT_IN: &str = "\n[coordinator.raft]\ninsecure_plaintext_peers = true\n";

/// A valid three-member raft config for member "a", plaintext on loopback. The line numbers
/// below are part of what is tested.
const PLAINTEXT_CONFIG: &str = r#"member = "a"
data_dir = "data"

[[members]]
id = "a"
peer_address = "127.0.0.1:7101"

[[members]]
id = "b"
peer_address = "127.0.0.1:7102"

[[members]]
id = "c"
peer_address = "127.0.0.1:7103"
kind = "witness"

[coordinator]
lease_ttl = "3s"
renew_interval = "1s"
safety_margin = "500ms"

[coordinator.raft]
insecure_plaintext_peers = true

[chain]
kind = "sim"
rpc = "http://127.0.0.1:26661"

[producer]
kind = "sim"

[api]
socket = "control.sock"
"#;

/// [`PLAINTEXT_CONFIG`] without the plaintext opt-in, as a raft config with `[tls]` is written.
fn without_plaintext_opt_in() -> String {
    replace_once(PLAINTEXT_CONFIG, PLAINTEXT_OPT_IN, "")
}

fn check(dir: &std::path::Path, text: &str) -> (Option<i32>, String, String) {
    let path = write(dir, "failoverd.toml", text);
    let out = run_failoverd(&["check-config", path.to_str().expect("utf-8 temp path")]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_config_prints_the_effective_config_with_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stdout, stderr) = check(dir.path(), PLAINTEXT_CONFIG);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    for expected in [
        "member = \"a\"",
        "call_timeout = \"800ms\"",
        "election_ticks = 10",
        "cooldown = \"30s\"",
        "kind = \"witness\"",
    ] {
        assert!(stdout.contains(expected), "effective config lacks {expected}:\n{stdout}");
    }
    // What it prints is itself a valid config.
    let (code, _, stderr) = check(dir.path(), &stdout);
    assert_eq!(code, Some(0), "the printed effective config does not load: {stderr}");
}

/// (what is wrong, the config text, what stderr must contain: the field and the line)
fn bad_inputs() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let b = PLAINTEXT_CONFIG;
    vec![
        (
            "unknown key",
            replace_once(b, "renew_interval = \"1s\"", "renew_intervall = \"1s\""),
            vec![":19:1: coordinator.renew_intervall: unknown field `renew_intervall`"],
        ),
        (
            "missing field",
            replace_once(b, "peer_address = \"127.0.0.1:7102\"\n", ""),
            vec!["members[1]", "missing field `peer_address`"],
        ),
        (
            "a duration that is a word",
            replace_once(b, "lease_ttl = \"3s\"", "lease_ttl = \"tenseconds\""),
            vec![":18:13: coordinator.lease_ttl: expected a duration", "\"tenseconds\""],
        ),
        (
            "lease_ttl not above renew_interval",
            replace_once(b, "lease_ttl = \"3s\"", "lease_ttl = \"1s\""),
            vec![":19:1: coordinator.renew_interval: renew_interval (1s) must be shorter than lease_ttl (1s)"],
        ),
        (
            "safety_margin not below lease_ttl",
            replace_once(b, "safety_margin = \"500ms\"", "safety_margin = \"3s\""),
            vec![":20:1: coordinator.safety_margin: safety_margin (3s) must be shorter than lease_ttl (3s)"],
        ),
        (
            "duplicate member ids",
            replace_once(b, "id = \"b\"", "id = \"a\""),
            vec![":9:1: members[1].id: duplicate member id \"a\""],
        ),
        (
            "member not among members",
            replace_once(b, "member = \"a\"", "member = \"z\""),
            vec![":1:1: member: \"z\" is not among the [[members]] ids (a, b, c)"],
        ),
        (
            "fewer than 3 voters for raft",
            replace_once(b, "[[members]]\nid = \"c\"\npeer_address = \"127.0.0.1:7103\"\nkind = \"witness\"\n", ""),
            vec!["members: the raft backend needs at least 3 voting members", "found 2"],
        ),
        (
            "an address that does not parse",
            replace_once(b, "127.0.0.1:7102", "127.0.0.1:notaport"),
            vec![":10:16: members[1].peer_address: expected host:port", "\"127.0.0.1:notaport\""],
        ),
        (
            "a listen address that is not an ip:port",
            format!("{b}\n[metrics]\nlisten = \"localhost:9464\"\n"),
            vec!["metrics.listen: expected ip:port to listen on"],
        ),
        (
            "an rpc that is not a URL",
            replace_once(b, "rpc = \"http://127.0.0.1:26661\"", "rpc = \"127.0.0.1:26661\""),
            vec!["chain.rpc: expected an http:// or https:// URL"],
        ),
        (
            "a wrong enum value",
            replace_once(b, "kind = \"witness\"", "kind = \"wittness\""),
            vec!["members[2].kind: unknown variant `wittness`, expected `producer` or `witness`"],
        ),
        (
            "a value of the wrong type",
            replace_once(b, "lease_ttl = \"3s\"", "lease_ttl = 3"),
            vec!["coordinator.lease_ttl"],
        ),
        ("not TOML at all", "member = \"a\"\nmembers = [ [\n".to_string(), vec![":2:"]),
        (
            "a producer member without [producer]",
            replace_once(b, "[producer]\nkind = \"sim\"\n", ""),
            vec!["producer: a producer member needs a [producer] section"],
        ),
        (
            "plaintext peers with a peer that is not on loopback",
            replace_once(b, "127.0.0.1:7102", "10.0.0.2:7102"),
            vec![":10:1: members[1].peer_address: members[1].peer_address 10.0.0.2:7102 is not a loopback address"],
        ),
        (
            "plaintext peers listening on every address",
            format!("peer_listen = \"0.0.0.0:7101\"\n{b}"),
            vec![":1:1: peer_listen: peer_listen 0.0.0.0:7101 is not a loopback address"],
        ),
        (
            "raft without [tls] and without the plaintext opt-in",
            without_plaintext_opt_in(),
            vec![
                "tls: the raft backend requires a [tls] section",
                "failoverd tls ca --dir DIR",
                "failoverd tls member ID --dir DIR",
            ],
        ),
        (
            "the plaintext opt-in together with [tls]",
            format!("{b}\n[tls]\nca_file = \"/ca.pem\"\ncert_file = \"/m.pem\"\nkey_file = \"/m.key\"\n"),
            vec![
                "coordinator.raft.insecure_plaintext_peers: insecure_plaintext_peers = true contradicts the [tls] section: remove one",
            ],
        ),
        (
            "a duration that would saturate",
            replace_once(b, "lease_ttl = \"3s\"", "lease_ttl = \"18446744073709551615h\""),
            vec![":18:13: coordinator.lease_ttl:", "longer than the ceiling of 8760h (365 days)"],
        ),
        (
            "a lease far above its maximum",
            replace_once(b, "lease_ttl = \"3s\"", "lease_ttl = \"2h\""),
            vec![":18:1: coordinator.lease_ttl: 2h is above the maximum of 5m"],
        ),
        (
            "an election timeout longer than the holder's validity",
            replace_once(
                b,
                "insecure_plaintext_peers = true\n",
                "insecure_plaintext_peers = true\nelection_ticks = 30\n",
            ),
            vec![
                "coordinator.raft.election_ticks: one election timeout",
                "(100ms × 30 = 3s), must be shorter than lease_ttl − safety_margin (2s500ms)",
            ],
        ),
    ]
}

#[test]
fn every_bad_input_names_the_field_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (what, text, expected) in bad_inputs() {
        let (code, stdout, stderr) = check(dir.path(), &text);
        assert_eq!(code, Some(2), "{what}: exit status; stderr: {stderr}");
        assert!(stdout.is_empty(), "{what}: printed a config despite the error");
        assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{what}: stderr lacks {e:?}:\n{stderr}");
        }
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text =
        replace_once(&replace_once(PLAINTEXT_CONFIG, "member = \"a\"", "member = \"z\""), "id = \"b\"", "id = \"c\"");
    let (code, _, stderr) = check(dir.path(), &text);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("member: \"z\" is not among"), "{stderr}");
    assert!(stderr.contains("duplicate member id \"c\""), "{stderr}");
}

/// [`PLAINTEXT_CONFIG`] with `[tls]`: member a's real certificate files (made in a directory
/// of `dir` named after `key_mode`), its key with `key_mode`.
fn with_tls(dir: &std::path::Path, key_mode: u32) -> String {
    let pki_dir = dir.join(format!("pki-{key_mode:o}"));
    let pki = common::pki::write_cluster(&pki_dir, &["a", "b", "c"], &[]);
    let tls = pki.member("a");
    std::fs::set_permissions(&tls.key_file, std::fs::Permissions::from_mode(key_mode)).expect("chmod");
    format!("{}\n{}", without_plaintext_opt_in(), common::pki::tls_section(&tls))
}

#[test]
fn a_ten_megabyte_region_is_refused_naming_it_quickly_and_without_echoing_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let region = "r".repeat(10 * 1024 * 1024);
    let text = replace_once(
        PLAINTEXT_CONFIG,
        "peer_address = \"127.0.0.1:7101\"\n",
        &format!("peer_address = \"127.0.0.1:7101\"\nregion = \"{region}\"\n"),
    );
    let started = Instant::now();
    let (code, stdout, stderr) = check(dir.path(), &text);
    let took = started.elapsed();
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(2000)]);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(":7:1: members[0].region: 10485760 characters is above the maximum of 64 characters"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(stderr.len() < 1000, "stderr echoes the region: {} bytes", stderr.len());
    // About 1.2 s in a debug build, nearly all of it the unoptimised TOML lexer going over the
    // 10 MB once; a pass that was quadratic in the file's size would take minutes.
    assert!(took < Duration::from_secs(5), "check-config took {took:?}");
}

#[test]
fn a_file_above_16_mib_is_refused_by_its_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("failoverd.toml");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(16 * 1024 * 1024 + 1).expect("a sparse file of 16 MiB + 1 byte");
    let out = run_failoverd(&["check-config", path.to_str().expect("utf-8 temp path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds at least 16777217 bytes, more than the 16777216 bytes (16 MiB)"), "{stderr}");
}

#[test]
fn tls_key_readable_by_group_or_others_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for mode in [0o640, 0o604, 0o644] {
        let (code, _, stderr) = check(dir.path(), &with_tls(dir.path(), mode));
        assert_eq!(code, Some(2), "mode {mode:o}: {stderr}");
        assert!(stderr.contains("tls.key_file"), "{stderr}");
        assert!(stderr.contains(&format!("mode {mode:04o}")), "{stderr}");
        assert!(stderr.contains("chmod 600"), "{stderr}");
    }
    let (code, _, stderr) = check(dir.path(), &with_tls(dir.path(), 0o600));
    assert_eq!(code, Some(0), "a 0600 key is fine: {stderr}");
}

#[test]
fn validator_key_source_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = write(dir.path(), "priv_validator_key.json", "{}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let text = replace_once(
        PLAINTEXT_CONFIG,
        "[producer]\nkind = \"sim\"\n",
        &format!(
            "[producer]\nkind = \"cometbft-filepv\"\nkey_file = \"{}\"\nhome = \"/var/lib/cometbft\"\ncommand = [\"cometbft\", \"start\"]\n",
            key.display()
        ),
    );
    let (code, _, stderr) = check(dir.path(), &text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("producer.key_file") && stderr.contains("mode 0644"), "{stderr}");
}

#[test]
fn a_missing_key_file_is_an_error_with_a_way_forward() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "{}\n[tls]\nca_file = \"/nonexistent/ca\"\ncert_file = \"/nonexistent/c\"\nkey_file = \"/nonexistent/k\"\n",
        without_plaintext_opt_in()
    );
    let (code, _, stderr) = check(dir.path(), &text);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("tls.key_file: cannot read /nonexistent/k"), "{stderr}");
    assert!(stderr.contains("tls.ca_file"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let out = run_failoverd(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_failoverd(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_failoverd(&["check-config", "/nonexistent/failoverd.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent/failoverd.toml"));
}

/// The address of the validator whose key `seed` makes, as CometBFT shows it.
fn address_of(seed: [u8; 32]) -> String {
    ValidatorKey::parse(ValidatorKey::file_for_seed(seed).as_bytes()).expect("a valid key").address()
}

/// `base` with a cometbft-filepv producer holding `key_file` (as written into the config), and
/// `chain.validator_address = validator`.
fn with_validator_key(base: &str, key_file: &str, validator: &str) -> String {
    let text = replace_once(
        base,
        "[producer]\nkind = \"sim\"\n",
        &format!(
            "[producer]\nkind = \"cometbft-filepv\"\nkey_file = \"{key_file}\"\nhome = \"home\"\ncommand = [\"cometbft\", \"start\"]\n"
        ),
    );
    replace_once(
        &text,
        "rpc = \"http://127.0.0.1:26661\"\n",
        &format!("rpc = \"http://127.0.0.1:26661\"\nvalidator_address = \"{validator}\"\n"),
    )
}

#[test]
fn several_problems_are_reported_at_once_files_included() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("priv_validator_key.json");
    ValidatorKey::write_for_seed(&key, [7; 32]).expect("key file");
    let (ours, watched) = (address_of([7; 32]), address_of([8; 32]));
    let mut text = with_validator_key(&with_tls(dir.path(), 0o600), &key.display().to_string(), &watched);
    // A rule between fields, a missing certificate and a data_dir under a regular file.
    text.push_str("[failover]\ncooldown = \"25h\"\n");
    std::fs::remove_file(dir.path().join("pki-600/ca.pem")).expect("remove the CA certificate");
    write(dir.path(), "not-a-dir", "");
    text = replace_once(&text, "data_dir = \"data\"", "data_dir = \"not-a-dir/data\"");
    let (code, stdout, stderr) = check(dir.path(), &text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    for (setting, what) in [
        ("failover.cooldown: ", "25h is above the maximum of 24h"),
        ("tls.ca_file: ", "ca.pem: No such file or directory"),
        (
            "producer.key_file: ",
            &format!("holds the key of validator {ours}, but chain.validator_address is {watched}"),
        ),
        ("data_dir: ", "not-a-dir is not a directory"),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with("error: ") && l.contains(setting) && l.contains(what)),
            "no line names {setting}{what}:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), 4, "one line per problem:\n{stderr}");
}

#[test]
fn a_key_of_another_validator_is_refused_naming_both_addresses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("priv_validator_key.json");
    ValidatorKey::write_for_seed(&key, [7; 32]).expect("key file");
    let (ours, watched) = (address_of([7; 32]), address_of([8; 32]));
    let key_file = key.display().to_string();
    let (code, _, stderr) = check(dir.path(), &with_validator_key(PLAINTEXT_CONFIG, &key_file, &watched));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "producer.key_file: {} holds the key of validator {ours}, but chain.validator_address is {watched}",
            key.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("set chain.validator_address = \"{ours}\"")), "{stderr}");
    // The same key with its own address, in either case, is accepted.
    let (code, _, stderr) = check(dir.path(), &with_validator_key(PLAINTEXT_CONFIG, &key_file, &ours.to_lowercase()));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_truncated_or_wrong_type_validator_key_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = ValidatorKey::file_for_seed([7; 32]);
    let cases = [
        ("truncated", good[..good.len() / 2].to_string(), "not a priv_validator_key.json"),
        ("not a key at all", "[]".to_string(), "not a priv_validator_key.json"),
    ];
    for (what, contents, expected) in cases {
        let key = write(dir.path(), "priv_validator_key.json", &contents);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let text = with_validator_key(PLAINTEXT_CONFIG, &key.display().to_string(), &address_of([7; 32]));
        let (code, _, stderr) = check(dir.path(), &text);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains("producer.key_file: the validator key") && stderr.contains(expected),
            "{what}: {stderr}"
        );
        assert!(stderr.contains("restored from a backup"), "{what}: {stderr}");
    }
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory_from_any_working_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("etc");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(conf.join("tls")).expect("dirs");
    std::fs::create_dir_all(&elsewhere).expect("dirs");
    common::pki::write_cluster(&conf.join("tls"), &["a", "b", "c"], &[]);
    ValidatorKey::write_for_seed(&conf.join("key.json"), [7; 32]).expect("key file");
    let text = format!(
        "{}[tls]\nca_file = \"tls/ca.pem\"\ncert_file = \"./tls/member-a.pem\"\nkey_file = \"tls/member-a.key\"\n",
        with_validator_key(&without_plaintext_opt_in(), "key.json", &address_of([7; 32]))
    );
    let path = write(&conf, "failoverd.toml", &text);
    let out = common::failoverd()
        .current_dir(&elsewhere)
        .args(["check-config", "../etc/failoverd.toml"])
        .output()
        .expect("failoverd runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let conf = conf.canonicalize().expect("canonical");
    assert!(stdout.contains(&format!("relative paths resolved against {}", conf.display())), "{stdout}");
    for (key, file) in [
        ("data_dir", "data"),
        ("socket", "control.sock"),
        ("key_file", "key.json"),
        ("home", "home"),
        ("ca_file", "tls/ca.pem"),
        ("cert_file", "tls/member-a.pem"),
        ("key_file", "tls/member-a.key"),
    ] {
        let line = format!("{key} = \"{}\"", conf.join(file).display());
        assert!(stdout.contains(&line), "lacks {line}:\n{stdout}");
    }
    // From the config's own directory it is the same.
    let here = common::failoverd().current_dir(&conf).arg("check-config").arg(&path).output().expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&here.stdout).lines().skip(1).collect::<Vec<_>>(),
        stdout.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn a_member_whose_key_is_another_validators_does_not_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("etc");
    std::fs::create_dir_all(&conf).expect("dir");
    ValidatorKey::write_for_seed(&conf.join("key.json"), [7; 32]).expect("key file");
    let text = with_validator_key(PLAINTEXT_CONFIG, "key.json", &address_of([8; 32]));
    write(&conf, "failoverd.toml", &text);
    // Started from elsewhere, with a relative key path: the refusal names the file the config's
    // own directory holds.
    let mut child = common::failoverd()
        .current_dir(dir.path())
        .args(["run", "--config", "etc/failoverd.toml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("failoverd starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    let status = status.unwrap_or_else(|| panic!("the member started with another validator's key:\n{stderr}"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    let key = conf.canonicalize().expect("canonical").join("key.json");
    assert!(
        stderr.contains(&format!("{} holds the key of validator {}", key.display(), address_of([7; 32]))),
        "{stderr}"
    );
}

#[test]
fn settings_of_kinds_not_chosen_are_not_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Raft, a simulated chain and producer: nothing of Consul, mining, commands or CometBFT keys.
    let (code, stdout, stderr) = check(dir.path(), PLAINTEXT_CONFIG);
    assert_eq!(code, Some(0), "{stderr}");
    for absent in [
        "[coordinator.consul]",
        "lock_delay",
        "mining",
        "block_interval",
        "command_timeout",
        "watchdog_device",
        "fence_command_timeout",
    ] {
        assert!(!stdout.contains(absent), "prints {absent}:\n{stdout}");
    }
    assert!(stdout.contains("[coordinator.raft]") && stdout.contains("signing_window = 10"), "{stdout}");
    // Consul instead: its section, and none of raft's.
    let consul = replace_once(
        &replace_once(PLAINTEXT_CONFIG, PLAINTEXT_OPT_IN, "\n[coordinator.consul]\ncheck_ttl = \"2s\"\n"),
        "[coordinator]\n",
        "[coordinator]\nbackend = \"consul\"\n",
    );
    let (code, stdout, stderr) = check(dir.path(), &consul);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("[coordinator.consul]") && stdout.contains("lock_delay = \"2s\""), "{stdout}");
    assert!(!stdout.contains("[coordinator.raft]") && !stdout.contains("election_ticks"), "{stdout}");
}

#[test]
fn a_file_that_does_not_parse_says_checking_stopped_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, stderr) = check(dir.path(), "member = \"a\"\nmembers = [ [\n");
    assert_eq!(code, Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains("failoverd.toml:2:"), "{stderr}");
    assert!(
        lines[1].starts_with("note: ") && lines[1].contains("could not be parsed, so checking stopped there"),
        "{stderr}"
    );
}

/// A config written when relative paths followed the working directory: its data_dir, read
/// against the config file's directory now, would start an empty member beside the real one.
/// The member is refused, naming both directories and what to do; nothing is created.
#[test]
fn a_relative_data_dir_whose_data_stayed_under_the_working_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("etc");
    let workdir = dir.path().join("var");
    std::fs::create_dir_all(conf.join("tls")).expect("dirs");
    std::fs::create_dir_all(workdir.join("data/raft")).expect("the old data");
    common::pki::write_cluster(&conf.join("tls"), &["a", "b", "c"], &[]);
    ValidatorKey::write_for_seed(&conf.join("key.json"), [7; 32]).expect("key file");
    let text = format!(
        "{}[tls]\nca_file = \"tls/ca.pem\"\ncert_file = \"tls/member-a.pem\"\nkey_file = \"tls/member-a.key\"\n",
        with_validator_key(&without_plaintext_opt_in(), "key.json", &address_of([7; 32]))
    );
    let path = write(&conf, "failoverd.toml", &text);
    let out = common::failoverd().current_dir(&workdir).arg("check-config").arg(&path).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let (old, new) =
        (workdir.canonicalize().expect("canonical").join("data"), conf.canonicalize().expect("c").join("data"));
    for part in [
        format!("{} (the same path relative to the working directory", old.display()),
        format!("move that directory to {}", new.display()),
    ] {
        assert!(stderr.contains(&part), "lacks {part}:\n{stderr}");
    }
    assert!(!new.exists(), "nothing is created at the new place");
    // Run from the config's own directory (where the data would be found) it is fine.
    let fine = common::failoverd().current_dir(&conf).arg("check-config").arg(&path).output().expect("runs");
    assert_eq!(fine.status.code(), Some(0), "{}", String::from_utf8_lossy(&fine.stderr));
}

/// The FilePV node signs with its key file itself and may hold any key type CometBFT knows: a
/// secp256k1 key is accepted when its recorded address is the validator's, and refused naming
/// both addresses when it is not.
#[test]
fn a_filepv_key_of_another_type_is_checked_by_its_address_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let address = "0123456789ABCDEF0123456789ABCDEF01234567";
    let key = serde_json::json!({
        "address": address,
        "pub_key": {"type": "tendermint/PubKeySecp256k1", "value": "A2pJc6Ii0+3E7+Ehk0oQMvQkWsQwzHg8Ob8vM2cGfYHv"},
        "priv_key": {"type": "tendermint/PrivKeySecp256k1", "value": "pCN9tTnT3BSsC/jDVnHFlzwUoY1fYvXSzNlXdFnJ3sY="},
    });
    let key_path = dir.path().join("secp-key.json");
    std::fs::write(&key_path, key.to_string()).expect("key file");
    std::fs::set_permissions(&key_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("private");
    let (code, _, stderr) =
        check(dir.path(), &with_validator_key(PLAINTEXT_CONFIG, &key_path.display().to_string(), address));
    assert_eq!(code, Some(0), "{stderr}");
    let other = "89ABCDEF0123456789ABCDEF0123456789ABCDEF";
    let (code, _, stderr) =
        check(dir.path(), &with_validator_key(PLAINTEXT_CONFIG, &key_path.display().to_string(), other));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(address) && stderr.contains(other), "{stderr}");
}
