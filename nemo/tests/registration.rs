//! The mobile router's registration state machine against the home agent's
//! engine, both sans-IO, with simulated time and a network that can lose
//! packets.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
use common::AnswerAtOnce;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nemo::auth::{Algorithm, ReplayPolicy, SecurityAssociation};
use nemo::ha::{
    Arrival, Authorization, AuthorizationTable, BindingCache, HomeAgentConfig, Outcome, Received,
    Reply,
};
use nemo::registration::{
    Event, InstanceConfig, Registrar, State, INITIAL_BINDACK_TIMEOUT_FIRST_REG, MAX_BINDACK_TIMEOUT,
};
use nemo::wire::{
    build_packet, parse_packet, BaStatus, MobilityHeader, PacketRepr, SequenceNumber,
    Type2RoutingHeader,
};
use nemo_testkit::{addr, net};

const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const COA: &str = "2001:db8:2::10";
const COA_NEW: &str = "2001:db8:3::10";

fn sa(key: u8) -> SecurityAssociation {
    SecurityAssociation::new(0x1000, Algorithm::HmacSha256, vec![key; 32]).unwrap()
}

fn table(prefixes: &[&str]) -> AuthorizationTable {
    AuthorizationTable::new(vec![Authorization {
        home_address: addr(HOA),
        security_associations: vec![sa(7)],
        mobile_router: true,
        prefixes: prefixes.iter().map(|p| net(p)).collect(),
    }])
    .unwrap()
}

/// A simulated world: one home agent engine, one registrar, a clock.
struct World {
    ha: BindingCache,
    authorizations: AuthorizationTable,
    mr: Registrar,
    now: Instant,
    wall: SystemTime,
    /// Wall-clock error of the mobile router (it can be behind).
    mr_clock_error: Duration,
    /// Drop this many of the next packets in each direction.
    drop_updates: usize,
    drop_acks: usize,
    updates_seen: usize,
}

impl World {
    fn new(key: u8, prefixes: &[&str]) -> World {
        World {
            ha: BindingCache::new(HomeAgentConfig {
                home_prefixes: vec![net("2001:db8:1::/64")],
                max_lifetime: Duration::from_secs(600),
                replay: ReplayPolicy::default(),
                refresh_request_before: None,
                ..HomeAgentConfig::default()
            }),
            authorizations: table(&["2001:db8:100::/56"]),
            mr: Registrar::new(
                InstanceConfig {
                    home_address: addr(HOA),
                    home_agent: addr(HA),
                    prefixes: prefixes.iter().map(|p| net(p)).collect(),
                    lifetime: Duration::from_secs(400),
                    sa: sa(key),
                    nai: Some("tenant@nemo.example".into()),
                },
                SequenceNumber(0),
            ),
            now: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            mr_clock_error: Duration::ZERO,
            drop_updates: 0,
            drop_acks: 0,
            updates_seen: 0,
        }
    }

    fn mr_wall(&self) -> SystemTime {
        self.wall - self.mr_clock_error
    }

    fn frame(reply: &Reply) -> Vec<u8> {
        build_packet(
            &PacketRepr {
                source: addr(HA),
                destination: reply.care_of.ipv6().unwrap(),
                hop_limit: 64,
                type2_routing: Some(Type2RoutingHeader {
                    home_address: reply.home_address,
                }),
                home_address_option: None,
            },
            &reply.mh,
        )
    }

