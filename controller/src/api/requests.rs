//! Request ids on the API: a mutating call may carry gRPC metadata
//! [`REQUEST_ID`]; a call sent again with the same id (after `UNKNOWN`, a
//! lost connection, a replica that died) is answered as the first call was
//! instead of being made twice (store/requests.rs).

use std::future::Future;

use prost::Message;
use tonic::{Request, Status};

use super::Service;
use crate::store::requests::{as_request, RequestId};
use crate::store::{Event, StoreChange, StoreError};

pub use nemo_proto::REQUEST_ID;

/// The request id a call gave, if any (the fingerprint covers `method` and
/// the whole message, so the same id on another call is refused).
pub(super) fn request_id<T: Message>(
    request: &Request<T>,
    method: &'static str,
) -> Result<Option<RequestId>, Status> {
    let Some(value) = request.metadata().get(REQUEST_ID) else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("{REQUEST_ID}: not printable ASCII")))?;
    RequestId::new(id, method, &request.get_ref().encode_to_vec())
        .map(Some)
        .map_err(Status::from)
}

/// What a call with a request id came to.
#[derive(Debug)]
pub(super) enum Made<T> {
    /// Made by this call.
    Now(T),
    /// Made by an earlier call with the same id: its change.
    Earlier(Box<Event>),
}

impl<T> Made<T> {
    /// The call's answer: what it made now, or what the earlier call's
    /// change holds (`pick` takes it from a change of the call's kind; any
    /// other kind under the id means a store this API did not write).
    pub(super) fn answer(self, pick: impl FnOnce(StoreChange) -> Option<T>) -> Result<T, Status> {
        match self {
            Made::Now(made) => Ok(made),
            Made::Earlier(event) => {
                let Event {
                    revision, change, ..
                } = *event;
                let kind = change.kind();
                pick(change).ok_or_else(|| {
                    Status::internal(format!(
                        "{REQUEST_ID}: recorded for the change at revision {revision} ({kind}), \
                         not this call's kind"
                    ))
                })
            }
        }
    }
}

impl Service {
    /// Makes `change` once per request id: answered from the earlier call's
    /// change when the id is recorded. Checked when the change is refused
    /// (its commit found the id, or the operation's own checks refused what
    /// the first call made, "exists already"), not before: a first call
    /// pays nothing more for its id than the bytes in its event.
    pub(super) async fn once<T>(
        &self,
        request: Option<RequestId>,
        change: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<Made<T>, Status> {
        let Some(request) = request else {
            return Ok(Made::Now(change.await?));
        };
        match as_request(Some(request.clone()), change).await {
            Ok(made) => Ok(Made::Now(made)),
            Err(error) => match self.store.made_by(&request).await {
                Ok(Some(event)) => Ok(Made::Earlier(Box::new(event))),
                // The id names another call: that, not this call's own
                // refusal, is what the client must hear.
                Err(reused @ StoreError::Invalid { .. }) => Err(reused.into()),
                _ => Err(error.into()),
            },
        }
    }
}
