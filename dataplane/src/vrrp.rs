//! The VRRP socket of a home-agent pair member: VRRPv3 advertisements in
//! and out of one interface (raw IPv6, protocol 112, to ff02::12 with hop
//! limit 255, RFC 5798 §5.1.2), with the hop limit each one arrived with so
//! that off-link senders are refused (§7.1). The protocol is
//! `nemo::vrrp`; this is only its socket.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn6};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

/// IP protocol number of VRRP.
const IPPROTO_VRRP: i32 = 112;
/// The all-VRRP-routers group.
const ALL_VRRP_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Largest advertisement: 8 octets and 255 addresses.
pub const MAX_ADVERTISEMENT: usize = 8 + 16 * 255;

/// An advertisement as read: its payload length, sender and hop limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Octets of VRRP payload in the buffer.
    pub len: usize,
    /// The sender's (link-local) address.
    pub source: Ipv6Addr,
    /// The hop limit it arrived with (255 when it was sent on this link).
    pub hop_limit: u8,
}

/// A raw VRRP socket bound to one interface and one link-local source.
#[derive(Debug)]
pub struct VrrpSocket {
    /// The raw socket, registered with tokio through the datagram socket
    /// type (the readiness is the descriptor's; what is read and written
    /// goes through `recvmsg` and `sendto` on the raw socket itself).
    socket: tokio::net::UdpSocket,
    index: u32,
}

impl VrrpSocket {
    /// Opens the socket on `interface`, sending from `source` (a link-local
    /// address of that interface), joined to ff02::12, its own
    /// advertisements not looped back. Needs CAP_NET_RAW.
    pub fn open(interface: &str, source: Ipv6Addr) -> io::Result<VrrpSocket> {
        let index = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)?;
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))?;
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.bind(&SocketAddrV6::new(source, 0, 0, index).into())?;
        socket.join_multicast_v6(&ALL_VRRP_ROUTERS, index)?;
        socket.set_multicast_if_v6(index)?;
        socket.set_multicast_hops_v6(255)?;
        socket.set_multicast_loop_v6(false)?;
        socket::setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
        socket.set_nonblocking(true)?;
        Ok(VrrpSocket {
            socket: tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?,
            index,
        })
    }

    /// Sends one advertisement payload to ff02::12.
    pub async fn send(&self, payload: &[u8]) -> io::Result<()> {
        let to = SocketAddrV6::new(ALL_VRRP_ROUTERS, 0, 0, self.index);
        self.socket.send_to(payload, to).await.map(drop)
    }

    /// Receives one advertisement payload into `buffer`
    /// ([`MAX_ADVERTISEMENT`] octets hold any).
    pub async fn receive(&self, buffer: &mut [u8]) -> io::Result<Received> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || receive_now(fd, buffer))
            .await
    }
}

fn receive_now(fd: std::os::fd::RawFd, buffer: &mut [u8]) -> io::Result<Received> {
    let mut control = nix::cmsg_space!(libc_int);
    let mut iov = [io::IoSliceMut::new(buffer)];
    let message =
        socket::recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut control), MsgFlags::empty())
            .map_err(io::Error::from)?;
    let mut hop_limit = 0;
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::Ipv6HopLimit(limit) = cmsg {
            hop_limit = u8::try_from(limit).unwrap_or(0);
        }
    }
    let source = message
        .address
        .map(|address| address.ip())
        .unwrap_or(Ipv6Addr::UNSPECIFIED);
    Ok(Received {
        len: message.bytes,
        source,
        hop_limit,
    })
}

/// The C `int` a hop-limit control message carries, for `cmsg_space!`.
#[allow(non_camel_case_types)]
type libc_int = i32;

