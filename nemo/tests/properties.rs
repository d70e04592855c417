//! Property tests: what is encoded decodes to itself, every option sits at
//! its alignment, and no input makes a decoder panic.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{Ipv4Addr, Ipv6Addr};

use nemo::auth::{self, Algorithm, AuthError, SecurityAssociation};
use nemo::wire::{
    build_packet, parse_packet, verify_mh_checksum, AuthSubtype, BaFlags, BaStatus, BeStatus,
    BindingAck, BindingError, BindingRefreshRequest, BindingUpdate, BuFlags, HomeAddressOption,
    Ipv4AckStatus, Ipv4AddressAck, Ipv4HomeAddress, Lifetime, Message, MhType, MobileNetworkPrefix,
    MobilityHeader, MobilityOption, NatDetection, NatRefresh, NtpTimestamp, OptionType, PacketRepr,
    RawOptions, SequenceNumber, Type2RoutingHeader,
};
use proptest::prelude::*;

fn address() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn option() -> impl Strategy<Value = MobilityOption> {
    prop_oneof![
        any::<u16>().prop_map(|v| MobilityOption::BindingRefreshAdvice {
            refresh_interval: Lifetime(v)
        }),
        address().prop_map(MobilityOption::AlternateCareOfAddress),
        (any::<u16>(), any::<u16>())
            .prop_map(|(home, care_of)| MobilityOption::NonceIndices { home, care_of }),
        proptest::collection::vec(any::<u8>(), 0..=255)
            .prop_map(MobilityOption::BindingAuthorizationData),
        (any::<u8>(), address()).prop_map(|(prefix_len, prefix)| {
            MobilityOption::MobileNetworkPrefix(MobileNetworkPrefix { prefix_len, prefix })
        }),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..=254)).prop_map(
            |(subtype, identifier)| MobilityOption::MobileNodeIdentifier {
                subtype,
                identifier
            }
        ),
        (
            any::<u8>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..=250)
        )
            .prop_map(|(subtype, spi, data)| MobilityOption::Authentication {
                subtype: AuthSubtype(subtype),
                spi,
                data
            }),
        any::<u64>().prop_map(|t| MobilityOption::ReplayProtection(NtpTimestamp(t))),
        // Prefix-len is six bits wide (RFC 5555 §3.1.1, §3.2.1).
        (0u8..64, any::<bool>(), any::<u32>()).prop_map(|(prefix_len, request_prefix, a)| {
            MobilityOption::Ipv4HomeAddress(Ipv4HomeAddress {
                prefix_len,
                request_prefix,
                address: Ipv4Addr::from(a),
            })
        }),
        (any::<u8>(), 0u8..64, any::<u32>()).prop_map(|(status, prefix_len, a)| {
            MobilityOption::Ipv4AddressAck(Ipv4AddressAck {
                status: Ipv4AckStatus(status),
                prefix_len,
                address: Ipv4Addr::from(a),
            })
        }),
        (any::<bool>(), any::<u32>()).prop_map(|(udp_required, seconds)| {
            let refresh = match seconds {
                0 => NatRefresh::Unspecified,
                u32::MAX => NatRefresh::NotNeeded,
                n => NatRefresh::Every(n),
            };
            MobilityOption::NatDetection(NatDetection {
                udp_required,
                refresh,
            })
        }),
        any::<u32>().prop_map(|a| MobilityOption::Ipv4CareOfAddress(Ipv4Addr::from(a))),
    ]
}

fn options() -> impl Strategy<Value = Vec<MobilityOption>> {
    // Six options of at most 257 octets plus padding stay within 2048.
    proptest::collection::vec(option(), 0..=6)
}

