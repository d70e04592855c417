//! nemo's gRPC API, version 1 (`nemo.v1`), generated from `proto/nemo/v1`.

#![allow(missing_docs, clippy::all, clippy::pedantic)] // generated code

/// The `nemo.v1` package.
pub mod v1 {
    tonic::include_proto!("nemo.v1");
}

/// The gRPC metadata key of a mutating call's request id: 1 to 64 of
/// letters, digits, `-`, `_`, `.`, `:`, chosen by the client, one per
/// logical call; the controller makes a call sent again with the same id
/// once (see docs/OPERATIONS.md, "Request ids").
pub const REQUEST_ID: &str = "nemo-request-id";

/// The encoded file descriptor set of every nemo .proto file, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/nemo_descriptor.bin"));

/// The methods of one of nemo's gRPC services (`service`: its full name,
/// e.g. `nemo.v1.Controller`), from [`FILE_DESCRIPTOR_SET`]: for metrics
/// that show every method from the start, and count any other path as
/// one.
pub fn service_methods(service: &str) -> Vec<String> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .filter(move |s| format!("{}.{}", file.package(), s.name()) == service)
                .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controllers_methods_are_read_from_the_descriptors() {
        let methods = service_methods("nemo.v1.Controller");
        assert!(methods.iter().any(|m| m == "AllocatePrefix"), "{methods:?}");
        assert!(methods.iter().any(|m| m == "WatchEvents"), "{methods:?}");
        assert!(service_methods("nemo.v1.NoSuchService").is_empty());
    }
}
