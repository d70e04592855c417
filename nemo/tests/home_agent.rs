//! The binding-cache engine, every status code and cache transition, with
//! simulated time.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
use common::AnswerAtOnce;
use std::net::Ipv6Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nemo::auth::{self, Algorithm, ReplayPolicy, SecurityAssociation};
use nemo::ha::{
    ntp_time, Arrival, Authorization, AuthorizationError, AuthorizationTable, Binding,
    BindingCache, CareOf, Change, DropReason, HomeAgentConfig, Outcome, Received,
};
use nemo::wire::{
    BaStatus, BeStatus, BindingAck, BindingUpdate, BuFlags, Lifetime, Message, MhType,
    MobileNetworkPrefix, MobilityHeader, MobilityOption, NtpTimestamp, SequenceNumber,
};
use nemo_testkit::{addr, net};

const HOA_A: &str = "2001:db8:1::100";
const HOA_B: &str = "2001:db8:1::200";
const HOA_HOST: &str = "2001:db8:1::300";
const HOA_NO_PREFIX: &str = "2001:db8:1::400";
const HOA_AWAY: &str = "2001:db8:9::1";
const COA: &str = "2001:db8:2::10";
const COA_NEW: &str = "2001:db8:3::10";

fn sa(spi: u32) -> SecurityAssociation {
    SecurityAssociation::new(spi, Algorithm::HmacSha256, vec![spi as u8; 32]).unwrap()
}

fn authorization(home: &str, spi: u32, mobile_router: bool, prefixes: &[&str]) -> Authorization {
    Authorization {
        home_address: addr(home),
        security_associations: vec![sa(spi)],
        mobile_router,
        prefixes: prefixes.iter().map(|p| net(p)).collect(),
    }
}

fn table() -> AuthorizationTable {
    AuthorizationTable::new(vec![
        authorization(HOA_A, 0x1000, true, &["2001:db8:100::/56"]),
        authorization(HOA_B, 0x2000, true, &["2001:db8:200::/56"]),
        authorization(HOA_HOST, 0x3000, false, &[]),
        authorization(HOA_NO_PREFIX, 0x4000, true, &[]),
        authorization(HOA_AWAY, 0x5000, true, &["2001:db8:900::/56"]),
    ])
    .unwrap()
}

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn home_agent() -> BindingCache {
    BindingCache::new(HomeAgentConfig {
        home_prefixes: vec![net("2001:db8:1::/64")],
        max_lifetime: Duration::from_secs(600),
        replay: ReplayPolicy::default(),
        refresh_request_before: Some(Duration::from_secs(60)),
        ..HomeAgentConfig::default()
    })
}

/// A Binding Update as a mobile router builds it.
#[derive(Clone)]
struct Bu {
    sequence: u16,
    flags: BuFlags,
    lifetime: u16,
    prefixes: Vec<MobileNetworkPrefix>,
    timestamp: Option<NtpTimestamp>,
    alternate_care_of: Option<Ipv6Addr>,
    payload_proto: u8,
    sa: SecurityAssociation,
    source: Ipv6Addr,
    home: Ipv6Addr,
    authenticate: bool,
}

impl Bu {
    fn new(home: &str, spi: u32, sequence: u16, now: SystemTime) -> Bu {
        Bu {
            sequence,
            flags: BuFlags::mobile_router_home_registration(),
            lifetime: 100,
            prefixes: Vec::new(),
            timestamp: Some(ntp_time(now)),
            alternate_care_of: None,
            payload_proto: 59,
            sa: sa(spi),
            source: addr(COA),
            home: addr(home),
            authenticate: true,
        }
    }

    fn prefix(mut self, text: &str) -> Bu {
        self.prefixes.push(MobileNetworkPrefix::new(net(text)));
        self
    }

    fn encode(&self) -> (Vec<u8>, MobilityHeader) {
        let mut options: Vec<MobilityOption> = self
            .prefixes
            .iter()
            .map(|p| MobilityOption::MobileNetworkPrefix(*p))
            .collect();
        if let Some(address) = self.alternate_care_of {
            options.push(MobilityOption::AlternateCareOfAddress(address));
        }
        if let Some(timestamp) = self.timestamp {
            options.push(MobilityOption::ReplayProtection(timestamp));
        }
        if self.authenticate {
            options.push(self.sa.unsigned_option());
        }
        let header = MobilityHeader {
            payload_proto: self.payload_proto,
            message: Message::BindingUpdate(BindingUpdate {
                sequence: SequenceNumber(self.sequence),
                flags: self.flags,
                lifetime: Lifetime(self.lifetime),
                options,
            }),
        };
        let mut mh = header.encode().unwrap();
        if self.authenticate {
            let care_of = self.alternate_care_of.unwrap_or(self.source);
            auth::sign(&mut mh, care_of, self.home, &self.sa).unwrap();
        }
        (mh, header)
    }

