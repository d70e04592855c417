//! The mobile router's side of the wire: building authenticated Binding
//! Updates and checking the Binding Acknowledgements that answer them.
//! Shared by `nemo-mr`, the tests and the load generator.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::auth::{self, AuthError, SecurityAssociation};
use crate::wire::{
    build_packet, parse_packet, BindingAck, BindingUpdate, BuFlags, DecodeError, EncodeError,
    HomeAddressOption, Lifetime, Message, MobileNetworkPrefix, MobilityHeader, MobilityOption,
    NtpTimestamp, PacketRepr, SequenceNumber, MN_ID_SUBTYPE_NAI,
};

/// What a mobile router asks its home agent for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The mobile router's home address.
    pub home_address: Ipv6Addr,
    /// The home agent's address.
    pub home_agent: Ipv6Addr,
    /// The care-of address to register (the packet's source).
    pub care_of: Ipv6Addr,
    /// Mobile Network Prefixes for explicit mode; empty for implicit mode.
    pub prefixes: Vec<Ipv6Net>,
    /// Requested lifetime; zero deregisters.
    pub lifetime: Lifetime,
    /// Sequence number.
    pub sequence: SequenceNumber,
    /// Replay protection timestamp (RFC 4285 §6).
    pub timestamp: NtpTimestamp,
    /// R flag: register as a mobile router.
    pub mobile_router: bool,
    /// Network Access Identifier (RFC 4283), sent when present.
    pub nai: Option<String>,
}

impl Registration {
    /// The Binding Update message: A and H set, R as asked, the prefixes,
    /// the identifier, the timestamp, and an unsigned authentication option
    /// last.
    pub fn message(&self, sa: &SecurityAssociation) -> Message {
        let mut options: Vec<MobilityOption> = self
            .prefixes
            .iter()
            .map(|net| MobilityOption::MobileNetworkPrefix(MobileNetworkPrefix::new(*net)))
            .collect();
        if let Some(nai) = &self.nai {
            // RFC 4283 §3.2: before any authentication option.
            options.push(MobilityOption::MobileNodeIdentifier {
                subtype: MN_ID_SUBTYPE_NAI,
                identifier: nai.as_bytes().to_vec(),
            });
        }
        options.push(MobilityOption::ReplayProtection(self.timestamp));
        options.push(sa.unsigned_option());
        Message::BindingUpdate(BindingUpdate {
            sequence: self.sequence,
            flags: BuFlags {
                mobile_router: self.mobile_router,
                ..BuFlags::mobile_router_home_registration()
            },
            lifetime: self.lifetime,
            options,
        })
    }

    /// The signed Mobility Header (checksum zero).
    pub fn mobility_header(&self, sa: &SecurityAssociation) -> Result<Vec<u8>, BuildError> {
        let mut mh = MobilityHeader::new(self.message(sa)).encode()?;
        auth::sign(&mut mh, self.care_of, self.home_address, sa)?;
        Ok(mh)
    }

    /// The whole IPv6 packet as RFC 6275 §11.7.1 sends it: from the care-of
    /// address, with a Home Address option, checksum filled in.
    pub fn packet(&self, sa: &SecurityAssociation) -> Result<Vec<u8>, BuildError> {
        let mh = self.mobility_header(sa)?;
        Ok(build_packet(
            &PacketRepr {
                source: self.care_of,
                destination: self.home_agent,
                hop_limit: 64,
                type2_routing: None,
                home_address_option: Some(HomeAddressOption {
                    home_address: self.home_address,
                }),
            },
            &mh,
        ))
    }
}

/// Why a Binding Update could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Signing failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Why a received packet is not an acceptable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// It does not parse.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The Mobility Header checksum is wrong.
    #[error("bad Mobility Header checksum")]
    Checksum,
    /// It is not a Binding Acknowledgement.
    #[error("not a Binding Acknowledgement: MH type {0}")]
    NotAck(u8),
    /// The routing header names another home address.
    #[error("type 2 routing header names {found}, expected {expected}")]
    WrongHomeAddress {
        /// Found.
        found: Ipv6Addr,
        /// Ours.
        expected: Ipv6Addr,
    },
    /// The authenticator does not verify (RFC 4285 §5.1.1).
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
}

/// Parses and checks a Binding Acknowledgement packet sent to `care_of`
/// for `home_address`: checksum, type 2 routing header, authenticator.
pub fn check_binding_ack(
    packet: &[u8],
    care_of: Ipv6Addr,
    home_address: Ipv6Addr,
    sa: &SecurityAssociation,
) -> Result<BindingAck, AckError> {
    let parsed = parse_packet(packet)?;
    if !parsed.checksum_ok() {
        return Err(AckError::Checksum);
    }
    if let Some(rh) = parsed.repr.type2_routing {
        if rh.home_address != home_address {
            return Err(AckError::WrongHomeAddress {
                found: rh.home_address,
                expected: home_address,
            });
        }
    }
    let header = MobilityHeader::decode(parsed.mh)?;
    let Message::BindingAck(ba) = header.message else {
        return Err(AckError::NotAck(header.message.mh_type().0));
    };
    auth::verify(parsed.mh, care_of, home_address, sa)?;
    Ok(ba)
}

/// One tenant instance of a mobile router: its registrar, and what the
/// driver keeps beside it (`T`: its data path, its counters).
#[derive(Debug)]
pub struct Tenant<T> {
    /// The instance's name, unique on this mobile router.
    pub name: String,
    /// Its registration with its home agent.
    pub registrar: crate::registration::Registrar,
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
                Message::BindingAck(_) => match tenant.registrar.handle_ack(packet, now, wall) {
                    Ok(()) => Receipt::Acknowledgement,
                    Err(error) => Receipt::IgnoredAcknowledgement(error),
                },
                other => Receipt::Other(other.mh_type()),
            },
        };
        Delivery::Tenant {
            name: tenant.name.clone(),
            receipt,
        }
    }
}
