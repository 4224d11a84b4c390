//! The validator's ed25519 consensus key, read from CometBFT's `priv_validator_key.json`.
//!
//! Owns the secret and the only place it is used: [`ValidatorKey::sign`]. It refuses a key file
//! that group or others may read, and a file whose public key does not match its private key.
//! It never prints, logs or quotes the secret: its `Debug` shows the public key only, and parse
//! errors name the field, not the value.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest as _;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the validator key {path}: {detail}")]
    Unreadable { path: String, detail: String },
    #[error("the validator key {path} has mode {mode:o}: group and others must have no access (chmod 600 {path})")]
    TooOpen { path: String, mode: u32 },
    #[error("the validator key {path}: {detail}")]
    Invalid { path: String, detail: String },
}

pub struct ValidatorKey {
    signing: ed25519_consensus::SigningKey,
    public: [u8; 32],
}

impl std::fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValidatorKey(ed25519 {})", hex::encode_upper(self.public))
    }
}

#[derive(serde::Deserialize)]
struct KeyFile {
    /// CometBFT writes it; when present it must be the key's own address.
    #[serde(default)]
    address: Option<String>,
    pub_key: TypedValue,
    priv_key: TypedValue,
}

#[derive(serde::Deserialize)]
struct TypedValue {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

impl ValidatorKey {
    pub fn load(path: &Path) -> Result<ValidatorKey, KeyError> {
        use std::os::unix::fs::MetadataExt;
        let shown = path.display().to_string();
        let unreadable = |e: std::io::Error| KeyError::Unreadable { path: shown.clone(), detail: e.to_string() };
        let mode = std::fs::metadata(path).map_err(unreadable)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen { path: shown, mode });
        }
        let text = std::fs::read(path).map_err(unreadable)?;
        ValidatorKey::parse(&text).map_err(|detail| KeyError::Invalid { path: shown, detail })
    }

    /// Parses the JSON of a key file; the error names what is wrong, never a value.
    pub fn parse(json: &[u8]) -> Result<ValidatorKey, String> {
        let file: KeyFile = serde_json::from_slice(json)
            .map_err(|e| format!("not a priv_validator_key.json (line {}, column {})", e.line(), e.column()))?;
        if file.priv_key.kind != "tendermint/PrivKeyEd25519" {
            // The type names no secret, but it is the file's text: escaped and cut short.
            let shown: String = file.priv_key.kind.escape_default().take(64).collect();
            return Err(format!("priv_key.type is \"{shown}\"; only tendermint/PrivKeyEd25519 is supported"));
        }
        let secret =
            STANDARD.decode(file.priv_key.value.trim()).map_err(|_| "priv_key.value is not base64".to_string())?;
        // CometBFT stores the 32-byte seed followed by the 32-byte public key.
        let seed: [u8; 32] = secret
            .get(..32)
            .filter(|_| secret.len() == 64)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("priv_key.value holds {} bytes; expected 64", secret.len()))?;
        let signing = ed25519_consensus::SigningKey::from(seed);
        let public = signing.verification_key().to_bytes();
        let stated =
            STANDARD.decode(file.pub_key.value.trim()).map_err(|_| "pub_key.value is not base64".to_string())?;
        if stated != public || secret[32..] != public {
            return Err("pub_key does not belong to priv_key".into());
        }
        let key = ValidatorKey { signing, public };
        if let Some(stated) = file.address.filter(|a| !a.eq_ignore_ascii_case(&key.address())) {
            let shown: String = stated.escape_default().take(64).collect();
            return Err(format!(
                "its address field says \"{shown}\", but its key's address is {}; the file was edited or mixed from two keys",
                key.address()
            ));
        }
        Ok(key)
    }

    /// The validator's address as CometBFT shows it (`validator_address` in commits,
    /// `address` in the key file): the first 20 bytes of SHA-256 of the public key, in
    /// upper-case hex.
    pub fn address(&self) -> String {
        address_of(&self.public)
    }

    /// The `priv_validator_key.json` of the key with `seed`, as CometBFT writes it. For the demo,
    /// the simulated lab and tests: a key from a known seed protects nothing.
    pub fn file_for_seed(seed: [u8; 32]) -> String {
        let public = ed25519_consensus::SigningKey::from(seed).verification_key().to_bytes();
        let mut secret = seed.to_vec();
        secret.extend(public);
        format!(
            r#"{{"address":"{}","pub_key":{{"type":"tendermint/PubKeyEd25519","value":"{}"}},"priv_key":{{"type":"tendermint/PrivKeyEd25519","value":"{}"}}}}"#,
            address_of(&public),
            STANDARD.encode(public),
            STANDARD.encode(secret)
        )
    }

    /// Writes [`ValidatorKey::file_for_seed`] to `path` with mode 0600.
    pub fn write_for_seed(path: &Path, seed: [u8; 32]) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.write_all(ValidatorKey::file_for_seed(seed).as_bytes())?;
        f.sync_all()
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

