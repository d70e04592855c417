//! The UDP receive task (the native transport's receivers are
//! `nemo_dataplane::transport`'s threads).

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::messages::{CoreEvent, ReplyPath};

/// Largest datagram read: a Mobility Header is at most 2048 octets, plus
/// IPv6 and extension headers.
pub(super) const MAX_DATAGRAM: usize = 4096;

/// Receives datagrams on a UDP socket and hands them to the core.
pub(super) async fn udp_receiver(socket: Arc<UdpSocket>, core: mpsc::Sender<CoreEvent>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((len, peer)) => {
                let event = CoreEvent::Packet {
                    bytes: buffer[..len].to_vec(),
                    path: ReplyPath::Udp {
                        socket: socket.clone(),
                        peer,
                    },
                    received_at: Instant::now(),
                };
                if core.send(event).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(%error, "udp receive error");
            }
        }
    }
}
