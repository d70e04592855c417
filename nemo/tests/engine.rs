//! The home agent's entry point, bytes in and actions out: parsing and
//! framing, the forwarding round trip, and the paths its timers answer by.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nemo::auth::{Algorithm, ReplayPolicy, SecurityAssociation};
use nemo::ha::{
    ntp_time, Acknowledgement, Arrival, Authorization, AuthorizationTable, Change, ChangeKind,
    Decision, DropReason, Forwarding, ForwardingFailure, Handled, HomeAgent, HomeAgentConfig,
    Malformed,
};
use nemo::registration::{check_binding_ack, Registration, UdpOverIpv4};
use nemo::wire::{
    build_packet, parse_packet, BaStatus, BeStatus, BindingAck, DecodeError, Lifetime, Message,
    MobilityHeader, PacketRepr, SequenceNumber,
};
use nemo_testkit::{addr, net};

const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const COA: &str = "2001:db8:2::10";
const COA_NEW: &str = "2001:db8:3::10";
const MNP: &str = "2001:db8:100::/56";

/// The path an answer goes back by: here, a name the test can check.
type Path = &'static str;

fn sa() -> SecurityAssociation {
    SecurityAssociation::new(0x1000, Algorithm::HmacSha256, vec![7; 32]).unwrap()
}

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn home_agent() -> HomeAgent<Path> {
    let authorizations = AuthorizationTable::new(vec![Authorization {
        home_address: addr(HOA),
        security_associations: vec![sa()],
        mobile_router: true,
        prefixes: vec![net(MNP)].into(),
    }])
    .unwrap();
    HomeAgent::new(
        HomeAgentConfig {
            home_prefixes: vec![net("2001:db8:1::/64")],
            max_lifetime: Duration::from_secs(600),
            replay: ReplayPolicy::default(),
            refresh_request_before: Some(Duration::from_secs(60)),
            ..HomeAgentConfig::default()
        },
        authorizations,
    )
}

/// A Binding Update packet as a mobile router sends it.
fn update(sequence: u16, care_of: &str, lifetime: u16, now: SystemTime) -> Vec<u8> {
    Registration {
        home_address: addr(HOA),
        home_agent: addr(HA),
        care_of: addr(care_of).into(),
        prefixes: vec![net(MNP)],
        lifetime: Lifetime(lifetime),
        sequence: SequenceNumber(sequence),
        timestamp: ntp_time(now),
        mobile_router: true,
        nai: None,
        udp_over_ipv4: UdpOverIpv4::WhenNeeded,
    }
    .packet(&sa())
    .unwrap()
}

/// The acknowledgement a handled packet ends in, checked to be a BA from
/// the home agent's address, through a type 2 routing header, authenticated
/// for the care-of address.
fn acknowledgement(handled: Handled<Path>, care_of: &str) -> (Acknowledgement<Path>, BindingAck) {
    let Handled::Acknowledge(acknowledgement) = handled else {
        panic!("expected an acknowledgement, got {handled:?}");
    };
    let parsed = parse_packet(&acknowledgement.transmit.packet).unwrap();
    assert_eq!(parsed.repr.source, addr(HA));
    assert_eq!(parsed.repr.destination, addr(care_of));
    assert_eq!(parsed.repr.type2_routing.unwrap().home_address, addr(HOA));
    let ba = check_binding_ack(
        &acknowledgement.transmit.packet,
        addr(care_of),
        addr(HOA),
        &sa(),
    )
    .unwrap();
    assert_eq!(ba.status, acknowledgement.status);
    (acknowledgement, ba)
}

/// Registers at `care_of` with forwarding installed.
fn register(ha: &mut HomeAgent<Path>, sequence: u16, care_of: &str, now: SystemTime, path: Path) {
    let Decision::Forward(forward) = ha.handle(
        &update(sequence, care_of, 100, now),
        Arrival::Ipv6,
        path,
        now,
    ) else {
        panic!("not accepted");
    };
    let (acknowledgement, _) =
        acknowledgement(ha.forwarded(forward, Forwarding::Installed, now), care_of);
    assert_eq!(acknowledgement.status, BaStatus::ACCEPTED);
}

