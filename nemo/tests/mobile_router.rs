//! The mobile router's tenants against the home agent's engine, both
//! sans-IO: each packet reaches the tenant it is for, and only that one.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nemo::auth::{Algorithm, ReplayPolicy, SecurityAssociation};
use nemo::ha::{
    Arrival, Authorization, AuthorizationTable, Decision, Forwarding, Handled, HomeAgent,
    HomeAgentConfig,
};
use nemo::mr::{Delivery, MobileRouter, Receipt, Tenant};
use nemo::registration::AckError;
use nemo::registration::{InstanceConfig, Registrar, State};
use nemo::wire::SequenceNumber;
use nemo_testkit::{addr, net};

const HA: &str = "2001:db8:1::1";
const COA: &str = "2001:db8:2::10";

fn sa(spi: u32) -> SecurityAssociation {
    SecurityAssociation::new(spi, Algorithm::HmacSha256, vec![spi as u8; 32]).unwrap()
}

/// Tenants "a" and "b": home addresses ::a and ::b, SPIs 0x10a and 0x10b.
fn tenant(name: &str, spi: u32) -> Tenant<u32> {
    Tenant {
        name: name.to_owned(),
        registrar: Registrar::new(
            InstanceConfig {
                home_address: addr(&format!("2001:db8:1::{name}")),
                home_agent: addr(HA),
                prefixes: Vec::new(),
                lifetime: Duration::from_secs(400),
                sa: sa(spi),
                nai: None,
            },
            SequenceNumber(1),
        ),
        host: spi,
    }
}

fn home_agent() -> HomeAgent<()> {
    let authorization = |name: &str, spi: u32, prefix: &str| Authorization {
        home_address: addr(&format!("2001:db8:1::{name}")),
        security_associations: vec![sa(spi)],
        mobile_router: true,
        prefixes: vec![net(prefix)].into(),
    };
    HomeAgent::new(
        HomeAgentConfig {
            home_prefixes: vec![net("2001:db8:1::/64")],
            max_lifetime: Duration::from_secs(600),
            replay: ReplayPolicy::default(),
            refresh_request_before: None,
            ..HomeAgentConfig::default()
        },
        AuthorizationTable::new(vec![
            authorization("a", 0x10a, "2001:db8:a00::/56"),
            authorization("b", 0x10b, "2001:db8:b00::/56"),
        ])
        .unwrap(),
    )
}

/// The home agent's acknowledgement of a Binding Update, forwarding
/// installed.
fn acknowledge(ha: &mut HomeAgent<()>, update: &[u8], wall: SystemTime) -> Vec<u8> {
    let Decision::Forward(forward) = ha.handle(update, Arrival::Ipv6, (), wall) else {
        panic!("not accepted");
    };
    let Handled::Acknowledge(acknowledgement) = ha.forwarded(forward, Forwarding::Installed, wall)
    else {
        panic!("not acknowledged");
    };
    acknowledgement.transmit.packet
}

