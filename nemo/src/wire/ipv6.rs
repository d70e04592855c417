//! IPv6 framing of the native transport (RFC 6275 §6.3, §6.4, §11.7.1,
//! §9.5.4): a Binding Update leaves the mobile router from its care-of
//! address with a Home Address destination option; the Binding
//! Acknowledgement comes back to the care-of address with a type 2 routing
//! header that carries the home address.
//!
//! The kernels this runs on drop such packets before a raw socket sees them
//! (see GUIDE.md), so the daemons read whole packets from a packet socket and
//! parse them here, and send them whole through a raw socket with the IPv6
//! header included.

use std::net::Ipv6Addr;

use pnet_packet::ip::IpNextHeaderProtocol;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};

use super::checksum::{set_mh_checksum, verify_mh_checksum};
use super::{addr_at, DecodeError};

/// Next header value of the Hop-by-Hop Options header.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// Next header value of the Routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// Next header value of "no next header".
pub const IPPROTO_NONE: u8 = 59;
/// Next header value of the Destination Options header.
pub const IPPROTO_DSTOPTS: u8 = 60;
/// Next header value of the Mobility Header (RFC 6275 §6.1).
pub const IPPROTO_MH: u8 = 135;

/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;
/// Option type of the Home Address option (RFC 6275 §6.3): 201.
const HOME_ADDRESS_OPTION_TYPE: u8 = 0xc9;
/// PadN, the padding option of an options header (RFC 8200 §4.2).
const PADN_OPTION_TYPE: u8 = 1;
/// Routing type of the Mobile IPv6 routing header (RFC 6275 §6.4).
const ROUTING_TYPE_2: u8 = 2;
/// Most extension headers walked before the Mobility Header; more is not a
/// packet anyone sends for mobility signalling.
const MAX_EXTENSION_HEADERS: usize = 8;

/// Where the fields of the extension headers built and read here lie, in
/// octets from each header's start (RFC 8200 §4.2, §4.4; RFC 6275 §6.3,
/// §6.4.1): the one place encode and parse take them from.
mod field {
    use std::ops::Range;

    /// Every extension header: Next Header, then Hdr Ext Len (8-octet
    /// units after the first 8).
    pub const NEXT_HEADER: usize = 0;
    /// See [`NEXT_HEADER`].
    pub const HDR_EXT_LEN: usize = 1;
    /// A routing header's Routing Type.
    pub const ROUTING_TYPE: usize = 2;
    /// A routing header's Segments Left.
    pub const SEGMENTS_LEFT: usize = 3;
    /// A Destination Options header's first option.
    pub const OPTIONS: usize = 2;
    /// In the Destination Options header built here: the PadN that puts
    /// the Home Address option at its 8n+6 alignment (type, length).
    pub const PADN: Range<usize> = 2..4;
    /// In the same: the Home Address option's type and length.
    pub const HOME_ADDRESS_OPTION: Range<usize> = 6..8;
    /// The home address, in both headers built here (and in a type 2
    /// routing header read).
    pub const HOME_ADDRESS: Range<usize> = 8..24;
}

/// A Destination Options header that carries only the Home Address option
/// (RFC 6275 §6.3), laid out with the option at its 8n+6 alignment:
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Next Header  | Hdr Ext Len=2 |  PadN (type 1, length 2, 0 0) |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |       0       |       0       | Option Type=201 | Length=16   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      Home Address (128 bits)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HomeAddressOption {
    /// The mobile node's home address.
    pub home_address: Ipv6Addr,
}

impl HomeAddressOption {
    /// Length of the header on the wire.
    pub const LEN: usize = 24;

    /// The header bytes, followed by `next_header`.
    pub fn encode(&self, next_header: u8) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[field::NEXT_HEADER] = next_header;
        out[field::HDR_EXT_LEN] = (Self::LEN / 8 - 1) as u8;
        out[field::PADN].copy_from_slice(&[PADN_OPTION_TYPE, 2]);
        out[field::HOME_ADDRESS_OPTION].copy_from_slice(&[HOME_ADDRESS_OPTION_TYPE, 16]);
        out[field::HOME_ADDRESS].copy_from_slice(&self.home_address.octets());
        out
    }
}

