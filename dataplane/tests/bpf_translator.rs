//! The translator (translator.bpf.c) run on crafted frames with
//! BPF_PROG_TEST_RUN: each translation checked field by field and its
//! checksums verified by this file's own arithmetic (RFC 1071), each drop
//! counted by its reason. Needs root (CAP_BPF); skips loudly without it
//! unless NEMO_REQUIRE_BPF is set (deploy/test.sh sets it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{Ipv4Addr, Ipv6Addr};

use nemo_dataplane::bpf::translator::{Mapping, XlatConfig, XlatCounter};

mod common;
use common::packets::*;

/// IPv4 -> IPv6: addresses by the mapping and the prefix, TOS to traffic
/// class, TTL to hop limit (one given back: the kernel decrements twice),
/// flow label 0, and every checksum right for the new pseudo-header.
#[test]
fn ipv4_to_a_tenant_becomes_ipv6_with_its_checksums_right() {
    let Some(translator) = translator() else {
        return;
    };
    let peer = v4("203.0.113.7");
    let cases: [(u8, Vec<u8>, usize, u8); 3] = [
        (17, udp_message(b"hello, tenant"), 6, 17),
        (6, tcp_message(), 16, 6),
        (1, echo_message(8), 2, 58),
    ];
    for (protocol, message, at, next) in cases {
        let message = if protocol == 1 {
            with_checksum(message, at, &[])
        } else {
            let length = message.len();
            with_checksum(
                message,
                at,
                &pseudo4(peer, v4("192.0.2.10"), protocol, length),
            )
        };
        let frame = frame4(peer, v4("192.0.2.10"), protocol, 0x4000, &message);
        let (verdict, out) = translator.test_run(&frame).unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT, "protocol {protocol}");
        assert_eq!(&out[12..14], &[0x86, 0xdd], "ethertype");
        let ip6 = &out[ETHERNET..];
        assert_eq!(ip6.len(), 40 + message.len());
        // Version 6, traffic class 0xb8 (the TOS), flow label 0.
        assert_eq!(&ip6[..4], &[0x6b, 0x80, 0, 0]);
        assert_eq!(u16::from_be_bytes([ip6[4], ip6[5]]) as usize, message.len());
        // One more than it came with: the kernel, which forwards it twice
        // (into the device and out again), takes two.
        assert_eq!((ip6[6], ip6[7]), (next, 58));
        let source = Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[8..24]).unwrap());
        let destination = Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[24..40]).unwrap());
        assert_eq!(source, v6("2001:db8:64::cb00:7107"));
        assert_eq!(destination, v6("2001:db8:100::10"));
        let translated = &ip6[40..];
        assert_eq!(
            checksum(&[
                &pseudo6(source, destination, next, translated.len()),
                translated
            ]),
            0,
            "protocol {protocol}: the checksum must verify"
        );
        if protocol == 1 {
            assert_eq!(translated[0], 128, "Echo -> Echo Request");
        } else {
            assert_eq!(&translated[..at], &message[..at], "ports unchanged");
        }
    }
    assert_eq!(translator.counter(XlatCounter::Translated4to6), 3);
}