    /// Delivers everything the mobile router has to send, and the answers.
    fn exchange(&mut self) {
        while let Some(packet) = self.mr.poll_transmit() {
            self.updates_seen += 1;
            if self.drop_updates > 0 {
                self.drop_updates -= 1;
                continue;
            }
            let parsed = parse_packet(&packet).unwrap();
            assert!(parsed.checksum_ok());
            let header = MobilityHeader::decode(parsed.mh).unwrap();
            let outcome = self.ha.answer_now(
                Received {
                    mh: parsed.mh,
                    source: parsed.repr.source,
                    home_address: parsed.repr.home_address_option.map(|h| h.home_address),
                    arrival: Arrival::Ipv6,
                },
                &header,
                self.wall,
                &self.authorizations,
            );
            let Outcome::Acknowledge { reply, .. } = outcome else {
                continue;
            };
            if self.drop_acks > 0 {
                self.drop_acks -= 1;
                continue;
            }
            let (now, wall) = (self.now, self.mr_wall());
            // An answer that does not verify is refused by the registrar;
            // the tests look at its state.
            let _ = self.mr.handle_ack(&Self::frame(&reply), now, wall);
        }
    }

    /// Moves time forward, firing the registrar's timer when due.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(at) = self.mr.poll_timeout().filter(|at| *at <= end) {
            let step = at.saturating_duration_since(self.now);
            self.now = at;
            self.wall += step;
            let (now, wall) = (self.now, self.mr_wall());
            self.mr.handle_timeout(now, wall);
            self.exchange();
        }
        self.wall += end.saturating_duration_since(self.now);
        self.now = end;
    }

    fn attach(&mut self, care_of: &str) {
        let (now, wall) = (self.now, self.mr_wall());
        self.mr
            .set_care_of(Some(std::net::IpAddr::V6(addr(care_of))), now, wall);
        self.exchange();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.mr.poll_event()).collect()
    }
}

#[test]
fn registers_and_refreshes_before_the_lifetime_ends() {
    let mut world = World::new(7, &["2001:db8:100::/56"]);
    assert_eq!(
        world.mr.poll_timeout(),
        None,
        "nothing to do without a care-of address"
    );
    world.attach(COA);
    assert!(matches!(world.mr.state(), State::Registered { .. }));
    let events = world.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::Registered { care_of, lifetime, .. }] if *care_of == addr(COA) && *lifetime == Duration::from_secs(400)
        ),
        "{events:?}"
    );
    let binding = world.ha.binding(addr(HOA)).unwrap().clone();
    assert_eq!(*binding.prefixes, [net("2001:db8:100::/56")]);
    // Refresh at three quarters of the lifetime: 300 s.
    assert_eq!(
        world.mr.poll_timeout(),
        Some(world.now + Duration::from_secs(300))
    );
    world.advance(Duration::from_secs(299));
    assert_eq!(world.mr.registrations, 1);
    world.advance(Duration::from_secs(1));
    assert_eq!(world.mr.registrations, 2);
    let refreshed = world.ha.binding(addr(HOA)).unwrap();
    assert!(refreshed.expires_at > binding.expires_at);
    // Over an hour, the binding never lapses.
    for _ in 0..12 {
        world.advance(Duration::from_secs(300));
        assert!(world.ha.binding(addr(HOA)).is_some());
        world.ha.expire(world.wall);
    }
}

#[test]
fn implicit_mode_sends_no_prefixes_and_gets_the_configured_ones() {
    let mut world = World::new(7, &[]);
    world.attach(COA);
    assert_eq!(
        *world.ha.binding(addr(HOA)).unwrap().prefixes,
        [net("2001:db8:100::/56")]
    );
}

#[test]
fn a_configured_first_registration_timeout_is_the_first_wait() {
    // RFC 6275 §13 makes InitialBindackTimeoutFirstReg a configuration
    // variable: a lost first registration is sent again after it, then
    // backs off from there.
    let mut world = World::new(7, &[]);
    world
        .mr
        .set_first_registration_timeout(Duration::from_millis(300));
    world.drop_acks = 2;
    world.attach(COA);
    assert_eq!(
        world.mr.poll_timeout(),
        Some(world.now + Duration::from_millis(300))
    );
    world.advance(Duration::from_millis(300));
    assert_eq!(
        world.mr.poll_timeout(),
        Some(world.now + Duration::from_millis(600))
    );
    world.advance(Duration::from_millis(600));
    assert!(matches!(world.mr.state(), State::Registered { .. }));
    // Below 100 ms is taken as 100 ms.
    let mut other = World::new(7, &[]);
    other
        .mr
        .set_first_registration_timeout(Duration::from_millis(1));
    other.drop_acks = 1;
    other.attach(COA);
    assert_eq!(
        other.mr.poll_timeout(),
        Some(other.now + Duration::from_millis(100))
    );
}

