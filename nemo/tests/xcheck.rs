//! Cross-checks against implementations nobody here wrote.
//!
//! - Messages built by Scapy (`tests/xcheck/scapy_cases.py`), with Scapy's
//!   padding and checksum and authenticators computed by Python's `hmac`,
//!   must decode here with the same fields, a correct checksum and a valid
//!   authenticator; tampering must break the authentication.
//! - Messages built here must be dissected by Scapy (fields, checksum
//!   recomputed by Scapy, authenticator recomputed by Python's `hmac`) and by
//!   Wireshark's `tshark` (fields) with the values they were built from.
//!
//! - Dual-Stack Mobile IPv6 (RFC 5555) both ways: Scapy's messages in UDP
//!   over IPv4 (the options defined in the script from the RFC's figures)
//!   decode here; the Binding Update nemo's mobile router sends from an
//!   IPv4 care-of address and the home agent's answer through a NAT
//!   dissect in Scapy and tshark with the values they were built from.
//!
//! Needs `/usr/bin/python3` with Debian's python3-scapy, and tshark. Without
//! them the tests skip loudly, unless NEMO_REQUIRE_XCHECK is set (CI sets it),
//! in which case they fail.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use ipnet::Ipv6Net;
use nemo::auth::{self, Algorithm, AuthError, ReplayPolicy, SecurityAssociation};
use nemo::ha::{
    Arrival, Authorization, AuthorizationTable, Decision, Forwarding, Handled, HomeAgent,
    HomeAgentConfig, Ipv4CareOfs, UdpEncapsulation,
};
use nemo::registration::{Registration, UdpOverIpv4};
use nemo::wire::{
    build_packet, parse_packet, BaFlags, BaStatus, BeStatus, BindingAck, BindingError,
    BindingRefreshRequest, BindingUpdate, BuFlags, HomeAddressOption, Ipv4HomeAddress, Lifetime,
    Message, MobileNetworkPrefix, MobilityHeader, MobilityOption, NatRefresh, NtpTimestamp,
    PacketRepr, SequenceNumber, Type2RoutingHeader, MN_ID_SUBTYPE_NAI,
};
use nemo_testkit::addr;
use serde_json::{json, Map, Value};

const PYTHON: &str = "/usr/bin/python3";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/xcheck/scapy_cases.py")
}

/// True when `program args` runs; otherwise skips loudly, or fails when CI
/// demands the cross-checks.
fn available(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !ok {
        assert!(
            std::env::var_os("NEMO_REQUIRE_XCHECK").is_none(),
            "`{program} {}` failed and NEMO_REQUIRE_XCHECK is set: install tshark and python3-scapy",
            args.join(" ")
        );
        eprintln!(
            "SKIPPED: `{program} {}` is not available; install tshark and python3-scapy to run the cross-checks",
            args.join(" ")
        );
    }
    ok
}

fn scapy_available() -> bool {
    available(PYTHON, &["-c", "import scapy.layers.inet6"])
}

fn run(command: &mut Command, stdin: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn bu_flag_letters(flags: BuFlags) -> String {
    [
        (flags.acknowledge, 'A'),
        (flags.home_registration, 'H'),
        (flags.link_local_compat, 'L'),
        (flags.key_management, 'K'),
        (flags.map_registration, 'M'),
        (flags.mobile_router, 'R'),
        (flags.proxy_registration, 'P'),
        (flags.force_udp, 'F'),
    ]
    .iter()
    .filter_map(|(set, letter)| set.then_some(*letter))
    .collect()
}

fn ba_flag_letters(flags: BaFlags) -> String {
    [(flags.key_management, 'K'), (flags.mobile_router, 'R')]
        .iter()
        .filter_map(|(set, letter)| set.then_some(*letter))
        .collect()
}

/// The IPv6 packet inside IPv4 and UDP (RFC 5555 §4.1), with the outer
/// headers' facts; a packet that starts as IPv6 is returned as it is.
/// Test code: the daemons get the datagram's payload from their socket.
fn strip_ipv4_udp(packet: &[u8]) -> (&[u8], Map<String, Value>) {
    let mut facts = Map::new();
    if packet[0] >> 4 != 4 {
        return (packet, facts);
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    assert_eq!(packet[9], 17, "IPv4 packet that is not UDP");
    let address = |at: usize| {
        std::net::Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3])
    };
    let port = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    facts.insert("outer_source".into(), json!(address(12).to_string()));
    facts.insert("outer_destination".into(), json!(address(16).to_string()));
    facts.insert("outer_sport".into(), json!(port(header_len)));
    facts.insert("outer_dport".into(), json!(port(header_len + 2)));
    (&packet[header_len + 8..], facts)
}