    fn send(&self, ha: &mut BindingCache, now: SystemTime) -> Outcome {
        let (mh, header) = self.encode();
        ha.answer_now(
            Received {
                mh: &mh,
                source: self.source,
                home_address: Some(self.home),
                arrival: Arrival::Ipv6,
            },
            &header,
            now,
            &table(),
        )
    }
}

/// The acknowledgement of an outcome, checked to be authenticated with the
/// mobile router's association over its care-of and home address.
fn ack(outcome: &Outcome, bu: &Bu) -> (BindingAck, Option<Change>) {
    let Outcome::Acknowledge {
        reply,
        status,
        change,
    } = outcome
    else {
        panic!("expected an acknowledgement, got {outcome:?}");
    };
    let care_of = bu.alternate_care_of.unwrap_or(bu.source);
    assert_eq!(reply.care_of, nemo::ha::CareOf::Ipv6(care_of));
    assert_eq!(reply.home_address, bu.home);
    auth::verify(&reply.mh, care_of, bu.home, &bu.sa).expect("BA authenticated");
    let Message::BindingAck(ba) = MobilityHeader::decode(&reply.mh).unwrap().message else {
        panic!("not a BA");
    };
    assert_eq!(ba.status, *status);
    (ba, change.clone())
}

fn status(outcome: &Outcome, bu: &Bu) -> BaStatus {
    ack(outcome, bu).0.status
}

fn ba_timestamp(ba: &BindingAck) -> Option<NtpTimestamp> {
    ba.options.iter().find_map(|o| match o {
        MobilityOption::ReplayProtection(t) => Some(*t),
        _ => None,
    })
}

#[test]
fn explicit_registration_is_accepted_and_cached() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_A, 0x1000, 7, now).prefix("2001:db8:100::/56");
    let outcome = bu.send(&mut ha, now);
    let (ba, change) = ack(&outcome, &bu);
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert!(ba.flags.mobile_router, "R echoed: mobile router accepted");
    assert_eq!(ba.sequence, SequenceNumber(7));
    assert_eq!(ba.lifetime, Lifetime(100));
    assert_eq!(ba_timestamp(&ba), bu.timestamp, "timestamp echoed");
    let Some(Change::Upsert { binding, previous }) = change else {
        panic!("no upsert");
    };
    assert_eq!(previous, None);
    assert_eq!(binding.care_of, nemo::ha::CareOf::Ipv6(addr(COA)));
    assert_eq!(*binding.prefixes, [net("2001:db8:100::/56")]);
    assert_eq!(binding.expires_at, now + Duration::from_secs(400));
    assert_eq!(ha.binding(addr(HOA_A)), Some(&*binding));
}

#[test]
fn implicit_registration_uses_the_configured_prefixes() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_A, 0x1000, 1, now);
    let (ba, _) = ack(&bu.send(&mut ha, now), &bu);
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert_eq!(
        *ha.binding(addr(HOA_A)).unwrap().prefixes,
        [net("2001:db8:100::/56")]
    );
}

#[test]
fn a_sub_prefix_of_an_authorized_prefix_is_accepted() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_A, 0x1000, 1, now)
        .prefix("2001:db8:100:5::/64")
        .prefix("2001:db8:100:6::/64");
    assert_eq!(status(&bu.send(&mut ha, now), &bu), BaStatus::ACCEPTED);
    assert_eq!(ha.binding(addr(HOA_A)).unwrap().prefixes.len(), 2);
}

#[test]
fn refresh_and_move_update_the_binding() {
    let mut ha = home_agent();
    let now = start();
    let first = Bu::new(HOA_A, 0x1000, 1, now);
    first.send(&mut ha, now);

    let later = now + Duration::from_secs(100);
    let mut moved = Bu::new(HOA_A, 0x1000, 2, later);
    moved.source = addr(COA_NEW);
    let (ba, change) = ack(&moved.send(&mut ha, later), &moved);
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    let Some(Change::Upsert { binding, previous }) = change else {
        panic!("no upsert");
    };
    assert_eq!(previous.unwrap().care_of, nemo::ha::CareOf::Ipv6(addr(COA)));
    assert_eq!(binding.care_of, nemo::ha::CareOf::Ipv6(addr(COA_NEW)));
    assert_eq!(binding.expires_at, later + Duration::from_secs(400));
    assert_eq!(ha.len(), 1);
}

