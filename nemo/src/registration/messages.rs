//! The mobile router's side of the wire: building authenticated Binding
//! Updates and checking the Binding Acknowledgements that answer them.
//! Shared by the registrar, `nemo-mr`, the tests and the load generator.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::Ipv6Net;

use crate::auth::{self, authenticated_care_of, AuthError, SecurityAssociation};
use crate::wire::{
    build_packet, parse_packet, BindingAck, BindingUpdate, BuFlags, DecodeError, EncodeError,
    HomeAddressOption, Lifetime, Message, MobileNetworkPrefix, MobilityHeader, MobilityOption,
    NtpTimestamp, PacketRepr, ParsedPacket, SequenceNumber, MN_ID_SUBTYPE_NAI,
};

/// What a mobile router asks its home agent for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The mobile router's home address.
    pub home_address: Ipv6Addr,
    /// The home agent's address.
    pub home_agent: Ipv6Addr,
    /// The care-of address to register: an IPv6 one is the packet's
    /// source; an IPv4 one (Dual-Stack Mobile IPv6, RFC 5555) goes in an
    /// IPv4 Care-of Address option of a packet from the home address, which
    /// the driver sends in UDP over IPv4 to the home agent's IPv4 address.
    pub care_of: IpAddr,
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
    /// Whether to ask for UDP encapsulation with an IPv4 care-of address
    /// even without a NAT (the F flag).
    pub udp_over_ipv4: UdpOverIpv4,
}

/// When a mobile router at an IPv4 care-of address asks for UDP
/// encapsulation (RFC 5555 §3.1.3's F flag, §4.4.1: "situations where local
/// firewalling policies prevent the use of IP-in-IP encapsulation").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UdpOverIpv4 {
    /// When the home agent detects a NAT; IPv6 in IPv4 otherwise.
    #[default]
    WhenNeeded,
    /// Always (F set): for sites whose firewalls drop protocol 41. Never
    /// asked with an IPv6 care-of address (§3.1.3: SHOULD NOT).
    Always,
}

impl Registration {
    /// The Binding Update message: A and H set, R as asked, the prefixes,
    /// an IPv4 care-of address (RFC 5555 §3.1.2), the identifier, the
    /// timestamp, and an unsigned authentication option last.
    pub fn message(&self, sa: &SecurityAssociation) -> Message {
        let mut options: Vec<MobilityOption> = self
            .prefixes
            .iter()
            .map(|net| MobilityOption::MobileNetworkPrefix(MobileNetworkPrefix::new(*net)))
            .collect();
        if let IpAddr::V4(care_of) = self.care_of {
            options.push(MobilityOption::Ipv4CareOfAddress(care_of));
        }
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
                force_udp: self.care_of.is_ipv4() && self.udp_over_ipv4 == UdpOverIpv4::Always,
                ..BuFlags::mobile_router_home_registration()
            },
            lifetime: self.lifetime,
            options,
        })
    }

    /// The signed Mobility Header (checksum zero).
    pub fn mobility_header(&self, sa: &SecurityAssociation) -> Result<Vec<u8>, BuildError> {
        let mut mh = MobilityHeader::new(self.message(sa)).encode()?;
        auth::sign(
            &mut mh,
            authenticated_care_of(self.care_of),
            self.home_address,
            sa,
        )?;
        Ok(mh)
    }

    /// The whole IPv6 packet, checksum filled in: as RFC 6275 §11.7.1
    /// sends it, from the care-of address with a Home Address option; for
    /// an IPv4 care-of address as RFC 5555 §4.2 does, from the home address
    /// (the driver puts it in UDP over IPv4).
    pub fn packet(&self, sa: &SecurityAssociation) -> Result<Vec<u8>, BuildError> {
        let mh = self.mobility_header(sa)?;
        let (source, home_address_option) = match self.care_of {
            IpAddr::V6(care_of) => (
                care_of,
                Some(HomeAddressOption {
                    home_address: self.home_address,
                }),
            ),
            IpAddr::V4(_) => (self.home_address, None),
        };
        Ok(build_packet(
            &PacketRepr {
                source,
                destination: self.home_agent,
                hop_limit: 64,
                type2_routing: None,
                home_address_option,
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
    /// No care-of address: nothing was sent that it could answer.
    #[error("no care-of address: nothing in flight to answer")]
    NoCareOf,
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

/// A received packet parsed and its Mobility Header decoded, a bad
/// checksum refused before the decode (RFC 6275 §6.1.1): what
/// [`check_ack`] and `Registrar::handle_parsed_ack` take.
pub fn parse_answer(packet: &[u8]) -> Result<(ParsedPacket<'_>, Message), AckError> {
    let parsed = parse_packet(packet)?;
    if !parsed.checksum_ok() {
        return Err(AckError::Checksum);
    }
    let header = MobilityHeader::decode(parsed.mh)?;
    Ok((parsed, header.message))
}

/// Parses and checks a Binding Acknowledgement packet sent to `care_of`
/// for `home_address`: [`check_ack`] on [`parse_answer`]'s result.
pub fn check_binding_ack(
    packet: &[u8],
    care_of: impl Into<IpAddr>,
    home_address: Ipv6Addr,
    sa: &SecurityAssociation,
) -> Result<BindingAck, AckError> {
    let (parsed, message) = parse_answer(packet)?;
    check_ack(&parsed, message, care_of, home_address, sa)
}

/// The checks of a Binding Acknowledgement parsed and decoded once by the
/// caller: the Mobility Header checksum (RFC 6275 §6.1.1), the home
/// address of its type 2 routing header (§6.4, §11.7.3), its type, and its
/// authenticator over the care-of and home address (RFC 4285 §5.1.1).
pub fn check_ack(
    parsed: &ParsedPacket<'_>,
    message: Message,
    care_of: impl Into<IpAddr>,
    home_address: Ipv6Addr,
    sa: &SecurityAssociation,
) -> Result<BindingAck, AckError> {
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
    let Message::BindingAck(ba) = message else {
        return Err(AckError::NotAck(message.mh_type().0));
    };
    auth::verify(
        parsed.mh,
        authenticated_care_of(care_of.into()),
        home_address,
        sa,
    )?;
    Ok(ba)
}
