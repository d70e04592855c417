//! Dual-Stack Mobile IPv6 (RFC 5555) end to end in the sans-IO core: a
//! mobile router's registrar with an IPv4 care-of address against the home
//! agent's engine, the Binding Update delivered as a UDP socket over IPv4
//! delivers it (the datagram's source, a NAT's mapping or the care-of
//! address itself, is the `Arrival`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nemo::auth::{Algorithm, ReplayPolicy, SecurityAssociation};
use nemo::ha::{
    Arrival, Authorization, AuthorizationTable, CareOf, ChangeKind, Decision, DropReason,
    Forwarding, Handled, HomeAgent, HomeAgentConfig, Ipv4CareOfs, UdpEncapsulation,
};
use nemo::registration::{Encapsulation, Event, InstanceConfig, Registrar, State, UdpOverIpv4};
use nemo::wire::{
    parse_packet, BaStatus, BuFlags, Message, MobilityHeader, MobilityOption, NatDetection,
    NatRefresh, SequenceNumber,
};
use nemo_testkit::{addr, net};

const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const COA6: &str = "2001:db8:2::10";
const MNP: &str = "2001:db8:100::/56";
/// The mobile router's address behind the NAT, and the NAT's.
const COA4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NAT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const KEEPALIVE: Duration = Duration::from_secs(25);

fn sa() -> SecurityAssociation {
    SecurityAssociation::new(0x1000, Algorithm::HmacSha256, vec![7; 32]).unwrap()
}

fn accepting() -> Ipv4CareOfs {
    Ipv4CareOfs::Accepted {
        nat_keepalive: KEEPALIVE,
        udp: UdpEncapsulation::WhenNeeded,
    }
}

fn home_agent(ipv4_care_of: Ipv4CareOfs) -> HomeAgent<()> {
    HomeAgent::new(
        HomeAgentConfig {
            home_prefixes: vec![net("2001:db8:1::/64")],
            max_lifetime: Duration::from_secs(600),
            replay: ReplayPolicy::default(),
            ipv4_care_of,
            ..HomeAgentConfig::default()
        },
        AuthorizationTable::new(vec![Authorization {
            home_address: addr(HOA),
            security_associations: vec![sa()],
            mobile_router: true,
            prefixes: vec![net(MNP)].into(),
        }])
        .unwrap(),
    )
}

fn registrar() -> Registrar {
    Registrar::new(
        InstanceConfig {
            home_address: addr(HOA),
            home_agent: addr(HA),
            prefixes: vec![net(MNP)],
            lifetime: Duration::from_secs(400),
            sa: sa(),
            nai: None,
        },
        SequenceNumber(1),
    )
}

/// A mobile router and its home agent, and the clocks they share.
struct World {
    ha: HomeAgent<()>,
    mr: Registrar,
    now: Instant,
    wall: SystemTime,
}

/// What became of one Binding Update at the home agent.
#[derive(Debug)]
enum Delivered {
    /// Acknowledged with this status; the kind of change it made.
    Answered(BaStatus, Option<ChangeKind>),
    /// Dropped without an answer.
    Dropped(DropReason),
}

