//! The real `nemo-controller` process: every call and error status,
//! concurrent allocation, kill -9 in a burst, watch resume, and `nemoctl`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

/// This binary runs the suite with the store in a directory
/// (`api_etcd.rs`: the same suite on etcd).
const ON_ETCD: bool = false;

include!("api_suite/mod.rs");
