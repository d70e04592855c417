//! `nemo-ha`, the home agent, as a library so that tests and benchmarks can
//! run it in-process; the binary in `main.rs` is a thin wrapper.

pub mod admin;
pub mod authorization_cache;
pub mod config;
pub mod controller;
pub mod driver;
pub mod election;
pub mod messages;
pub mod metrics;
pub mod reload;
pub mod replication;
pub mod store;
pub mod translator;