#[test]
fn an_accepted_update_waits_for_its_forwarding_then_is_acknowledged() {
    let mut ha = home_agent();
    let now = start();
    let Decision::Forward(forward) =
        ha.handle(&update(1, COA, 100, now), Arrival::Ipv6, "udp", now)
    else {
        panic!("not accepted");
    };
    // The change is in the cache already, so the next update sees it.
    let Change::Upsert { binding, previous } = forward.change() else {
        panic!("not an upsert: {:?}", forward.change());
    };
    assert_eq!(binding.care_of, nemo::ha::CareOf::Ipv6(addr(COA)));
    assert_eq!(*binding.prefixes, [net(MNP)]);
    assert_eq!(previous, &None);
    assert_eq!(forward.change().kind(), ChangeKind::Created);
    assert_eq!(
        ha.cache().binding(addr(HOA)).unwrap().care_of,
        nemo::ha::CareOf::Ipv6(addr(COA))
    );

    let (acknowledgement, ba) =
        acknowledgement(ha.forwarded(forward, Forwarding::Installed, now), COA);
    assert_eq!(acknowledgement.transmit.path, "udp");
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert!(ba.flags.mobile_router);
    assert_eq!(ba.sequence, SequenceNumber(1));
    assert_eq!(ba.lifetime, Lifetime(100));
    assert_eq!(acknowledgement.change.unwrap().kind(), ChangeKind::Created);
}

#[test]
fn forwarding_failure_reverts_and_answers_141() {
    let mut ha = home_agent();
    let now = start();
    register(&mut ha, 1, COA, now, "udp");
    let later = now + Duration::from_millis(1);
    let Decision::Forward(forward) =
        ha.handle(&update(2, COA_NEW, 100, later), Arrival::Ipv6, "udp", later)
    else {
        panic!("not accepted");
    };
    assert_eq!(forward.change().kind(), ChangeKind::Moved);
    let (acknowledgement, ba) = acknowledgement(
        ha.forwarded(
            forward,
            Forwarding::Failed(ForwardingFailure::PrefixRefused),
            later,
        ),
        COA_NEW,
    );
    assert_eq!(ba.status, BaStatus::INVALID_PREFIX);
    assert_eq!(ba.sequence, SequenceNumber(2));
    assert_eq!(acknowledgement.change, None);
    assert_eq!(
        ha.cache().binding(addr(HOA)).unwrap().care_of,
        nemo::ha::CareOf::Ipv6(addr(COA))
    );
}

#[test]
fn a_rejection_changes_nothing_and_needs_no_forwarding() {
    let mut ha = home_agent();
    let now = start();
    register(&mut ha, 10, COA, now, "udp");
    let later = now + Duration::from_millis(1);
    // An older sequence number: 135 with the last accepted one.
    let Decision::Handled(handled) =
        ha.handle(&update(9, COA_NEW, 100, later), Arrival::Ipv6, "udp", later)
    else {
        panic!("a rejection waits for forwarding");
    };
    let (acknowledgement, ba) = acknowledgement(handled, COA_NEW);
    assert_eq!(ba.status, BaStatus::SEQUENCE_OUT_OF_WINDOW);
    assert_eq!(ba.sequence, SequenceNumber(10));
    assert_eq!(acknowledgement.change, None);
}

#[test]
fn a_refresh_is_classified_as_one() {
    let mut ha = home_agent();
    let now = start();
    register(&mut ha, 1, COA, now, "udp");
    let later = now + Duration::from_secs(1);
    let Decision::Forward(forward) =
        ha.handle(&update(2, COA, 100, later), Arrival::Ipv6, "udp", later)
    else {
        panic!("not accepted");
    };
    assert_eq!(forward.change().kind(), ChangeKind::Refreshed);
}