/// IPv6 -> IPv4: the tenant's address to its IPv4 one, the peer out of the
/// prefix, DF only above 1260 octets (RFC 7915 §5.1), a valid header
/// checksum, transport checksums right without the pseudo-header's IPv6
/// addresses (ICMP: without any pseudo-header).
#[test]
fn ipv6_from_a_tenant_becomes_ipv4_with_its_checksums_right() {
    let Some(translator) = translator() else {
        return;
    };
    // A block maps bit for bit: 2001:db8:100::22 is 192.0.2.22.
    let tenant = v6("2001:db8:100::22");
    let peer = v6("2001:db8:64::cb00:7107");
    for (next, message, at, protocol) in [
        (17u8, udp_message(b"hello, peer"), 6usize, 17u8),
        (6, tcp_message(), 16, 6),
        (58, echo_message(129), 2, 1),
        (17, udp_message(&[7u8; 1300]), 6, 17),
    ] {
        let message = with_checksum(
            message.clone(),
            at,
            &pseudo6(tenant, peer, next, message.len()),
        );
        let frame = frame6(tenant, peer, next, &message);
        let (verdict, out) = translator.test_run(&frame).unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT, "next header {next}");
        assert_eq!(&out[12..14], &[0x08, 0x00], "ethertype");
        let ip = &out[ETHERNET..ETHERNET + 20];
        let translated = &out[ETHERNET + 20..];
        assert_eq!(translated.len(), message.len());
        assert_eq!((ip[0], ip[1]), (0x45, 0xb8), "version, IHL, TOS");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            20 + message.len()
        );
        let flags = u16::from_be_bytes([ip[6], ip[7]]);
        if 20 + message.len() > 1260 {
            assert_eq!(flags, 0x4000, "DF above 1260");
        } else {
            assert_eq!(flags, 0, "no DF at or below 1260");
        }
        assert_eq!(
            (ip[8], ip[9]),
            (42, protocol),
            "TTL (one given back) and protocol"
        );
        assert_eq!(checksum(&[ip]), 0, "header checksum");
        let source = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap());
        let destination = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap());
        assert_eq!((source, destination), (v4("192.0.2.22"), v4("203.0.113.7")));
        let pseudo = if protocol == 1 {
            Vec::new()
        } else {
            pseudo4(source, destination, protocol, translated.len())
        };
        assert_eq!(checksum(&[&pseudo, translated]), 0, "next header {next}");
        if protocol == 1 {
            assert_eq!(translated[0], 0, "Echo Reply");
        }
    }
    assert_eq!(translator.counter(XlatCounter::Translated6to4), 4);
}

/// What is not translated is dropped and counted by its reason.
#[test]
fn what_cannot_be_translated_is_dropped_by_reason() {
    let Some(translator) = translator() else {
        return;
    };
    for (what, frame, reason) in untranslatable() {
        let before = translator.counter(reason);
        let (verdict, _) = translator.test_run(&frame).unwrap();
        assert_eq!(verdict, TC_ACT_SHOT, "{what}");
        assert_eq!(
            translator.counter(reason),
            before + 1,
            "{what}: counted as {reason:?}"
        );
    }
    assert_eq!(translator.counter(XlatCounter::Translated4to6), 0);
    assert_eq!(translator.counter(XlatCounter::Translated6to4), 0);
}

/// Where packets arrive, what the device would drop goes on untouched and
/// uncounted (the device drops and counts it once it is routed there), and
/// so does what the kernel does not route to the device: here, a packet
/// to a mapping while the program is attached to no device.
#[test]
fn at_arrival_what_is_not_translated_goes_on_untouched() {
    let Some(translator) = translator() else {
        return;
    };
    let message = udp_message(b"x");
    let message = with_checksum(
        message.clone(),
        6,
        &pseudo4(v4("203.0.113.7"), v4("192.0.2.10"), 17, message.len()),
    );
    let routed_nowhere = frame4(v4("203.0.113.7"), v4("192.0.2.10"), 17, 0, &message);
    let mut frames = untranslatable();
    frames.push((
        "to a mapping, not routed to the device",
        routed_nowhere,
        XlatCounter::Unmapped,
    ));
    for (what, frame, _) in frames {
        let (verdict, out) = translator.test_run_at_arrival(&frame).unwrap();
        assert_eq!(verdict, TC_ACT_OK, "{what}");
        assert_eq!(out, frame, "{what}: untouched");
    }
    for counter in XlatCounter::ALL {
        assert_eq!(translator.counter(counter), 0, "{counter:?}");
    }
}