#[test]
fn lost_acknowledgements_are_retransmitted_with_back_off() {
    let mut world = World::new(7, &[]);
    world.drop_acks = 7;
    world.attach(COA);
    assert_eq!(world.mr.state(), State::Registering);
    // 1.5 s first, doubling each time: 1.5, 3, 6, 12, 24, 32 (cap), 32.
    let mut expected = INITIAL_BINDACK_TIMEOUT_FIRST_REG;
    let mut sequences = vec![world.mr.sequence()];
    for _ in 0..7 {
        assert_eq!(world.mr.poll_timeout(), Some(world.now + expected));
        world.advance(expected);
        sequences.push(world.mr.sequence());
        expected = (expected * 2).min(MAX_BINDACK_TIMEOUT);
    }
    assert!(matches!(world.mr.state(), State::Registered { .. }));
    assert_eq!(world.mr.retransmissions, 7);
    // Every retransmission used a new sequence number (RFC 6275 §11.8).
    for pair in sequences.windows(2) {
        assert!(pair[1].is_newer_than(pair[0]), "{sequences:?}");
    }
    let took = world.events().into_iter().find_map(|e| match e {
        Event::Registered { took, .. } => Some(took),
        _ => None,
    });
    assert_eq!(
        took,
        Some(Duration::from_millis(
            1500 + 3000 + 6000 + 12000 + 24000 + 32000 + 32000
        ))
    );
}

#[test]
fn a_late_answer_to_an_earlier_transmission_still_counts() {
    let mut world = World::new(7, &[]);
    // The first BU reaches the home agent but its answer comes late: hold
    // it, let the registrar retransmit, then deliver the old answer.
    let (now, wall) = (world.now, world.mr_wall());
    world
        .mr
        .set_care_of(Some(std::net::IpAddr::V6(addr(COA))), now, wall);
    let first = world.mr.poll_transmit().unwrap();
    let parsed = parse_packet(&first).unwrap();
    let header = MobilityHeader::decode(parsed.mh).unwrap();
    let Outcome::Acknowledge { reply, .. } = world.ha.answer_now(
        Received {
            mh: parsed.mh,
            source: parsed.repr.source,
            home_address: parsed.repr.home_address_option.map(|h| h.home_address),
            arrival: Arrival::Ipv6,
        },
        &header,
        world.wall,
        &world.authorizations,
    ) else {
        panic!("not acknowledged");
    };
    world.drop_updates = 1;
    world.advance(INITIAL_BINDACK_TIMEOUT_FIRST_REG);
    let (now, wall) = (world.now, world.mr_wall());
    world
        .mr
        .handle_ack(&World::frame(&reply), now, wall)
        .unwrap();
    assert!(matches!(world.mr.state(), State::Registered { .. }));
}

#[test]
fn a_new_care_of_address_registers_at_once() {
    let mut world = World::new(7, &[]);
    world.attach(COA);
    world.advance(Duration::from_secs(10));
    world.attach(COA_NEW);
    assert_eq!(
        world.ha.binding(addr(HOA)).unwrap().care_of,
        nemo::ha::CareOf::Ipv6(addr(COA_NEW))
    );
    assert_eq!(world.mr.registrations, 2);
    // Without a care-of address nothing is sent and no timer runs.
    let (now, wall) = (world.now, world.mr_wall());
    world.mr.set_care_of(None, now, wall);
    assert_eq!(world.mr.state(), State::Detached);
    assert_eq!(world.mr.poll_timeout(), None);
    assert_eq!(world.mr.poll_transmit(), None);
}