#[test]
fn alternate_care_of_address_is_the_care_of_address() {
    let mut ha = home_agent();
    let now = start();
    let mut bu = Bu::new(HOA_A, 0x1000, 1, now);
    bu.alternate_care_of = Some(addr(COA_NEW));
    assert_eq!(status(&bu.send(&mut ha, now), &bu), BaStatus::ACCEPTED);
    assert_eq!(
        ha.binding(addr(HOA_A)).unwrap().care_of,
        nemo::ha::CareOf::Ipv6(addr(COA_NEW))
    );
}

#[test]
fn sequence_out_of_window_gets_135_with_the_last_accepted_number() {
    let mut ha = home_agent();
    let mut now = start();
    Bu::new(HOA_A, 0x1000, 1000, now).send(&mut ha, now);
    for old in [1000u16, 999, 1000u16.wrapping_add(32768)] {
        now += Duration::from_millis(10);
        let bu = Bu::new(HOA_A, 0x1000, old, now);
        let (ba, change) = ack(&bu.send(&mut ha, now), &bu);
        assert_eq!(ba.status, BaStatus::SEQUENCE_OUT_OF_WINDOW, "seq {old}");
        assert_eq!(ba.sequence, SequenceNumber(1000));
        assert_eq!(change, None);
    }
    assert_eq!(
        ha.binding(addr(HOA_A)).unwrap().sequence,
        SequenceNumber(1000)
    );
    // The mobile router recovers with the number after it.
    now += Duration::from_millis(10);
    let bu = Bu::new(HOA_A, 0x1000, 1001, now);
    assert_eq!(status(&bu.send(&mut ha, now), &bu), BaStatus::ACCEPTED);
}

#[test]
fn a_new_binding_accepts_any_sequence_number() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_A, 0x1000, 65535, now);
    assert_eq!(status(&bu.send(&mut ha, now), &bu), BaStatus::ACCEPTED);
}

#[test]
fn wrong_key_gets_146_and_changes_nothing() {
    let mut ha = home_agent();
    let now = start();
    let mut forged = Bu::new(HOA_A, 0x1000, 1, now);
    forged.sa = SecurityAssociation::new(0x1000, Algorithm::HmacSha256, vec![0xee; 32]).unwrap();
    let outcome = forged.send(&mut ha, now);
    // The answer is signed with the real association: check it with that.
    let expect_sa = Bu::new(HOA_A, 0x1000, 1, now);
    let (ba, change) = ack(&outcome, &expect_sa);
    assert_eq!(ba.status, BaStatus::AUTH_FAIL);
    assert_eq!(change, None);
    assert!(ha.is_empty());
}

#[test]
fn unknown_spi_and_missing_authentication_are_dropped_silently() {
    let mut ha = home_agent();
    let now = start();
    let mut unknown = Bu::new(HOA_A, 0x9999, 1, now);
    unknown.sa = sa(0x9999);
    assert_eq!(
        unknown.send(&mut ha, now),
        Outcome::Drop(DropReason::UnknownSpi)
    );
    let mut bare = Bu::new(HOA_A, 0x1000, 1, now);
    bare.authenticate = false;
    assert_eq!(
        bare.send(&mut ha, now),
        Outcome::Drop(DropReason::NoAuthentication)
    );
    assert!(ha.is_empty());
}

#[test]
fn authentication_option_not_last_is_dropped() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_A, 0x1000, 1, now);
    let header = MobilityHeader::new(Message::BindingUpdate(BindingUpdate {
        sequence: SequenceNumber(1),
        flags: BuFlags::mobile_router_home_registration(),
        lifetime: Lifetime(10),
        options: vec![
            bu.sa.unsigned_option(),
            MobilityOption::ReplayProtection(ntp_time(now)),
        ],
    }));
    let mh = header.encode().unwrap();
    let outcome = ha.answer_now(
        Received {
            mh: &mh,
            source: addr(COA),
            home_address: Some(addr(HOA_A)),
            arrival: Arrival::Ipv6,
        },
        &header,
        now,
        &table(),
    );
    assert_eq!(outcome, Outcome::Drop(DropReason::MalformedAuthentication));
}

