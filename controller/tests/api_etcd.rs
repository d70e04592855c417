//! The API suite of `api.rs` with the controller's store in etcd (a real
//! etcd, one member, started for each test): the same calls, the same
//! answers, the same kill -9 and resumed watches.
//!
//! Needs `etcd` (CI installs it; NEMO_REQUIRE_ETCD makes a missing one a
//! failure).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

const ON_ETCD: bool = true;

include!("api_suite/mod.rs");
