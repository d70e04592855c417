//! A mobile router's tenant instances, each with its registrar
//! ([`crate::registration`]): which tenant a packet from the home-agent
//! side is for, parsed once and handed to that tenant's registrar.

use std::net::Ipv6Addr;

use crate::registration::{AckError, Registrar};
use crate::wire::{parse_packet, DecodeError, Message, MobilityHeader};

/// One tenant instance of a mobile router: its registrar, and what the
/// driver keeps beside it (`T`: its data path, its counters).
#[derive(Debug)]
pub struct Tenant<T> {
    /// The instance's name, unique on this mobile router.
    pub name: String,
    /// Its registration with its home agent.
    pub registrar: Registrar,
    /// The driver's own state for it.
    pub host: T,
}

/// What a packet from the home-agent side turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// It does not parse as an IPv6 packet with a Mobility Header.
    Malformed(DecodeError),
    /// For a home address none of the tenants has.
    NoTenant {
        /// The home address it was for (type 2 routing header, else the
        /// destination).
        home_address: Ipv6Addr,
    },
    /// For this tenant.
    Tenant {
        /// The tenant's name.
        name: String,
        /// What its registrar made of it.
        receipt: Receipt,
    },
}

/// What a tenant's registrar made of a packet for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// A Binding Acknowledgement, taken.
    Acknowledgement,
    /// A Binding Acknowledgement that does not answer what is in flight,
    /// or does not verify; nothing changed.
    IgnoredAcknowledgement(AckError),
    /// An authenticated Binding Refresh Request (RFC 6275 §11.7.4): the
    /// registrar registers again.
    RefreshRequest,
    /// A Binding Refresh Request with a bad checksum or authenticator:
    /// ignored.
    UnauthenticatedRefreshRequest,
    /// Another message type, ignored.
    Other(crate::wire::MhType),
    /// The Mobility Header does not decode.
    Malformed(DecodeError),
}

/// A mobile router's tenant instances, each with its registrar: picks the
/// tenant a received packet belongs to and hands it to that registrar.
#[derive(Debug)]
pub struct MobileRouter<T> {
    tenants: Vec<Tenant<T>>,
}

impl<T> Default for MobileRouter<T> {
    fn default() -> MobileRouter<T> {
        MobileRouter {
            tenants: Vec::new(),
        }
    }
}

impl<T> MobileRouter<T> {
    /// No tenants.
    pub fn new() -> MobileRouter<T> {
        MobileRouter::default()
    }

    /// Adds a tenant, or replaces the one of the same name (returned).
    pub fn insert(&mut self, tenant: Tenant<T>) -> Option<Tenant<T>> {
        match self.tenants.iter_mut().find(|t| t.name == tenant.name) {
            Some(existing) => Some(std::mem::replace(existing, tenant)),
            None => {
                self.tenants.push(tenant);
                None
            }
        }
    }

    /// The tenant of this name.
    pub fn get(&self, name: &str) -> Option<&Tenant<T>> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The tenant of this name, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tenant<T>> {
        self.tenants.iter_mut().find(|t| t.name == name)
    }

    /// Removes and returns the tenants for which `done` holds.
    pub fn take_where(&mut self, mut done: impl FnMut(&Tenant<T>) -> bool) -> Vec<Tenant<T>> {
        let (taken, kept) = std::mem::take(&mut self.tenants)
            .into_iter()
            .partition(|tenant| done(tenant));
        self.tenants = kept;
        taken
    }

    /// Every tenant.
    pub fn iter(&self) -> impl Iterator<Item = &Tenant<T>> {
        self.tenants.iter()
    }

    /// Every tenant, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Tenant<T>> {
        self.tenants.iter_mut()
    }

    /// The earliest timer of any registrar.
    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.tenants
            .iter()
            .filter_map(|t| t.registrar.poll_timeout())
            .min()
    }

    /// Runs every registrar's timers.
    pub fn handle_timeout(&mut self, now: std::time::Instant, wall: std::time::SystemTime) {
        for tenant in &mut self.tenants {
            tenant.registrar.handle_timeout(now, wall);
        }
    }

    /// Deregisters every tenant (RFC 6275 §11.7.1: lifetime zero).
    pub fn deregister_all(&mut self, now: std::time::Instant, wall: std::time::SystemTime) {
        for tenant in &mut self.tenants {
            tenant.registrar.deregister(now, wall);
        }
    }

    /// True when every tenant's deregistration has been acknowledged.
    pub fn all_deregistered(&self) -> bool {
        self.tenants.iter().all(|t| {
            matches!(
                t.registrar.state(),
                crate::registration::State::Deregistered
            )
        })
    }

    /// A packet from the home-agent side: an IPv6 packet carrying a Binding
    /// Acknowledgement or a Binding Refresh Request for one of the tenants,
    /// picked by the home address of its type 2 routing header (RFC 6275
    /// §6.4), else by its destination.
    pub fn handle(
        &mut self,
        packet: &[u8],
        now: std::time::Instant,
        wall: std::time::SystemTime,
    ) -> Delivery {
        let parsed = match parse_packet(packet) {
            Ok(parsed) => parsed,
            Err(error) => return Delivery::Malformed(error),
        };
        let home_address = parsed
            .repr
            .type2_routing
            .map_or(parsed.repr.destination, |rh| rh.home_address);
        let Some(tenant) = self
            .tenants
            .iter_mut()
            .find(|t| t.registrar.config().home_address == home_address)
        else {
            return Delivery::NoTenant { home_address };
        };
        let receipt = match MobilityHeader::decode(parsed.mh) {
            Err(error) => Receipt::Malformed(error),
            Ok(header) => match header.message {
                Message::BindingRefreshRequest(_) => {
                    if parsed.checksum_ok()
                        && tenant
                            .registrar
                            .handle_refresh_request(parsed.mh, now, wall)
                    {
                        Receipt::RefreshRequest
                    } else {
                        Receipt::UnauthenticatedRefreshRequest
                    }
                }
                message @ Message::BindingAck(_) => {
                    match tenant
                        .registrar
                        .handle_parsed_ack(&parsed, message, now, wall)
                    {
                        Ok(()) => Receipt::Acknowledgement,
                        Err(error) => Receipt::IgnoredAcknowledgement(error),
                    }
                }
                other => Receipt::Other(other.mh_type()),
            },
        };
        Delivery::Tenant {
            name: tenant.name.clone(),
            receipt,
        }
    }
}