fn address_of(public: &[u8; 32]) -> String {
    hex::encode_upper(&sha2::Sha256::digest(public)[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(seed: [u8; 32]) -> String {
        ValidatorKey::file_for_seed(seed)
    }

    #[test]
    fn a_cometbft_key_file_signs_verifiably_and_debug_shows_no_secret() {
        let key = ValidatorKey::parse(key_file([9; 32]).as_bytes()).expect("valid key");
        let sig = key.sign(b"sign bytes");
        let vk = ed25519_consensus::VerificationKey::try_from(key.public_key()).expect("public key");
        vk.verify(&ed25519_consensus::Signature::from(sig), b"sign bytes").expect("verifies");
        let shown = format!("{key:?}");
        assert!(!shown.contains(&STANDARD.encode([9u8; 32])) && !shown.contains(&hex::encode([9u8; 32])), "{shown}");
    }

    #[test]
    fn bad_key_files_are_named_without_their_values() {
        let good = key_file([9; 32]);
        let other = key_file([8; 32]);
        let other_pub = other.split("\"value\":\"").nth(1).and_then(|s| s.split('"').next()).expect("pub");
        let good_pub = good.split("\"value\":\"").nth(1).and_then(|s| s.split('"').next()).expect("pub");
        let mismatched = good.replacen(good_pub, other_pub, 1);
        assert_eq!(
            ValidatorKey::parse(mismatched.as_bytes()).err().as_deref(),
            Some("pub_key does not belong to priv_key")
        );
        let e = ValidatorKey::parse(b"SECRET-not-json").expect_err("refused");
        assert!(!e.contains("SECRET"), "{e}");
        let secp = good.replace("tendermint/PrivKeyEd25519", "tendermint/PrivKeySecp256k1");
        assert!(ValidatorKey::parse(secp.as_bytes()).expect_err("refused").contains("priv_key.type"));
    }

    #[test]
    fn a_key_file_whose_address_field_is_not_its_keys_address_is_refused_naming_both() {
        let good = key_file([9; 32]);
        let key = ValidatorKey::parse(good.as_bytes()).expect("valid key");
        let ours = key.address();
        assert_eq!(ours.len(), 40);
        let other = ValidatorKey::parse(key_file([8; 32]).as_bytes()).expect("valid key").address();
        let e = ValidatorKey::parse(good.replace(&ours, &other).as_bytes()).expect_err("refused");
        assert!(e.contains(&other) && e.contains(&ours), "{e}");
        // Lower case is the same address, and a file without the field is accepted.
        assert!(ValidatorKey::parse(good.replace(&ours, &ours.to_lowercase()).as_bytes()).is_ok());
        let without = good.replace(&format!("\"address\":\"{ours}\","), "");
        assert!(ValidatorKey::parse(without.as_bytes()).is_ok(), "{without}");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("priv_validator_key.json");
        std::fs::write(&path, key_file([9; 32])).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(ValidatorKey::load(&path), Err(KeyError::TooOpen { mode: 0o640, .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(ValidatorKey::load(&path).is_ok());
    }
}