/// Frames the translator does not translate, and the reason it counts.
fn untranslatable() -> Vec<(&'static str, Vec<u8>, XlatCounter)> {
    let peer4 = v4("203.0.113.7");
    let udp4 = |source: Ipv4Addr, destination: Ipv4Addr, flags: u16| {
        let message = udp_message(b"x");
        let message = with_checksum(
            message.clone(),
            6,
            &pseudo4(source, destination, 17, message.len()),
        );
        frame4(source, destination, 17, flags, &message)
    };
    let udp6 = |source: Ipv6Addr, destination: Ipv6Addr| {
        let message = udp_message(b"x");
        let message = with_checksum(
            message.clone(),
            6,
            &pseudo6(source, destination, 17, message.len()),
        );
        frame6(source, destination, 17, &message)
    };
    // udp_message leaves the checksum zero; 0x2000: More Fragments.
    let first_fragment_without_checksum =
        frame4(peer4, v4("192.0.2.10"), 17, 0x2000, &udp_message(b"x"));
    let tenant = v6("2001:db8:100::10");
    let peer6 = v6("2001:db8:64::cb00:7107");
    // Six Destination Options headers (PadN each) before a seventh.
    let mut seven_destination_options = [60, 0, 1, 4, 0, 0, 0, 0].repeat(6);
    seven_destination_options.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    let udp_after = |headers: &[u8]| {
        let mut message = headers.to_vec();
        message.extend_from_slice(&udp_message(b"x"));
        message
    };
    let cases: Vec<(&str, Vec<u8>, XlatCounter)> = vec![
        (
            "to no mapping",
            udp4(peer4, v4("192.0.2.11"), 0),
            XlatCounter::Unmapped,
        ),
        (
            "a non-global peer in the well-known prefix",
            udp4(v4("192.168.1.1"), v4("198.51.100.1"), 0),
            XlatCounter::NotGlobal,
        ),
        (
            "from loopback",
            udp4(v4("127.0.0.1"), v4("192.0.2.10"), 0),
            XlatCounter::IllegalAddress,
        ),
        (
            "an ICMP fragment (its ICMPv6 checksum needs the whole length)",
            frame4(
                peer4,
                v4("192.0.2.10"),
                1,
                0x2000,
                &with_checksum(echo_message(8), 2, &[]),
            ),
            XlatCounter::Fragment,
        ),
        (
            "UDP without a checksum in a first fragment (RFC 7915 §4.5)",
            first_fragment_without_checksum,
            XlatCounter::UdpZeroChecksum,
        ),
        (
            "an unexpired loose source route (RFC 7915 §4.1)",
            frame4_with_options(
                peer4,
                v4("192.0.2.10"),
                17,
                0,
                &[131, 7, 4, 192, 0, 2, 99, 0],
                &udp_message(b"x"),
            ),
            XlatCounter::SourceRoute,
        ),
        (
            "an option shorter than its own header",
            frame4_with_options(
                peer4,
                v4("192.0.2.10"),
                17,
                0,
                &[7, 1, 0, 0],
                &udp_message(b"x"),
            ),
            XlatCounter::Malformed,
        ),
        (
            "a Timestamp (RFC 7915 §4.2: obsoleted in ICMPv6, silently dropped)",
            frame4(
                peer4,
                v4("192.0.2.10"),
                1,
                0,
                &with_checksum(echo_message(13), 2, &[]),
            ),
            XlatCounter::IcmpUntranslated,
        ),
        (
            "an ICMP error quoting less than a header",
            frame4(
                peer4,
                v4("192.0.2.10"),
                1,
                0,
                &with_checksum(echo_message(3), 2, &[]),
            ),
            XlatCounter::Malformed,
        ),
        (
            "from no mapping",
            udp6(v6("2001:db8:100::11"), v6("2001:db8:64::cb00:7107")),
            XlatCounter::Unmapped,
        ),
        (
            "to another prefix than the mapping's",
            udp6(v6("2001:db8:100::10"), v6("64:ff9b::cb00:7107")),
            XlatCounter::OtherPrefix,
        ),
        (
            "to a multicast IPv4 peer",
            udp6(v6("2001:db8:100::10"), v6("2001:db8:64::e000:1")),
            XlatCounter::IllegalAddress,
        ),
        (
            "a Fragment header before a Destination Options header (RFC 7915 §5.1.1)",
            frame6(
                tenant,
                peer6,
                44,
                &udp_after(&[60, 0, 0, 1, 0, 0, 0, 1, 17, 0, 1, 4, 0, 0, 0, 0]),
            ),
            XlatCounter::Fragment,
        ),
        (
            "an ICMPv6 fragment",
            frame6(
                tenant,
                peer6,
                44,
                &[&[58, 0, 0, 1, 0, 0, 0, 1][..], &echo_message(128)].concat(),
            ),
            XlatCounter::Fragment,
        ),
        (
            "a Routing header with segments left (RFC 7915 §5.1)",
            frame6(tenant, peer6, 43, &udp_after(&[17, 0, 4, 2, 0, 0, 0, 0])),
            XlatCounter::SourceRoute,
        ),
        (
            "a Fragment header before another",
            frame6(
                tenant,
                peer6,
                44,
                &udp_after(&[44, 0, 0, 1, 0, 0, 0, 1, 17, 0, 0, 0, 0, 0, 0, 2]),
            ),
            XlatCounter::Fragment,
        ),
        (
            "a Destination Options header longer than the packet",
            frame6(tenant, peer6, 60, &udp_after(&[17, 8, 1, 4, 0, 0, 0, 0])),
            XlatCounter::Malformed,
        ),
        (
            "more extension headers than are walked",
            frame6(tenant, peer6, 60, &udp_after(&seven_destination_options)),
            XlatCounter::Malformed,
        ),
        (
            "a truncated TCP header",
            frame6(
                v6("2001:db8:100::10"),
                v6("2001:db8:64::cb00:7107"),
                6,
                &[0; 8],
            ),
            XlatCounter::Malformed,
        ),
    ];
    cases
}