fn bu_flags() -> impl Strategy<Value = BuFlags> {
    any::<[bool; 8]>().prop_map(|b| BuFlags {
        acknowledge: b[0],
        home_registration: b[1],
        link_local_compat: b[2],
        key_management: b[3],
        map_registration: b[4],
        mobile_router: b[5],
        proxy_registration: b[6],
        force_udp: b[7],
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        options()
            .prop_map(|options| Message::BindingRefreshRequest(BindingRefreshRequest { options })),
        (any::<u16>(), bu_flags(), any::<u16>(), options()).prop_map(
            |(sequence, flags, lifetime, options)| Message::BindingUpdate(BindingUpdate {
                sequence: SequenceNumber(sequence),
                flags,
                lifetime: Lifetime(lifetime),
                options,
            })
        ),
        (
            any::<u8>(),
            any::<[bool; 2]>(),
            any::<u16>(),
            any::<u16>(),
            options()
        )
            .prop_map(
                |(status, flags, sequence, lifetime, options)| Message::BindingAck(BindingAck {
                    status: BaStatus(status),
                    flags: BaFlags {
                        key_management: flags[0],
                        mobile_router: flags[1],
                    },
                    sequence: SequenceNumber(sequence),
                    lifetime: Lifetime(lifetime),
                    options,
                })
            ),
        (any::<u8>(), address(), options()).prop_map(|(status, home_address, options)| {
            Message::BindingError(BindingError {
                status: BeStatus(status),
                home_address,
                options,
            })
        }),
        (
            prop_oneof![1u8..=4, 8u8..=255],
            (0usize..32)
                .prop_flat_map(|units| proptest::collection::vec(any::<u8>(), units * 8 + 2))
        )
            .prop_map(|(mh_type, data)| Message::Other {
                mh_type: MhType(mh_type),
                data
            }),
    ]
}

fn alignment(option_type: OptionType) -> (usize, usize) {
    match option_type {
        OptionType::BINDING_REFRESH_ADVICE | OptionType::NONCE_INDICES => (2, 0),
        OptionType::ALTERNATE_CARE_OF_ADDRESS => (8, 6),
        OptionType::BINDING_AUTHORIZATION_DATA => (8, 2),
        OptionType::MOBILE_NETWORK_PREFIX => (8, 4),
        OptionType::AUTHENTICATION => (4, 1),
        OptionType::REPLAY_PROTECTION => (8, 2),
        // RFC 5555 §3.1.1, §3.1.2, §3.2.1, §3.2.2.
        OptionType::IPV4_HOME_ADDRESS
        | OptionType::IPV4_ADDRESS_ACK
        | OptionType::NAT_DETECTION
        | OptionType::IPV4_CARE_OF_ADDRESS => (4, 0),
        _ => (1, 0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_of_encode_is_identity(payload_proto in any::<u8>(), message in message()) {
        let header = MobilityHeader { payload_proto, message };
        let encoded = header.encode().unwrap();
        prop_assert_eq!(encoded.len() % 8, 0);
        prop_assert_eq!(usize::from(encoded[1]) * 8 + 8, encoded.len());
        prop_assert_eq!(MobilityHeader::decode(&encoded).unwrap(), header);
    }

    #[test]
    fn options_sit_at_their_alignment(opts in options()) {
        let header = MobilityHeader::new(Message::BindingUpdate(BindingUpdate {
            options: opts.clone(),
            ..BindingUpdate::default()
        }));
        let encoded = header.encode().unwrap();
        let mut seen = 0;
        let mut last_end = 0;
        let mut last_type = None;
        for raw in RawOptions::new(&encoded, 12) {
            let raw = raw.unwrap();
            let option_type = OptionType(raw.option_type);
            if option_type == OptionType::PAD1 || option_type == OptionType::PADN {
                // Padding is all zeros (RFC 6275 §6.2.3).
                prop_assert!(raw.data.iter().all(|&b| b == 0));
                continue;
            }
            let (modulus, remainder) = alignment(option_type);
            prop_assert_eq!(raw.offset % modulus, remainder, "{:?}", option_type);
            seen += 1;
            last_end = raw.offset + 2 + raw.data.len();
            last_type = Some(option_type);
        }
        prop_assert_eq!(seen, opts.len());
        // An authentication option placed last ends the message whenever
        // its length lets it (RFC 4285 §5.1 wants it last).
        if let Some(MobilityOption::Authentication { data, .. }) = opts.last() {
            if data.len() % 4 == 0 {
                prop_assert_eq!(last_type, Some(OptionType::AUTHENTICATION));
                prop_assert_eq!(last_end, encoded.len());
            }
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = MobilityHeader::decode(&bytes);
        let _ = parse_packet(&bytes);
        let _ = auth::find_mn_ha_option(&bytes);
        let sa = SecurityAssociation::new(256, Algorithm::HmacSha1_96, vec![1; 16]).unwrap();
        let _ = auth::verify(&bytes, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &sa);
        for raw in RawOptions::new(&bytes, 0).flatten() {
            let _ = MobilityOption::decode(&raw);
        }
    }

    #[test]
    fn mobility_headers_with_a_valid_length_never_panic(
        mh_type in any::<u8>(),
        units in 0u8..8,
        body in proptest::collection::vec(any::<u8>(), 64),
    ) {
        // Random bytes rarely have a matching Header Len; make them match so
        // the option walkers get exercised.
        let len = (usize::from(units) + 1) * 8;
        let mut bytes = body[..len].to_vec();
        bytes[1] = units;
        bytes[2] = mh_type;
        if let Ok(header) = MobilityHeader::decode(&bytes) {
            // Whatever decoded encodes again.
            let _ = header.encode();
        }
    }

    #[test]
    fn packets_round_trip(
        message in message(),
        source in address(),
        destination in address(),
        hao in proptest::option::of(address()),
        rh in proptest::option::of(address()),
    ) {
        let mh = MobilityHeader::new(message).encode().unwrap();
        let repr = PacketRepr {
            source,
            destination,
            hop_limit: 64,
            type2_routing: rh.map(|home_address| Type2RoutingHeader { home_address }),
            home_address_option: hao.map(|home_address| HomeAddressOption { home_address }),
        };
        let packet = build_packet(&repr, &mh);
        let parsed = parse_packet(&packet).unwrap();
        prop_assert_eq!(parsed.repr, repr);
        prop_assert!(parsed.checksum_ok());
        let (ck_source, ck_destination) = repr.checksum_addresses();
        prop_assert!(verify_mh_checksum(ck_source, ck_destination, parsed.mh));
    }

    #[test]
    fn signed_messages_verify_and_any_covered_change_fails(
        sha256 in any::<bool>(),
        key in proptest::collection::vec(any::<u8>(), 16..64),
        spi in 256u32..,
        mut opts in proptest::collection::vec(option(), 0..=3),
        care_of in address(),
        home in address(),
        flip in any::<proptest::sample::Index>(),
    ) {
        let algorithm = if sha256 { Algorithm::HmacSha256 } else { Algorithm::HmacSha1_96 };
        let sa = SecurityAssociation::new(spi, algorithm, key).unwrap();
        // Only one MN-HA option may be present.
        opts.retain(|o| !matches!(o, MobilityOption::Authentication { .. }));
        opts.push(sa.unsigned_option());
        let mut mh = MobilityHeader::new(Message::BindingUpdate(BindingUpdate {
            options: opts,
            ..BindingUpdate::default()
        }))
        .encode()
        .unwrap();
        auth::sign(&mut mh, care_of, home, &sa).unwrap();
        prop_assert_eq!(auth::verify(&mh, care_of, home, &sa), Ok(()));
        // Flip one bit anywhere but the checksum (octets 4-5): the
        // authenticator covers everything up to its own end, which is the
        // end of the message.
        let covered: Vec<usize> = (0..mh.len()).filter(|i| *i != 4 && *i != 5).collect();
        let at = covered[flip.index(covered.len())];
        let mut tampered = mh.clone();
        tampered[at] ^= 0x01;
        // The flip may also land in the option header and break parsing;
        // any error is a refusal.
        prop_assert!(auth::verify(&tampered, care_of, home, &sa).is_err());
    }

    #[test]
    fn sequence_numbers_are_antisymmetric(a in any::<u16>(), b in any::<u16>()) {
        let (a, b) = (SequenceNumber(a), SequenceNumber(b));
        prop_assert!(!(a.is_newer_than(b) && b.is_newer_than(a)));
        if a != b && a.0.abs_diff(b.0) != 32768 {
            prop_assert!(a.is_newer_than(b) || b.is_newer_than(a));
        }
        prop_assert!(a.next().is_newer_than(a));
    }
}

#[test]
fn authentication_refusals_are_typed() {
    let sa = SecurityAssociation::new(0x1000, Algorithm::HmacSha256, vec![3; 32]).unwrap();
    let (coa, hoa): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8:2::10".parse().unwrap(),
        "2001:db8:1::100".parse().unwrap(),
    );
    let encode = |options| {
        MobilityHeader::new(Message::BindingUpdate(BindingUpdate {
            options,
            ..BindingUpdate::default()
        }))
        .encode()
        .unwrap()
    };
    assert_eq!(
        auth::verify(&encode(vec![]), coa, hoa, &sa),
        Err(AuthError::Missing)
    );
    // An option after the authentication option.
    let not_last = encode(vec![
        sa.unsigned_option(),
        MobilityOption::ReplayProtection(NtpTimestamp(1)),
    ]);
    assert_eq!(
        auth::verify(&not_last, coa, hoa, &sa),
        Err(AuthError::NotLast)
    );
    // SHA1-96 data under a SHA256 association.
    let short = encode(vec![MobilityOption::Authentication {
        subtype: AuthSubtype::MN_HA,
        spi: 0x1000,
        data: vec![0; 12],
    }]);
    assert_eq!(
        auth::verify(&short, coa, hoa, &sa),
        Err(AuthError::WrongLength {
            found: 12,
            expected: 32,
            algorithm: Algorithm::HmacSha256
        })
    );
    // An MN-AAA option is not an MN-HA option.
    let aaa = encode(vec![MobilityOption::Authentication {
        subtype: AuthSubtype::MN_AAA,
        spi: 0x1000,
        data: vec![0; 32],
    }]);
    assert_eq!(auth::verify(&aaa, coa, hoa, &sa), Err(AuthError::Missing));
    // Unsigned (all-zero) data.
    let unsigned = encode(vec![sa.unsigned_option()]);
    assert_eq!(
        auth::verify(&unsigned, coa, hoa, &sa),
        Err(AuthError::Mismatch)
    );
    // Association rules of RFC 4285 §5.1.
    assert_eq!(
        SecurityAssociation::new(255, Algorithm::HmacSha256, vec![0; 16]),
        Err(AuthError::ReservedSpi(255))
    );
    assert_eq!(
        SecurityAssociation::new(256, Algorithm::HmacSha256, vec![0; 15]),
        Err(AuthError::KeyTooShort(15))
    );
    assert_eq!(
        "hmac-md5".parse::<Algorithm>(),
        Err(AuthError::UnknownAlgorithm("hmac-md5".into()))
    );
    // The key never reaches a log line.
    assert!(!format!("{sa:?}").contains("3, 3"));
}

proptest! {
    /// No input makes the VRRP decoder panic, and what it takes encodes
    /// back to the same advertisement.
    #[test]
    fn vrrp_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), hop_limit in any::<u8>()) {
        let source = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        if let Ok(advertisement) = nemo::vrrp::Advertisement::decode(&bytes, source, hop_limit) {
            let again = nemo::vrrp::Advertisement::decode(&advertisement.encode(source), source, 255);
            prop_assert_eq!(again, Ok(advertisement));
        }
    }

    /// Every advertisement encodes to bytes that decode to it.
    #[test]
    fn vrrp_advertisements_round_trip(
        vrid in 1u8..,
        priority in any::<u8>(),
        interval in 1u16..=4095,
        addresses in proptest::collection::vec(address(), 1..20),
    ) {
        let advertisement = nemo::vrrp::Advertisement {
            vrid,
            priority,
            max_advert_interval: nemo::vrrp::Centiseconds::new(interval).unwrap(),
            addresses,
        };
        let source = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7);
        prop_assert_eq!(
            nemo::vrrp::Advertisement::decode(&advertisement.encode(source), source, 255),
            Ok(advertisement)
        );
    }
}
