//! A user-space UDP relay between mobile routers and a home agent that delays
//! every datagram and can lose the first answers: the WAN between sites in
//! the lab (the seed's 40 ms round trip), and a lossy path in tests.
//!
//! Each client (source address and port) gets its own upstream socket, so the
//! answers go back to the client they belong to. Delays are constant, so each
//! direction is a FIFO queue served by one thread that sleeps until the head
//! is due. Threads end with the process.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the relay treats traffic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelaySettings {
    /// Added to each datagram in each direction (half the added round trip).
    pub one_way_delay: Duration,
    /// Answers (home agent to client) dropped before any is delivered.
    pub lose_first_answers: usize,
}

/// A datagram waiting for its time.
struct Due {
    at: Instant,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    bytes: Vec<u8>,
}

/// A thread that sends each queued datagram when it is due.
fn delayer() -> Sender<Due> {
    let (tx, rx) = channel::<Due>();
    std::thread::spawn(move || {
        for due in rx {
            if let Some(wait) = due.at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = match due.to {
                Some(to) => due.socket.send_to(&due.bytes, to),
                None => due.socket.send(&due.bytes),
            };
        }
    });
    tx
}

/// Starts a relay listening on `listen` that forwards to `upstream`; returns
/// the address it listens on.
pub fn start(
    listen: SocketAddr,
    upstream: SocketAddr,
    settings: RelaySettings,
) -> io::Result<SocketAddr> {
    let front = Arc::new(UdpSocket::bind(listen)?);
    let address = front.local_addr()?;
    let towards_upstream = delayer();
    let towards_clients = delayer();
    let lost = Arc::new(Mutex::new(0usize));
    let unspecified: SocketAddr = if upstream.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| io::Error::other("unspecified address"))?;
    std::thread::spawn(move || {
        let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buffer = vec![0u8; 65536];
        while let Ok((len, client)) = front.recv_from(&mut buffer) {
            let back = match clients.get(&client) {
                Some(back) => back.clone(),
                None => {
                    let Ok(back) = UdpSocket::bind(unspecified).and_then(|s| {
                        s.connect(upstream)?;
                        Ok(Arc::new(s))
                    }) else {
                        continue;
                    };
                    answers(
                        back.clone(),
                        front.clone(),
                        client,
                        towards_clients.clone(),
                        settings,
                        lost.clone(),
                    );
                    clients.insert(client, back.clone());
                    back
                }
            };
            let _ = towards_upstream.send(Due {
                at: Instant::now() + settings.one_way_delay,
                socket: back,
                to: None,
                bytes: buffer[..len].to_vec(),
            });
        }
    });
    Ok(address)
}

/// Carries one client's answers back through the front socket.
fn answers(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    queue: Sender<Due>,
    settings: RelaySettings,
    lost: Arc<Mutex<usize>>,
) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65536];
        while let Ok(len) = back.recv(&mut buffer) {
            if let Ok(mut lost) = lost.lock() {
                if *lost < settings.lose_first_answers {
                    *lost += 1;
                    continue;
                }
            }
            let _ = queue.send(Due {
                at: Instant::now() + settings.one_way_delay,
                socket: front.clone(),
                to: Some(client),
                bytes: buffer[..len].to_vec(),
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    fn echo() -> SocketAddr {
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        let address = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while let Ok((len, from)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(&buffer[..len], from);
            }
        });
        address
    }

    fn client(relay: SocketAddr) -> UdpSocket {
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        socket.connect(relay).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket
    }

    #[test]
    fn answers_come_back_to_their_client_after_the_round_trip() {
        let settings = RelaySettings {
            one_way_delay: Duration::from_millis(20),
            lose_first_answers: 0,
        };
        let relay = start("[::1]:0".parse().unwrap(), echo(), settings).unwrap();
        let (a, b) = (client(relay), client(relay));
        let started = Instant::now();
        a.send(b"from a").unwrap();
        b.send(b"from b").unwrap();
        let mut buffer = [0u8; 64];
        let len = a.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"from a");
        let len = b.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"from b");
        let round_trip = started.elapsed();
        assert!(round_trip >= Duration::from_millis(40), "{round_trip:?}");
    }

    #[test]
    fn the_first_answers_are_lost() {
        let settings = RelaySettings {
            one_way_delay: Duration::ZERO,
            lose_first_answers: 2,
        };
        let relay = start("[::1]:0".parse().unwrap(), echo(), settings).unwrap();
        let a = client(relay);
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buffer = [0u8; 64];
        for n in 0..3u8 {
            a.send(&[n]).unwrap();
            let answer = a.recv(&mut buffer).ok().map(|len| buffer[..len].to_vec());
            assert_eq!(answer, (n == 2).then(|| vec![2]), "datagram {n}");
        }
    }
}