impl World {
    fn new(ipv4_care_of: Ipv4CareOfs) -> World {
        World {
            ha: home_agent(ipv4_care_of),
            mr: registrar(),
            now: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    /// Delivers `packet` to the home agent as having arrived as `arrival`,
    /// and its answer, if any, to the registrar.
    fn deliver(&mut self, packet: &[u8], arrival: Arrival) -> Delivered {
        let handled = match self.ha.handle(packet, arrival, (), self.wall) {
            Decision::Forward(forward) => {
                self.ha.forwarded(forward, Forwarding::Installed, self.wall)
            }
            Decision::Handled(handled) => handled,
        };
        match handled {
            Handled::Acknowledge(acknowledgement) => {
                let answer = acknowledgement.transmit.packet;
                // RFC 5555 §4.5: to an IPv4 care-of address the answer goes
                // to the home address, with no routing header.
                let parsed = parse_packet(&answer).unwrap();
                if !matches!(acknowledgement.care_of, CareOf::Ipv6(_)) {
                    assert_eq!(parsed.repr.destination, addr(HOA));
                    assert_eq!(parsed.repr.type2_routing, None);
                }
                let _ = self.mr.handle_ack(&answer, self.now, self.wall);
                Delivered::Answered(
                    acknowledgement.status,
                    acknowledgement.change.map(|c| c.kind()),
                )
            }
            Handled::Dropped { reason, .. } => Delivered::Dropped(reason),
            other => panic!("{other:?}"),
        }
    }

    /// The registrar's next Binding Update.
    fn update(&mut self) -> Vec<u8> {
        self.mr.poll_transmit().expect("a Binding Update to send")
    }

    /// The Binding Update the registrar sends from `care_of`.
    fn update_from(&mut self, care_of: impl Into<IpAddr>) -> Vec<u8> {
        self.mr
            .set_care_of(Some(care_of.into()), self.now, self.wall);
        self.update()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.mr.poll_event()).collect()
    }

    fn binding(&self) -> CareOf {
        self.ha.cache().binding(addr(HOA)).unwrap().care_of
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall += by;
        self.mr.handle_timeout(self.now, self.wall);
    }
}

fn from_nat(port: u16) -> Arrival {
    Arrival::UdpIpv4(SocketAddrV4::new(NAT, port))
}

/// The Binding Update the registrar sends from an IPv4 care-of address:
/// from the home address, no Home Address option, the IPv4 Care-of Address
/// option (RFC 5555 §4.2).
#[test]
fn the_binding_update_from_an_ipv4_care_of_address_is_as_section_4_2_draws_it() {
    let mut world = World::new(accepting());
    let packet = world.update_from(COA4);
    let parsed = parse_packet(&packet).unwrap();
    assert_eq!(parsed.repr.source, addr(HOA));
    assert_eq!(parsed.repr.destination, addr(HA));
    assert_eq!(parsed.repr.home_address_option, None);
    let bu = binding_update(&packet);
    assert!(bu
        .options
        .contains(&MobilityOption::Ipv4CareOfAddress(COA4)));
    assert_eq!(bu.flags, BuFlags::mobile_router_home_registration());
}

#[test]
fn behind_a_nat_the_tunnel_is_udp_to_the_mapping_and_the_refresh_keeps_it_open() {
    let mut world = World::new(accepting());
    let packet = world.update_from(COA4);
    assert!(matches!(
        world.deliver(&packet, from_nat(40000)),
        Delivered::Answered(BaStatus::ACCEPTED, Some(ChangeKind::Created))
    ));
    assert_eq!(
        world.binding(),
        CareOf::Udp {
            care_of: COA4,
            outer: SocketAddrV4::new(NAT, 40000)
        }
    );
    let events = world.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Registered {
                care_of: IpAddr::V4(COA4),
                encapsulation: Encapsulation::Udp {
                    keepalive: Some(KEEPALIVE)
                },
                ..
            }]
        ),
        "{events:?}"
    );
    // RFC 5555 §4.3: the refresh comes at the NAT's keepalive, not at
    // three quarters of the 400 s lifetime.
    assert_eq!(world.mr.poll_timeout(), Some(world.now + KEEPALIVE));
    world.advance(KEEPALIVE);
    let refresh = world.update();
    assert!(matches!(
        world.deliver(&refresh, from_nat(40000)),
        Delivered::Answered(BaStatus::ACCEPTED, Some(ChangeKind::Refreshed))
    ));
}

#[test]
fn without_a_nat_the_tunnel_is_ipv6_in_ipv4_with_no_keepalive() {
    let mut world = World::new(accepting());
    let packet = world.update_from(COA4);
    world.deliver(&packet, Arrival::UdpIpv4(SocketAddrV4::new(COA4, 4191)));
    assert_eq!(world.binding(), CareOf::Ipv4(COA4));
    assert!(matches!(
        world.events().as_slice(),
        [Event::Registered {
            encapsulation: Encapsulation::Ipv4,
            ..
        }]
    ));
    assert_eq!(
        world.mr.poll_timeout(),
        Some(world.now + Duration::from_secs(300))
    );
}