/// The type 2 routing header (RFC 6275 §6.4.1).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Next Header  | Hdr Ext Len=2 | Routing Type=2|Segments Left=1|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                            Reserved                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      Home Address (128 bits)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Type2RoutingHeader {
    /// The home address of the destination mobile node.
    pub home_address: Ipv6Addr,
}

impl Type2RoutingHeader {
    /// Length of the header on the wire.
    pub const LEN: usize = 24;

    /// The header bytes, followed by `next_header`.
    pub fn encode(&self, next_header: u8) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[field::NEXT_HEADER] = next_header;
        out[field::HDR_EXT_LEN] = (Self::LEN / 8 - 1) as u8;
        out[field::ROUTING_TYPE] = ROUTING_TYPE_2;
        out[field::SEGMENTS_LEFT] = 1;
        out[field::HOME_ADDRESS].copy_from_slice(&self.home_address.octets());
        out
    }
}

/// The IPv6 packet around a Mobility Header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRepr {
    /// Source address (the care-of address for a Binding Update).
    pub source: Ipv6Addr,
    /// Destination address (the care-of address for a Binding Ack).
    pub destination: Ipv6Addr,
    /// Hop limit.
    pub hop_limit: u8,
    /// A type 2 routing header with this home address (Binding Ack).
    pub type2_routing: Option<Type2RoutingHeader>,
    /// A Home Address destination option (Binding Update).
    pub home_address_option: Option<HomeAddressOption>,
}

impl PacketRepr {
    /// The addresses of the checksum pseudo-header: the home address in a
    /// Home Address option stands for the source, and the home address in a
    /// type 2 routing header, the final destination, for the destination
    /// (RFC 6275 §6.1.1, RFC 8200 §8.1).
    pub fn checksum_addresses(&self) -> (Ipv6Addr, Ipv6Addr) {
        (
            self.home_address_option
                .map_or(self.source, |hao| hao.home_address),
            self.type2_routing
                .map_or(self.destination, |rh| rh.home_address),
        )
    }
}

/// Builds the whole packet around an encoded Mobility Header `mh` and fills
/// in its checksum. Headers are ordered as RFC 8200 §4.1 and RFC 6275 §6.3
/// want: routing header, then destination options, then the Mobility Header.
pub fn build_packet(repr: &PacketRepr, mh: &[u8]) -> Vec<u8> {
    let mut extension = Vec::with_capacity(48);
    let mh_next = IPPROTO_MH;
    let after_routing = if let Some(hao) = repr.home_address_option {
        extension.extend_from_slice(&hao.encode(mh_next));
        IPPROTO_DSTOPTS
    } else {
        mh_next
    };
    let first = if let Some(rh) = repr.type2_routing {
        let mut with_rh = rh.encode(after_routing).to_vec();
        with_rh.extend_from_slice(&extension);
        extension = with_rh;
        IPPROTO_ROUTING
    } else {
        after_routing
    };
    let payload_len = extension.len() + mh.len();
    let mut packet = vec![0u8; IPV6_HEADER_LEN + payload_len];
    // The buffer is 40 octets or more, so the view always exists.
    if let Some(mut ip) = MutableIpv6Packet::new(&mut packet) {
        ip.set_version(6);
        // Payload is at most 48 + 2048 octets, well within u16.
        ip.set_payload_length(payload_len as u16);
        ip.set_next_header(IpNextHeaderProtocol(first));
        ip.set_hop_limit(repr.hop_limit);
        ip.set_source(repr.source);
        ip.set_destination(repr.destination);
    }
    packet[IPV6_HEADER_LEN..IPV6_HEADER_LEN + extension.len()].copy_from_slice(&extension);
    let mh_start = IPV6_HEADER_LEN + extension.len();
    packet[mh_start..].copy_from_slice(mh);
    let (source, destination) = repr.checksum_addresses();
    set_mh_checksum(source, destination, &mut packet[mh_start..]);
    packet
}