#[test]
fn another_home_address_under_my_key_gets_133() {
    let mut ha = home_agent();
    let now = start();
    // Mobile router A, with its own valid key, claims B's home address.
    let mut bu = Bu::new(HOA_A, 0x1000, 1, now);
    bu.home = addr(HOA_B);
    assert_eq!(
        status(&bu.send(&mut ha, now), &bu),
        BaStatus::NOT_HOME_AGENT
    );
    assert!(ha.is_empty());
}

#[test]
fn home_registration_flag_rules() {
    let mut ha = home_agent();
    let now = start();
    // Neither H nor R: a correspondent registration, not taken here.
    let mut correspondent = Bu::new(HOA_A, 0x1000, 1, now);
    correspondent.flags = BuFlags {
        acknowledge: true,
        ..BuFlags::default()
    };
    assert_eq!(
        status(&correspondent.send(&mut ha, now), &correspondent),
        BaStatus::HOME_REGISTRATION_NOT_SUPPORTED
    );
    // R without H: RFC 3963 §6.2 says 140.
    let mut r_only = Bu::new(HOA_A, 0x1000, 2, now + Duration::from_millis(1));
    r_only.flags.home_registration = false;
    assert_eq!(
        status(&r_only.send(&mut ha, now), &r_only),
        BaStatus::MOBILE_ROUTER_NOT_PERMITTED
    );
    // A clear still gets an answer (RFC 6275 §10.3.1).
    let mut quiet = Bu::new(HOA_A, 0x1000, 3, now + Duration::from_millis(2));
    quiet.flags.acknowledge = false;
    assert_eq!(
        status(&quiet.send(&mut ha, now), &quiet),
        BaStatus::ACCEPTED
    );
}

#[test]
fn home_address_outside_the_home_prefix_gets_132() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_AWAY, 0x5000, 1, now);
    assert_eq!(
        status(&bu.send(&mut ha, now), &bu),
        BaStatus::NOT_HOME_SUBNET
    );
}

#[test]
fn mobile_router_not_allowed_gets_140_but_a_host_registration_works() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_HOST, 0x3000, 1, now);
    assert_eq!(
        status(&bu.send(&mut ha, now), &bu),
        BaStatus::MOBILE_ROUTER_NOT_PERMITTED
    );
    let mut host =
        Bu::new(HOA_HOST, 0x3000, 2, now + Duration::from_millis(1)).prefix("2001:db8:100::/56");
    host.flags.mobile_router = false;
    let (ba, _) = ack(&host.send(&mut ha, now), &host);
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert!(!ba.flags.mobile_router, "R only echoed for mobile routers");
    // RFC 3963 §4.1: no mobile network forwarded to a mobile node.
    assert!(ha.binding(addr(HOA_HOST)).unwrap().prefixes.is_empty());
}

#[test]
fn timestamps_missing_stale_and_replayed() {
    let mut ha = home_agent();
    let now = start();
    let mut missing = Bu::new(HOA_A, 0x1000, 1, now);
    missing.timestamp = None;
    assert_eq!(
        status(&missing.send(&mut ha, now), &missing),
        BaStatus::MESG_ID_REQUIRED
    );

    let stale = Bu::new(HOA_A, 0x1000, 1, now - Duration::from_secs(30));
    let (ba, change) = ack(&stale.send(&mut ha, now), &stale);
    assert_eq!(ba.status, BaStatus::ID_MISMATCH);
    assert_eq!(change, None);
    // RFC 4285 §6: low 32 bits from the BU, high 32 from the home agent.
    let returned = ba_timestamp(&ba).unwrap();
    assert_eq!(returned.fraction(), stale.timestamp.unwrap().fraction());
    assert_eq!(returned.seconds(), ntp_time(now).seconds());

    let fresh = Bu::new(HOA_A, 0x1000, 1, now);
    assert_eq!(
        status(&fresh.send(&mut ha, now), &fresh),
        BaStatus::ACCEPTED
    );
    // The very same message again, a replay, even with a newer sequence
    // number under the same timestamp.
    let replay_time = now + Duration::from_secs(1);
    assert_eq!(
        status(&fresh.send(&mut ha, replay_time), &fresh),
        BaStatus::ID_MISMATCH
    );
    let mut same_stamp = fresh.clone();
    same_stamp.sequence = 2;
    assert_eq!(
        status(&same_stamp.send(&mut ha, replay_time), &same_stamp),
        BaStatus::ID_MISMATCH
    );
    assert_eq!(ha.binding(addr(HOA_A)).unwrap().sequence, SequenceNumber(1));
}

