//! VRRPv3 for IPv6 (RFC 5798), sans-IO: the first-hop redundancy protocol
//! that moves the home-agent address between the members of a home-agent
//! pair. The rules here follow
//! its sections as cited, and are cross-checked against keepalived (a VRRP
//! implementation nobody here wrote) in `dataplane/tests/vrrp.rs`.
//!
//! - [`advertisement`]: the packet, its checksum and the checks of §7.1;
//! - [`router`]: the Initialize/Backup/Master state machine of §6.4.

pub mod advertisement;
pub mod router;

pub use advertisement::{
    Advertisement, AdvertisementError, Centiseconds, ALL_VRRP_ROUTERS, HOP_LIMIT, IPPROTO_VRRP,
};
pub use router::{
    default_virtual_link_local, virtual_addresses, Action, Advertisers, Discarded, Heard,
    RouterConfig, State, Stepdown, Takeover, VirtualRouter, OWNER_PRIORITY, RESIGN_PRIORITY,
};