#[test]
fn an_acknowledgement_reaches_its_tenant_only() {
    let (now, wall) = (
        Instant::now(),
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    let mut router = MobileRouter::new();
    router.insert(tenant("a", 0x10a));
    router.insert(tenant("b", 0x10b));
    for tenant in router.iter_mut() {
        tenant
            .registrar
            .set_care_of(Some(std::net::IpAddr::V6(addr(COA))), now, wall);
    }
    let update_a = router
        .get_mut("a")
        .unwrap()
        .registrar
        .poll_transmit()
        .unwrap();
    let update_b = router
        .get_mut("b")
        .unwrap()
        .registrar
        .poll_transmit()
        .unwrap();
    let mut ha = home_agent();
    let ack_b = acknowledge(&mut ha, &update_b, wall);

    assert_eq!(
        router.handle(&ack_b, now, wall),
        Delivery::Tenant {
            name: "b".into(),
            receipt: Receipt::Acknowledgement,
        }
    );
    assert!(matches!(
        router.get("b").unwrap().registrar.state(),
        State::Registered { .. }
    ));
    assert_eq!(
        router.get("a").unwrap().registrar.state(),
        State::Registering
    );

    // The same answer again is a late duplicate: nothing changes.
    let Delivery::Tenant { receipt, .. } = router.handle(&ack_b, now, wall) else {
        panic!("not delivered");
    };
    assert!(matches!(receipt, Receipt::IgnoredAcknowledgement(_)));

    let ack_a = acknowledge(&mut ha, &update_a, wall);
    router.handle(&ack_a, now, wall);
    assert!(matches!(
        router.get("a").unwrap().registrar.state(),
        State::Registered { .. }
    ));
}

#[test]
fn an_answer_signed_with_another_key_is_not_taken() {
    let (now, wall) = (
        Instant::now(),
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    let mut router = MobileRouter::new();
    // Tenant "a" holds a key the home agent does not know (SPI 0x10c), and
    // receives an answer meant for b, re-addressed to a by its routing
    // header: it reaches a, which must not take it.
    let mut wrong = tenant("a", 0x10a);
    wrong.registrar = Registrar::new(
        InstanceConfig {
            sa: sa(0x10c),
            ..wrong.registrar.config().clone()
        },
        SequenceNumber(1),
    );
    router.insert(wrong);
    router.insert(tenant("b", 0x10b));
    for tenant in router.iter_mut() {
        tenant
            .registrar
            .set_care_of(Some(std::net::IpAddr::V6(addr(COA))), now, wall);
    }
    let update_a = router
        .get_mut("a")
        .unwrap()
        .registrar
        .poll_transmit()
        .unwrap();
    let mut ha = home_agent();
    // SPI 0x10c is unknown to the home agent: dropped, no answer.
    assert!(matches!(
        ha.handle(&update_a, Arrival::Ipv6, (), wall),
        Decision::Handled(Handled::Dropped { .. })
    ));
    let update_b = router
        .get_mut("b")
        .unwrap()
        .registrar
        .poll_transmit()
        .unwrap();
    let mut ack = acknowledge(&mut ha, &update_b, wall);
    // Point the routing header at a's home address (last octet of the
    // 16-octet address after the 8-octet routing header's fixed part).
    let rh_address_end = 40 + 8 + 16;
    ack[rh_address_end - 1] = 0x0a;
    let Delivery::Tenant { name, receipt } = router.handle(&ack, now, wall) else {
        panic!("not delivered to a tenant");
    };
    assert_eq!(name, "a");
    // The checksum no longer matches the pseudo-header's home address.
    assert_eq!(receipt, Receipt::IgnoredAcknowledgement(AckError::Checksum));
    assert_eq!(
        router.get("a").unwrap().registrar.state(),
        State::Registering
    );
}

#[test]
fn packets_for_no_tenant_or_not_parsing_are_named() {
    let (now, wall) = (
        Instant::now(),
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    let mut router: MobileRouter<u32> = MobileRouter::new();
    router.insert(tenant("a", 0x10a));
    assert!(matches!(
        router.handle(&[0x60, 0, 0], now, wall),
        Delivery::Malformed(_)
    ));
    let mut other = tenant("b", 0x10b);
    other
        .registrar
        .set_care_of(Some(std::net::IpAddr::V6(addr(COA))), now, wall);
    let update = other.registrar.poll_transmit().unwrap();
    let ack = acknowledge(&mut home_agent(), &update, wall);
    assert_eq!(
        router.handle(&ack, now, wall),
        Delivery::NoTenant {
            home_address: addr("2001:db8:1::b"),
        }
    );
}

#[test]
fn tenants_are_replaced_by_name_and_taken_when_done() {
    let mut router = MobileRouter::new();
    assert!(router.insert(tenant("a", 0x10a)).is_none());
    assert!(router.insert(tenant("b", 0x10b)).is_none());
    let mut again = tenant("a", 0x10a);
    again.host = 7;
    assert_eq!(router.insert(again).unwrap().host, 0x10a);
    assert_eq!(router.get("a").unwrap().host, 7);
    let taken = router.take_where(|t| t.host == 7);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].name, "a");
    assert_eq!(
        router.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    let (now, wall) = (Instant::now(), SystemTime::now());
    assert!(!router.all_deregistered());
    router.deregister_all(now, wall);
    // Never registered, no care-of address: nothing to wait for.
    assert!(router.all_deregistered());
}