#[test]
fn invalid_prefixes_get_141() {
    let now = start();
    for (length, prefix) in [
        (129u8, "2001:db8:100::"),
        (0, "::"),
        (64, "fe80::"),
        (8, "ff00::"),
        (48, "2001:db8:1::"),
        (40, "2001:db8:100::1"),
    ] {
        let mut ha = home_agent();
        let mut bu = Bu::new(HOA_A, 0x1000, 1, now);
        bu.prefixes.push(MobileNetworkPrefix {
            prefix_len: length,
            prefix: addr(prefix),
        });
        assert_eq!(
            status(&bu.send(&mut ha, now), &bu),
            BaStatus::INVALID_PREFIX,
            "{prefix}/{length}"
        );
        assert!(ha.is_empty());
    }
}

#[test]
fn unauthorized_prefix_gets_142() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_A, 0x1000, 1, now)
        .prefix("2001:db8:100::/56")
        .prefix("2001:db8:200::/64");
    assert_eq!(
        status(&bu.send(&mut ha, now), &bu),
        BaStatus::NOT_AUTHORIZED_FOR_PREFIX
    );
    // A wider prefix than the one authorized is not authorized either.
    let wider =
        Bu::new(HOA_A, 0x1000, 2, now + Duration::from_millis(1)).prefix("2001:db8:100::/48");
    assert_eq!(
        status(&wider.send(&mut ha, now), &wider),
        BaStatus::NOT_AUTHORIZED_FOR_PREFIX
    );
    assert!(ha.is_empty());
}

#[test]
fn a_prefix_is_bound_to_one_home_address_at_a_time() {
    let mut ha = home_agent();
    let now = start();
    let a = Bu::new(HOA_A, 0x1000, 1, now).prefix("2001:db8:100::/56");
    assert_eq!(status(&a.send(&mut ha, now), &a), BaStatus::ACCEPTED);
    // The operator moves the prefix to B while A's binding lives on.
    let mut moved = table();
    moved.remove(addr(HOA_A));
    moved
        .insert(authorization(HOA_B, 0x2000, true, &["2001:db8:100::/56"]))
        .unwrap();
    let b = Bu::new(HOA_B, 0x2000, 1, now).prefix("2001:db8:100:1::/64");
    let (mh, header) = b.encode();
    let outcome = ha.answer_now(
        Received {
            mh: &mh,
            source: b.source,
            home_address: Some(b.home),
            arrival: Arrival::Ipv6,
        },
        &header,
        now,
        &moved,
    );
    assert_eq!(status(&outcome, &b), BaStatus::NOT_AUTHORIZED_FOR_PREFIX);
    assert!(ha.binding(addr(HOA_B)).is_none());
}

#[test]
fn implicit_mode_without_configured_prefixes_gets_143() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_NO_PREFIX, 0x4000, 1, now);
    assert_eq!(
        status(&bu.send(&mut ha, now), &bu),
        BaStatus::FORWARDING_SETUP_FAILED
    );
}

#[test]
fn registration_type_change_gets_139_except_deregistration() {
    let mut ha = home_agent();
    let now = start();
    Bu::new(HOA_A, 0x1000, 1, now).send(&mut ha, now);
    let mut as_host = Bu::new(HOA_A, 0x1000, 2, now + Duration::from_millis(1));
    as_host.flags.mobile_router = false;
    assert_eq!(
        status(&as_host.send(&mut ha, now), &as_host),
        BaStatus::REGISTRATION_TYPE_CHANGE_DISALLOWED
    );
    assert!(ha.binding(addr(HOA_A)).unwrap().mobile_router);
    let mut deregister = Bu::new(HOA_A, 0x1000, 3, now + Duration::from_millis(2));
    deregister.flags.mobile_router = false;
    deregister.lifetime = 0;
    assert_eq!(
        status(&deregister.send(&mut ha, now), &deregister),
        BaStatus::ACCEPTED
    );
    assert!(ha.is_empty());
}