/// Mappings read back as written; an unmapped one is translated no more.
#[test]
fn a_mapping_removed_is_translated_no_more() {
    let Some(translator) = translator() else {
        return;
    };
    assert_eq!(translator.mappings().len(), 3);
    let mapping = Mapping::new(
        "192.0.2.10/32".parse().unwrap(),
        "2001:db8:100::10/128".parse().unwrap(),
        "2001:db8:64::/96".parse().unwrap(),
    )
    .unwrap();
    assert!(translator.mappings().contains(&mapping));
    translator.unmap(&mapping).unwrap();
    let message = udp_message(b"x");
    let peer = v4("203.0.113.7");
    let message = with_checksum(
        message.clone(),
        6,
        &pseudo4(peer, v4("192.0.2.10"), 17, message.len()),
    );
    let (verdict, _) = translator
        .test_run(&frame4(peer, v4("192.0.2.10"), 17, 0, &message))
        .unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(translator.counter(XlatCounter::Unmapped), 1);
    // Unmapping again is nothing.
    translator.unmap(&mapping).unwrap();
    assert_eq!(translator.mappings().len(), 2);
}

/// The IPv4 header of a packet in error (checksum filled in).
fn inner4(source: Ipv4Addr, destination: Ipv4Addr, protocol: u8, total: usize) -> Vec<u8> {
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&(total as u16).to_be_bytes());
    header.extend_from_slice(&[0, 7, 0x40, 0, 9, protocol, 0, 0]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    let value = checksum(&[&header]);
    header[10..12].copy_from_slice(&value.to_be_bytes());
    header
}

