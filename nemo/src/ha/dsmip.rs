//! The home agent's rules of Dual-Stack Mobile IPv6 (RFC 5555 §4.2, §4.5):
//! the care-of address of a Binding Update that came in UDP over IPv4, NAT
//! detection, and the options its acknowledgement carries. Pure functions,
//! called by [`super::decide`].

use std::net::{Ipv4Addr, Ipv6Addr};

use super::care_of::{Arrival, CareOf, Ipv4CareOfs, UdpEncapsulation};
use super::decide::{is_unicast_routable, DropReason};
use crate::wire::{
    Ipv4AckStatus, Ipv4AddressAck, Ipv4HomeAddress, MobilityOption, NatDetection, NatRefresh,
};

/// True for an IPv4 address a binding may use as a care-of address or a
/// NAT's mapping: unicast, not unspecified, loopback, multicast,
/// broadcast or in 0.0.0.0/8 ("this network", RFC 1122 §3.2.1.3). Private
/// addresses are fine: behind a NAT they are the rule.
pub fn is_unicast_ipv4(address: Ipv4Addr) -> bool {
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
        || address.octets()[0] == 0)
}

/// What a Binding Update says about where it comes from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Claimed {
    /// The packet's IPv6 source address.
    pub source: Ipv6Addr,
    /// The Alternate Care-of Address option's address (RFC 6275 §6.2.5).
    pub alternate: Option<Ipv6Addr>,
    /// The IPv4 Care-of Address option's address (RFC 5555 §3.1.2).
    pub ipv4: Option<Ipv4Addr>,
    /// F: UDP encapsulation asked for (RFC 5555 §3.1.3).
    pub force_udp: bool,
}

/// The care-of address of a Binding Update and the tunnel to it, or why it
/// has none (dropped, RFC 6275 §9.5.1).
///
/// - In IPv6: the Alternate Care-of Address, else the source (RFC 6275
///   §9.5.1); an IPv4 Care-of Address option there is refused (RFC 5555
///   §4.4.3 sends IPv6 packets from an IPv6 network as RFC 6275 does).
/// - In UDP over IPv4: the IPv4 Care-of Address option, which RFC 5555
///   §2.3.2.1 makes mandatory (without it the source, the home address,
///   would read as a deregistration). A NAT is on the path when the
///   datagram's source differs from it (§4.2); then, or when F or the
///   home agent asks for it, the tunnel is UDP to the datagram's source
///   address and port; otherwise IPv6 in IPv4.
pub(super) fn care_of(
    arrival: Arrival,
    claimed: Claimed,
    ipv4_care_of: Ipv4CareOfs,
) -> Result<CareOf, DropReason> {
    match (arrival, claimed.ipv4) {
        (Arrival::Ipv6, None) => {
            let address = claimed.alternate.unwrap_or(claimed.source);
            if is_unicast_routable(address) {
                Ok(CareOf::Ipv6(address))
            } else {
                Err(DropReason::BadCareOfAddress)
            }
        }
        (Arrival::UdpIpv4(outer), Some(address)) => {
            if !is_unicast_ipv4(address) || !is_unicast_ipv4(*outer.ip()) {
                return Err(DropReason::BadCareOfAddress);
            }
            let behind_nat = *outer.ip() != address;
            let udp_always = matches!(
                ipv4_care_of,
                Ipv4CareOfs::Accepted {
                    udp: UdpEncapsulation::Always,
                    ..
                }
            );
            Ok(if behind_nat || claimed.force_udp || udp_always {
                CareOf::Udp {
                    care_of: address,
                    outer,
                }
            } else {
                CareOf::Ipv4(address)
            })
        }
        (Arrival::Ipv6, Some(_)) | (Arrival::UdpIpv4(_), None) => Err(DropReason::BadCareOfAddress),
    }
}

