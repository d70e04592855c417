//! The connections a gRPC server accepts, guarded against a client that
//! opens many and says nothing.
//!
//! Measured on the controller before: with systemd's 1024 descriptors, 1100
//! idle TCP connections made it unreachable and spun a core (the accept
//! error, EMFILE, returned at once, forever). Here:
//! - an accept error pauses the loop ([`ACCEPT_BACKOFF`]) instead of
//!   spinning, and is logged once per pause;
//! - at most `max_connections` are open at once, and at most
//!   `max_per_source` from one address (so one host cannot take every
//!   slot before any token is checked); one more is closed at once
//!   (counted and logged), so descriptors never run out;
//! - a connection must deliver its first [`HANDSHAKE_OCTETS`] octets (the
//!   HTTP/2 client preface, or a TLS ClientHello) within
//!   `handshake_timeout`, or it is closed; on a gRPC server
//!   ([`FirstSign::AuthenticatedCall`]) it must by then have made a call
//!   its server's token check passed ([`authenticated`]), so that a client
//!   without a token cannot hold a slot by speaking HTTP/2 and calling
//!   nothing (or only what needs no token: health, reflection).
//!
//! Idle connections past that are the HTTP/2 layer's: the servers send
//! keepalive pings and drop peers that do not answer.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// Pause after an accept error.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The HTTP/2 connection preface is 24 octets (RFC 9113 §3.4); a TLS
/// ClientHello is longer.
pub const HANDSHAKE_OCTETS: usize = 24;

/// Bounds on what clients may hold open.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_source: usize,
    /// Time for a new connection to show its [`FirstSign`].
    pub handshake_timeout: Duration,
    /// What a new connection must do within `handshake_timeout`.
    pub first_sign: FirstSign,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            max_per_source: 256,
            handshake_timeout: Duration::from_secs(10),
            first_sign: FirstSign::Octets,
        }
    }
}

/// What a new connection must do within `handshake_timeout` to stay open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSign {
    /// Send [`HANDSHAKE_OCTETS`] octets (any server).
    Octets,
    /// Make a call that passes its server's token check: the server's
    /// interceptor says so with [`authenticated`] (gRPC servers).
    AuthenticatedCall,
}

/// Set once a call on the connection passed its server's token check.
#[derive(Debug, Clone, Default)]
pub struct Authenticated(Arc<AtomicBool>);