/// What nemo reads from a whole packet, named as the Python side names it.
fn nemo_facts(packet: &[u8]) -> Map<String, Value> {
    let (packet, mut facts) = strip_ipv4_udp(packet);
    let parsed = parse_packet(packet).expect("parse_packet");
    facts.insert("source".into(), json!(parsed.repr.source.to_string()));
    facts.insert(
        "destination".into(),
        json!(parsed.repr.destination.to_string()),
    );
    facts.insert("checksum_ok".into(), json!(parsed.checksum_ok()));
    if let Some(hao) = parsed.repr.home_address_option {
        facts.insert(
            "home_address_option".into(),
            json!(hao.home_address.to_string()),
        );
    }
    if let Some(rh) = parsed.repr.type2_routing {
        facts.insert(
            "type2_home_address".into(),
            json!(rh.home_address.to_string()),
        );
    }
    let mh = MobilityHeader::decode(parsed.mh).expect("decode");
    facts.insert("mh_type".into(), json!(mh.message.mh_type().0));
    let options = match &mh.message {
        Message::BindingUpdate(bu) => {
            facts.insert("sequence".into(), json!(bu.sequence.0));
            facts.insert("lifetime".into(), json!(bu.lifetime.0));
            facts.insert("flags".into(), json!(bu_flag_letters(bu.flags)));
            bu.options.as_slice()
        }
        Message::BindingAck(ba) => {
            facts.insert("sequence".into(), json!(ba.sequence.0));
            facts.insert("lifetime".into(), json!(ba.lifetime.0));
            facts.insert("flags".into(), json!(ba_flag_letters(ba.flags)));
            facts.insert("status".into(), json!(ba.status.0));
            ba.options.as_slice()
        }
        Message::BindingError(be) => {
            facts.insert("status".into(), json!(be.status.0));
            facts.insert("be_home_address".into(), json!(be.home_address.to_string()));
            be.options.as_slice()
        }
        Message::BindingRefreshRequest(brr) => brr.options.as_slice(),
        Message::Other { .. } => {
            facts.insert("other".into(), json!(true));
            &[]
        }
    };
    let mut mnps = Vec::new();
    let mut ipv4_home_addresses = Vec::new();
    for option in options {
        match option {
            MobilityOption::MobileNetworkPrefix(mnp) => mnps.push(json!(mnp.to_string())),
            MobilityOption::MobileNodeIdentifier { identifier, .. } => {
                facts.insert(
                    "nai".into(),
                    json!(String::from_utf8_lossy(identifier).into_owned()),
                );
            }
            MobilityOption::ReplayProtection(timestamp) => {
                facts.insert("timestamp".into(), json!(timestamp.0));
            }
            MobilityOption::Authentication { spi, data, .. } => {
                facts.insert("spi".into(), json!(spi));
                facts.insert("auth_data".into(), json!(hex(data)));
            }
            MobilityOption::BindingRefreshAdvice { refresh_interval } => {
                facts.insert("refresh_interval".into(), json!(refresh_interval.0));
            }
            MobilityOption::AlternateCareOfAddress(address) => {
                facts.insert("alternate_care_of".into(), json!(address.to_string()));
            }
            MobilityOption::Ipv4CareOfAddress(address) => {
                facts.insert("ipv4_care_of".into(), json!(address.to_string()));
            }
            MobilityOption::Ipv4HomeAddress(request) => {
                let p = if request.request_prefix { " P" } else { "" };
                ipv4_home_addresses.push(json!(format!(
                    "{}/{}{p}",
                    request.address, request.prefix_len
                )));
            }
            MobilityOption::Ipv4AddressAck(ack) => {
                facts.insert("ipv4_ack_status".into(), json!(ack.status.0));
                facts.insert("ipv4_ack_prefix_len".into(), json!(ack.prefix_len));
                facts.insert("ipv4_ack_address".into(), json!(ack.address.to_string()));
            }
            MobilityOption::NatDetection(nat) => {
                facts.insert("nat_udp_required".into(), json!(nat.udp_required));
                let refresh = match nat.refresh {
                    NatRefresh::Unspecified => 0,
                    NatRefresh::Every(seconds) => seconds,
                    NatRefresh::NotNeeded => u32::MAX,
                };
                facts.insert("nat_refresh".into(), json!(refresh));
            }
            _ => {}
        }
    }
    if !mnps.is_empty() {
        facts.insert("mnps".into(), Value::Array(mnps));
    }
    if !ipv4_home_addresses.is_empty() {
        facts.insert(
            "ipv4_home_addresses".into(),
            Value::Array(ipv4_home_addresses),
        );
    }
    facts
}

