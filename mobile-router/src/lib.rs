//! `nemo-mr`, the mobile-router daemon, as a library; `main.rs` wraps it.

pub mod arrivals;
pub mod config;
pub mod controller;
pub mod driver;
pub mod reload;
pub mod status;
pub mod transport;
pub mod uplink;