/// The IPv6 header of a packet in error.
fn inner6(source: Ipv6Addr, destination: Ipv6Addr, next: u8, payload: usize) -> Vec<u8> {
    let mut header = vec![0x60, 0, 0, 0];
    header.extend_from_slice(&(payload as u16).to_be_bytes());
    header.extend_from_slice(&[next, 9]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    header
}

/// ICMPv4 errors to a tenant (RFC 7915 §4.2, §4.3): type and code
/// translated (Fragmentation Needed into Packet Too Big with 20 more), the
/// packet in error inside translated too (the tenant's source back to its
/// IPv6 address, the peer into the prefix, its TTL kept), the router's
/// source into the prefix, the ICMPv6 checksum right.
#[test]
fn icmpv4_errors_become_icmpv6_errors_with_the_packet_in_error_translated() {
    let Some(translator) = translator() else {
        return;
    };
    let router = v4("203.0.113.9");
    let tenant = v4("192.0.2.10");
    let peer = v4("203.0.113.7");
    // The tenant's UDP datagram, as far as an ICMPv4 error quotes it.
    // Odd: the message's last octet is summed with a zero beside it.
    let quoted_udp = udp_message(b"quoted!");
    for (kind, code, rest, want_type, want_code, want_rest) in [
        (3u8, 3u8, [0u8; 4], 1u8, 4u8, [0u8; 4]),
        (3, 4, [0, 0, 0x05, 0x78], 2, 0, 1420u32.to_be_bytes()),
        (3, 4, [0; 4], 2, 0, 1280u32.to_be_bytes()),
        (3, 2, [0; 4], 4, 1, 6u32.to_be_bytes()),
        (11, 0, [0; 4], 3, 0, [0; 4]),
        (12, 0, [9, 0, 0, 0], 4, 0, 6u32.to_be_bytes()),
    ] {
        let mut message = vec![kind, code, 0, 0];
        message.extend_from_slice(&rest);
        message.extend_from_slice(&inner4(tenant, peer, 17, 20 + quoted_udp.len()));
        message.extend_from_slice(&quoted_udp);
        let message = with_checksum(message, 2, &[]);
        let (verdict, out) = translator
            .test_run(&frame4(router, tenant, 1, 0, &message))
            .unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT, "type {kind} code {code}");
        let ip6 = &out[ETHERNET..];
        let icmp = &ip6[40..];
        assert_eq!(
            icmp.len(),
            message.len() + 20,
            "the packet in error grew by 20"
        );
        assert_eq!(u16::from_be_bytes([ip6[4], ip6[5]]) as usize, icmp.len());
        let source = Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[8..24]).unwrap());
        let destination = Ipv6Addr::from(<[u8; 16]>::try_from(&ip6[24..40]).unwrap());
        assert_eq!(
            source,
            v6("2001:db8:64::cb00:7109"),
            "the router in the prefix"
        );
        assert_eq!(destination, v6("2001:db8:100::10"));
        assert_eq!(
            (icmp[0], icmp[1]),
            (want_type, want_code),
            "type {kind} code {code}"
        );
        assert_eq!(&icmp[4..8], &want_rest, "type {kind} code {code}");
        assert_eq!(
            checksum(&[&pseudo6(source, destination, 58, icmp.len()), icmp]),
            0,
            "type {kind} code {code}: the ICMPv6 checksum"
        );
        let quoted = &icmp[8..48];
        assert_eq!(quoted[0] >> 4, 6);
        assert_eq!(
            u16::from_be_bytes([quoted[4], quoted[5]]) as usize,
            quoted_udp.len()
        );
        assert_eq!(
            (quoted[6], quoted[7]),
            (17, 9),
            "next header, hop limit kept"
        );
        assert_eq!(&quoted[8..24], &v6("2001:db8:100::10").octets());
        assert_eq!(&quoted[24..40], &v6("2001:db8:64::cb00:7107").octets());
        assert_eq!(&icmp[48..], &quoted_udp[..], "the rest as it was");
    }
    // RFC 7915 §4.2: Source Quench, Redirect, Host Precedence Violation
    // are silently dropped.
    for (kind, code) in [(4u8, 0u8), (5, 0), (3, 14)] {
        let mut message = vec![kind, code, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&inner4(tenant, peer, 17, 28));
        message.extend_from_slice(&quoted_udp[..8]);
        let message = with_checksum(message, 2, &[]);
        let (verdict, _) = translator
            .test_run(&frame4(router, tenant, 1, 0, &message))
            .unwrap();
        assert_eq!(verdict, TC_ACT_SHOT, "type {kind} code {code}");
    }
}