fn assert_facts(name: &str, expect: &Map<String, Value>, got: &Map<String, Value>) {
    for (key, value) in expect {
        assert_eq!(
            got.get(key),
            Some(value),
            "{name}: field {key}; all: {got:#?}"
        );
    }
}

#[test]
fn scapy_built_messages_decode_here() {
    if !scapy_available() {
        return;
    }
    let output = run(Command::new(PYTHON).arg(script()), "");
    let cases: Vec<Value> = serde_json::from_str(&output).unwrap();
    assert!(cases.len() >= 15, "only {} cases", cases.len());
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let packet = unhex(case["hex"].as_str().unwrap());
        let got = nemo_facts(&packet);
        assert_eq!(got["checksum_ok"], json!(true), "{name}: checksum");
        assert_facts(name, case["expect"].as_object().unwrap(), &got);

        let Some(auth) = case.get("auth") else {
            continue;
        };
        let algorithm: Algorithm = auth["algorithm"].as_str().unwrap().parse().unwrap();
        let key = unhex(auth["key"].as_str().unwrap());
        let care_of: Ipv6Addr = auth["care_of"].as_str().unwrap().parse().unwrap();
        let home: Ipv6Addr = auth["home"].as_str().unwrap().parse().unwrap();
        let spi = u32::try_from(got["spi"].as_u64().unwrap()).unwrap();
        let sa = SecurityAssociation::new(spi, algorithm, key.clone()).unwrap();
        let mh = parse_packet(strip_ipv4_udp(&packet).0).unwrap().mh.to_vec();
        auth::verify(&mh, care_of, home, &sa).unwrap_or_else(|e| panic!("{name}: {e}"));

        // The checksum is outside the authenticator: changing it is harmless.
        let mut checksum_changed = mh.clone();
        checksum_changed[4] ^= 0xff;
        assert_eq!(auth::verify(&checksum_changed, care_of, home, &sa), Ok(()));
        // Anything else covered breaks it: the sequence number, ...
        let mut tampered = mh.clone();
        tampered[8] ^= 0x01;
        assert_eq!(
            auth::verify(&tampered, care_of, home, &sa),
            Err(AuthError::Mismatch),
            "{name}: tampered"
        );
        // ... the care-of address, the key, and the SPI.
        let elsewhere: Ipv6Addr = "2001:db8:9::9".parse().unwrap();
        assert_eq!(
            auth::verify(&mh, elsewhere, home, &sa),
            Err(AuthError::Mismatch)
        );
        let mut wrong_key = key.clone();
        wrong_key[0] ^= 0x80;
        let wrong_key = SecurityAssociation::new(spi, algorithm, wrong_key).unwrap();
        assert_eq!(
            auth::verify(&mh, care_of, home, &wrong_key),
            Err(AuthError::Mismatch)
        );
        let other_spi = SecurityAssociation::new(spi + 1, algorithm, key).unwrap();
        assert!(matches!(
            auth::verify(&mh, care_of, home, &other_spi),
            Err(AuthError::SpiMismatch { .. })
        ));
    }
}

const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const COA: &str = "2001:db8:2::10";
const KEY: [u8; 20] = *b"nemo-test-key-020202";
const SPI: u32 = 0x2000;
const TIMESTAMP: u64 = 0xe9a1_b2c3_0000_0001;

/// A packet built here, signed when `sign` is given, with the facts it was
/// built from.
struct Built {
    name: &'static str,
    packet: Vec<u8>,
    expect: Value,
    /// The care-of address an answer to an IPv4 care-of address was
    /// authenticated for (its packet does not carry it).
    answered_care_of: Option<Ipv6Addr>,
}

