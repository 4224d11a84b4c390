//! Compiles proto/ with tonic-prost-build, using the protoc that the protoc-bin-vendored crate
//! ships, so that no system protoc is needed on developer machines, in CI or in the Dockerfile.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(
        &["proto/failover/v1/types.proto", "proto/failover/v1/peer.proto", "proto/failover/v1/control.proto"],
        &["proto"],
    )?;
    Ok(())
}