/// How long the kernel keeps a virtual address the master stops
/// refreshing: the master renews it with every advertisement, so when its
/// process dies (`kill -9`: nothing gives the address up) the kernel drops
/// it within this time instead of answering for it beside the new master.
pub const VIRTUAL_ADDRESS_LIFETIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes (or renews) the virtual addresses on the interface (`index`): each
/// as a /128, without duplicate address detection (the other member gave
/// them up, or is dead; waiting a second for DAD is the outage a takeover
/// must not have), valid for [`VIRTUAL_ADDRESS_LIFETIME`] and never
/// preferred as a source. Returns once the kernel receives for each
/// address (the wait below says why).
pub async fn take_addresses(
    handle: &rtnetlink::Handle,
    index: u32,
    addresses: &[Ipv6Addr],
) -> Result<(), crate::DataPlaneError> {
    use netlink_packet_route::address::{AddressAttribute, AddressFlags, CacheInfo};
    let seconds = VIRTUAL_ADDRESS_LIFETIME.as_secs() as u32;
    for address in addresses {
        let mut request = handle
            .address()
            .add(index, std::net::IpAddr::V6(*address), 128)
            .replace();
        let attributes = &mut request.message_mut().attributes;
        attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        // Valid but not preferred (deprecated): the kernel answers for it
        // and sockets bound to it use it, but it never becomes the source
        // of a connection the host opens, whose replies would follow the
        // address to the other member after a takeover.
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = 0;
        lifetime.ifa_valid = seconds;
        attributes.push(AddressAttribute::CacheInfo(lifetime));
        request
            .execute()
            .await
            .map_err(|e| refused("take", *address, e))?;
    }
    wait_until_local(handle, addresses).await
}

