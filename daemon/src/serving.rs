//! What every daemon does between reading its config and running: bind its
//! servers (a gRPC API with health and reflection, the metrics endpoint),
//! name their addresses in one ready line on stdout, and stop cleanly on
//! SIGTERM, or at once when a server fails.
//!
//! ```text
//! let mut servers = Servers::new("nemo-ha ready");
//! let listener = servers.bind("admin", listen).await?;
//! servers.grpc(listener, api, limits);
//! servers.metrics(listen, render).await?;
//! let mut serving = servers.ready()?;     // SIGTERM handler, then the line
//! let stop = serving.stopped().await;     // SIGTERM, ^C or a server failed
//! serving.shutdown().await;
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::incoming::{self, ConnectionLimits};

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("binding {what} {listen}: {source}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        listen: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A socket or signal operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A server ended although nothing stopped it.
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
    /// A server task panicked or was cancelled.
    #[error("{what}: {source}")]
    Task {
        /// Which server.
        what: &'static str,
        /// How it ended.
        source: tokio::task::JoinError,
    },
}

/// A daemon's gRPC API: its routes, and the service name health reports
/// as serving.
#[derive(Debug)]
pub struct GrpcApi {
    /// The daemon's services (`tonic::service::Routes::new(..)`).
    pub routes: tonic::service::Routes,
    /// The service's gRPC name (`<XServer<_> as NamedService>::NAME`).
    pub name: &'static str,
    /// The server to run them on: `tonic::transport::Server::builder()`,
    /// or one configured for TLS.
    pub server: tonic::transport::Server,
}

type ServerTask = Pin<Box<dyn Future<Output = Result<(), ServeError>> + Send>>;

/// The servers of a daemon being set up, and its ready line.
pub struct Servers {
    ready: String,
    tasks: Vec<(&'static str, ServerTask)>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Servers")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl Servers {
    /// No servers yet; the ready line starts with `ready`
    /// (`"nemo-ha ready"`).
    pub fn new(ready: impl Into<String>) -> Servers {
        Servers {
            ready: ready.into(),
            tasks: Vec::new(),
            stop: watch::channel(false).0,
        }
    }

    /// Adds ` key=value` to the ready line.
    pub fn note(&mut self, key: &str, value: impl std::fmt::Display) {
        self.ready.push_str(&format!(" {key}={value}"));
    }

    /// Binds a listener for a server and names its address in the ready
    /// line as `what=address` (so that port 0 works).
    pub async fn bind(
        &mut self,
        what: &'static str,
        listen: SocketAddr,
    ) -> Result<TcpListener, ServeError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind {
                what,
                listen,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| ServeError::Io {
            what: "reading the bound address",
            source,
        })?;
        self.note(what, bound);
        Ok(listener)
    }

    /// Serves a gRPC API, with health and reflection, on a bound listener:
    /// connections accepted through [`incoming::guarded`] within `limits`
    /// (each must make a call its token check passes within
    /// `handshake_timeout`: the API's interceptor calls
    /// [`incoming::authenticated`]), streams bounded by
    /// [`incoming::bounded_server`]; stopped gracefully by
    /// [`Serving::shutdown`].
    pub fn grpc(&mut self, listener: TcpListener, api: GrpcApi, limits: ConnectionLimits) {
        let limits = ConnectionLimits {
            first_sign: incoming::FirstSign::AuthenticatedCall,
            ..limits
        };
        let mut stop = self.stop.subscribe();
        let task = async move {
            let (health_reporter, health) = tonic_health::server::health_reporter();
            health_reporter
                .set_service_status(api.name, tonic_health::ServingStatus::Serving)
                .await;
            let reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(nemo_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .build_v1()?;
            if let Ok(listen) = listener.local_addr() {
                tracing::info!(%listen, service = api.name, "gRPC listening");
            }
            let (accepted, _refused) = incoming::guarded(listener, limits);
            incoming::bounded_server(api.server)
                .add_routes(api.routes.add_service(health).add_service(reflection))
                .serve_with_incoming_shutdown(accepted, async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                })
                .await?;
            Ok(())
        };
        self.tasks.push(("gRPC server", Box::pin(task)));
    }