/// A parsed IPv6 packet carrying a Mobility Header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedPacket<'a> {
    /// The packet as framed: addresses, hop limit, and the mobility
    /// extension headers found.
    pub repr: PacketRepr,
    /// Segments Left of the type 2 routing header, when there is one.
    pub type2_segments_left: Option<u8>,
    /// The Mobility Header bytes, to decode with
    /// [`super::MobilityHeader::decode`].
    pub mh: &'a [u8],
}

impl ParsedPacket<'_> {
    /// True when the Mobility Header checksum is right for the addresses RFC
    /// 6275 §6.1.1 puts in the pseudo-header.
    pub fn checksum_ok(&self) -> bool {
        let (source, destination) = self.repr.checksum_addresses();
        verify_mh_checksum(source, destination, self.mh)
    }
}

fn truncated(what: &'static str, needed: usize, available: usize) -> DecodeError {
    DecodeError::Truncated {
        what,
        needed,
        available,
    }
}

/// Ethernet's minimum payload: shorter packets arrive padded to it.
const MIN_ETHERNET_PAYLOAD: usize = 46;

/// Parses an IPv6 packet (as a packet socket delivers it, without the link
/// header) down to its Mobility Header, through Hop-by-Hop Options,
/// Destination Options and Routing headers.
pub fn parse_packet(bytes: &[u8]) -> Result<ParsedPacket<'_>, DecodeError> {
    let ip =
        Ipv6Packet::new(bytes).ok_or(truncated("IPv6 header", IPV6_HEADER_LEN, bytes.len()))?;
    if ip.get_version() != 6 {
        return Err(DecodeError::NotMobility("not IPv6"));
    }
    // The Payload Length is the packet's end (RFC 8200 §3). A frame may
    // carry link padding up to Ethernet's minimum payload, but only a
    // packet shorter than that is padded, and no Mobility Header packet is:
    // anything else after the end is an appended tail, not ours to ignore.
    let end = IPV6_HEADER_LEN + usize::from(ip.get_payload_length());
    if end > bytes.len() {
        return Err(truncated("IPv6 payload", end, bytes.len()));
    }
    if bytes.len() > end.max(MIN_ETHERNET_PAYLOAD) {
        return Err(DecodeError::TrailingBytes {
            declared: end,
            extra: bytes.len() - end,
        });
    }
    let mut repr = PacketRepr {
        source: ip.get_source(),
        destination: ip.get_destination(),
        hop_limit: ip.get_hop_limit(),
        type2_routing: None,
        home_address_option: None,
    };
    let mut type2_segments_left = None;
    let mut next = ip.get_next_header().0;
    let mut offset = IPV6_HEADER_LEN;
    for index in 0..=MAX_EXTENSION_HEADERS {
        if next == IPPROTO_MH {
            return Ok(ParsedPacket {
                repr,
                type2_segments_left,
                mh: &bytes[offset..end],
            });
        }
        if index == MAX_EXTENSION_HEADERS {
            break;
        }
        if !matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS) {
            return Err(DecodeError::NotMobility(
                "next header is not an extension header or MH",
            ));
        }
        // RFC 8200 §4.3: Hop-by-Hop Options only right after the IPv6 header.
        if next == IPPROTO_HOPOPTS && index != 0 {
            return Err(DecodeError::BadExtensionHeader {
                header: "Hop-by-Hop Options header",
                reason: "not first",
            });
        }
        if offset + 2 > end {
            return Err(truncated("extension header", offset + 2, end));
        }
        let header_len = (usize::from(bytes[offset + field::HDR_EXT_LEN]) + 1) * 8;
        if offset + header_len > end {
            return Err(truncated("extension header", offset + header_len, end));
        }
        let header = &bytes[offset..offset + header_len];
        match next {
            IPPROTO_ROUTING => {
                if let Some(home_address) = parse_routing(header, &mut type2_segments_left)? {
                    if repr.type2_routing.is_some() {
                        return Err(DecodeError::BadExtensionHeader {
                            header: "type 2 routing header",
                            reason: "present twice",
                        });
                    }
                    repr.type2_routing = Some(Type2RoutingHeader { home_address });
                }
            }
            IPPROTO_DSTOPTS => {
                if let Some(home_address) = parse_destination_options(header)? {
                    if repr.home_address_option.is_some() {
                        return Err(DecodeError::BadExtensionHeader {
                            header: "Home Address option",
                            reason: "present twice",
                        });
                    }
                    repr.home_address_option = Some(HomeAddressOption { home_address });
                }
            }
            // Hop-by-Hop: its options (router alert, jumbo, ...) are not
            // for us.
            _ => {}
        }
        next = header[field::NEXT_HEADER];
        offset += header_len;
    }
    Err(DecodeError::NotMobility("too many extension headers"))
}

