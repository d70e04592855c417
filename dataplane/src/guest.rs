//! A tenant port's guest announcing itself: the first frame a VM sends on
//! its port, read from a packet socket. After a live migration QEMU sends
//! RARP frames from the VM's MAC as the VM resumes (within a millisecond
//! here, measured in the VM lab), then the guest its own frames: either
//! says the VM runs on this hypervisor now (issue 29). Frames the host
//! sends to the port (its source MAC is the port's own) are not the
//! guest's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pnet_datalink::{Channel, ChannelType, Config as LinkConfig};

use crate::transport::packet_socket;
use crate::DataPlaneError;

/// RARP, as QEMU announces a resumed VM.
const ETHERTYPE_RARP: u16 = 0x8035;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The first frame a guest sent on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFrame {
    /// Its source MAC: the guest's.
    pub source: [u8; 6],
    /// Its EtherType.
    pub ethertype: u16,
}

impl GuestFrame {
    /// The frame as read on a port, if it is the guest's: from a unicast
    /// source that is not the port's own MAC (`port`), long enough to
    /// carry a header.
    pub fn from_port(frame: &[u8], port: [u8; 6]) -> Option<GuestFrame> {
        let source: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let multicast = source[0] & 1 == 1;
        (source != port && source != [0; 6] && !multicast)
            .then_some(GuestFrame { source, ethertype })
    }

    /// "RARP from 52:54:00:00:01:02" (for logs and the controller's history).
    pub fn describe(&self) -> String {
        let kind = match self.ethertype {
            ETHERTYPE_RARP => "RARP".to_owned(),
            ETHERTYPE_ARP => "ARP".to_owned(),
            ETHERTYPE_IPV6 => "IPv6".to_owned(),
            other => format!("EtherType {other:#06x}"),
        };
        let mac: Vec<String> = self.source.iter().map(|o| format!("{o:02x}")).collect();
        format!("{kind} from {}", mac.join(":"))
    }
}

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "guest frames",
        reason,
    }
}

/// Waits, on the calling thread, for the first frame the guest sends on
/// port `interface`, and hands it to `arrived` at once, before the socket
/// closes: closing a packet socket waits for an RCU grace period
/// (`packet_release`, `synchronize_net`), which took 12 ms in the VM lab
/// (strace: read at +0.1 ms, the report 12 ms later). Returns without
/// calling it when `stop` was set first (checked every 200 ms) or the port
/// went away.
pub fn wait_for_guest(
    interface: &str,
    stop: Arc<AtomicBool>,
    arrived: impl FnOnce(GuestFrame),
) -> Result<(), DataPlaneError> {
    let port = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == interface)
        .ok_or_else(|| unavailable(format!("no interface {interface}")))?;
    let own = port.mac.map(|m| m.octets()).unwrap_or([0; 6]);
    let config = LinkConfig {
        read_timeout: Some(Duration::from_millis(200)),
        channel_type: ChannelType::Layer2,
        promiscuous: false,
        socket_fd: Some(packet_socket()?),
        ..LinkConfig::default()
    };
    let mut receiver = match pnet_datalink::channel(&port, config).map_err(|e| {
        unavailable(format!(
            "packet socket on {interface} (needs CAP_NET_RAW): {e}"
        ))
    })? {
        Channel::Ethernet(_, receiver) => receiver,
        _ => {
            return Err(unavailable(format!(
                "{interface} is not an Ethernet-like interface"
            )))
        }
    };
    while !stop.load(Ordering::Relaxed) {
        match receiver.next() {
            Ok(frame) => {
                if let Some(guest) = GuestFrame::from_port(frame, own) {
                    arrived(guest);
                    return Ok(());
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {}
            // The port was deleted (its VM ended): nothing will arrive.
            Err(error) => {
                tracing::debug!(%interface, %error, "guest port read failed; no longer watched");
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
    const VM: [u8; 6] = [0x52, 0x54, 0, 0, 1, 2];

    fn frame(source: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&source);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&[0; 28]);
        frame
    }

    #[test]
    fn the_guests_frames_are_told_from_the_hosts() {
        let rarp = GuestFrame::from_port(&frame(VM, ETHERTYPE_RARP), PORT).unwrap();
        assert_eq!(rarp.describe(), "RARP from 52:54:00:00:01:02");
        assert_eq!(
            GuestFrame::from_port(&frame(VM, ETHERTYPE_IPV6), PORT)
                .unwrap()
                .describe(),
            "IPv6 from 52:54:00:00:01:02"
        );
        // The host's own frames to the port, and nonsense, are not.
        assert_eq!(
            GuestFrame::from_port(&frame(PORT, ETHERTYPE_IPV6), PORT),
            None
        );
        assert_eq!(
            GuestFrame::from_port(&frame([0; 6], ETHERTYPE_ARP), PORT),
            None
        );
        assert_eq!(
            GuestFrame::from_port(&frame([0x33, 0x33, 0, 0, 0, 1], ETHERTYPE_IPV6), PORT),
            None
        );
        assert_eq!(GuestFrame::from_port(&[0; 13], PORT), None);
    }
}
