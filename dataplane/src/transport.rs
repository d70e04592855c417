//! The native transport: Mobility Headers as RFC 6275 puts them on the wire,
//! shared by both daemons.
//!
//! A Binding Update arrives at the home agent with a Home Address
//! destination option (RFC 6275 §11.7.1), a Binding Acknowledgement at the
//! mobile router with a type 2 routing header (§6.4, §9.5.4). Kernels without
//! Mobile IPv6 (this one) drop both before any raw socket sees them
//! (GUIDE.md, measured), so they are read from a packet socket (AF_PACKET,
//! pnet's datalink channel, all protocols: taps run before the kernel's IPv6
//! input), keeping only IPv6 packets sent to the host's own mobility
//! addresses. [`crate::quiet`] then keeps the kernel from answering them
//! with Parameter Problems.
//!
//! Packets go out whole through a raw IPv6 socket (IPPROTO_RAW, header
//! included), which can carry any extension header.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pnet_datalink::{Channel, ChannelType, Config as LinkConfig};
use socket2::{Domain, Protocol, Socket, Type};

use crate::DataPlaneError;

const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// IPPROTO_RAW: a raw socket whose packets carry their own IPv6 header.
const IPPROTO_RAW: i32 = 255;

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "native transport",
        reason,
    }
}

/// Sends whole IPv6 packets (header included) through a raw socket.
#[derive(Debug)]
pub struct RawSender {
    socket: Socket,
}

impl RawSender {
    /// Opens the raw socket (needs CAP_NET_RAW).
    pub fn open() -> Result<RawSender, DataPlaneError> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
            .map_err(|e| unavailable(format!("raw IPv6 socket (needs CAP_NET_RAW): {e}")))?;
        Ok(RawSender { socket })
    }

    /// Sends a packet to its destination address.
    pub fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        let Some(destination) = packet.get(24..40) else {
            return Err(std::io::Error::other("packet shorter than an IPv6 header"));
        };
        let mut octets = [0u8; 16];
        octets.copy_from_slice(destination);
        // The port of a raw socket address must be 0.
        let address = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), 0, 0, 0));
        self.socket.send_to(packet, &address.into())?;
        Ok(())
    }
}

/// The IPv6 packet inside an Ethernet frame (one VLAN tag allowed).
pub fn ipv6_payload(frame: &[u8]) -> Option<&[u8]> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ethertype {
        ETHERTYPE_IPV6 => frame.get(14..),
        ETHERTYPE_VLAN => {
            let inner = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
            (inner == ETHERTYPE_IPV6).then(|| frame.get(18..)).flatten()
        }
        _ => None,
    }
}

/// True when an IPv6 packet is addressed to one of `addresses`.
pub fn addressed_to(packet: &[u8], addresses: &[Ipv6Addr]) -> bool {
    let Some(destination) = packet.get(24..40) else {
        return false;
    };
    addresses.iter().any(|a| a.octets() == destination)
}

/// The addresses a receiver accepts packets for; the mobile router changes
/// them when its care-of address changes.
pub type Addresses = Arc<RwLock<Vec<Ipv6Addr>>>;

/// Kernel receive buffer of each packet socket: a burst of Binding Updates
/// (or acknowledgements) from thousands of peers must fit, and the socket
/// sees every frame of the link. The default (about 200 KiB) lost 5% of the
/// updates at saturation in `bench/ha-native.sh`.
const PACKET_RECEIVE_BUFFER: usize = 4 << 20;

/// ETH_P_ALL: every protocol, as taps see it.
const ETH_P_ALL: u16 = 0x0003;

/// An AF_PACKET socket with a large receive buffer, handed to pnet (which
/// binds it to the interface and owns it from then on).
pub(crate) fn packet_socket() -> Result<i32, DataPlaneError> {
    use std::os::fd::IntoRawFd;
    let socket = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )
    .map_err(|e| unavailable(format!("packet socket (needs CAP_NET_RAW): {e}")))?;
    // Capped by net.core.rmem_max; a smaller buffer still works.
    if let Err(error) = socket.set_recv_buffer_size(PACKET_RECEIVE_BUFFER) {
        tracing::warn!(%error, "packet socket receive buffer left at the default");
    }
    Ok(socket.into_raw_fd())
}

/// Starts a receiving thread per interface, handing every IPv6 packet sent
/// to one of `addresses` to `deliver` (which returns false to stop). The
/// threads also stop when `stop` is set, within 200 ms.
pub fn start_receivers(
    interfaces: &[String],
    addresses: Addresses,
    deliver: impl Fn(Vec<u8>) -> bool + Send + Clone + 'static,
    stop: Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, DataPlaneError> {
    let available = pnet_datalink::interfaces();
    let mut threads = Vec::new();
    for name in interfaces {
        let interface = available
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| unavailable(format!("no interface {name}")))?
            .clone();
        let config = LinkConfig {
            read_timeout: Some(Duration::from_millis(200)),
            channel_type: ChannelType::Layer2,
            promiscuous: false,
            read_buffer_size: 65536,
            socket_fd: Some(packet_socket()?),
            ..LinkConfig::default()
        };
        let mut receiver = match pnet_datalink::channel(&interface, config)
            .map_err(|e| unavailable(format!("packet socket on {name} (needs CAP_NET_RAW): {e}")))?
        {
            Channel::Ethernet(_, receiver) => receiver,
            _ => {
                return Err(unavailable(format!(
                    "{name} is not an Ethernet-like interface"
                )))
            }
        };
        tracing::info!(interface = %name, "native transport listening");
        let (addresses, deliver, stop, name) = (
            addresses.clone(),
            deliver.clone(),
            stop.clone(),
            name.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("native-{name}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let frame = match receiver.next() {
                        Ok(frame) => frame,
                        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => continue,
                        Err(error) => {
                            tracing::warn!(interface = %name, %error, "packet socket read failed");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    // Cheap checks first: every frame on the link passes here.
                    let Some(packet) = ipv6_payload(frame) else {
                        continue;
                    };
                    let ours = addresses
                        .read()
                        .map(|a| addressed_to(packet, &a))
                        .unwrap_or(false);
                    if ours && !deliver(packet.to_vec()) {
                        return;
                    }
                }
            })
            .map_err(|e| unavailable(format!("receiver thread: {e}")))?;
        threads.push(thread);
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_inside_ethernet_and_vlan() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0x01]);
        assert_eq!(ipv6_payload(&frame), Some(&[0x60, 0x01][..]));
        let mut tagged = vec![0u8; 12];
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x86, 0xdd, 0x60]);
        assert_eq!(ipv6_payload(&tagged), Some(&[0x60][..]));
        let mut ipv4 = vec![0u8; 12];
        ipv4.extend_from_slice(&[0x08, 0x00, 0x45]);
        assert_eq!(ipv6_payload(&ipv4), None);
        assert_eq!(ipv6_payload(&[0u8; 5]), None);
    }

    #[test]
    fn only_packets_to_our_addresses() {
        let ours: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let mut packet = vec![0u8; 40];
        packet[24..40].copy_from_slice(&ours.octets());
        assert!(addressed_to(&packet, &[ours]));
        packet[39] ^= 1;
        assert!(!addressed_to(&packet, &[ours]));
        assert!(!addressed_to(&packet[..30], &[ours]));
    }
}