fn build(
    name: &'static str,
    message: Message,
    repr: PacketRepr,
    sign: Option<(&SecurityAssociation, Ipv6Addr, Ipv6Addr)>,
    expect: Value,
) -> Built {
    let mut mh = MobilityHeader::new(message).encode().unwrap();
    if let Some((sa, care_of, home)) = sign {
        auth::sign(&mut mh, care_of, home, sa).unwrap();
    }
    Built {
        name,
        packet: build_packet(&repr, &mh),
        expect,
        answered_care_of: None,
    }
}

const HA4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const COA4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NAT4: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 40000);
const DSMIP_PORT: u16 = 4191;

/// The Internet checksum (RFC 1071) of `words`' octets.
fn internet_checksum(octets: &[u8]) -> u16 {
    let mut sum: u32 = octets
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `payload` in UDP in IPv4, as a socket sends it (RFC 5555 §4.1).
fn in_udp_ipv4(source: SocketAddrV4, destination: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).unwrap();
    let mut udp = Vec::new();
    udp.extend_from_slice(&source.port().to_be_bytes());
    udp.extend_from_slice(&destination.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&source.ip().octets());
    pseudo.extend_from_slice(&destination.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    pseudo.extend_from_slice(&udp);
    udp[6..8].copy_from_slice(&internet_checksum(&pseudo).to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&source.ip().octets());
    ip.extend_from_slice(&destination.ip().octets());
    let checksum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    ip.extend_from_slice(&udp);
    ip
}

/// The Binding Update nemo's mobile router sends from an IPv4 care-of
/// address (`nemo::registration::Registration`), in UDP over IPv4 as the
/// home agent receives it through a NAT, and the home agent engine's
/// answers: accepted with the NAT's keepalive, and refused (129) by a home
/// agent that takes no IPv4 care-of address, both acknowledging an IPv4
/// home address request.
fn nemo_built_dsmip(sa: &SecurityAssociation) -> Vec<Built> {
    let registration = Registration {
        home_address: addr(HOA),
        home_agent: addr(HA),
        care_of: COA4.into(),
        prefixes: vec!["2001:db8:100::/56".parse().unwrap()],
        lifetime: Lifetime(100),
        sequence: SequenceNumber(0x2345),
        timestamp: NtpTimestamp(TIMESTAMP),
        mobile_router: true,
        nai: None,
        udp_over_ipv4: UdpOverIpv4::WhenNeeded,
    };
    let bu = registration.packet(sa).unwrap();
    // The same with an IPv4 Home Address option, which nemo's mobile
    // router does not send but another may (RFC 5555 §3.1.1).
    let Message::BindingUpdate(mut with_home) = registration.message(sa) else {
        unreachable!()
    };
    with_home.options.insert(
        0,
        MobilityOption::Ipv4HomeAddress(Ipv4HomeAddress {
            prefix_len: 32,
            request_prefix: false,
            address: Ipv4Addr::UNSPECIFIED,
        }),
    );
    let mut mh = MobilityHeader::new(Message::BindingUpdate(with_home))
        .encode()
        .unwrap();
    auth::sign(&mut mh, COA4.to_ipv6_mapped(), addr(HOA), sa).unwrap();
    let bu_with_home = build_packet(
        &PacketRepr {
            source: addr(HOA),
            destination: addr(HA),
            hop_limit: 64,
            type2_routing: None,
            home_address_option: None,
        },
        &mh,
    );
    let answer = |ipv4_care_of: Ipv4CareOfs| {
        let authorizations = AuthorizationTable::new(vec![Authorization {
            home_address: addr(HOA),
            security_associations: vec![sa.clone()],
            mobile_router: true,
            prefixes: vec!["2001:db8:100::/56".parse().unwrap()].into(),
        }])
        .unwrap();
        let mut ha: HomeAgent<()> = HomeAgent::new(
            HomeAgentConfig {
                home_prefixes: vec!["2001:db8:1::/64".parse().unwrap()],
                replay: ReplayPolicy::default(),
                ipv4_care_of,
                ..HomeAgentConfig::default()
            },
            authorizations,
        );
        // The time of the Binding Update's timestamp (NTP counts from 1900).
        let ntp_era = 2_208_988_800;
        let now = UNIX_EPOCH
            + Duration::from_secs(u64::from(NtpTimestamp(TIMESTAMP).seconds()) - ntp_era);
        let handled = match ha.handle(&bu_with_home, Arrival::UdpIpv4(NAT4), (), now) {
            Decision::Forward(forward) => ha.forwarded(forward, Forwarding::Installed, now),
            Decision::Handled(handled) => handled,
        };
        let Handled::Acknowledge(acknowledgement) = handled else {
            panic!("{handled:?}")
        };
        in_udp_ipv4(
            SocketAddrV4::new(HA4, DSMIP_PORT),
            NAT4,
            &acknowledgement.transmit.packet,
        )
    };
    let accepted = answer(Ipv4CareOfs::Accepted {
        nat_keepalive: Duration::from_secs(25),
        udp: UdpEncapsulation::WhenNeeded,
    });
    let refused = answer(Ipv4CareOfs::Refused);
    let outer_answer = json!({
        "outer_source": HA4.to_string(), "outer_destination": NAT4.ip().to_string(),
        "outer_sport": DSMIP_PORT, "outer_dport": NAT4.port(),
        "source": HA, "destination": HOA, "mh_type": 6, "sequence": 0x2345,
        "checksum_ok": true, "auth_ok": true, "spi": SPI, "timestamp": TIMESTAMP,
        "ipv4_ack_status": 132, "ipv4_ack_prefix_len": 0, "ipv4_ack_address": "0.0.0.0",
    });
    let with = |mut base: Value, more: Value| {
        base.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        base
    };
    vec![
        Built {
            name: "bu-dsmip-nat-nemo",
            packet: in_udp_ipv4(
                SocketAddrV4::new(COA4, DSMIP_PORT),
                SocketAddrV4::new(HA4, DSMIP_PORT),
                &bu,
            )
            .into_iter()
            .collect(),
            expect: json!({
                "outer_source": COA4.to_string(), "outer_destination": HA4.to_string(),
                "outer_dport": DSMIP_PORT,
                "mh_type": 5, "sequence": 0x2345, "flags": "AHR", "lifetime": 100,
                "mnps": ["2001:db8:100::/56"], "ipv4_care_of": COA4.to_string(),
                "timestamp": TIMESTAMP, "spi": SPI, "source": HOA, "destination": HA,
                "checksum_ok": true, "auth_ok": true,
            }),
            answered_care_of: None,
        },
        Built {
            name: "ba-dsmip-nat-nemo",
            packet: accepted,
            expect: with(
                outer_answer.clone(),
                json!({"status": 0, "flags": "R", "lifetime": 100,
                       "nat_udp_required": false, "nat_refresh": 25}),
            ),
            answered_care_of: Some(COA4.to_ipv6_mapped()),
        },
        Built {
            name: "ba-dsmip-refused-nemo",
            packet: refused,
            expect: with(
                outer_answer,
                json!({"status": 129, "flags": "", "lifetime": 0,
                       "nat_udp_required": false, "nat_refresh": 0}),
            ),
            answered_care_of: Some(COA4.to_ipv6_mapped()),
        },
    ]
}

fn nemo_built_packets() -> Vec<Built> {
    let sha1 = SecurityAssociation::new(SPI, Algorithm::HmacSha1_96, KEY.to_vec()).unwrap();
    let sha256 = SecurityAssociation::new(SPI, Algorithm::HmacSha256, KEY.to_vec()).unwrap();
    let bu_repr = PacketRepr {
        source: addr(COA),
        destination: addr(HA),
        hop_limit: 64,
        type2_routing: None,
        home_address_option: Some(HomeAddressOption {
            home_address: addr(HOA),
        }),
    };
    let ba_repr = PacketRepr {
        source: addr(HA),
        destination: addr(COA),
        hop_limit: 64,
        type2_routing: Some(Type2RoutingHeader {
            home_address: addr(HOA),
        }),
        home_address_option: None,
    };
    let nemo_bu = |sa: &SecurityAssociation| {
        Message::BindingUpdate(BindingUpdate {
            sequence: SequenceNumber(0xbeef),
            flags: BuFlags::mobile_router_home_registration(),
            lifetime: Lifetime(150),
            options: vec![
                MobilityOption::MobileNetworkPrefix(MobileNetworkPrefix::new(
                    "2001:db8:100::/56".parse::<Ipv6Net>().unwrap(),
                )),
                MobilityOption::MobileNetworkPrefix(MobileNetworkPrefix::new(
                    "2001:db8:200:5::/64".parse::<Ipv6Net>().unwrap(),
                )),
                MobilityOption::MobileNodeIdentifier {
                    subtype: MN_ID_SUBTYPE_NAI,
                    identifier: b"acme@nemo.example".to_vec(),
                },
                MobilityOption::ReplayProtection(NtpTimestamp(TIMESTAMP)),
                sa.unsigned_option(),
            ],
        })
    };
    let bu_expect = json!({
        "mh_type": 5, "sequence": 0xbeef, "flags": "AHR", "lifetime": 150,
        "mnps": ["2001:db8:100::/56", "2001:db8:200:5::/64"],
        "nai": "acme@nemo.example", "timestamp": TIMESTAMP, "spi": SPI,
        "home_address_option": HOA, "source": COA, "destination": HA,
        "checksum_ok": true, "auth_ok": true,
    });
    let nemo_ba = |sa: &SecurityAssociation| {
        Message::BindingAck(BindingAck {
            status: BaStatus::ACCEPTED,
            flags: BaFlags {
                key_management: false,
                mobile_router: true,
            },
            sequence: SequenceNumber(0xbeef),
            lifetime: Lifetime(150),
            options: vec![
                MobilityOption::BindingRefreshAdvice {
                    refresh_interval: Lifetime(120),
                },
                MobilityOption::ReplayProtection(NtpTimestamp(TIMESTAMP)),
                sa.unsigned_option(),
            ],
        })
    };
    let ba_expect = json!({
        "mh_type": 6, "status": 0, "flags": "R", "sequence": 0xbeef, "lifetime": 150,
        "refresh_interval": 120, "timestamp": TIMESTAMP, "spi": SPI,
        "type2_home_address": HOA, "source": HA, "destination": COA,
        "checksum_ok": true, "auth_ok": true,
    });
    let mut packets = nemo_built_dsmip(&sha256);
    packets.extend([
        build(
            "bu-nemo-hmac-sha1-96",
            nemo_bu(&sha1),
            bu_repr,
            Some((&sha1, addr(COA), addr(HOA))),
            bu_expect.clone(),
        ),
        build(
            "bu-nemo-hmac-sha256",
            nemo_bu(&sha256),
            bu_repr,
            Some((&sha256, addr(COA), addr(HOA))),
            bu_expect,
        ),
        build(
            "ba-nemo-hmac-sha1-96",
            nemo_ba(&sha1),
            ba_repr,
            Some((&sha1, addr(COA), addr(HOA))),
            ba_expect.clone(),
        ),
        build(
            "ba-nemo-hmac-sha256",
            nemo_ba(&sha256),
            ba_repr,
            Some((&sha256, addr(COA), addr(HOA))),
            ba_expect,
        ),
    ]);
    for status in [
        BaStatus::SEQUENCE_OUT_OF_WINDOW,
        BaStatus::MOBILE_ROUTER_NOT_PERMITTED,
        BaStatus::INVALID_PREFIX,
        BaStatus::NOT_AUTHORIZED_FOR_PREFIX,
        BaStatus::FORWARDING_SETUP_FAILED,
        BaStatus::ID_MISMATCH,
        BaStatus::MESG_ID_REQUIRED,
        BaStatus::AUTH_FAIL,
    ] {
        packets.push(build(
            "ba-rejection",
            Message::BindingAck(BindingAck {
                status,
                flags: BaFlags {
                    key_management: true,
                    mobile_router: false,
                },
                sequence: SequenceNumber(9),
                lifetime: Lifetime(0),
                options: vec![],
            }),
            ba_repr,
            None,
            json!({"mh_type": 6, "status": status.0, "flags": "K", "sequence": 9,
                   "lifetime": 0, "checksum_ok": true}),
        ));
    }
    packets.push(build(
        "binding-error",
        Message::BindingError(BindingError {
            status: BeStatus::UNRECOGNIZED_MH_TYPE,
            home_address: addr(HOA),
            options: vec![],
        }),
        PacketRepr {
            type2_routing: None,
            ..ba_repr
        },
        None,
        json!({"mh_type": 7, "status": 2, "be_home_address": HOA, "checksum_ok": true}),
    ));
    packets.push(build(
        "binding-refresh-request",
        Message::BindingRefreshRequest(BindingRefreshRequest::default()),
        ba_repr,
        None,
        json!({"mh_type": 0, "type2_home_address": HOA, "checksum_ok": true}),
    ));
    packets.push(build(
        "bu-all-flags-alt-coa",
        Message::BindingUpdate(BindingUpdate {
            sequence: SequenceNumber(0),
            flags: BuFlags {
                acknowledge: true,
                home_registration: true,
                link_local_compat: true,
                key_management: true,
                map_registration: true,
                mobile_router: true,
                proxy_registration: true,
                force_udp: true,
            },
            lifetime: Lifetime::ZERO,
            options: vec![MobilityOption::AlternateCareOfAddress(addr(
                "2001:db8:3::30",
            ))],
        }),
        bu_repr,
        None,
        json!({"mh_type": 5, "sequence": 0, "flags": "AHLKMRPF", "lifetime": 0,
               "alternate_care_of": "2001:db8:3::30", "checksum_ok": true}),
    ));
    packets
}

#[test]
fn nemo_built_messages_dissect_in_scapy() {
    if !scapy_available() {
        return;
    }
    let packets = nemo_built_packets();
    let input: String = packets
        .iter()
        .map(|b| match b.answered_care_of {
            Some(care_of) => format!("{} {care_of}\n", hex(&b.packet)),
            None => hex(&b.packet) + "\n",
        })
        .collect();
    let output = run(
        Command::new(PYTHON)
            .arg(script())
            .arg("dissect")
            .arg(hex(&KEY)),
        &input,
    );
    let dissected: Vec<Value> = serde_json::from_str(&output).unwrap();
    assert_eq!(dissected.len(), packets.len());
    for (built, facts) in packets.iter().zip(&dissected) {
        // Our own decoder agrees with the facts too.
        assert_facts(
            built.name,
            &strip(&built.expect, &["auth_ok"]),
            &nemo_facts(&built.packet),
        );
        assert_facts(
            built.name,
            built.expect.as_object().unwrap(),
            facts.as_object().unwrap(),
        );
    }
}

fn strip(value: &Value, keys: &[&str]) -> Map<String, Value> {
    let mut map = value.as_object().unwrap().clone();
    for key in keys {
        map.remove(*key);
    }
    map
}

/// A classic pcap file of raw IPv6 packets (LINKTYPE_RAW, 101).
fn pcap(packets: &[Built]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65535, 101] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for (index, built) in packets.iter().enumerate() {
        let len = u32::try_from(built.packet.len()).unwrap();
        for word in [u32::try_from(index).unwrap(), 0, len, len] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&built.packet);
    }
    out
}

