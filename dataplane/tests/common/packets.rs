//! Frames for the translator's BPF_PROG_TEST_RUN tests: Ethernet around
//! IPv4 and IPv6 packets, transport messages, RFC 1071 checksums summed
//! here, and the translator loaded with the tests' mappings.

use std::net::{Ipv4Addr, Ipv6Addr};

use nemo_dataplane::bpf::translator::{Mapping, Translator};
use nemo_testkit::require;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const ETHERNET: usize = 14;

/// The translator with the tests' mappings; `None` (a loud skip) when
/// this process may not load BPF programs.
pub fn translator() -> Option<Translator> {
    if !require(
        nemo_testkit::is_root(),
        "not root: loading BPF programs needs CAP_BPF",
        "NEMO_REQUIRE_BPF",
    ) {
        return None;
    }
    let translator = Translator::load(None).unwrap();
    // The tenant's VM 2001:db8:100::10 is 192.0.2.10; a block of four
    // beside it; its peers are seen in 2001:db8:64::/96.
    for (ipv4, ipv6) in [
        ("192.0.2.10/32", "2001:db8:100::10/128"),
        ("192.0.2.20/30", "2001:db8:100::20/126"),
    ] {
        translator
            .map(
                &Mapping::new(
                    ipv4.parse().unwrap(),
                    ipv6.parse().unwrap(),
                    "2001:db8:64::/96".parse().unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
    }
    // Another tenant's, in the well-known prefix.
    translator
        .map(
            &Mapping::new(
                "198.51.100.1/32".parse().unwrap(),
                "2001:db8:200::1/128".parse().unwrap(),
                "64:ff9b::/96".parse().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
    Some(translator)
}

/// The ones' complement sum of `data` (RFC 1071), not yet complemented.
pub fn sum(data: &[u8]) -> u32 {
    let mut total = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        total += u32::from(word);
    }
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total
}

pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut total = 0u32;
    for part in parts {
        total += sum(part);
    }
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    !(total as u16)
}

pub fn pseudo4(source: Ipv4Addr, destination: Ipv4Addr, protocol: u8, length: usize) -> Vec<u8> {
    let mut header = source.octets().to_vec();
    header.extend_from_slice(&destination.octets());
    header.extend_from_slice(&[0, protocol]);
    header.extend_from_slice(&(length as u16).to_be_bytes());
    header
}

pub fn pseudo6(source: Ipv6Addr, destination: Ipv6Addr, next: u8, length: usize) -> Vec<u8> {
    let mut header = source.octets().to_vec();
    header.extend_from_slice(&destination.octets());
    header.extend_from_slice(&(length as u32).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, next]);
    header
}

/// A transport message with its checksum (at `at`) filled for `pseudo`.
pub fn with_checksum(mut message: Vec<u8>, at: usize, pseudo: &[u8]) -> Vec<u8> {
    message[at..at + 2].copy_from_slice(&[0, 0]);
    let value = checksum(&[pseudo, &message]);
    message[at..at + 2].copy_from_slice(&value.to_be_bytes());
    message
}

pub fn udp_message(payload: &[u8]) -> Vec<u8> {
    let mut message = vec![0x30, 0x39, 0x00, 0x35];
    message.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    message.extend_from_slice(&[0, 0]);
    message.extend_from_slice(payload);
    message
}

pub fn tcp_message() -> Vec<u8> {
    // SYN from 40000 to 80, no options.
    let mut message = vec![0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02];
    message.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    message
}

pub fn echo_message(kind: u8) -> Vec<u8> {
    vec![kind, 0, 0, 0, 0x12, 0x34, 0, 1, b'n', b'e', b'm', b'o']
}

/// An Ethernet frame around an IPv4 packet.
pub fn frame4(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    flags: u16,
    message: &[u8],
) -> Vec<u8> {
    frame4_with_options(source, destination, protocol, flags, &[], message)
}

/// An Ethernet frame around an IPv4 packet with `options` (a multiple of
/// four octets) in its header; Identification 0xabcd, TTL 57.
pub fn frame4_with_options(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    flags: u16,
    options: &[u8],
    message: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let header_length = 20 + options.len();
    let mut header = vec![0x40 | (header_length / 4) as u8, 0xb8];
    header.extend_from_slice(&((header_length + message.len()) as u16).to_be_bytes());
    header.extend_from_slice(&[0xab, 0xcd]);
    header.extend_from_slice(&flags.to_be_bytes());
    header.extend_from_slice(&[57, protocol, 0, 0]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    header.extend_from_slice(options);
    let value = checksum(&[&header]);
    header[10..12].copy_from_slice(&value.to_be_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(message);
    frame
}

/// An Ethernet frame around an IPv6 packet.
pub fn frame6(source: Ipv6Addr, destination: Ipv6Addr, next: u8, message: &[u8]) -> Vec<u8> {
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    frame.extend_from_slice(&[0x6b, 0x80, 0, 0]);
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[next, 41]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(message);
    frame
}

pub fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

pub fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}