/// RFC 5555 §3.1.3, §4.4.1: a router told that its site drops IPv6 in
/// IPv4 asks for UDP with the F flag and gets it without a NAT (no
/// keepalive: there is no mapping to hold open); from an IPv6 care-of
/// address it does not set F ("SHOULD NOT").
#[test]
fn a_router_that_always_wants_udp_sets_f_and_gets_udp_without_a_nat() {
    let mut world = World::new(accepting());
    world.mr.set_udp_over_ipv4(UdpOverIpv4::Always);
    let packet = world.update_from(COA4);
    assert!(binding_update(&packet).flags.force_udp, "F set over IPv4");
    registered_in_udp_without_keepalive(&mut world, &packet);
    let packet = world.update_from(addr(COA6));
    assert!(!binding_update(&packet).flags.force_udp, "no F over IPv6");
}

/// Delivers `packet` from COA4 with no NAT between: the binding is UDP
/// and the mobile router is told so, with no keepalive (no mapping to
/// hold open).
fn registered_in_udp_without_keepalive(world: &mut World, packet: &[u8]) {
    world.deliver(packet, Arrival::UdpIpv4(SocketAddrV4::new(COA4, 4191)));
    assert!(matches!(world.binding(), CareOf::Udp { .. }));
    assert!(matches!(
        world.events().as_slice(),
        [Event::Registered {
            encapsulation: Encapsulation::Udp { keepalive: None },
            ..
        }]
    ));
}

/// The Binding Update in a registrar's packet.
fn binding_update(packet: &[u8]) -> nemo::wire::BindingUpdate {
    let parsed = parse_packet(packet).unwrap();
    let Message::BindingUpdate(bu) = MobilityHeader::decode(parsed.mh).unwrap().message else {
        panic!("not a Binding Update");
    };
    bu
}

#[test]
fn a_home_agent_that_always_wants_udp_says_so_and_asks_for_no_keepalive() {
    let mut world = World::new(Ipv4CareOfs::Accepted {
        nat_keepalive: KEEPALIVE,
        udp: UdpEncapsulation::Always,
    });
    let packet = world.update_from(COA4);
    registered_in_udp_without_keepalive(&mut world, &packet);
}

#[test]
fn a_nat_rebinding_is_followed_from_an_authenticated_fresh_binding_update_only() {
    let mut world = World::new(accepting());
    let first = world.update_from(COA4);
    world.deliver(&first, from_nat(40000));
    world.events();
    let mapped = world.binding();

    // The NAT forgot its mapping; the same (captured) Binding Update from
    // another port is a replay: refused, the binding stays where it was.
    world.advance(Duration::from_secs(1));
    let replayed = world.deliver(&first, from_nat(40001));
    assert!(
        matches!(
            replayed,
            Delivered::Answered(status, None) if !status.is_accepted()
        ),
        "{replayed:?}"
    );
    assert_eq!(world.binding(), mapped);

    // One signed with another key, newer sequence number, from another
    // port: refused unauthenticated.
    let mut forged = Registrar::new(
        InstanceConfig {
            sa: SecurityAssociation::new(0x1000, Algorithm::HmacSha256, vec![8; 32]).unwrap(),
            ..world.mr.config().clone()
        },
        SequenceNumber(1000),
    );
    forged.set_care_of(Some(IpAddr::V4(COA4)), world.now, world.wall);
    let forged_packet = forged.poll_transmit().unwrap();
    assert!(matches!(
        world.deliver(&forged_packet, from_nat(40002)),
        Delivered::Answered(BaStatus::AUTH_FAIL, None)
    ));
    assert_eq!(world.binding(), mapped);

    // The mobile router's next refresh through the new mapping moves the
    // tunnel there.
    world.advance(KEEPALIVE);
    let refresh = world.update();
    assert!(matches!(
        world.deliver(&refresh, from_nat(40001)),
        Delivered::Answered(BaStatus::ACCEPTED, Some(ChangeKind::Moved))
    ));
    assert_eq!(
        world.binding(),
        CareOf::Udp {
            care_of: COA4,
            outer: SocketAddrV4::new(NAT, 40001)
        }
    );
}