#[test]
fn malformed_packets_are_named_not_answered() {
    let mut ha = home_agent();
    let now = start();
    let good = update(1, COA, 100, now);

    let mut truncated = good.clone();
    truncated.truncate(30);
    let decision = ha.handle(&truncated, Arrival::Ipv6, "udp", now);
    assert!(
        matches!(
            &decision,
            Decision::Handled(Handled::Malformed(Malformed::Decode(
                DecodeError::Truncated { .. }
            )))
        ),
        "{decision:?}"
    );

    let mut tailed = good.clone();
    tailed.extend_from_slice(&[0; 64]);
    let Decision::Handled(Handled::Malformed(malformed)) =
        ha.handle(&tailed, Arrival::Ipv6, "udp", now)
    else {
        panic!("a packet with a tail was taken");
    };
    assert_eq!(malformed.reason(), "trailing_bytes");

    let mut corrupted = good.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0xff;
    assert_eq!(
        ha.handle(&corrupted, Arrival::Ipv6, "udp", now),
        Decision::Handled(Handled::Malformed(Malformed::Checksum))
    );
    assert!(ha.cache().is_empty());
}

#[test]
fn an_unknown_message_type_gets_a_binding_error_without_routing_header() {
    let mut ha = home_agent();
    let now = start();
    // MH type 200, unknown (RFC 6275 §9.2: Binding Error status 2).
    let mut mh = vec![59, 1, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    mh[1] = 1; // Header Len: 16 octets
    let packet = build_packet(
        &PacketRepr {
            source: addr(COA),
            destination: addr(HA),
            hop_limit: 64,
            type2_routing: None,
            home_address_option: None,
        },
        &mh,
    );
    let Decision::Handled(Handled::BindingError { transmit, status }) =
        ha.handle(&packet, Arrival::Ipv6, "native", now)
    else {
        panic!("no Binding Error");
    };
    assert_eq!(status, BeStatus::UNRECOGNIZED_MH_TYPE);
    assert_eq!(transmit.path, "native");
    let parsed = parse_packet(&transmit.packet).unwrap();
    assert!(parsed.checksum_ok());
    assert_eq!(parsed.repr.source, addr(HA));
    assert_eq!(parsed.repr.destination, addr(COA));
    assert_eq!(parsed.repr.type2_routing, None);
    let Message::BindingError(error) = MobilityHeader::decode(parsed.mh).unwrap().message else {
        panic!("not a Binding Error");
    };
    assert_eq!(error.home_address, addr(COA));
}

#[test]
fn an_unknown_spi_is_dropped_with_its_source() {
    let mut ha = home_agent();
    let now = start();
    let other = SecurityAssociation::new(0x9999, Algorithm::HmacSha256, vec![1; 32]).unwrap();
    let packet = Registration {
        home_address: addr(HOA),
        home_agent: addr(HA),
        care_of: std::net::IpAddr::V6(addr(COA)),
        prefixes: Vec::new(),
        lifetime: Lifetime(100),
        sequence: SequenceNumber(1),
        timestamp: ntp_time(now),
        mobile_router: true,
        nai: None,
        udp_over_ipv4: UdpOverIpv4::WhenNeeded,
    }
    .packet(&other)
    .unwrap();
    assert_eq!(
        ha.handle(&packet, Arrival::Ipv6, "udp", now),
        Decision::Handled(Handled::Dropped {
            reason: DropReason::UnknownSpi,
            source: addr(COA),
        })
    );
}

#[test]
fn refresh_requests_go_by_the_last_acknowledged_path() {
    let mut ha = home_agent();
    let now = start();
    register(&mut ha, 1, COA, now, "first");
    let later = now + Duration::from_secs(1);
    register(&mut ha, 2, COA_NEW, later, "second");
    // A lifetime of 100 units of 4 s, a refresh requested 60 s before the
    // end.
    let due = ha.poll_timeout().unwrap();
    assert_eq!(due, later + Duration::from_secs(400 - 60));
    let timeouts = ha.handle_timeout(due);
    assert!(timeouts.expired.is_empty());
    assert_eq!(timeouts.refresh_requests.len(), 1);
    let request = &timeouts.refresh_requests[0];
    assert_eq!(request.path, "second");
    let parsed = parse_packet(&request.packet).unwrap();
    assert!(parsed.checksum_ok());
    assert_eq!(parsed.repr.source, addr(HA));
    assert_eq!(parsed.repr.destination, addr(COA_NEW));
    assert_eq!(parsed.repr.type2_routing.unwrap().home_address, addr(HOA));
    assert!(matches!(
        MobilityHeader::decode(parsed.mh).unwrap().message,
        Message::BindingRefreshRequest(_)
    ));
    // Once per lifetime.
    assert!(ha.handle_timeout(due).refresh_requests.is_empty());

    let end = later + Duration::from_secs(400);
    let timeouts = ha.handle_timeout(end);
    assert_eq!(timeouts.expired.len(), 1);
    assert_eq!(timeouts.expired[0].kind(), ChangeKind::Removed);
    assert!(ha.cache().is_empty());
}

#[test]
fn a_binding_whose_forwarding_failed_gets_no_refresh_request() {
    let mut ha = home_agent();
    let now = start();
    let Decision::Forward(forward) =
        ha.handle(&update(1, COA, 100, now), Arrival::Ipv6, "udp", now)
    else {
        panic!("not accepted");
    };
    let (acknowledgement, _) = acknowledgement(
        ha.forwarded(
            forward,
            Forwarding::Failed(ForwardingFailure::PrefixRefused),
            now,
        ),
        COA,
    );
    assert_eq!(acknowledgement.status, BaStatus::INVALID_PREFIX);
    assert!(ha.cache().is_empty());
    assert_eq!(ha.poll_timeout(), None);
}

#[test]
fn a_data_plane_out_of_room_or_out_of_order_says_so() {
    // RFC 6275 §6.1.8: 130 when the home agent has no resources left, 128
    // when nothing about the registration is wrong; 141 stays for a
    // prefix the kernel refused (RFC 3963 §6.2).
    for (failure, status) in [
        (
            ForwardingFailure::NoResources,
            BaStatus::INSUFFICIENT_RESOURCES,
        ),
        (ForwardingFailure::Unavailable, BaStatus::REASON_UNSPECIFIED),
        (ForwardingFailure::PrefixRefused, BaStatus::INVALID_PREFIX),
    ] {
        let mut ha = home_agent();
        let now = start();
        let Decision::Forward(forward) =
            ha.handle(&update(1, COA, 100, now), Arrival::Ipv6, "udp", now)
        else {
            panic!("not accepted");
        };
        let (acknowledgement, _) =
            acknowledgement(ha.forwarded(forward, Forwarding::Failed(failure), now), COA);
        assert_eq!(acknowledgement.status, status, "{failure:?}");
        assert!(ha.cache().is_empty(), "{failure:?} left a binding");
    }
}

#[test]
fn a_deregistration_is_forwarded_as_a_removal_and_stops_refresh_requests() {
    let mut ha = home_agent();
    let now = start();
    register(&mut ha, 1, COA, now, "udp");
    let later = now + Duration::from_secs(1);
    let Decision::Forward(forward) =
        ha.handle(&update(2, COA, 0, later), Arrival::Ipv6, "udp", later)
    else {
        panic!("deregistration not accepted");
    };
    assert_eq!(forward.change().kind(), ChangeKind::Removed);
    let (acknowledgement, ba) =
        acknowledgement(ha.forwarded(forward, Forwarding::Installed, later), COA);
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert_eq!(ba.lifetime, Lifetime::ZERO);
    assert!(matches!(
        acknowledgement.change,
        Some(Change::Remove { .. })
    ));
    assert!(ha.cache().is_empty());
    // Only the invalid entry's end (RFC 6275 §10.3.2) is left to wait for.
    let due = ha.poll_timeout().unwrap();
    assert_eq!(due, later + nemo::ha::MAX_DELETE_BCE_TIMEOUT);
    let timeouts = ha.handle_timeout(due);
    assert!(timeouts.refresh_requests.is_empty() && timeouts.expired.is_empty());
}

#[test]
fn revoking_an_authorization_drops_the_next_update() {
    let mut ha = home_agent();
    let now = start();
    register(&mut ha, 1, COA, now, "udp");
    assert!(ha.revoke(addr(HOA)).is_some());
    let later = now + Duration::from_secs(1);
    assert!(matches!(
        ha.handle(&update(2, COA, 100, later), Arrival::Ipv6, "udp", later),
        Decision::Handled(Handled::Dropped {
            reason: DropReason::UnknownSpi,
            ..
        })
    ));
    // The binding stays until it expires or an operator removes it.
    assert!(ha.remove(addr(HOA)).is_some());
    assert!(ha.cache().is_empty());
}