/// The NAT Detection option of an answer (RFC 5555 §3.2.2, §4.2: present
/// whenever the Binding Update came in UDP over IPv4, that is for every
/// IPv4 care-of address): the keepalive interval behind a NAT; "no
/// keepalive" (all ones) without one, with F when UDP is used anyway.
pub(super) fn nat_detection(care_of: CareOf, ipv4_care_of: Ipv4CareOfs) -> Option<NatDetection> {
    let keepalive = match ipv4_care_of {
        Ipv4CareOfs::Accepted { nat_keepalive, .. } => {
            NatRefresh::Every(u32::try_from(nat_keepalive.as_secs().max(1)).unwrap_or(u32::MAX - 1))
        }
        // Refused: the answer is a rejection; say what was seen.
        Ipv4CareOfs::Refused => NatRefresh::Unspecified,
    };
    match care_of {
        CareOf::Ipv6(_) => None,
        CareOf::Ipv4(_) => Some(NatDetection {
            udp_required: false,
            refresh: NatRefresh::NotNeeded,
        }),
        CareOf::Udp { care_of, outer } if *outer.ip() == care_of => Some(NatDetection {
            udp_required: true,
            refresh: NatRefresh::NotNeeded,
        }),
        CareOf::Udp { .. } => Some(NatDetection {
            udp_required: false,
            refresh: keepalive,
        }),
    }
}

