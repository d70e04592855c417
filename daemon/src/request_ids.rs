//! The daemons' own changes to the controller, made once: each mutating
//! call (nemo-ha's binding reports, nemo-mr's hypervisor registration)
//! carries a fresh request id ([`REQUEST_ID`](nemo_proto::REQUEST_ID)),
//! and a call whose outcome the daemon could not learn (`UNKNOWN`, a
//! timeout, a connection lost mid-call) or that was not made
//! (`UNAVAILABLE`, `ABORTED`) is sent again with the same id, to the next
//! replica, a few times: the controller answers a repeated id from the
//! first call's change instead of making it twice (controller
//! store/requests.rs).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::controller_link::{ChannelError, ControllerLink};

/// How often one call is sent before it is given up.
pub const MOST_ATTEMPTS: u32 = 4;
/// The wait after the first unanswered attempt; doubled after each.
const FIRST_WAIT: Duration = Duration::from_millis(100);

/// A fresh request id: `who` (the daemon, e.g. `nemo-ha`), this process's
/// random 64 bits (read once; the time and PID when the kernel gives no
/// randomness) and a count, e.g. `nemo-ha-3f0c9e1b52d7a4c8-17`: unique
/// across processes and restarts without a read of the kernel's
/// randomness per call (nemo-ha sends one per binding report).
pub fn fresh_request_id(who: &str) -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        crate::secret::random_octets::<8>()
            .map(u64::from_be_bytes)
            .unwrap_or_else(|_| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                now ^ u64::from(std::process::id())
            })
    });
    let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    format!("{who}-{process:016x}-{count}")
}

/// Whether a call that ended with `status` may be sent again with its id:
/// its outcome is unknown, or it was not made. Any other status is the
/// controller's answer (refused, not found, ...), final.
pub fn worth_sending_again(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unavailable
            | Code::Aborted
    )
}

/// Why a call made once came to nothing.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The controller answered with this status (final, or the last of
    /// [`MOST_ATTEMPTS`] that were worth sending again).
    #[error("{0}")]
    Answered(tonic::Status),
    /// No endpoint could be reached at the last attempt.
    #[error("controller unreachable: {0}")]
    Unreachable(ChannelError),
    /// The token or the id is not valid gRPC metadata.
    #[error("the controller token is not valid metadata")]
    BadMetadata,
}