/// A routing header: the home address of a type 2 header; `None` for another
/// type with Segments Left 0, which RFC 8200 §4.4 says to ignore.
fn parse_routing(
    header: &[u8],
    segments_left: &mut Option<u8>,
) -> Result<Option<Ipv6Addr>, DecodeError> {
    let routing_type = header[field::ROUTING_TYPE];
    let left = header[field::SEGMENTS_LEFT];
    if routing_type != ROUTING_TYPE_2 {
        if left == 0 {
            return Ok(None);
        }
        return Err(DecodeError::BadExtensionHeader {
            header: "routing header",
            reason: "unsupported routing type with segments left",
        });
    }
    // RFC 6275 §6.4.1: Hdr Ext Len MUST be 2 and Segments Left MUST be 1
    // when sent; a kernel that processed the header leaves 0.
    if header.len() != Type2RoutingHeader::LEN {
        return Err(DecodeError::BadExtensionHeader {
            header: "type 2 routing header",
            reason: "Hdr Ext Len is not 2",
        });
    }
    if left > 1 {
        return Err(DecodeError::BadExtensionHeader {
            header: "type 2 routing header",
            reason: "Segments Left above 1",
        });
    }
    *segments_left = Some(left);
    Ok(Some(addr_at(header, field::HOME_ADDRESS.start)))
}

/// The options of a Destination Options header (RFC 8200 §4.2): the home
/// address of a Home Address option if there is one.
fn parse_destination_options(header: &[u8]) -> Result<Option<Ipv6Addr>, DecodeError> {
    let mut home_address = None;
    let mut offset = field::OPTIONS;
    while offset < header.len() {
        let option_type = header[offset];
        if option_type == 0 {
            offset += 1; // Pad1
            continue;
        }
        let Some(&len) = header.get(offset + 1) else {
            return Err(DecodeError::BadExtensionHeader {
                header: "Destination Options header",
                reason: "option runs past the header",
            });
        };
        let data_end = offset + 2 + usize::from(len);
        if data_end > header.len() {
            return Err(DecodeError::BadExtensionHeader {
                header: "Destination Options header",
                reason: "option runs past the header",
            });
        }
        match option_type {
            PADN_OPTION_TYPE => {}
            HOME_ADDRESS_OPTION_TYPE => {
                // RFC 6275 §6.3: Option Length MUST be 16, at most once.
                if len != 16 {
                    return Err(DecodeError::BadExtensionHeader {
                        header: "Home Address option",
                        reason: "Option Length is not 16",
                    });
                }
                if home_address.is_some() {
                    return Err(DecodeError::BadExtensionHeader {
                        header: "Home Address option",
                        reason: "present twice",
                    });
                }
                home_address = Some(addr_at(header, offset + 2));
            }
            // RFC 8200 §4.2: the two high bits say what to do with an unknown
            // option; 00 is "skip it", anything else discards the packet.
            unknown if unknown & 0xc0 == 0 => {}
            _ => {
                return Err(DecodeError::BadExtensionHeader {
                    header: "Destination Options header",
                    reason: "unknown option that must not be skipped",
                });
            }
        }
        offset = data_end;
    }
    Ok(home_address)
}
