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
//! Needs `/usr/bin/python3` with Debian's python3-scapy, and tshark. Without
//! them the tests skip loudly, unless NEMO_REQUIRE_XCHECK is set (CI sets it),
//! in which case they fail.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Write;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::Ipv6Net;
use nemo::auth::{self, Algorithm, AuthError, SecurityAssociation};
use nemo::wire::{
    build_packet, parse_packet, BaFlags, BaStatus, BeStatus, BindingAck, BindingError,
    BindingRefreshRequest, BindingUpdate, BuFlags, HomeAddressOption, Lifetime, Message,
    MobileNetworkPrefix, MobilityHeader, MobilityOption, NtpTimestamp, PacketRepr, SequenceNumber,
    Type2RoutingHeader, MN_ID_SUBTYPE_NAI,
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

/// What nemo reads from a whole packet, named as the Python side names it.
fn nemo_facts(packet: &[u8]) -> Map<String, Value> {
    let parsed = parse_packet(packet).expect("parse_packet");
    let mut facts = Map::new();
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
            _ => {}
        }
    }
    if !mnps.is_empty() {
        facts.insert("mnps".into(), Value::Array(mnps));
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
        let mh = parse_packet(&packet).unwrap().mh.to_vec();
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
    }
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
    let mut packets = vec![
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
    ];
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
            },
            lifetime: Lifetime::ZERO,
            options: vec![MobilityOption::AlternateCareOfAddress(addr(
                "2001:db8:3::30",
            ))],
        }),
        bu_repr,
        None,
        json!({"mh_type": 5, "sequence": 0, "flags": "AHLKMR", "lifetime": 0,
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
    let input: String = packets.iter().map(|b| hex(&b.packet) + "\n").collect();
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
        .args(["-E", "aggregator=,"]);
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
        for ((field, fact), text) in TSHARK_FIELDS.iter().zip(columns) {
            if text.is_empty() {
                continue;
            }
            match *fact {
                "A" | "H" | "L" | "K" | "M" | "R" => {
                    if tshark_bool(text) {
                        flags.push_str(fact);
                    }
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