#[test]
fn a_restarted_home_agent_is_registered_again() {
    let mut world = World::new(7, &[]);
    world.attach(COA);
    // The home agent loses its cache: the next refresh recreates it.
    world.ha = BindingCache::new(world.ha.config().clone());
    world.advance(Duration::from_secs(300));
    assert_eq!(
        world.ha.binding(addr(HOA)).unwrap().care_of,
        nemo::ha::CareOf::Ipv6(addr(COA))
    );
}

#[test]
fn sequence_out_of_window_takes_the_home_agents_number() {
    let mut world = World::new(7, &[]);
    world.attach(COA);
    // A mobile router that restarted without its sequence number.
    let config = world.mr.config().clone();
    world.mr = Registrar::new(config, SequenceNumber(65000));
    world.wall += Duration::from_secs(1);
    world.attach(COA_NEW);
    assert!(matches!(world.mr.state(), State::Registered { .. }));
    assert_eq!(
        world.ha.binding(addr(HOA)).unwrap().care_of,
        nemo::ha::CareOf::Ipv6(addr(COA_NEW))
    );
    assert_eq!(world.mr.last_status, Some(BaStatus::ACCEPTED));
    assert_eq!(world.updates_seen, 3, "one BU, a 135, one more BU");
}

#[test]
fn a_clock_behind_is_resynchronized_by_144() {
    let mut world = World::new(7, &[]);
    world.mr_clock_error = Duration::from_secs(60);
    world.attach(COA);
    assert!(matches!(world.mr.state(), State::Registered { .. }));
    assert_eq!(
        world.updates_seen, 2,
        "a 144, then a BU on the home agent's clock"
    );
}

#[test]
fn a_wrong_key_is_reported_and_retried_slowly() {
    let mut world = World::new(9, &[]);
    world.attach(COA);
    // The home agent's 146 is signed with the right key, which this mobile
    // router does not have: it cannot trust it, reports it, keeps trying.
    assert_eq!(world.mr.state(), State::Registering);
    assert_eq!(
        world.mr.last_unauthenticated_status,
        Some(BaStatus::AUTH_FAIL)
    );
    assert_eq!(world.mr.last_status, None);
    world.advance(Duration::from_secs(600));
    // The first BU, five retransmissions by 1.5 + 3 + 6 + 12 + 24 = 46.5 s,
    // then one every 32 s: 17 more by 600 s. 23 in ten minutes.
    assert_eq!(world.updates_seen, 23);
    assert!(world.ha.binding(addr(HOA)).is_none());
}

#[test]
fn a_verified_auth_failure_stops_registration() {
    let mut world = World::new(7, &[]);
    // The BU is damaged on the way (the home agent sees a bad MAC and says
    // 146, signed with the right key): the mobile router stops.
    let (now, wall) = (world.now, world.mr_wall());
    world
        .mr
        .set_care_of(Some(std::net::IpAddr::V6(addr(COA))), now, wall);
    let mut packet = world.mr.poll_transmit().unwrap();
    let last = packet.len() - 1;
    packet[last] ^= 1;
    let parsed = parse_packet(&packet).unwrap();
    let header = MobilityHeader::decode(parsed.mh).unwrap();
    let Outcome::Acknowledge { reply, status, .. } = world.ha.answer_now(
        Received {
            mh: parsed.mh,
            source: parsed.repr.source,
            home_address: parsed.repr.home_address_option.map(|h| h.home_address),
            arrival: Arrival::Ipv6,
        },
        &header,
        world.wall,
        &world.authorizations,
    ) else {
        panic!("no answer");
    };
    assert_eq!(status, BaStatus::AUTH_FAIL);
    world
        .mr
        .handle_ack(&World::frame(&reply), now, wall)
        .unwrap();
    assert_eq!(
        world.mr.state(),
        State::Rejected {
            status: BaStatus::AUTH_FAIL
        }
    );
    assert_eq!(
        world.events(),
        vec![Event::Rejected {
            status: BaStatus::AUTH_FAIL
        }]
    );
    assert_eq!(
        world.mr.poll_timeout(),
        None,
        "RFC 4285 §5.3: no more Binding Updates"
    );
}