    /// Binds and serves `GET /metrics` with what `render` returns
    /// ([`crate::serve_metrics`]), named `metrics=` in the ready line.
    pub async fn metrics(
        &mut self,
        listen: SocketAddr,
        render: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> Result<(), ServeError> {
        let listener = self.bind("metrics", listen).await?;
        let mut stop = self.stop.subscribe();
        let task = async move {
            tokio::select! {
                served = crate::serve_metrics(listener, render) => {
                    served.map_err(|source| ServeError::Io {
                        what: "metrics server",
                        source,
                    })
                }
                _ = stop.wait_for(|stopping| *stopping) => Ok(()),
            }
        };
        self.tasks.push(("metrics server", Box::pin(task)));
        Ok(())
    }

    /// Starts the servers, installs the SIGTERM handler (a supervisor may
    /// stop the daemon the moment it says it is ready, and that must be a
    /// clean stop), then prints the ready line: stdout, one line, for
    /// supervisors and tests.
    pub fn ready(self) -> Result<Serving, ServeError> {
        let terminate = signal(SignalKind::terminate()).map_err(|source| ServeError::Io {
            what: "installing the SIGTERM handler",
            source,
        })?;
        let mut tasks = JoinSet::new();
        for (what, task) in self.tasks {
            tasks.spawn(async move { (what, task.await) });
        }
        println!("{}", self.ready);
        notify_service_manager(&format!("READY=1\nSTATUS={}", self.ready));
        Ok(Serving {
            tasks,
            stop: self.stop,
            terminate,
        })
    }
}

/// Why a daemon stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM.
    Terminated,
    /// SIGINT (^C).
    Interrupted,
}

/// The running servers of a ready daemon.
#[derive(Debug)]
pub struct Serving {
    tasks: JoinSet<(&'static str, Result<(), ServeError>)>,
    stop: watch::Sender<bool>,
    terminate: Signal,
}

impl Serving {
    /// Waits for a reason to stop: a signal, or a server failing (an
    /// error: the daemon must stop, it no longer serves what it said).
    pub async fn stopped(&mut self) -> Result<Stop, ServeError> {
        tokio::select! {
            _ = self.terminate.recv() => {
                tracing::info!("SIGTERM: stopping");
                Ok(Stop::Terminated)
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupt: stopping");
                Ok(Stop::Interrupted)
            }
            Some(ended) = self.tasks.join_next() => Err(match ended {
                Ok((_, Err(error))) => error,
                Ok((what, Ok(()))) => ServeError::Stopped(what),
                Err(source) => ServeError::Task { what: "server", source },
            }),
        }
    }

    /// Stops the gRPC servers gracefully and the rest at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let graceful = async {
            while let Some(ended) = self.tasks.join_next().await {
                if let Ok((what, Err(error))) = ended {
                    tracing::warn!(server = what, %error, "server stopped with an error");
                }
            }
        };
        // Every server ends on the stop signal; a gRPC server finishing its
        // calls gets a moment, no more.
        if tokio::time::timeout(std::time::Duration::from_secs(2), graceful)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// Tells the service manager (systemd, `Type=notify`) `message`, when it
/// gave this process a socket for that (`NOTIFY_SOCKET`); a failure is
/// logged, never fatal: the daemon serves whether or not anyone listens.
pub fn notify_service_manager(message: &str) {
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(error) = notify(&socket, message) {
            tracing::warn!(%error, "telling the service manager failed");
        }
    }
}

/// Sends `message` to the datagram socket `socket` names: a path, or an
/// abstract name after `@` (sd_notify(3)).
pub fn notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let name = socket.as_bytes();
    let address = match name.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &address)?;
    Ok(())
}

#[cfg(test)]
mod notify_tests {
    use super::*;

    #[test]
    fn the_service_manager_hears_ready_on_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("notify");
        let listener =
            std::os::unix::net::UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        notify(path.as_os_str(), "READY=1\nSTATUS=up").unwrap_or_else(|e| panic!("{e}"));
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("nemo-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let listener =
            std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap_or_else(|e| panic!("{e}"));
        notify(std::ffi::OsStr::new(&format!("@{name}")), "READY=1")
            .unwrap_or_else(|e| panic!("{e}"));
        let n = listener.recv(&mut buffer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buffer[..n], b"READY=1");
        // Nobody listening: an error to log, not a panic.
        assert!(notify(dir.path().join("absent").as_os_str(), "READY=1").is_err());
    }
}
