//! CometBFT's `priv_validator_key.json`, which the remote signer loads. Properties: a refusal is
//! readable and never quotes the secret; an accepted key is the one its file states (the public
//! key written beside the seed), its file written again from the seed loads as the same key, and
//! what it signs verifies under its public key.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use failover::producer::privval::validator_key::ValidatorKey;
use failover_fuzz::assert_readable;
use libfuzzer_sys::fuzz_target;

/// The one key type a refusal names.
const SUPPORTED: &str = "tendermint/PrivKeyEd25519";

/// The fields of a key file as the key loader reads them: unknown fields skipped (and, as
/// serde_json skips them, not checked for UTF-8).
#[derive(serde::Deserialize)]
struct Stated {
    #[serde(default)]
    address: Option<String>,
    priv_key: Typed,
}

#[derive(serde::Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

fuzz_target!(|data: &[u8]| {
    let stated = serde_json::from_slice::<Stated>(data).ok();
    let secret = stated.as_ref().map(|s| s.priv_key.value.trim().to_owned());
    match ValidatorKey::parse(data) {
        Err(e) => {
            assert_readable(&e, "a validator key refusal");
            // Only the type and the address are ever quoted, beside the one type supported: a
            // secret that is also part of one of them is quoted as that, not as a secret.
            let quoted = |s: &str| {
                SUPPORTED.contains(s)
                    || stated.as_ref().is_some_and(|f| {
                        f.priv_key.kind.contains(s) || f.address.as_ref().is_some_and(|a| a.contains(s))
                    })
            };
            // A secret, or a cut-off one, is base64: other text in that field is no secret (and may
            // even be a refusal's own words).
            let secret_like =
                |s: &str| s.len() >= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
            if let Some(secret) = secret.filter(|s| secret_like(s) && !quoted(s)) {
                assert!(!e.contains(&secret), "a key refusal quotes the secret");
            }
        }
        Ok(key) => {
            let secret = STANDARD.decode(secret.expect("an accepted key has priv_key.value")).expect("base64");
            assert_eq!(secret.len(), 64);
            assert_eq!(secret[32..], key.public_key(), "the key is not the one its file states");
            let seed: [u8; 32] = secret[..32].try_into().expect("32 bytes");
            let again = ValidatorKey::parse(ValidatorKey::file_for_seed(seed).as_bytes()).expect("its own file");
            assert_eq!(again.public_key(), key.public_key());
            assert_eq!(again.address(), key.address());
            let signature = ed25519_consensus::Signature::from(key.sign(data));
            let public = ed25519_consensus::VerificationKey::try_from(key.public_key()).expect("a public key");
            assert!(public.verify(&signature, data).is_ok(), "a signature that does not verify");
        }
    }
});