#[test]
fn deregistration_by_lifetime_zero_or_from_home() {
    let mut ha = home_agent();
    let now = start();
    Bu::new(HOA_A, 0x1000, 1, now).send(&mut ha, now);
    let mut deregister =
        Bu::new(HOA_A, 0x1000, 2, now + Duration::from_millis(1)).prefix("2001:db8:999::/64"); // ignored (RFC 3963 §6.7)
    deregister.lifetime = 0;
    let (ba, change) = ack(&deregister.send(&mut ha, now), &deregister);
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert_eq!(ba.lifetime, Lifetime::ZERO);
    assert!(
        matches!(change, Some(Change::Remove { binding }) if binding.care_of == nemo::ha::CareOf::Ipv6(addr(COA)))
    );
    assert!(ha.is_empty());

    // From home: care-of address = home address.
    Bu::new(HOA_A, 0x1000, 3, now + Duration::from_millis(2)).send(&mut ha, now);
    let mut at_home = Bu::new(HOA_A, 0x1000, 4, now + Duration::from_millis(3));
    at_home.source = addr(HOA_A);
    let (_, change) = ack(&at_home.send(&mut ha, now), &at_home);
    assert!(matches!(change, Some(Change::Remove { .. })));
    assert!(ha.is_empty());

    // RFC 6275 §10.3.2: deregistering what is not there is rejected with
    // 133 (not home agent for this mobile node) and changes nothing.
    let mut again = Bu::new(HOA_A, 0x1000, 5, now + Duration::from_millis(4));
    again.lifetime = 0;
    let (ba, change) = ack(&again.send(&mut ha, now), &again);
    assert_eq!(ba.status, BaStatus::NOT_HOME_AGENT);
    assert_eq!(change, None);
    let mut never = Bu::new(HOA_B, 0x2000, 1, now);
    never.lifetime = 0;
    let (ba, change) = ack(&never.send(&mut ha, now), &never);
    assert_eq!(ba.status, BaStatus::NOT_HOME_AGENT);
    assert_eq!(change, None);
}

#[test]
fn a_deregistered_entry_orders_late_updates_for_max_delete_bce_timeout() {
    // RFC 6275 §10.3.2: the entry is marked invalid, not removed, for
    // MAX_DELETE_BCE_TIMEOUT (§12: 10 s); a Binding Update sent before the
    // deregistration and delayed gets 135, and forwarding is gone at once.
    let mut ha = home_agent();
    let now = start();
    Bu::new(HOA_A, 0x1000, 10, now).send(&mut ha, now);
    let mut deregister = Bu::new(HOA_A, 0x1000, 12, now + Duration::from_millis(1));
    deregister.lifetime = 0;
    let (ba, change) = ack(&deregister.send(&mut ha, now), &deregister);
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert!(matches!(change, Some(Change::Remove { .. })));
    assert!(
        ha.binding(addr(HOA_A)).is_none(),
        "forwarding stops at once"
    );
    assert_eq!(
        ha.poll_timeout(),
        Some(now + nemo::ha::MAX_DELETE_BCE_TIMEOUT),
        "the invalid entry is a timer"
    );

    let later = now + Duration::from_secs(3);
    let delayed = Bu::new(HOA_A, 0x1000, 11, now + Duration::from_millis(2));
    let (ba, change) = ack(&delayed.send(&mut ha, later), &delayed);
    assert_eq!(ba.status, BaStatus::SEQUENCE_OUT_OF_WINDOW);
    assert_eq!(
        ba.sequence,
        SequenceNumber(12),
        "the deregistration's number"
    );
    assert_eq!(change, None);
    assert!(ha.binding(addr(HOA_A)).is_none());

    // A newer registration is taken at once.
    let fresh = Bu::new(HOA_A, 0x1000, 13, now + Duration::from_millis(3));
    assert_eq!(
        status(&fresh.send(&mut ha, later), &fresh),
        BaStatus::ACCEPTED
    );

    // After the timeout the invalid entry is gone: any number starts anew.
    let mut ha = home_agent();
    Bu::new(HOA_A, 0x1000, 10, now).send(&mut ha, now);
    deregister.send(&mut ha, now);
    let gone = now + nemo::ha::MAX_DELETE_BCE_TIMEOUT + Duration::from_millis(1);
    assert!(ha.expire(gone).is_empty());
    assert_eq!(ha.poll_timeout(), None);
    let old = Bu::new(HOA_A, 0x1000, 11, gone);
    assert_eq!(status(&old.send(&mut ha, gone), &old), BaStatus::ACCEPTED);
}

#[test]
fn lifetime_is_clamped_to_the_maximum() {
    let mut ha = home_agent();
    let now = start();
    let mut bu = Bu::new(HOA_A, 0x1000, 1, now);
    bu.lifetime = u16::MAX;
    let (ba, _) = ack(&bu.send(&mut ha, now), &bu);
    assert_eq!(ba.lifetime, Lifetime(150), "600 s");
    assert_eq!(
        ha.binding(addr(HOA_A)).unwrap().expires_at,
        now + Duration::from_secs(600)
    );
}

