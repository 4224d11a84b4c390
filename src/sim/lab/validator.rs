//! The command line of a real-shaped validator (`failoverd sim-node --sign-while-running`), as a
//! producer's daemon starts it through its keeper: it follows its member's sentry and signs every
//! height from its start until its process dies, with no deadline and no switch.
//!
//! It only builds argument vectors; the daemon under test starts and stops the process.

use std::path::PathBuf;
use std::time::Duration;

/// How the daemon runs the validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidatorKind {
    /// `cometbft-filepv`: the daemon writes the key (`key_file`) and the signing state at the
    /// guard's floor into the validator's home, then starts it; it signs above that state.
    FilePv { key_file: PathBuf },
    /// `process`: the daemon only starts it; it signs heights that begin after its start.
    Process,
}

/// One producer's validator.
#[derive(Clone, Debug)]
pub struct ValidatorCommand {
    /// The `failoverd` binary.
    pub exe: PathBuf,
    pub kind: ValidatorKind,
    /// Behind a start script that forks it and waits (`sh -c "<validator> & wait"`), the shape
    /// of many real start scripts: the signer is the script's child, so a signal to the script
    /// alone would leave it running.
    pub forking: bool,
    /// Its sentry's `http://host:port`.
    pub sentry: String,
    /// Its CometBFT-style home (`config/`, `data/`); used by `cometbft-filepv`.
    pub home: PathBuf,
    pub member: String,
    /// The shared signature ledger.
    pub ledger: PathBuf,
    /// Where it records its start (with its pid) for the death watch.
    pub activations: PathBuf,
    pub block: Duration,
}

impl ValidatorCommand {
    /// The `command` of its member's `[producer]`.
    pub fn argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            self.exe.display().to_string(),
            "sim-node".into(),
            "--sign-while-running".into(),
            "--follow".into(),
            self.sentry.clone(),
        ];
        if matches!(self.kind, ValidatorKind::FilePv { .. }) {
            argv.extend(["--home".into(), self.home.display().to_string()]);
        }
        argv.extend([
            "--member".into(),
            self.member.clone(),
            "--ledger".into(),
            self.ledger.display().to_string(),
            "--activations".into(),
            self.activations.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--block-interval".into(),
            format!("{}ms", self.block.as_millis()),
        ]);
        if !self.forking {
            return argv;
        }
        // One shell word per argument, so that only the validator (not the script) carries
        // `--member <id>` as two arguments of its own.
        let line: Vec<String> = argv.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
        vec!["/bin/sh".into(), "-c".into(), format!("{} & wait", line.join(" "))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(kind: ValidatorKind, forking: bool) -> ValidatorCommand {
        ValidatorCommand {
            exe: "/bin/failoverd".into(),
            kind,
            forking,
            sentry: "http://127.0.0.1:4".into(),
            home: "/tmp/it's/home-a".into(),
            member: "a".into(),
            ledger: "/tmp/lab/ledger.jsonl".into(),
            activations: "/tmp/lab/activations.jsonl".into(),
            block: Duration::from_millis(200),
        }
    }

    #[test]
    fn only_a_filepv_validator_is_given_its_home() {
        let filepv = validator(ValidatorKind::FilePv { key_file: "/tmp/key.json".into() }, false).argv();
        assert!(filepv.windows(2).any(|w| w == ["--home", "/tmp/it's/home-a"]), "{filepv:?}");
        let process = validator(ValidatorKind::Process, false).argv();
        assert!(!process.contains(&"--home".to_string()), "{process:?}");
        assert!(process.windows(2).any(|w| w == ["--member", "a"]), "{process:?}");
    }

    #[test]
    fn a_forking_start_script_runs_the_validator_in_the_background_with_every_argument_quoted() {
        let argv = validator(ValidatorKind::FilePv { key_file: "/tmp/key.json".into() }, true).argv();
        assert_eq!(argv[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert!(argv[2].ends_with(" & wait"), "{argv:?}");
        assert!(argv[2].contains("'/tmp/it'\\''s/home-a'"), "{argv:?}");
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("for a in {}; do echo \"$a\"; done", argv[2].trim_end_matches(" & wait"))])
            .output()
            .expect("sh runs");
        let words: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
        assert_eq!(words, validator(ValidatorKind::FilePv { key_file: "/tmp/key.json".into() }, false).argv());
    }
}
