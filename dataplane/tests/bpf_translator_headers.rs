//! The translator (translator.bpf.c, xlat_headers.h, xlat_checksum.h) on
//! what lies between the IP and the transport header, with
//! BPF_PROG_TEST_RUN: fragments both ways (RFC 7915 §4.1, §5.1.1), IPv4
//! options and IPv6 extension headers left out (§4.1, §5.1), IPv4 UDP
//! without a checksum given one (§4.5), other transport protocols carried
//! as they are (§4.5, §5.5). Each datagram's checksum is verified over the
//! fragments put back together, by this file's own arithmetic. Needs root
//! (CAP_BPF); skips loudly without it unless NEMO_REQUIRE_BPF is set.
//!
//! Not here: a datagram without a checksum longer than the translator
//! sums (9216 octets): BPF_PROG_TEST_RUN takes at most a page.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{Ipv4Addr, Ipv6Addr};

use nemo_dataplane::bpf::translator::{UdpZeroChecksum, XlatConfig, XlatCounter};

mod common;
use common::packets::*;

const TENANT4: &str = "192.0.2.10";
const TENANT6: &str = "2001:db8:100::10";
const PEER4: &str = "203.0.113.7";
const PEER6: &str = "2001:db8:64::cb00:7107";

/// A UDP datagram of `length` payload octets, its checksum for `pseudo`.
fn datagram(length: usize, pseudo: &[u8]) -> Vec<u8> {
    let payload: Vec<u8> = (0..length).map(|i| (i * 7 + 3) as u8).collect();
    with_checksum(udp_message(&payload), 6, pseudo)
}

fn pseudo4_udp(length: usize) -> Vec<u8> {
    pseudo4(v4(PEER4), v4(TENANT4), 17, length)
}

fn pseudo6_udp(source: &str, destination: &str, length: usize) -> Vec<u8> {
    pseudo6(v6(source), v6(destination), 17, length)
}

/// A Fragment header (RFC 8200 §4.5).
fn fragment_header(next: u8, offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let mut header = vec![next, 0];
    header.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    header.extend_from_slice(&id.to_be_bytes());
    header
}

fn ipv6_addresses(ip6: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    (
        Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[8..24]).unwrap()),
        Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[24..40]).unwrap()),
    )
}

fn ipv4_addresses(ip: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()),
        Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()),
    )
}

/// The translated IP packet of a frame the program redirected.
fn translated(translator: &nemo_dataplane::bpf::translator::Translator, frame: &[u8]) -> Vec<u8> {
    let (verdict, out) = translator.test_run(frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT, "translated");
    out[ETHERNET..].to_vec()
}

/// IPv4 fragments (RFC 7915 §4.1): each gets a Fragment header with the
/// offset and M flag copied and the Identification's 16 bits; the first
/// fragment's UDP checksum is adjusted for the IPv6 pseudo-header, and
/// verifies over the datagram put back together.
#[test]
fn ipv4_fragments_get_a_fragment_header_each() {
    let Some(translator) = translator() else {
        return;
    };
    let whole = datagram(40, &pseudo4_udp(48));
    // Offsets in 8-octet units: 24 octets (UDP header and 16), then 24.
    let first = frame4(v4(PEER4), v4(TENANT4), 17, 0x2000, &whole[..24]);
    let last = frame4(v4(PEER4), v4(TENANT4), 17, 3, &whole[24..]);
    let mut joined = Vec::new();
    for (frame, offset_units, more) in [(first, 0u16, true), (last, 3, false)] {
        let ip6 = translated(&translator, &frame);
        let fragment_length = frame.len() - ETHERNET - 20;
        assert_eq!(ip6.len(), 40 + 8 + fragment_length);
        assert_eq!(ip6[6], 44, "Next Header: Fragment");
        assert_eq!(
            u16::from_be_bytes([ip6[4], ip6[5]]) as usize,
            8 + fragment_length,
            "Payload Length counts the Fragment header"
        );
        assert_eq!(
            &ip6[40..48],
            &fragment_header(17, offset_units, more, 0xabcd)[..],
            "the Fragment header"
        );
        assert_eq!(ipv6_addresses(&ip6), (v6(PEER6), v6(TENANT6)), "addresses");
        joined.extend_from_slice(&ip6[48..]);
    }
    assert_eq!(joined.len(), whole.len());
    assert_eq!(&joined[8..], &whole[8..], "the payload unchanged");
    assert_eq!(
        checksum(&[&pseudo6_udp(PEER6, TENANT6, joined.len()), &joined]),
        0,
        "the datagram's checksum verifies once put back together"
    );
    assert_eq!(translator.counter(XlatCounter::Translated4to6), 2);
}