#[test]
fn bindings_expire_and_get_a_refresh_request_before() {
    let mut ha = home_agent();
    let now = start();
    let bu = Bu::new(HOA_A, 0x1000, 1, now);
    bu.send(&mut ha, now);
    let expires = now + Duration::from_secs(400);
    assert_eq!(ha.poll_timeout(), Some(expires - Duration::from_secs(60)));
    assert!(ha
        .refresh_requests(expires - Duration::from_secs(61), &table())
        .is_empty());
    let requests = ha.refresh_requests(expires - Duration::from_secs(60), &table());
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.care_of, request.home_address),
        (CareOf::Ipv6(addr(COA)), addr(HOA_A))
    );
    auth::verify(&request.mh, addr(COA), addr(HOA_A), &bu.sa).unwrap();
    assert_eq!(
        MobilityHeader::decode(&request.mh)
            .unwrap()
            .message
            .mh_type(),
        MhType::BINDING_REFRESH_REQUEST
    );
    // Once per lifetime.
    assert!(ha
        .refresh_requests(expires - Duration::from_secs(30), &table())
        .is_empty());
    assert_eq!(ha.poll_timeout(), Some(expires));
    assert!(ha.expire(expires - Duration::from_millis(1)).is_empty());
    let expired = ha.expire(expires);
    assert!(
        matches!(&expired[..], [Change::Remove { binding }] if binding.home_address == addr(HOA_A))
    );
    assert!(ha.is_empty());
    assert_eq!(ha.poll_timeout(), None);
}

#[test]
fn revert_restores_the_cache() {
    let mut ha = home_agent();
    let now = start();
    let (_, first) = ack(
        &Bu::new(HOA_A, 0x1000, 1, now).send(&mut ha, now),
        &Bu::new(HOA_A, 0x1000, 1, now),
    );
    let mut moved = Bu::new(HOA_A, 0x1000, 2, now + Duration::from_millis(1));
    moved.source = addr(COA_NEW);
    let (_, second) = ack(&moved.send(&mut ha, now), &moved);
    // Forwarding to the new care-of address failed: back to the old one.
    ha.revert(&second.unwrap());
    assert_eq!(
        ha.binding(addr(HOA_A)).unwrap().care_of,
        nemo::ha::CareOf::Ipv6(addr(COA))
    );
    // And the very first registration failed too: nothing.
    ha.revert(&first.unwrap());
    assert!(ha.is_empty());
    // A removal reverted brings the binding back.
    Bu::new(HOA_A, 0x1000, 3, now + Duration::from_millis(2)).send(&mut ha, now);
    let removed = ha.remove(addr(HOA_A)).unwrap();
    assert!(ha.is_empty());
    ha.revert(&removed);
    assert_eq!(ha.len(), 1);
}

#[test]
fn load_drops_expired_bindings_and_keeps_replay_state() {
    let now = start();
    let mut ha = home_agent();
    let bu = Bu::new(HOA_A, 0x1000, 1, now).prefix("2001:db8:100::/56");
    bu.send(&mut ha, now);
    Bu::new(HOA_B, 0x2000, 1, now).send(&mut ha, now);
    let saved: Vec<Binding> = ha.bindings().cloned().collect();
    let mut b_expired = saved.clone();
    for binding in &mut b_expired {
        if binding.home_address == addr(HOA_B) {
            binding.expires_at = now + Duration::from_secs(1);
        }
    }

    let mut restarted = home_agent();
    let later = now + Duration::from_secs(2);
    let dropped = restarted.load(b_expired, later);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].home_address, addr(HOA_B));
    assert_eq!(restarted.len(), 1);
    assert_eq!(restarted.binding(addr(HOA_A)), ha.binding(addr(HOA_A)));
    // The replay state came back: the old message is refused after restart.
    assert_eq!(
        status(&bu.send(&mut restarted, later), &bu),
        BaStatus::ID_MISMATCH
    );
    // The prefix ownership came back too.
    assert_eq!(restarted.last_timestamp(addr(HOA_A)), bu.timestamp);
}

