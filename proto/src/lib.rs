//! nemo's gRPC API, version 1 (`nemo.v1`), generated from `proto/nemo/v1`.

#![allow(missing_docs, clippy::all, clippy::pedantic)] // generated code

/// The `nemo.v1` package.
pub mod v1 {
    tonic::include_proto!("nemo.v1");
}

/// The encoded file descriptor set of every nemo .proto file, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nemo_descriptor.bin"));
