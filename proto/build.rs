//! Compiles the .proto files with protox (pure Rust, no system protoc) and
//! generates the tonic services; also writes the file descriptor set that
//! gRPC reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "nemo/v1/home_agent.proto",
    "nemo/v1/mobile_router.proto",
    "nemo/v1/controller.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("nemo_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