#[test]
fn other_message_types_get_a_binding_error_or_nothing() {
    let mut ha = home_agent();
    let now = start();
    for mh_type in [1u8, 2, 3, 4, 8, 200] {
        let header = MobilityHeader::new(Message::Other {
            mh_type: MhType(mh_type),
            data: vec![0; 10],
        });
        let mh = header.encode().unwrap();
        let outcome = ha.answer_now(
            Received {
                mh: &mh,
                source: addr(COA),
                home_address: None,
                arrival: Arrival::Ipv6,
            },
            &header,
            now,
            &table(),
        );
        let Outcome::BindingError { reply, status } = outcome else {
            panic!("type {mh_type}: {outcome:?}");
        };
        assert_eq!(status, BeStatus::UNRECOGNIZED_MH_TYPE);
        assert_eq!(reply.care_of, nemo::ha::CareOf::Ipv6(addr(COA)));
        let Message::BindingError(be) = MobilityHeader::decode(&reply.mh).unwrap().message else {
            panic!("not a BE");
        };
        assert_eq!(be.status, BeStatus::UNRECOGNIZED_MH_TYPE);
    }
    // A Binding Acknowledgement sent to a home agent is not answered.
    let header = MobilityHeader::new(Message::BindingAck(BindingAck {
        status: BaStatus::ACCEPTED,
        flags: Default::default(),
        sequence: SequenceNumber(1),
        lifetime: Lifetime(1),
        options: vec![],
    }));
    let mh = header.encode().unwrap();
    let outcome = ha.answer_now(
        Received {
            mh: &mh,
            source: addr(COA),
            home_address: None,
            arrival: Arrival::Ipv6,
        },
        &header,
        now,
        &table(),
    );
    assert_eq!(outcome, Outcome::Drop(DropReason::NotForHomeAgent));
}

#[test]
fn unroutable_addresses_and_payload_proto_are_dropped() {
    let now = start();
    let mut ha = home_agent();
    let mut link_local = Bu::new(HOA_A, 0x1000, 1, now);
    link_local.source = addr("fe80::1");
    assert_eq!(
        link_local.send(&mut ha, now),
        Outcome::Drop(DropReason::BadCareOfAddress)
    );
    let mut multicast_alt = Bu::new(HOA_A, 0x1000, 1, now);
    multicast_alt.alternate_care_of = Some(addr("ff02::1"));
    assert_eq!(
        multicast_alt.send(&mut ha, now),
        Outcome::Drop(DropReason::BadCareOfAddress)
    );
    let mut bad_home = Bu::new(HOA_A, 0x1000, 1, now);
    bad_home.home = addr("::1");
    assert_eq!(
        bad_home.send(&mut ha, now),
        Outcome::Drop(DropReason::BadHomeAddress)
    );
    let mut proto = Bu::new(HOA_A, 0x1000, 1, now);
    proto.payload_proto = 6;
    assert_eq!(
        proto.send(&mut ha, now),
        Outcome::Drop(DropReason::PayloadProto)
    );
    assert!(ha.is_empty());
}

#[test]
fn authorization_table_refuses_conflicts() {
    let duplicate_spi = AuthorizationTable::new(vec![
        authorization(HOA_A, 0x1000, true, &["2001:db8:100::/56"]),
        authorization(HOA_B, 0x1000, true, &["2001:db8:200::/56"]),
    ]);
    assert!(matches!(
        duplicate_spi,
        Err(AuthorizationError::DuplicateSpi { spi: 0x1000, .. })
    ));
    let overlapping = AuthorizationTable::new(vec![
        authorization(HOA_A, 0x1000, true, &["2001:db8:100::/56"]),
        authorization(HOA_B, 0x2000, true, &["2001:db8:100:1::/64"]),
    ]);
    assert!(matches!(
        overlapping,
        Err(AuthorizationError::OverlappingPrefix { .. })
    ));
    // More prefixes than a binding holds: refused, not cut (issue 32).
    let many: Vec<String> = (0..=nemo::ha::MAX_PREFIXES)
        .map(|n| format!("2001:db8:{:x}::/64", 0x1000 + n))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let too_many = AuthorizationTable::new(vec![authorization(HOA_A, 0x1000, true, &many)]);
    assert!(matches!(
        too_many,
        Err(AuthorizationError::TooManyPrefixes { count: 256, .. })
    ));
    assert!(AuthorizationTable::new(vec![authorization(
        HOA_A,
        0x1000,
        true,
        &many[..nemo::ha::MAX_PREFIXES]
    )])
    .is_ok());
    let mut table = table();
    // Replacing an entry (a rotated key) frees its old SPI.
    let mut rotated = authorization(HOA_A, 0x1001, true, &["2001:db8:100::/56"]);
    rotated.security_associations.push(sa(0x1002));
    table.insert(rotated).unwrap();
    assert!(table.by_spi(0x1000).is_none());
    assert_eq!(table.by_spi(0x1002).unwrap().0.home_address, addr(HOA_A));
}
