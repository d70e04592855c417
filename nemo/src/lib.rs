//! The NEMO protocol library shared by the home agent and the mobile router.
//!
//! Sans-IO: nothing here opens a socket, reads a clock or spawns a task. Bytes
//! and the current time come in as arguments; decoded values and bytes to send
//! go out as return values.
//!
//! - [`wire`]: the Mobility Header (RFC 6275 §6.1) with the NEMO extensions
//!   (RFC 3963 §4), its mobility options (RFC 6275 §6.2, RFC 4283, RFC 4285),
//!   and the IPv6 framing of the native transport (Home Address destination
//!   option, type 2 routing header).
//! - [`auth`]: the MN-HA mobility message authentication option and the
//!   timestamp replay protection of RFC 4285.

pub mod auth;
pub mod ha;
pub mod mr;
pub mod prefix_index;
pub mod registration;
pub mod vrrp;
pub mod wire;

/// The version of this library, for banners and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