#[test]
fn a_home_agent_without_ipv4_tunnels_refuses_129_and_still_reports_the_nat() {
    let mut world = World::new(Ipv4CareOfs::Refused);
    let packet = world.update_from(COA4);
    let handled = match world.ha.handle(&packet, from_nat(40000), (), world.wall) {
        Decision::Handled(handled) => handled,
        Decision::Forward(_) => panic!("accepted"),
    };
    let Handled::Acknowledge(acknowledgement) = handled else {
        panic!("{handled:?}")
    };
    assert_eq!(
        acknowledgement.status,
        BaStatus::ADMINISTRATIVELY_PROHIBITED
    );
    let ba = nemo::registration::check_binding_ack(
        &acknowledgement.transmit.packet,
        COA4,
        addr(HOA),
        &sa(),
    )
    .unwrap();
    assert!(ba.options.iter().any(|o| matches!(
        o,
        MobilityOption::NatDetection(NatDetection {
            udp_required: false,
            refresh: NatRefresh::Unspecified
        })
    )));
    world
        .mr
        .handle_ack(&acknowledgement.transmit.packet, world.now, world.wall)
        .unwrap();
    assert_eq!(
        world.mr.state(),
        State::Rejected {
            status: BaStatus::ADMINISTRATIVELY_PROHIBITED
        }
    );
    assert!(world.ha.cache().binding(addr(HOA)).is_none());
}

#[test]
fn an_ipv4_care_of_address_needs_both_its_option_and_udp_over_ipv4() {
    let mut world = World::new(accepting());
    // The IPv4 option in a packet that came over IPv6.
    let packet = world.update_from(COA4);
    assert!(matches!(
        world.deliver(&packet, Arrival::Ipv6),
        Delivered::Dropped(DropReason::BadCareOfAddress)
    ));
    // A Binding Update from an IPv6 care-of address arriving over IPv4:
    // without the option it would name no care-of address at all.
    let packet = world.update_from(addr(COA6));
    assert!(matches!(
        world.deliver(&packet, from_nat(40000)),
        Delivered::Dropped(DropReason::BadCareOfAddress)
    ));
    assert!(world.ha.cache().binding(addr(HOA)).is_none());
}

#[test]
fn one_registration_moves_between_an_ipv6_site_and_an_ipv4_site_both_ways() {
    let mut world = World::new(accepting());
    let coa6 = addr(COA6);
    let packet = world.update_from(coa6);
    world.deliver(&packet, Arrival::Ipv6);
    assert_eq!(world.binding(), CareOf::Ipv6(coa6));

    let packet = world.update_from(COA4);
    assert!(matches!(
        world.deliver(&packet, from_nat(40000)),
        Delivered::Answered(BaStatus::ACCEPTED, Some(ChangeKind::Moved))
    ));
    assert!(matches!(world.binding(), CareOf::Udp { .. }));

    let packet = world.update_from(coa6);
    assert!(matches!(
        world.deliver(&packet, Arrival::Ipv6),
        Delivered::Answered(BaStatus::ACCEPTED, Some(ChangeKind::Moved))
    ));
    assert_eq!(world.binding(), CareOf::Ipv6(coa6));
    let registered: Vec<Encapsulation> = world
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Registered { encapsulation, .. } => Some(encapsulation),
            _ => None,
        })
        .collect();
    assert_eq!(
        registered,
        [
            Encapsulation::Ipv6,
            Encapsulation::Udp {
                keepalive: Some(KEEPALIVE)
            },
            Encapsulation::Ipv6
        ]
    );
}

#[test]
fn a_proxy_registration_is_not_served() {
    let mut world = World::new(accepting());
    let packet = world.update_from(addr(COA6));
    let parsed = parse_packet(&packet).unwrap();
    let Message::BindingUpdate(mut bu) = MobilityHeader::decode(parsed.mh).unwrap().message else {
        panic!()
    };
    bu.flags.proxy_registration = true;
    let mut mh = MobilityHeader::new(Message::BindingUpdate(bu))
        .encode()
        .unwrap();
    nemo::auth::sign(&mut mh, addr(COA6), addr(HOA), &sa()).unwrap();
    let packet = nemo::wire::build_packet(&parsed.repr, &mh);
    assert!(matches!(
        world.deliver(&packet, Arrival::Ipv6),
        Delivered::Answered(BaStatus::HOME_REGISTRATION_NOT_SUPPORTED, None)
    ));
}
