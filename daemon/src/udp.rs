//! UDP sockets as the daemons open them (large receive buffers).

/// Receive buffer asked for on the daemons' UDP sockets unless configured:
/// a burst of Binding Updates from many mobile routers must not overflow the
/// kernel's default (about 200 KiB, some 270 small datagrams).
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `listen` with a receive buffer of `receive_buffer`
/// bytes asked for, and the size the kernel granted (it doubles the request
/// for its bookkeeping and caps it at `net.core.rmem_max`).
pub fn udp_socket(
    listen: std::net::SocketAddr,
    receive_buffer: usize,
) -> std::io::Result<(tokio::net::UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(receive_buffer)?;
    socket.set_nonblocking(true)?;
    // A member of a home-agent pair listens on the home-agent address
    // while the other member holds it; its answers then leave from that
    // address, which a mobile router's connected socket requires (the IPv4
    // one of `[ipv4]` as the IPv6 one).
    if listen.is_ipv6() {
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.bind(&listen.into())?;
    let granted = socket.recv_buffer_size()?;
    Ok((tokio::net::UdpSocket::from_std(socket.into())?, granted))
}