/// IPv6 fragments (RFC 7915 §5.1.1): the Fragment header's offset and M
/// flag become the IPv4 header's, its Identification's low 16 bits the
/// IPv4 one, DF clear; an atomic fragment (offset 0, M clear) becomes a
/// whole packet with its Identification.
#[test]
fn ipv6_fragments_become_ipv4_fragments() {
    let Some(translator) = translator() else {
        return;
    };
    let whole = datagram(40, &pseudo6_udp(TENANT6, PEER6, 48));
    let cases = [(&whole[..24], 0u16, true), (&whole[24..], 3, false)];
    let mut joined = Vec::new();
    for (part, offset_units, more) in cases {
        let mut message = fragment_header(17, offset_units, more, 0x1234_abcd);
        message.extend_from_slice(part);
        let ip = translated(&translator, &frame6(v6(TENANT6), v6(PEER6), 44, &message));
        assert_eq!(ip.len(), 20 + part.len(), "the Fragment header left out");
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        assert_eq!(&ip[4..6], &[0xab, 0xcd], "the Identification's low 16 bits");
        let flags = u16::from_be_bytes([ip[6], ip[7]]);
        assert_eq!(flags & 0x4000, 0, "DF clear");
        assert_eq!(flags & 0x2000 != 0, more, "MF from M");
        assert_eq!(flags & 0x1fff, offset_units, "the offset");
        assert_eq!(ip[9], 17, "the protocol: the Fragment header's Next Header");
        assert_eq!(checksum(&[&ip[..20]]), 0, "the header checksum");
        assert_eq!(ipv4_addresses(&ip), (v4(TENANT4), v4(PEER4)));
        joined.extend_from_slice(&ip[20..]);
    }
    assert_eq!(&joined[8..], &whole[8..]);
    assert_eq!(
        checksum(&[&pseudo4(v4(TENANT4), v4(PEER4), 17, joined.len()), &joined]),
        0,
        "the datagram's checksum verifies once put back together"
    );

    let small = datagram(8, &pseudo6_udp(TENANT6, PEER6, 16));
    let mut atomic = fragment_header(17, 0, false, 0x0002_0003);
    atomic.extend_from_slice(&small);
    let ip = translated(&translator, &frame6(v6(TENANT6), v6(PEER6), 44, &atomic));
    assert_eq!(&ip[4..8], &[0, 3, 0, 0], "its Identification; no flags");
    assert_eq!(
        checksum(&[&pseudo4(v4(TENANT4), v4(PEER4), 17, 16), &ip[20..]]),
        0
    );
    assert_eq!(translator.counter(XlatCounter::Translated6to4), 3);
}

/// IPv4 options are ignored (RFC 7915 §4.1): the packet is translated as
/// if it had none; an expired source route too.
#[test]
fn ipv4_options_are_left_out() {
    let Some(translator) = translator() else {
        return;
    };
    let message = datagram(13, &pseudo4_udp(21));
    let plain = translated(
        &translator,
        &frame4(v4(PEER4), v4(TENANT4), 17, 0x4000, &message),
    );
    for options in [
        // Record Route with room for one address, then End of List.
        &[7, 7, 4, 0, 0, 0, 0, 0][..],
        // No-Operations, and a loose source route whose pointer has
        // passed its end (expired: RFC 791 §3.1).
        &[1, 1, 1, 131, 7, 8, 192, 0, 2, 99, 0, 0][..],
    ] {
        let frame = frame4_with_options(v4(PEER4), v4(TENANT4), 17, 0x4000, options, &message);
        let ip6 = translated(&translator, &frame);
        assert_eq!(ip6, plain, "options {options:?}: as without them");
    }
    assert_eq!(
        checksum(&[&pseudo6_udp(PEER6, TENANT6, message.len()), &plain[40..]]),
        0
    );
}

