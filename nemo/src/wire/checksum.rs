//! The Mobility Header checksum (RFC 6275 §6.1.1).
//!
//! The one's complement of the one's complement sum over the IPv6
//! pseudo-header (RFC 8200 §8.1, next header 135) and the whole Mobility
//! Header with its checksum field zero. Which addresses go into the
//! pseudo-header is the caller's choice, and RFC 6275 §6.1.1 makes it
//! matter: the home address replaces the source when a Home Address option
//! is present, and the final destination (the home address in a type 2
//! routing header) replaces the destination.

use std::net::Ipv6Addr;

use super::IPPROTO_MH;

/// Offset of the checksum field inside the Mobility Header.
const CHECKSUM_OFFSET: usize = super::mh::field::CHECKSUM.start;

fn sum_words(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for word in &mut chunks {
        acc += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The one's complement sum of the pseudo-header (RFC 8200 §8.1) for an
/// upper-layer payload of `length` octets.
fn pseudo_header_sum(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    next_header: u8,
    length: usize,
) -> u32 {
    let mut acc = sum_words(0, &source.octets());
    acc = sum_words(acc, &destination.octets());
    let length = u32::try_from(length).unwrap_or(u32::MAX);
    acc = sum_words(acc, &length.to_be_bytes());
    sum_words(acc, &[0, 0, 0, next_header])
}

/// The RFC 8200 §8.1 checksum of an upper-layer `payload` with protocol
/// `next_header`, computed as if its checksum field (two octets at
/// `checksum_offset`) were zero.
pub fn upper_layer_checksum(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    next_header: u8,
    payload: &[u8],
    checksum_offset: usize,
) -> u16 {
    let mut acc = pseudo_header_sum(source, destination, next_header, payload.len());
    if payload.len() >= checksum_offset + 2 {
        acc = sum_words(acc, &payload[..checksum_offset]);
        acc = sum_words(acc, &payload[checksum_offset + 2..]);
    } else {
        acc = sum_words(acc, payload);
    }
    !fold(acc)
}

/// True when the checksum an upper-layer `payload` carries is right for
/// these addresses (the sum over the pseudo-header and the payload, its
/// checksum included, is all ones).
pub fn verify_upper_layer_checksum(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    next_header: u8,
    payload: &[u8],
) -> bool {
    let acc = sum_words(
        pseudo_header_sum(source, destination, next_header, payload.len()),
        payload,
    );
    fold(acc) == 0xffff
}

/// The checksum of `mh` as it should be on the wire, computed as if the
/// checksum field were zero.
pub fn mh_checksum(source: Ipv6Addr, destination: Ipv6Addr, mh: &[u8]) -> u16 {
    upper_layer_checksum(source, destination, IPPROTO_MH, mh, CHECKSUM_OFFSET)
}

/// Writes the checksum into `mh` (which must be at least 6 octets; shorter
/// input is left alone).
pub fn set_mh_checksum(source: Ipv6Addr, destination: Ipv6Addr, mh: &mut [u8]) {
    if mh.len() < CHECKSUM_OFFSET + 2 {
        return;
    }
    let checksum = mh_checksum(source, destination, mh);
    mh[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// True when the checksum carried in `mh` is correct for these addresses.
pub fn verify_mh_checksum(source: Ipv6Addr, destination: Ipv6Addr, mh: &[u8]) -> bool {
    if mh.len() < CHECKSUM_OFFSET + 2 {
        return false;
    }
    verify_upper_layer_checksum(source, destination, IPPROTO_MH, mh)
}