impl Authenticated {
    fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a server learns of a guarded connection with each call (its
/// request extensions; wrapped in `TlsConnectInfo` over TLS).
#[derive(Debug, Clone)]
pub struct GuardedInfo {
    /// The TCP connection's addresses.
    pub tcp: TcpConnectInfo,
    /// Whether a call on it passed the server's token check.
    pub authenticated: Authenticated,
}

/// Marks the connection a call came on (found in its request
/// `extensions`) as having made an authenticated call: the server's token
/// check calls this when the call passes. Calls on other connections (a
/// test's in-process service) are left as they are.
pub fn authenticated(extensions: &tonic::Extensions) {
    if let Some(info) = extensions.get::<GuardedInfo>() {
        info.authenticated.mark();
    } else if let Some(info) = extensions.get::<TlsConnectInfo<GuardedInfo>>() {
        info.get_ref().authenticated.mark();
    }
}

/// Streams one connection may have open at once (a daemon holds a few
/// watches; an orchestrator a few calls).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// The HTTP/2 bounds every nemo gRPC server applies on top of `server`
/// (plain, or with TLS configured): streams per connection, and keepalive
/// pings that drop peers which stopped answering, with their descriptors.
pub fn bounded_server(server: tonic::transport::Server) -> tonic::transport::Server {
    server
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
}

/// Connections refused because `max_connections` were open, since start.
#[derive(Debug, Default)]
pub struct Refused(AtomicU64);

impl Refused {
    /// How many so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts a connection from `peer` refused at `limit` because of
    /// `why`, and warns about the first and then every power of two.
    fn count(&self, peer: std::net::SocketAddr, limit: usize, why: &str) {
        let before = self.0.fetch_add(1, Ordering::Relaxed);
        if before.is_power_of_two() || before == 0 {
            tracing::warn!(%peer, limit, refused = before + 1, "connection refused: {why}");
        }
    }
}

/// Accepts on `listener` in a task of its own, under `limits`; the stream
/// is what `tonic`'s `serve_with_incoming` takes.
pub fn guarded(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> (
    tokio_stream::wrappers::ReceiverStream<io::Result<Guarded>>,
    Arc<Refused>,
) {
    let (accepted, stream) = mpsc::channel(64);
    let refused = Arc::new(Refused::default());
    let open = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(accept(listener, limits, open, accepted, refused.clone()));
    (tokio_stream::wrappers::ReceiverStream::new(stream), refused)
}

async fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
    open: Arc<Semaphore>,
    accepted: mpsc::Sender<io::Result<Guarded>>,
    refused: Arc<Refused>,
) {
    let sources = Arc::new(std::sync::Mutex::new(HashMap::new()));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match open.clone().try_acquire_owned() {
                Ok(permit) => {
                    let Some(source) = SourceSlot::take(&sources, peer.ip(), limits.max_per_source)
                    else {
                        refused.count(
                            peer,
                            limits.max_per_source,
                            "too many open from this address",
                        );
                        continue;
                    };
                    let guarded = Guarded {
                        stream,
                        _permit: permit,
                        _source: source,
                        handshake: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
                        first_sign: limits.first_sign,
                        received: 0,
                        authenticated: Authenticated::default(),
                    };
                    if accepted.send(Ok(guarded)).await.is_err() {
                        return;
                    }
                }
                Err(_) => refused.count(peer, limits.max_connections, "too many open"),
            },
            Err(error) => {
                tracing::warn!(%error, pause_ms = ACCEPT_BACKOFF.as_millis(), "accept failed; pausing");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Connections open per source address.
type Sources = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// A connection's place among those of its source address; given back
/// when dropped.
#[derive(Debug)]
struct SourceSlot {
    sources: Sources,
    ip: IpAddr,
}

impl SourceSlot {
    /// A place for one more connection from `ip`, if it has fewer than
    /// `most` open.
    fn take(sources: &Sources, ip: IpAddr, most: usize) -> Option<SourceSlot> {
        let mut open = sources.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.sources.lock() {
            if let Some(count) = open.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

/// An accepted connection: holds its place among `max_connections`, and
/// fails its reads when its [`FirstSign`] does not come in time.
#[derive(Debug)]
pub struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _source: SourceSlot,
    /// The deadline for the first sign; `None` once shown.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    first_sign: FirstSign,
    received: usize,
    authenticated: Authenticated,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(deadline) = this.handshake.as_mut() {
            this.received += buf.filled().len() - before;
            let shown = match this.first_sign {
                FirstSign::Octets => this.received >= HANDSHAKE_OCTETS,
                FirstSign::AuthenticatedCall => this.authenticated.is_marked(),
            };
            if shown {
                this.handshake = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                // Also when octets keep coming: requests that all fail the
                // token check do not keep a connection.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    match this.first_sign {
                        FirstSign::Octets => "no handshake in time",
                        FirstSign::AuthenticatedCall => "no authenticated call in time",
                    },
                )));
            }
        }
        result
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Guarded {
    type ConnectInfo = GuardedInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        GuardedInfo {
            tcp: self.stream.connect_info(),
            authenticated: self.authenticated.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn silent_connections_time_out_and_the_cap_holds() {
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ConnectionLimits {
            max_connections: 2,
            max_per_source: 2,
            handshake_timeout: Duration::from_millis(100),
            first_sign: FirstSign::Octets,
        };
        let (mut incoming, refused) = guarded(listener, limits);
        let silent = TcpStream::connect(address).await.unwrap();
        let mut first = incoming.next().await.unwrap().unwrap();
        let mut talking = TcpStream::connect(address).await.unwrap();
        let mut second = incoming.next().await.unwrap().unwrap();
        // A third while two are open: closed at once.
        let mut third = TcpStream::connect(address).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert_eq!(refused.get(), 1);

        // The talking one sends its preface and keeps working past the
        // deadline; the silent one times out.
        talking.write_all(&[b'P'; HANDSHAKE_OCTETS]).await.unwrap();
        let mut buffer = [0u8; HANDSHAKE_OCTETS];
        second.read_exact(&mut buffer).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        talking.write_all(b"later").await.unwrap();
        let mut later = [0u8; 5];
        second.read_exact(&mut later).await.unwrap();
        assert_eq!(&later, b"later");
        let error = first.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop((first, silent));
        // Its place is free again.
        let _fourth = TcpStream::connect(address).await.unwrap();
        assert!(incoming.next().await.unwrap().is_ok());
    }

    /// Issue 32, item 9: one address holds at most `max_per_source`; the
    /// others still get in.
    #[tokio::test]
    async fn one_source_cannot_take_every_slot() {
        let listener = TcpListener::bind("[::]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = ConnectionLimits {
            max_connections: 8,
            max_per_source: 2,
            handshake_timeout: Duration::from_secs(10),
            first_sign: FirstSign::Octets,
        };
        let (mut incoming, refused) = guarded(listener, limits);
        let loopback6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let mut held = Vec::new();
        for _ in 0..2 {
            let client = TcpStream::connect(loopback6).await.unwrap();
            held.push((client, incoming.next().await.unwrap().unwrap()));
        }
        let mut third = TcpStream::connect(loopback6).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert_eq!(refused.get(), 1);
        // Another address (IPv4 loopback, mapped) still gets in.
        let loopback4 = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let _other = TcpStream::connect(loopback4).await.unwrap();
        assert!(incoming.next().await.unwrap().is_ok());
    }
}
