//! A daemon's link to the controller: its endpoints, the authenticated
//! channel, and the back-off between attempts.

use std::path::Path;
use std::time::Duration;

use crate::config::{check_endpoint, read_token, SettingError};

/// `endpoint` in a daemon's `[controller]`: one controller, or the
/// replicas of one (on one etcd), tried in order.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum Endpoints {
    /// `endpoint = "http://[2001:db8::1]:50051"`.
    One(String),
    /// `endpoint = ["http://[2001:db8::1]:50051", "http://[2001:db8::2]:50051"]`.
    Several(Vec<String>),
}

/// Most controller endpoints a daemon is given.
pub const MOST_ENDPOINTS: usize = 16;

impl Endpoints {
    /// The endpoints, in order.
    pub fn list(&self) -> Vec<String> {
        match self {
            Endpoints::One(one) => vec![one.clone()],
            Endpoints::Several(several) => several.clone(),
        }
    }

    /// Checks every endpoint ([`check_endpoint`]), and that there are 1 to
    /// [`MOST_ENDPOINTS`].
    pub fn check(&self) -> Result<(), SettingError> {
        let list = self.list();
        if list.is_empty() || list.len() > MOST_ENDPOINTS {
            return Err(SettingError::EndpointCount(list.len()));
        }
        list.iter()
            .try_for_each(|endpoint| check_endpoint(endpoint))
    }
}

/// How a daemon reaches the controller: its endpoints (replicas, tried in
/// order from the one that answered last), the CA that signs an
/// `https://` endpoint's certificate, and the bearer token.
#[derive(Clone)]
pub struct ControllerLink {
    endpoints: Vec<String>,
    /// The endpoint that answered last (shared by the link's clones).
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ca_file: Option<std::path::PathBuf>,
    token: String,
}

impl std::fmt::Debug for ControllerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ControllerLink")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl ControllerLink {
    /// A link from a `[controller]` section: the token read from
    /// `token_file` now.
    pub fn new(
        endpoints: &Endpoints,
        ca_file: Option<&Path>,
        token_file: &Path,
    ) -> Result<ControllerLink, SettingError> {
        let token = read_token(token_file).map_err(|source| SettingError::Unreadable {
            path: token_file.to_owned(),
            source,
        })?;
        endpoints.check()?;
        Ok(ControllerLink {
            endpoints: endpoints.list(),
            current: Default::default(),
            ca_file: ca_file.map(Path::to_owned),
            token,
        })
    }

    /// The endpoint in use (the one that answered last), for logs.
    pub fn endpoint(&self) -> &str {
        let current = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.endpoints
            .get(current)
            .or(self.endpoints.first())
            .map_or("", String::as_str)
    }

    /// A client over a new channel ([`controller_channel`]) to the first
    /// endpoint that answers, from the one that answered last: a replica
    /// that died is passed over for the next.
    pub async fn connect(
        &self,
    ) -> Result<
        nemo_proto::v1::controller_client::ControllerClient<tonic::transport::Channel>,
        ChannelError,
    > {
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut failure = None;
        for step in 0..self.endpoints.len() {
            let index = (start + step) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            match controller_channel(endpoint, self.ca_file.as_deref()).await {
                Ok(channel) => {
                    if index != start {
                        tracing::info!(%endpoint, "controller: moved to another endpoint");
                    }
                    self.current
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    return Ok(nemo_proto::v1::controller_client::ControllerClient::new(
                        channel,
                    ));
                }
                Err(error) => {
                    if self.endpoints.len() > 1 {
                        tracing::warn!(%endpoint, %error, "controller endpoint unreachable; trying the next");
                    }
                    failure = Some(error);
                }
            }
        }
        Err(failure.unwrap_or(ChannelError::Setting(SettingError::EndpointCount(0))))
    }

    /// Makes the next [`connect`](Self::connect) start from the endpoint
    /// after the current one: the current one answered but could not make
    /// a change (its store unavailable), and another replica may.
    pub fn pass_over_current(&self) {
        let current = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let next = (current + 1) % self.endpoints.len().max(1);
        if next != current {
            tracing::info!(
                from = self.endpoints.get(current).map_or("", String::as_str),
                endpoint = self.endpoints.get(next).map_or("", String::as_str),
                "controller: moved to another endpoint (the last did not answer a call)"
            );
        }
        self.current
            .store(next, std::sync::atomic::Ordering::Relaxed);
    }

    /// `message` as a request carrying the token ([`authorized`]).
    pub fn request<T>(
        &self,
        message: T,
    ) -> Result<tonic::Request<T>, tonic::metadata::errors::InvalidMetadataValue> {
        authorized(message, &self.token)
    }
}

/// `message` as a request carrying the controller's bearer token (the
/// `authorization` metadata the controller checks).
pub fn authorized<T>(
    message: T,
    token: &str,
) -> Result<tonic::Request<T>, tonic::metadata::errors::InvalidMetadataValue> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// How a daemon's watch of the controller ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// The controller's history no longer reaches our revision
    /// (`OUT_OF_RANGE`): watch again from 0 at once, taking its whole state.
    StartOver,
}

/// The wait between attempts to reach the controller (or a pair's other
/// member): 200 ms, doubling to 30 s. One policy for every follower.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    /// What is being reached, for the log.
    what: &'static str,
}

impl Default for Backoff {
    /// For the controller.
    fn default() -> Self {
        Backoff::new("controller")
    }
}

impl Backoff {
    /// For reaching `what` (named in the log).
    pub fn new(what: &'static str) -> Backoff {
        Backoff {
            next: Duration::from_millis(200),
            what,
        }
    }

    /// Logs why the peer is away and what the daemon does meanwhile, then
    /// waits the current delay and doubles it.
    pub async fn wait(
        &mut self,
        error: &(dyn std::fmt::Display + Sync),
        endpoint: &str,
        meanwhile: &str,
    ) {
        tracing::warn!(%error, %endpoint, retry_in = ?self.next, "{} unavailable; {meanwhile}", self.what);
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
}

/// Why no channel to the controller could be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The endpoint or the CA file is wrong.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// TLS setup or the connection failed.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

/// How long connecting to one controller endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC channel to the controller: plain for `http://` endpoints; for
/// `https://`, TLS verified against the CA certificate in `ca_file` (PEM).
pub async fn controller_channel(
    endpoint: &str,
    ca_file: Option<&Path>,
) -> Result<tonic::transport::Channel, ChannelError> {
    let mut builder = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .map_err(|_| SettingError::NotAUrl(endpoint.to_owned()))?
        // A replica whose host is gone (no answer at all) is given up on,
        // so that the next one is tried.
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(ca_file) = ca_file {
        let ca = std::fs::read(ca_file).map_err(|source| SettingError::Unreadable {
            path: ca_file.to_owned(),
            source,
        })?;
        builder = builder.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        )?;
    }
    Ok(builder.connect().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_list_is_checked_whole() {
        let list = |n: usize| Endpoints::Several(vec!["http://[::1]:50051".to_owned(); n]);
        assert!(list(1).check().is_ok() && list(MOST_ENDPOINTS).check().is_ok());
        assert!(matches!(
            list(0).check(),
            Err(SettingError::EndpointCount(0))
        ));
        assert!(matches!(
            list(MOST_ENDPOINTS + 1).check(),
            Err(SettingError::EndpointCount(17))
        ));
        let one_bad = Endpoints::Several(vec!["http://[::1]:1".into(), "[::1]:2".into()]);
        assert!(matches!(one_bad.check(), Err(SettingError::NoScheme(_))));
    }
}