/// The IPv4 Address Acknowledgement for each IPv4 Home Address option
/// (RFC 5555 §3.2.1, §4.5: "MUST include"). nemo binds no IPv4 home
/// address (a tenant's IPv4 addresses are translated at the home site to
/// addresses inside its prefixes, not tunnelled), so each fails with the
/// status that says why: 132 for a request of a dynamic address, 133 for a
/// prefix, 129 for a static address; the IPv6 binding is unaffected
/// (§4.4.2: the mobile node then binds its IPv6 home address only).
pub(super) fn ipv4_address_acks(requests: &[Ipv4HomeAddress]) -> Vec<MobilityOption> {
    requests
        .iter()
        .map(|request| {
            let status = if request.request_prefix {
                Ipv4AckStatus::PREFIX_UNAUTHORIZED
            } else if request.address.is_unspecified() {
                Ipv4AckStatus::DYNAMIC_NOT_AVAILABLE
            } else {
                Ipv4AckStatus::ADMINISTRATIVELY_PROHIBITED
            };
            MobilityOption::Ipv4AddressAck(Ipv4AddressAck {
                status,
                // §3.2.1: zero on failure.
                prefix_len: 0,
                address: request.address,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;
    use std::time::Duration;

    const ACCEPTED: Ipv4CareOfs = Ipv4CareOfs::Accepted {
        nat_keepalive: Duration::from_secs(25),
        udp: UdpEncapsulation::WhenNeeded,
    };

    fn claimed(ipv4: Option<Ipv4Addr>, force_udp: bool) -> Claimed {
        Claimed {
            source: "2001:db8:1::100".parse().unwrap(),
            alternate: None,
            ipv4,
            force_udp,
        }
    }

    fn v4(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }

    #[test]
    fn a_nat_is_detected_when_the_datagrams_source_is_not_the_care_of_address() {
        let outer = SocketAddrV4::new(v4(99), 40000);
        let care_of = care_of(
            Arrival::UdpIpv4(outer),
            claimed(Some(v4(10)), false),
            ACCEPTED,
        )
        .unwrap();
        assert_eq!(
            care_of,
            CareOf::Udp {
                care_of: v4(10),
                outer
            }
        );
        assert_eq!(
            nat_detection(care_of, ACCEPTED),
            Some(NatDetection {
                udp_required: false,
                refresh: NatRefresh::Every(25)
            })
        );
    }

    #[test]
    fn without_a_nat_the_tunnel_is_ipv6_in_ipv4_unless_udp_is_forced() {
        let outer = SocketAddrV4::new(v4(10), 4191);
        let direct = care_of(
            Arrival::UdpIpv4(outer),
            claimed(Some(v4(10)), false),
            ACCEPTED,
        )
        .unwrap();
        assert_eq!(direct, CareOf::Ipv4(v4(10)));
        assert_eq!(
            nat_detection(direct, ACCEPTED),
            Some(NatDetection {
                udp_required: false,
                refresh: NatRefresh::NotNeeded
            })
        );
        let forced = care_of(
            Arrival::UdpIpv4(outer),
            claimed(Some(v4(10)), true),
            ACCEPTED,
        )
        .unwrap();
        assert_eq!(
            forced,
            CareOf::Udp {
                care_of: v4(10),
                outer
            }
        );
        assert_eq!(
            nat_detection(forced, ACCEPTED).map(|n| n.udp_required),
            Some(true)
        );
        let always = Ipv4CareOfs::Accepted {
            nat_keepalive: Duration::from_secs(25),
            udp: UdpEncapsulation::Always,
        };
        assert_eq!(
            care_of(
                Arrival::UdpIpv4(outer),
                claimed(Some(v4(10)), false),
                always
            ),
            Ok(forced)
        );
    }

    #[test]
    fn an_ipv4_care_of_address_needs_both_the_option_and_udp_over_ipv4() {
        let outer = SocketAddrV4::new(v4(10), 4191);
        for (arrival, ipv4) in [
            (Arrival::UdpIpv4(outer), None),
            (Arrival::Ipv6, Some(v4(10))),
            (Arrival::UdpIpv4(outer), Some(Ipv4Addr::new(224, 0, 0, 1))),
            (Arrival::UdpIpv4(outer), Some(Ipv4Addr::BROADCAST)),
            (Arrival::UdpIpv4(outer), Some(Ipv4Addr::new(0, 1, 2, 3))),
            (
                Arrival::UdpIpv4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1)),
                Some(v4(10)),
            ),
        ] {
            assert_eq!(
                care_of(arrival, claimed(ipv4, false), ACCEPTED),
                Err(DropReason::BadCareOfAddress),
                "{arrival:?} {ipv4:?}"
            );
        }
    }

    #[test]
    fn an_ipv6_care_of_address_in_the_reserved_zero_prefix_is_none() {
        // The form the BPF maps give an IPv4 peer (192.0.2.10, UDP port
        // 8015): as an IPv6 care-of address it would tunnel over IPv4.
        for source in ["::1f4f:ffff:c000:20a", "::ffff:192.0.2.10", "::1"] {
            let claimed = Claimed {
                source: source.parse().unwrap(),
                ..claimed(None, false)
            };
            assert_eq!(
                care_of(Arrival::Ipv6, claimed, ACCEPTED),
                Err(DropReason::BadCareOfAddress),
                "{source}"
            );
        }
    }

    #[test]
    fn each_ipv4_home_address_request_fails_with_its_reason() {
        let request = |address: Ipv4Addr, prefix_len, request_prefix| Ipv4HomeAddress {
            prefix_len,
            request_prefix,
            address,
        };
        let acks = ipv4_address_acks(&[
            request(Ipv4Addr::UNSPECIFIED, 32, false),
            request(Ipv4Addr::UNSPECIFIED, 24, true),
            request(v4(77), 32, false),
        ]);
        let statuses: Vec<(Ipv4AckStatus, u8, Ipv4Addr)> = acks
            .iter()
            .map(|option| match option {
                MobilityOption::Ipv4AddressAck(ack) => (ack.status, ack.prefix_len, ack.address),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            statuses,
            [
                (
                    Ipv4AckStatus::DYNAMIC_NOT_AVAILABLE,
                    0,
                    Ipv4Addr::UNSPECIFIED
                ),
                (Ipv4AckStatus::PREFIX_UNAUTHORIZED, 0, Ipv4Addr::UNSPECIFIED),
                (Ipv4AckStatus::ADMINISTRATIVELY_PROHIBITED, 0, v4(77)),
            ]
        );
    }
}