/// tshark's fields, and the fact each one maps to.
const TSHARK_FIELDS: &[(&str, &str)] = &[
    ("mip6.mhtype", "mh_type"),
    ("mip6.bu.seqnr", "sequence"),
    ("mip6.ba.seqnr", "sequence"),
    ("mip6.bu.lifetime", "lifetime"),
    ("mip6.ba.lifetime", "lifetime"),
    ("mip6.ba.status", "status"),
    ("mip6.be.status", "status"),
    ("mip6.be.haddr", "be_home_address"),
    ("mip6.mnid.identifier", "nai"),
    ("mip6.auth.mobility_spi", "spi"),
    ("mip6.bra.interval", "refresh_interval"),
    ("mip6.acoa.acoa", "alternate_care_of"),
    ("ipv6.opt.mipv6.home_address", "home_address_option"),
    ("ipv6.routing.mipv6.home_address", "type2_home_address"),
    ("ipv6.src", "source"),
    ("ipv6.dst", "destination"),
    ("mip6.nemo.mnp.mnp", "mnp_prefix"),
    ("mip6.nemo.mnp.pfl", "mnp_length"),
    ("mip6.bu.a_flag", "A"),
    ("mip6.bu.h_flag", "H"),
    ("mip6.bu.l_flag", "L"),
    ("mip6.bu.k_flag", "K"),
    ("mip6.bu.m_flag", "M"),
    ("mip6.nemo.bu.r_flag", "R"),
    ("mip6.ba.k_flag", "K"),
    ("mip6.nemo.ba.r_flag", "R"),
    ("mip6.bu.p_flag", "P"),
    ("mip6.bu.f_flag", "F"),
    ("mip6.ipv4coa.addr", "ipv4_care_of"),
    ("mip6.ipv4aa.sts", "ipv4_ack_status"),
    // Wireshark shows the acknowledgement's Pref-len and address with the
    // IPv4 Home Address option's fields.
    ("mip6.ipv4ha.preflen", "ipv4_prefix_len"),
    ("mip6.ipv4ha.ha", "ipv4_address"),
    ("mip6.ipv4ha.p_flag", "ipv4_p"),
    ("mip6.natd.f_flag", "nat_udp_required"),
    ("mip6.natd.refresh_t", "nat_refresh"),
    ("ip.src", "outer_source"),
    ("ip.dst", "outer_destination"),
    ("udp.srcport", "outer_sport"),
    ("udp.dstport", "outer_dport"),
    ("_ws.malformed", "malformed"),
];