/// How long the kernel may take to start receiving for an address it was
/// given.
pub const ADDRESS_LOCAL_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until the kernel delivers packets for each address locally. An
/// added address is the host's at once (it may be a packet's source), but
/// its local route is inserted later, by the kernel's address worker
/// (`addrconf_dad_work`, even without DAD); until then a packet for the
/// address is forwarded as if to a neighbour. After a takeover that
/// neighbour is the old member, whose kernel still holds the address when
/// only its process died: the answer to the new member's first Neighbor
/// Solicitation went there, and traffic waited a second for the kernel to
/// solicit again (seen in the process-death failover lab on a loaded
/// machine: silence from the takeover to 1.03 s after it). So the address
/// is announced only once it is local.
async fn wait_until_local(
    handle: &rtnetlink::Handle,
    addresses: &[Ipv6Addr],
) -> Result<(), crate::DataPlaneError> {
    let started = std::time::Instant::now();
    for address in addresses {
        let mut pause = std::time::Duration::from_micros(200);
        while !crate::addresses::delivered_locally(handle, *address).await {
            if started.elapsed() >= ADDRESS_LOCAL_WITHIN {
                return Err(crate::DataPlaneError::Refused {
                    action: "take",
                    destination: ipnet::Ipv6Net::from(*address),
                    reason: format!(
                        "the kernel did not deliver it locally within {ADDRESS_LOCAL_WITHIN:?}"
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Gives the virtual addresses up. Absent is fine.
pub async fn release_addresses(
    handle: &rtnetlink::Handle,
    index: u32,
    addresses: &[Ipv6Addr],
) -> Result<(), crate::DataPlaneError> {
    let addresses: Vec<std::net::IpAddr> = addresses.iter().map(|a| (*a).into()).collect();
    release_listed(handle, index, &addresses).await
}

/// Deletes those of the interface's addresses that `addresses` lists, in
/// one listing of them: how both families' virtual addresses are given up.
async fn release_listed(
    handle: &rtnetlink::Handle,
    index: u32,
    addresses: &[std::net::IpAddr],
) -> Result<(), crate::DataPlaneError> {
    use netlink_packet_route::address::AddressAttribute;
    for message in crate::addresses::address_messages(handle, index).await? {
        let address = message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Address(address) => Some(*address),
                _ => None,
            })
            .filter(|a| addresses.contains(a));
        if let Some(address) = address {
            handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(|e| match address {
                    std::net::IpAddr::V6(address) => refused("release", address, e),
                    std::net::IpAddr::V4(address) => ipv4_refused("release", address, e),
                })?;
        }
    }
    Ok(())
}

fn refused(
    action: &'static str,
    address: Ipv6Addr,
    error: rtnetlink::Error,
) -> crate::DataPlaneError {
    crate::DataPlaneError::Refused {
        action,
        destination: ipnet::Ipv6Net::from(address),
        reason: error.to_string(),
    }
}

/// Announces that the virtual addresses are now at this interface's MAC:
/// an unsolicited Neighbor Advertisement per address to all nodes, Router
/// and Override set (RFC 4861 §4.4, §7.2.6; RFC 5798 §6.4.2), so that
/// neighbours' caches move at once instead of after tens of seconds.
pub fn announce(interface: &str, source: Ipv6Addr, addresses: &[Ipv6Addr]) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)?;
    let mac = interface_mac(interface)?;
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddrV6::new(source, 0, 0, index).into())?;
    socket.set_multicast_if_v6(index)?;
    socket.set_multicast_hops_v6(255)?;
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
    for address in addresses {
        socket.send_to(&neighbor_advertisement(*address, mac), &all_nodes.into())?;
    }
    Ok(())
}

/// An unsolicited Neighbor Advertisement (RFC 4861 §4.4) for `target` at
/// `mac`; the kernel fills the ICMPv6 checksum of a raw ICMPv6 socket.
pub fn neighbor_advertisement(target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    const ROUTER: u8 = 0x80;
    const OVERRIDE: u8 = 0x20;
    let mut packet = vec![136, 0, 0, 0, ROUTER | OVERRIDE, 0, 0, 0];
    packet.extend_from_slice(&target.octets());
    // Target Link-Layer Address option: type 2, length 1 (8 octets).
    packet.extend_from_slice(&[2, 1]);
    packet.extend_from_slice(&mac);
    packet
}

/// Takes the IPv4 addresses that follow the pair's role (a /32 each, the
/// same lifetime as the IPv6 ones: they lapse if this process dies). RFC
/// 5798 runs VRRP per family; nemo's pair elects once, over IPv6, and the
/// IPv4 addresses go with that role, announced by gratuitous ARP (as
/// keepalived's `virtual_ipaddress_excluded` do).
pub async fn take_ipv4_addresses(
    handle: &rtnetlink::Handle,
    index: u32,
    addresses: &[std::net::Ipv4Addr],
) -> Result<(), crate::DataPlaneError> {
    use netlink_packet_route::address::{AddressAttribute, CacheInfo};
    let seconds = VIRTUAL_ADDRESS_LIFETIME.as_secs() as u32;
    for address in addresses {
        let mut request = handle
            .address()
            .add(index, std::net::IpAddr::V4(*address), 32)
            .replace();
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = seconds;
        lifetime.ifa_valid = seconds;
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
        request
            .execute()
            .await
            .map_err(|e| ipv4_refused("take", *address, e))?;
    }
    Ok(())
}

/// Gives the IPv4 addresses that follow the role up. Absent is fine.
pub async fn release_ipv4_addresses(
    handle: &rtnetlink::Handle,
    index: u32,
    addresses: &[std::net::Ipv4Addr],
) -> Result<(), crate::DataPlaneError> {
    let addresses: Vec<std::net::IpAddr> = addresses.iter().map(|a| (*a).into()).collect();
    release_listed(handle, index, &addresses).await
}

fn ipv4_refused(
    action: &'static str,
    address: std::net::Ipv4Addr,
    error: rtnetlink::Error,
) -> crate::DataPlaneError {
    crate::DataPlaneError::Unavailable {
        backend: "vrrp",
        reason: format!("{action} {address}: {error}"),
    }
}

/// Announces the IPv4 addresses at this interface's MAC: a gratuitous ARP
/// request per address, broadcast (RFC 5798 §6.4.2; RFC 5227 §3's
/// announcement), so that neighbours' ARP caches move at once.
pub fn announce_ipv4(interface: &str, addresses: &[std::net::Ipv4Addr]) -> io::Result<()> {
    if addresses.is_empty() {
        return Ok(());
    }
    let mac = interface_mac(interface)?;
    let port = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == interface)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {interface}"))
        })?;
    // Sending only: not promiscuous, the smallest buffers.
    let config = pnet_datalink::Config {
        promiscuous: false,
        read_buffer_size: 64,
        write_buffer_size: 64,
        ..pnet_datalink::Config::default()
    };
    let mut sender = match pnet_datalink::channel(&port, config)? {
        pnet_datalink::Channel::Ethernet(sender, _) => sender,
        _ => {
            return Err(io::Error::other(format!(
                "{interface} is not Ethernet-like"
            )))
        }
    };
    for address in addresses {
        if let Some(result) = sender.send_to(&gratuitous_arp(*address, mac), None) {
            result?;
        }
    }
    Ok(())
}

/// A gratuitous ARP request (RFC 826, RFC 5227 §3): broadcast, sender and
/// target protocol address both `address`, sender hardware address `mac`.
pub fn gratuitous_arp(address: std::net::Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6 and 4 octets, request.
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&address.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&address.octets());
    frame
}

fn interface_mac(interface: &str) -> io::Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    let octets: Vec<u8> = text
        .trim()
        .split(':')
        .filter_map(|part| u8::from_str_radix(part, 16).ok())
        .collect();
    octets
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "no MAC address"))
}