/// IPv6 Hop-by-Hop, Destination Options and a Routing header with no
/// segments left are skipped (RFC 7915 §5.1): Total Length and Protocol
/// as if they were not there.
#[test]
fn ipv6_extension_headers_are_skipped() {
    let Some(translator) = translator() else {
        return;
    };
    let message = datagram(13, &pseudo6_udp(TENANT6, PEER6, 21));
    let plain = translated(&translator, &frame6(v6(TENANT6), v6(PEER6), 17, &message));
    // Hop-by-Hop (PadN), Destination Options 16 octets long, Routing
    // (type 4, segments left 0), then UDP.
    let mut headers = vec![60, 0, 1, 4, 0, 0, 0, 0];
    headers.extend_from_slice(&[43, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    headers.extend_from_slice(&[17, 0, 4, 0, 0, 0, 0, 0]);
    headers.extend_from_slice(&message);
    let ip = translated(&translator, &frame6(v6(TENANT6), v6(PEER6), 0, &headers));
    assert_eq!(ip.len(), 20 + message.len());
    assert_eq!(ip[9], 17);
    // The Identification (and so the header checksum) is random for a
    // packet that may be fragmented.
    assert_eq!(
        (&ip[..4], &ip[6..10], &ip[12..]),
        (&plain[..4], &plain[6..10], &plain[12..])
    );
    assert_eq!(checksum(&[&ip[..20]]), 0);
    assert_eq!(
        checksum(&[
            &pseudo4(v4(TENANT4), v4(PEER4), 17, message.len()),
            &ip[20..]
        ]),
        0
    );
}

/// IPv4 UDP without a checksum (RFC 7915 §4.5): given one by default,
/// over datagrams of several chunks and an odd length; dropped and
/// counted when configured so.
#[test]
fn udp_without_a_checksum_gets_one_unless_configured_to_drop() {
    let Some(translator) = translator() else {
        return;
    };
    for length in [0usize, 1, 3, 4, 503, 504, 505, 1017, 2901] {
        let payload: Vec<u8> = (0..length).map(|i| (i * 13 + 1) as u8).collect();
        let message = udp_message(&payload); // checksum 0
        let ip6 = translated(
            &translator,
            &frame4(v4(PEER4), v4(TENANT4), 17, 0, &message),
        );
        let udp = &ip6[40..];
        assert_ne!(&udp[6..8], &[0, 0], "{length}: a checksum now");
        assert_eq!(
            checksum(&[&pseudo6_udp(PEER6, TENANT6, udp.len()), udp]),
            0,
            "{length}: it verifies"
        );
        assert_eq!(&udp[8..], &payload[..], "{length}: the payload unchanged");
    }
    translator
        .configure(&XlatConfig {
            udp_zero_checksum: UdpZeroChecksum::Drop,
            ..XlatConfig::default()
        })
        .unwrap();
    let before = translator.counter(XlatCounter::UdpZeroChecksum);
    let frame = frame4(v4(PEER4), v4(TENANT4), 17, 0, &udp_message(b"x"));
    assert_eq!(translator.test_run(&frame).unwrap().0, TC_ACT_SHOT);
    assert_eq!(translator.counter(XlatCounter::UdpZeroChecksum), before + 1);
}

/// Other transport protocols are translated, their headers untouched
/// (RFC 7915 §4.5, §5.5: "translators MUST forward all transport
/// protocols"): SCTP here, whose checksum covers no pseudo-header.
#[test]
fn other_transport_protocols_are_carried_as_they_are() {
    let Some(translator) = translator() else {
        return;
    };
    let sctp: Vec<u8> = (0..28u8).collect();
    let ip6 = translated(
        &translator,
        &frame4(v4(PEER4), v4(TENANT4), 132, 0x4000, &sctp),
    );
    assert_eq!((ip6[6], &ip6[40..]), (132, &sctp[..]));
    let ip = translated(&translator, &frame6(v6(TENANT6), v6(PEER6), 132, &sctp));
    assert_eq!((ip[9], &ip[20..]), (132, &sctp[..]));
}
