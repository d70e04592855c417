//! The home agent, sans-IO (RFC 6275 §9.5, §10.3, RFC 3963 §6, RFC 4285).
//!
//! One Binding Update, from the socket to the kernel route and back:
//! 1. the driver hands the received packet and its path to [`HomeAgent::handle`];
//! 2. which parses and decides ([`BindingCache`]) once, and returns a [`Forward`];
//! 3. the driver sets up the forwarding of [`Forward::change`] in the data plane;
//! 4. [`HomeAgent::forwarded`] builds the one answer: an [`Acknowledgement`]
//!    carrying the change, or the failure's status with the change undone;
//! 5. the driver makes its change durable, then sends its packet.
//!
//! - [`engine`]: that entry point, and the timers (refresh requests, expiry);
//! - [`cache`]: the binding cache and the changes that keep it;
//! - [`care_of`]: where a binding's packets go (IPv6, IPv4, UDP through a
//!   NAT: RFC 5555), and how a Binding Update arrived;
//! - [`decide`]: the checks of a Binding Update, in RFC order, and its one answer;
//! - [`dsmip`]: its rules for IPv4 care-of addresses and NATs (RFC 5555);
//! - [`authorization`]: what each home address may register;
//! - [`merge`]: a pair's two caches made one again after both were active;
//! - [`bicast`]: copies to the address a binding just left (make-before-break).

pub mod authorization;
pub mod bicast;
pub mod cache;
pub mod care_of;
pub mod decide;
pub mod dsmip;
pub mod engine;
pub mod merge;

pub use authorization::{
    overlaps, Authorization, AuthorizationError, AuthorizationTable, MAX_PREFIXES,
};
pub use bicast::{Bicasts, Copying};
pub use cache::{
    Binding, BindingCache, Change, ChangeKind, HomeAgentConfig, MAX_DELETE_BCE_TIMEOUT,
};
pub use care_of::{Arrival, CareOf, Ipv4CareOfs, UdpEncapsulation};
pub use decide::{
    invalid_prefix_reason, is_unicast_routable, ntp_time, Accepted, DropReason, Outcome, Processed,
    Received, Reply,
};
pub use engine::{
    Acknowledgement, Decision, Forward, Forwarding, ForwardingFailure, Handled, HomeAgent,
    Malformed, Timeouts, Transmit,
};
pub use merge::{Merged, Verdict};
