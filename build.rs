//! Compiles proto/ with tonic-prost-build, using the protoc that the protoc-bin-vendored crate
//! ships, so that no system protoc is needed on developer machines, in CI or in the Dockerfile.
//!
//! It also fingerprints the sources the keeper runs (src/keeper, and the clock and command code
//! it calls), so that `failoverd-keeper --version` names the sources it was built from and a
//! daemon never starts keepers from another build's keeper-alone binary.

/// The files whose contents the keeper's behaviour and its spec and control lines depend on
/// (folders are read whole, with their subfolders), and the locked versions of the crates it
/// links.
const KEEPER_SOURCES: &[&str] =
    &["src/keeper", "src/bin/failoverd-keeper.rs", "src/domain/time.rs", "src/operator_command.rs", "Cargo.lock"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(
        &["proto/failover/v1/types.proto", "proto/failover/v1/peer.proto", "proto/failover/v1/control.proto"],
        &["proto"],
    )?;
    println!("cargo:rustc-env=FAILOVERD_KEEPER_FINGERPRINT={:016x}", keeper_fingerprint()?);
    Ok(())
}

/// FNV-1a over each keeper source's path and contents, in path order: not a defence against a
/// forger (whoever can write beside the daemon's binary can replace the daemon), only a way to
/// tell two builds apart.
fn keeper_fingerprint() -> std::io::Result<u64> {
    let mut files = Vec::new();
    let mut pending: Vec<std::path::PathBuf> = KEEPER_SOURCES.iter().map(std::path::PathBuf::from).collect();
    for source in KEEPER_SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else {
            files.push(path);
        }
    }
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let bytes = file.to_string_lossy().into_owned().into_bytes().into_iter().chain(std::fs::read(&file)?);
        for byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(hash)
}
