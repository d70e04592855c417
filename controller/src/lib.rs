//! `nemo-controller` as a library: the store and the gRPC service; the
//! binaries `nemo-controller` and `nemoctl` wrap it.

pub mod api;
pub mod metrics;
pub mod store;