/// ICMPv6 errors to an IPv4 peer (RFC 7915 §5.2, §5.3): Packet Too Big
/// from a router no mapping holds leaves from the RFC 6791 address, or is
/// dropped without one; the packet in error inside becomes IPv4 with a
/// valid header checksum; Time Exceeded from the tenant itself leaves from
/// its IPv4 address.
#[test]
fn icmpv6_errors_become_icmpv4_errors_with_the_packet_in_error_translated() {
    let Some(translator) = translator() else {
        return;
    };
    let home_agent = v6("2001:db8:1::1");
    let peer = v6("2001:db8:64::cb00:7107");
    let tenant = v6("2001:db8:100::10");
    let quoted_udp = udp_message(b"quoted by the home agent");
    let error = |source: Ipv6Addr, kind: u8, code: u8, rest: [u8; 4]| {
        let mut message = vec![kind, code, 0, 0];
        message.extend_from_slice(&rest);
        message.extend_from_slice(&inner6(peer, tenant, 17, quoted_udp.len()));
        message.extend_from_slice(&quoted_udp);
        let length = message.len();
        let message = with_checksum(message, 2, &pseudo6(source, peer, 58, length));
        frame6(source, peer, 58, &message)
    };
    let too_big = error(home_agent, 2, 0, 1460u32.to_be_bytes());
    let (verdict, _) = translator.test_run(&too_big).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT, "no RFC 6791 address yet");
    assert_eq!(translator.counter(XlatCounter::IcmpUnmappedSource), 1);
    translator
        .configure(&XlatConfig {
            icmp_source: Some(v4("192.0.2.254")),
            ..XlatConfig::default()
        })
        .unwrap();
    for (frame, source, want) in [
        (too_big, v4("192.0.2.254"), [3u8, 4, 0, 0, 0, 0, 0x05, 0xa0]),
        (
            error(tenant, 3, 0, [0; 4]),
            v4("192.0.2.10"),
            [11, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            error(tenant, 1, 4, [0; 4]),
            v4("192.0.2.10"),
            [3, 3, 0, 0, 0, 0, 0, 0],
        ),
        (
            error(home_agent, 4, 0, 7u32.to_be_bytes()),
            v4("192.0.2.254"),
            [12, 0, 0, 0, 8, 0, 0, 0],
        ),
    ] {
        let (verdict, out) = translator.test_run(&frame).unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT, "{want:?}");
        let ip = &out[ETHERNET..ETHERNET + 20];
        let icmp = &out[ETHERNET + 20..];
        assert_eq!(checksum(&[ip]), 0, "header checksum");
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            20 + icmp.len()
        );
        assert_eq!(&ip[12..16], &source.octets());
        assert_eq!(&ip[16..20], &v4("203.0.113.7").octets());
        assert_eq!((&icmp[..2], &icmp[4..8]), (&want[..2], &want[4..8]));
        assert_eq!(checksum(&[icmp]), 0, "{want:?}: the ICMPv4 checksum");
        let quoted = &icmp[8..28];
        assert_eq!(
            checksum(&[quoted]),
            0,
            "the packet in error's header checksum"
        );
        assert_eq!((quoted[8], quoted[9]), (9, 17), "TTL kept, protocol");
        assert_eq!(&quoted[12..16], &v4("203.0.113.7").octets());
        assert_eq!(&quoted[16..20], &v4("192.0.2.10").octets());
        assert_eq!(
            usize::from(u16::from_be_bytes([quoted[2], quoted[3]])),
            20 + quoted_udp.len()
        );
        assert_eq!(&icmp[28..], &quoted_udp[..], "the rest as it was");
    }
}
