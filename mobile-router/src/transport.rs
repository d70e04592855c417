//! How a mobile-router daemon reaches its home agents: UDP (RFC 5555's
//! port, the IPv6 packet inside), or RFC 6275's own form on the uplink
//! (raw IPv6 out, a packet socket in, the kernel kept quiet about the type 2
//! routing header). With UDP, a second socket over IPv4 carries the Binding
//! Updates of IPv4 care-of addresses (RFC 5555 §4.2); its port is the IPv4
//! tunnel's too.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use nemo_dataplane::quiet;
use nemo_dataplane::transport::{Addresses, RawSender};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How Binding Updates reach the home agents and their answers come back.
#[derive(Debug)]
pub enum Transport {
    /// The home agent's UDP transport: IPv6 packets in UDP datagrams.
    Udp {
        /// The socket.
        socket: UdpSocket,
        /// The home agent's UDP address.
        home_agent: SocketAddr,
        /// The socket over IPv4 and the home agent's IPv4 UDP address,
        /// for IPv4 care-of addresses; `None`: IPv6 ones only.
        ipv4: Option<(UdpSocket, SocketAddrV4)>,
    },
    /// RFC 6275 on the wire: Binding Updates out of a raw socket,
    /// acknowledgements (type 2 routing header) from a packet socket.
    Native {
        /// The raw socket.
        sender: RawSender,
        /// Packets the receivers took for us.
        incoming: mpsc::Receiver<Vec<u8>>,
        /// The addresses the receivers accept: the care-of address.
        addresses: Addresses,
        /// For the tc filter that keeps the kernel quiet.
        handle: rtnetlink::Handle,
        /// The uplink.
        uplink: String,
        /// Stops the receivers.
        stop: Arc<AtomicBool>,
    },
}

impl Transport {
    /// The native transport on `uplink`: starts the receivers.
    pub fn native(uplink: &str, handle: rtnetlink::Handle) -> anyhow::Result<Transport> {
        let (sender_tx, incoming) = mpsc::channel(1024);
        let addresses: Addresses = Arc::new(RwLock::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        nemo_dataplane::transport::start_receivers(
            &[uplink.to_owned()],
            addresses.clone(),
            move |packet| sender_tx.blocking_send(packet).is_ok(),
            stop.clone(),
        )?;
        Ok(Transport::Native {
            sender: RawSender::open()?,
            incoming,
            addresses,
            handle,
            uplink: uplink.to_owned(),
            stop,
        })
    }

    /// Sends a Binding Update registering `care_of`: over IPv4 for an IPv4
    /// one.
    pub(crate) async fn send(&self, packet: &[u8], care_of: Option<IpAddr>) -> std::io::Result<()> {
        match (self, care_of) {
            (
                Transport::Udp {
                    ipv4: Some((socket, home_agent)),
                    ..
                },
                Some(IpAddr::V4(_)),
            ) => socket.send_to(packet, home_agent).await.map(|_| ()),
            (
                Transport::Udp {
                    socket, home_agent, ..
                },
                _,
            ) => socket.send_to(packet, home_agent).await.map(|_| ()),
            (Transport::Native { sender, .. }, _) => sender.send(packet),
        }
    }

    pub(crate) async fn receive(&mut self, buffer: &mut [u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Transport::Udp {
                socket,
                ipv4: Some((socket4, _)),
                ..
            } => {
                let mut buffer4 = vec![0u8; buffer.len()];
                tokio::select! {
                    received = socket.recv_from(buffer) => {
                        let (len, _) = received?;
                        Ok(buffer[..len].to_vec())
                    }
                    received = socket4.recv_from(&mut buffer4) => {
                        let (len, _) = received?;
                        buffer4.truncate(len);
                        Ok(buffer4)
                    }
                }
            }
            Transport::Udp { socket, .. } => {
                let (len, _) = socket.recv_from(buffer).await?;
                Ok(buffer[..len].to_vec())
            }
            Transport::Native { incoming, .. } => incoming
                .recv()
                .await
                .ok_or_else(|| std::io::Error::other("native receivers stopped")),
        }
    }

    /// Follows a new care-of address: the receivers take packets to it and
    /// the kernel is kept quiet about its acknowledgements.
    pub(crate) async fn care_of_changed(&self, care_of: Option<Ipv6Addr>) {
        let Transport::Native {
            addresses,
            handle,
            uplink,
            ..
        } = self
        else {
            return;
        };
        if let Ok(mut accepted) = addresses.write() {
            *accepted = care_of.into_iter().collect();
        }
        if let Some(care_of) = care_of {
            if let Err(error) = quiet::suppress(
                handle,
                std::slice::from_ref(uplink),
                &[care_of],
                quiet::Signalling::BindingAcks,
            )
            .await
            {
                tracing::error!(%error, "cannot keep the kernel quiet about Binding Acknowledgements");
            }
        }
    }

    /// The home agent's IPv4 UDP address, when IPv4 care-of addresses
    /// register.
    pub(crate) fn ipv4_home_agent(&self) -> Option<SocketAddrV4> {
        match self {
            Transport::Udp {
                ipv4: Some((_, home_agent)),
                ..
            } => Some(*home_agent),
            _ => None,
        }
    }

    /// The port of the IPv4 socket: the IPv4 tunnel's source port.
    pub(crate) fn ipv4_port(&self) -> Option<u16> {
        match self {
            Transport::Udp {
                ipv4: Some((socket, _)),
                ..
            } => socket.local_addr().ok().map(|a| a.port()),
            _ => None,
        }
    }

    pub(crate) fn local_addr(&self) -> String {
        match self {
            Transport::Udp { socket, ipv4, .. } => {
                let mut text = socket
                    .local_addr()
                    .map(|a| format!("udp={a}"))
                    .unwrap_or_else(|_| "udp=?".into());
                if let Some(local) = ipv4.as_ref().and_then(|(s, _)| s.local_addr().ok()) {
                    text.push_str(&format!(" udp4={local}"));
                }
                text
            }
            Transport::Native { uplink, .. } => format!("native={uplink}"),
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if let Transport::Native { stop, .. } = self {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Binds the UDP socket.
pub async fn bind(address: SocketAddr) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(address)
        .await
        .with_context(|| format!("binding UDP {address}"))
}
