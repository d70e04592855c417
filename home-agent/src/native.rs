//! The native transport: Mobility Headers as RFC 6275 puts them on the
//! wire.
//!
//! A Binding Update arrives from the care-of address with a Home Address
//! destination option (RFC 6275 §11.7.1). This kernel has no Mobile IPv6
//! support and drops such packets before any raw socket sees them (GUIDE.md,
//! measured), so the home agent reads them from a packet socket (AF_PACKET,
//! pnet's datalink channel, all protocols: taps run before the kernel's IPv6
//! input), keeps only IPv6 packets sent to its own home-agent addresses, and
//! hands them to the core like any other transport.
//!
//! Answers go out through a raw IPv6 socket (IPPROTO_RAW, header included),
//! which can carry the type 2 routing header the Binding Acknowledgement
//! needs (RFC 6275 §6.4, §9.5.4).
//!
//! The kernel itself would answer the Home Address option with an ICMPv6
//! Parameter Problem; `nemo_dataplane::quiet` drops these packets at tc
//! ingress, after the packet socket has seen them.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use pnet_datalink::{Channel, ChannelType, Config as LinkConfig};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use crate::daemon::{CoreEvent, ReplyPath};

const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// IPPROTO_RAW: a raw socket whose packets carry their own IPv6 header.
const IPPROTO_RAW: i32 = 255;

/// Sends whole IPv6 packets (header included) through a raw socket.
#[derive(Debug)]
pub struct RawSender {
    socket: Socket,
}

impl RawSender {
    /// Opens the raw socket (needs CAP_NET_RAW).
    pub fn open() -> anyhow::Result<RawSender> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
            .context("opening raw IPv6 socket (needs CAP_NET_RAW)")?;
        Ok(RawSender { socket })
    }

    /// Sends a packet to its destination address.
    pub fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        let Some(destination) = packet.get(24..40) else {
            return Err(std::io::Error::other("packet shorter than an IPv6 header"));
        };
        let mut octets = [0u8; 16];
        octets.copy_from_slice(destination);
        // The port of a raw socket address must be 0 (or the protocol).
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
fn addressed_to(packet: &[u8], addresses: &[Ipv6Addr]) -> bool {
    let Some(destination) = packet.get(24..40) else {
        return false;
    };
    addresses.iter().any(|a| a.octets() == destination)
}

/// Starts a receiving thread per interface; they stop when `stop` is set.
pub fn start(
    interfaces: &[String],
    addresses: Vec<Ipv6Addr>,
    sender: Arc<RawSender>,
    core: mpsc::Sender<CoreEvent>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let available = pnet_datalink::interfaces();
    let mut threads = Vec::new();
    for name in interfaces {
        let interface = available
            .iter()
            .find(|i| &i.name == name)
            .with_context(|| format!("native transport: no interface {name}"))?
            .clone();
        let config = LinkConfig {
            read_timeout: Some(Duration::from_millis(200)),
            channel_type: ChannelType::Layer2,
            promiscuous: false,
            read_buffer_size: 65536,
            ..LinkConfig::default()
        };
        let mut receiver = match pnet_datalink::channel(&interface, config).with_context(|| {
            format!("native transport: packet socket on {name} (needs CAP_NET_RAW)")
        })? {
            Channel::Ethernet(_, receiver) => receiver,
            _ => anyhow::bail!("native transport: {name} is not an Ethernet-like interface"),
        };
        tracing::info!(interface = %name, ?addresses, "native transport listening");
        let addresses = addresses.clone();
        let sender = sender.clone();
        let core = core.clone();
        let stop = stop.clone();
        let name = name.clone();
        threads.push(std::thread::Builder::new().name(format!("native-{name}")).spawn(
            move || {
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
                    if !addressed_to(packet, &addresses) {
                        continue;
                    }
                    let event = CoreEvent::Packet {
                        bytes: packet.to_vec(),
                        path: ReplyPath::Native {
                            sender: sender.clone(),
                        },
                        received_at: Instant::now(),
                    };
                    if core.blocking_send(event).is_err() {
                        return;
                    }
                }
            },
        )?);
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