impl ControllerLink {
    /// Sends `message` by `call` with request id `id` until the controller
    /// answers it, at most [`MOST_ATTEMPTS`] times: after an attempt worth
    /// sending again ([`worth_sending_again`]) or an unreachable endpoint,
    /// `client` is dropped and the next attempt connects anew, starting
    /// from the next endpoint (another replica may have its quorum).
    pub async fn call_once<T, R, F, Fut>(
        &self,
        client: &mut Option<ControllerClient<Channel>>,
        id: &str,
        message: T,
        mut call: F,
    ) -> Result<R, CallError>
    where
        T: Clone,
        F: FnMut(ControllerClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut wait = FIRST_WAIT;
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(client, id, message.clone(), &mut call).await {
                Ok(answer) => return Ok(answer),
                Err(CallError::Answered(status)) if !worth_sending_again(&status) => {
                    return Err(CallError::Answered(status));
                }
                Err(CallError::BadMetadata) => return Err(CallError::BadMetadata),
                Err(failure) => failure,
            };
            if attempt >= MOST_ATTEMPTS {
                return Err(failure);
            }
            tracing::info!(%failure, request_id = id, attempt, "controller call unanswered; sending it again with its request id");
            *client = None;
            self.pass_over_current();
            tokio::time::sleep(wait).await;
            wait *= 2;
            attempt += 1;
        }
    }

    async fn attempt<T, R, F, Fut>(
        &self,
        client: &mut Option<ControllerClient<Channel>>,
        id: &str,
        message: T,
        call: &mut F,
    ) -> Result<R, CallError>
    where
        F: FnMut(ControllerClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let connected = match client {
            Some(connected) => connected.clone(),
            None => {
                let connected = self.connect().await.map_err(CallError::Unreachable)?;
                client.insert(connected).clone()
            }
        };
        let mut request = self.request(message).map_err(|_| CallError::BadMetadata)?;
        request.metadata_mut().insert(
            nemo_proto::REQUEST_ID,
            id.parse().map_err(|_| CallError::BadMetadata)?,
        );
        call(connected, request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(CallError::Answered)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn fresh_ids_differ_and_name_the_daemon() {
        let (a, b) = (fresh_request_id("nemo-ha"), fresh_request_id("nemo-ha"));
        assert_ne!(a, b);
        assert!(a.starts_with("nemo-ha-") && a.len() <= 64, "{a}");
        // The same process part, another count.
        assert_eq!(a[..24], b[..24]);
    }

    /// A real gRPC server (health only) on a loopback port: an endpoint to
    /// connect to; the stand-in `call` answers in the controller's place.
    async fn endpoint() -> String {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://[::1]:{port}")
    }

    /// Calls `call_once` over a link to two endpoints against answers
    /// given in order; returns its result and, for every attempt, its
    /// request id and the endpoint it went to.
    async fn answered(
        answers: Vec<Result<u32, tonic::Status>>,
    ) -> (Result<u32, CallError>, Vec<(String, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "secret-token\n").unwrap();
        let endpoints = crate::Endpoints::Several(vec![endpoint().await, endpoint().await]);
        let link = ControllerLink::new(&endpoints, None, &token).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let mut client = None;
        let result = link
            .call_once(&mut client, "nemo-ha-0011", 7u32, |_, request| {
                let seen = seen.clone();
                let answers = answers.clone();
                let endpoint = link.endpoint().to_owned();
                async move {
                    let id = request.metadata().get(nemo_proto::REQUEST_ID);
                    let id = id.unwrap().to_str().unwrap().to_owned();
                    seen.lock().unwrap().push((id, endpoint));
                    let token = request.metadata().get("authorization").unwrap();
                    assert_eq!(token, "Bearer secret-token");
                    assert_eq!(*request.get_ref(), 7);
                    let answer = answers.lock().unwrap().next().unwrap();
                    answer.map(tonic::Response::new)
                }
            })
            .await;
        let seen = seen.lock().unwrap().clone();
        (result, seen)
    }

    #[tokio::test]
    async fn an_unanswered_call_is_sent_again_with_the_same_id() {
        let (result, seen) = answered(vec![
            Err(tonic::Status::unknown("outcome unknown")),
            Err(tonic::Status::unavailable("not made")),
            Ok(42),
        ])
        .await;
        assert_eq!(result.unwrap(), 42);
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec!["nemo-ha-0011"; 3]);
        // Each attempt after one unanswered goes to the next replica.
        assert_ne!(seen[0].1, seen[1].1);
        assert_ne!(seen[1].1, seen[2].1);
    }

    #[tokio::test]
    async fn a_refusal_is_final_and_attempts_are_bounded() {
        let (result, seen) = answered(vec![
            Err(tonic::Status::unknown("outcome unknown")),
            Err(tonic::Status::invalid_argument(
                "home_address: not an address",
            )),
            Ok(1),
        ])
        .await;
        assert!(
            matches!(result, Err(CallError::Answered(s)) if s.code() == tonic::Code::InvalidArgument)
        );
        assert_eq!(seen.len(), 2);

        let (result, seen) = answered(vec![
            Err(tonic::Status::unavailable("no quorum")),
            Err(tonic::Status::unavailable("no quorum")),
            Err(tonic::Status::unavailable("no quorum")),
            Err(tonic::Status::unavailable("no quorum")),
            Ok(1),
        ])
        .await;
        assert!(
            matches!(result, Err(CallError::Answered(s)) if s.code() == tonic::Code::Unavailable)
        );
        assert_eq!(seen.len(), MOST_ATTEMPTS as usize);
    }
}