#[test]
fn other_rejections_back_off_without_hammering() {
    let mut world = World::new(7, &["2001:db8:999::/64"]);
    world.attach(COA);
    assert_eq!(
        world.mr.state(),
        State::Rejected {
            status: BaStatus::NOT_AUTHORIZED_FOR_PREFIX
        }
    );
    // 32 s, then 64 s, 128 s, 256 s, 300 s (cap).
    let mut sent = world.updates_seen;
    for wait in [32u64, 64, 128, 256, 300, 300] {
        world.advance(Duration::from_secs(wait - 1));
        assert_eq!(world.updates_seen, sent, "too early at {wait}");
        world.advance(Duration::from_secs(1));
        sent += 1;
        assert_eq!(world.updates_seen, sent, "retry at {wait}");
    }
}

#[test]
fn binding_refresh_request_gets_a_binding_update() {
    let mut world = World::new(7, &[]);
    world.attach(COA);
    let before = world.updates_seen;
    let brr = MobilityHeader::new(nemo::wire::Message::BindingRefreshRequest(
        nemo::wire::BindingRefreshRequest {
            options: vec![sa(7).unsigned_option()],
        },
    ))
    .encode()
    .unwrap();
    let mut signed = brr.clone();
    nemo::auth::sign(&mut signed, addr(COA), addr(HOA), &sa(7)).unwrap();
    let (now, wall) = (world.now, world.mr_wall());
    // An unauthenticated request is ignored.
    assert!(!world.mr.handle_refresh_request(&brr, now, wall));
    assert!(world.mr.handle_refresh_request(&signed, now, wall));
    world.exchange();
    assert_eq!(world.updates_seen, before + 1);
    assert_eq!(world.mr.registrations, 2);
}

#[test]
fn deregistration_removes_the_binding() {
    let mut world = World::new(7, &[]);
    world.attach(COA);
    world.drop_acks = 1;
    let (now, wall) = (world.now, world.mr_wall());
    world.mr.deregister(now, wall);
    world.exchange();
    assert_eq!(world.mr.state(), State::Deregistering);
    world.advance(Duration::from_secs(1));
    assert_eq!(world.mr.state(), State::Deregistered);
    assert!(world.ha.binding(addr(HOA)).is_none());
    assert!(world.events().contains(&Event::Deregistered));
    assert_eq!(world.mr.poll_timeout(), None);
}

#[test]
fn garbage_and_forged_answers_change_nothing() {
    let mut world = World::new(7, &[]);
    let (now, wall) = (world.now, world.mr_wall());
    world
        .mr
        .set_care_of(Some(std::net::IpAddr::V6(addr(COA))), now, wall);
    let _ = world.mr.poll_transmit();
    assert!(world.mr.handle_ack(&[0u8; 10], now, wall).is_err());
    assert!(world.mr.handle_ack(&[0x60; 80], now, wall).is_err());
    // A BA signed with another key.
    let other = World::new(9, &[]);
    let forged = nemo::wire::BindingAck {
        status: BaStatus::ACCEPTED,
        flags: nemo::wire::BaFlags::default(),
        sequence: world.mr.sequence(),
        lifetime: nemo::wire::Lifetime(100),
        options: vec![other.mr.config().sa.unsigned_option()],
    };
    let mut mh = MobilityHeader::new(nemo::wire::Message::BindingAck(forged))
        .encode()
        .unwrap();
    nemo::auth::sign(&mut mh, addr(COA), addr(HOA), &other.mr.config().sa).unwrap();
    let packet = World::frame(&Reply {
        mh,
        care_of: nemo::ha::CareOf::Ipv6(addr(COA)),
        home_address: addr(HOA),
    });
    assert!(world.mr.handle_ack(&packet, now, wall).is_err());
    assert_eq!(world.mr.state(), State::Registering);
}