fn tshark_bool(text: &str) -> bool {
    matches!(text, "1" | "True" | "true")
}

#[test]
fn nemo_built_messages_dissect_in_tshark() {
    if !available("tshark", &["--version"]) {
        return;
    }
    let packets = nemo_built_packets();
    let dir = std::env::temp_dir().join(format!("nemo-xcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nemo.pcap");
    std::fs::write(&file, pcap(&packets)).unwrap();
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"])
        .args(["-E", "aggregator=,"])
        // RFC 5555's port, which tshark does not know: IPv6 in UDP.
        .args(["-d", "udp.port==4191,ipv6"]);
    for (field, _) in TSHARK_FIELDS {
        command.args(["-e", field]);
    }
    let output = run(&mut command, "");
    std::fs::remove_dir_all(&dir).unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), packets.len(), "tshark output: {output}");
    for (built, line) in packets.iter().zip(lines) {
        let columns: Vec<&str> = line.split('\t').collect();
        assert_eq!(columns.len(), TSHARK_FIELDS.len(), "{line}");
        let mut facts = Map::new();
        let mut flags = String::new();
        let (mut prefixes, mut lengths) = (Vec::new(), Vec::new());
        let mut ipv4_p: Vec<bool> = Vec::new();
        for ((field, fact), text) in TSHARK_FIELDS.iter().zip(columns) {
            if text.is_empty() {
                continue;
            }
            match *fact {
                "A" | "H" | "L" | "K" | "M" | "R" | "P" | "F" => {
                    if tshark_bool(text) {
                        flags.push_str(fact);
                    }
                }
                "nat_udp_required" => {
                    facts.insert((*fact).into(), json!(tshark_bool(text)));
                }
                "ipv4_p" => {
                    ipv4_p = text.split(',').map(tshark_bool).collect();
                }
                "mnp_prefix" => prefixes = text.split(',').map(str::to_owned).collect(),
                "mnp_length" => lengths = text.split(',').map(str::to_owned).collect(),
                _ if text.chars().all(|c| c.is_ascii_digit()) && !field.ends_with("identifier") => {
                    facts.insert((*fact).into(), json!(text.parse::<u64>().unwrap()));
                }
                _ => {
                    facts.insert((*fact).into(), json!(text));
                }
            }
        }
        assert!(
            !facts.contains_key("malformed"),
            "{}: tshark says malformed",
            built.name
        );
        if built.expect.get("flags").is_some() {
            facts.insert("flags".into(), json!(flags));
        }
        // The IPv4 Home Address fields: the options of a Binding Update,
        // the acknowledgement's in a Binding Acknowledgement.
        if let (Some(length), Some(address)) = (
            facts.remove("ipv4_prefix_len"),
            facts.remove("ipv4_address"),
        ) {
            if facts.contains_key("ipv4_ack_status") {
                facts.insert("ipv4_ack_prefix_len".into(), length);
                facts.insert("ipv4_ack_address".into(), address);
            } else {
                let requests = format!("{}/{length}", address.as_str().unwrap_or_default());
                let p = if ipv4_p.first() == Some(&true) {
                    " P"
                } else {
                    ""
                };
                facts.insert("ipv4_home_addresses".into(), json!([requests + p]));
            }
        }
        if !prefixes.is_empty() {
            let mnps: Vec<Value> = prefixes
                .iter()
                .zip(&lengths)
                .map(|(prefix, len)| json!(format!("{prefix}/{len}")))
                .collect();
            facts.insert("mnps".into(), Value::Array(mnps));
        }
        // tshark 4.0 neither checks the Mobility Header checksum nor knows
        // RFC 4285 keys, and prints the timestamp as a date: Scapy checks
        // those.
        let expect = strip(&built.expect, &["checksum_ok", "auth_ok", "timestamp"]);
        assert_facts(built.name, &expect, &facts);
    }
}
