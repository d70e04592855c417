//! Request ids: a change made once, however often its client sends it.
//!
//! A client that was told "outcome unknown" (or lost its connection before
//! an answer) sends the same call again with the same request id. The
//! change a call makes records its id in the same commit (the same etcd
//! transaction, the same redb write), table `requests`: id -> the revision
//! of the change and a fingerprint of the call. A call whose id is
//! recorded is answered from that change instead of being made again
//! (AWS's client tokens, Stripe's Idempotency-Key); one whose id was
//! recorded for a different call is refused, naming the id.
//!
//! The ids are bounded by count: the newest [`MAX_REQUEST_IDS`] are kept,
//! the oldest removed in the commit that adds one more. They live in
//! memory like the rest of the state (some 150 bytes each).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::{Event, Store, StoreError};

/// Request ids kept (the newest).
pub const MAX_REQUEST_IDS: usize = 100_000;
/// The longest request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A call's request id and the fingerprint of the call it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    id: String,
    fingerprint: String,
}

impl RequestId {
    /// The id a client gave to the call `method` whose message encodes to
    /// `message`: 1 to 64 of letters, digits, `-`, `_`, `.`, `:`.
    pub fn new(id: &str, method: &str, message: &[u8]) -> Result<RequestId, StoreError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_REQUEST_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !valid {
            return Err(StoreError::Invalid {
                field: "nemo-request-id",
                reason: format!(
                    "1 to {MAX_REQUEST_ID_LEN} of letters, digits, '-', '_', '.', ':' (got {} bytes)",
                    id.len()
                ),
            });
        }
        Ok(RequestId {
            id: id.to_owned(),
            fingerprint: fingerprint(method, message),
        })
    }

    /// The id as the client gave it.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// FNV-1a, 128 bits, of the method and the message: tells one call from
/// another under the same id (a client's mistake, not an attack: the id
/// space is the client's own).
fn fingerprint(method: &str, message: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for byte in method.bytes().chain([0]).chain(message.iter().copied()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{hash:032x}")
}

/// What the `requests` table holds for an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Seen {
    /// The call's fingerprint.
    pub(super) fingerprint: String,
    /// The revision of the change it made.
    pub(super) revision: u64,
}

/// The ids in memory, by id and oldest first.
#[derive(Debug, Default)]
pub(super) struct SeenRequests {
    by_id: HashMap<String, Seen>,
    by_revision: BTreeMap<u64, String>,
}

impl SeenRequests {
    pub(super) fn get(&self, id: &str) -> Option<&Seen> {
        self.by_id.get(id)
    }

    pub(super) fn insert(&mut self, id: String, seen: Seen) {
        self.by_revision.insert(seen.revision, id.clone());
        if let Some(old) = self.by_id.insert(id, seen) {
            self.by_revision.remove(&old.revision);
        }
    }

    pub(super) fn remove(&mut self, id: &str) {
        if let Some(seen) = self.by_id.remove(id) {
            self.by_revision.remove(&seen.revision);
        }
    }

    /// The oldest id, when more than `keep` are held.
    pub(super) fn beyond(&self, keep: usize) -> Option<&str> {
        (self.by_id.len() > keep)
            .then(|| self.by_revision.values().next().map(String::as_str))
            .flatten()
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

tokio::task_local! {
    static REQUEST: RequestId;
}

/// Runs `operation` (one of the store's changes) as the call `request`
/// names: its commit records the id, or, when the id is recorded already,
/// it is refused with [`StoreError::AlreadyMade`] instead of made again.
pub async fn as_request<F: Future>(request: Option<RequestId>, operation: F) -> F::Output {
    match request {
        Some(request) => REQUEST.scope(request, operation).await,
        None => operation.await,
    }
}

/// The request the running change is made for, if any.
pub(super) fn current() -> Option<RequestId> {
    REQUEST.try_with(Clone::clone).ok()
}

/// What a commit does with the current request id: refuse it when its id
/// is recorded (made already, or used for another call), or return what
/// to record.
pub(super) fn check(seen: &SeenRequests) -> Result<Option<RequestId>, StoreError> {
    let Some(request) = current() else {
        return Ok(None);
    };
    match seen.get(&request.id) {
        None => Ok(Some(request)),
        Some(earlier) if earlier.fingerprint == request.fingerprint => {
            Err(StoreError::AlreadyMade {
                revision: earlier.revision,
            })
        }
        Some(_) => Err(StoreError::Invalid {
            field: "nemo-request-id",
            reason: format!("{:?} was used for a different call", request.id),
        }),
    }
}

impl Store {
    /// The change the call `request` made, when it made one: the first
    /// call's event, once durable, for answering a retry as the first call
    /// was answered. `None` when the id is new.
    pub async fn made_by(&self, request: &RequestId) -> Result<Option<Event>, StoreError> {
        let (revision, generation) = {
            let state = self.state.lock().await;
            match state.requests.get(&request.id) {
                None => return Ok(None),
                Some(seen) if seen.fingerprint != request.fingerprint => {
                    return Err(StoreError::Invalid {
                        field: "nemo-request-id",
                        reason: format!("{:?} was used for a different call", request.id),
                    })
                }
                Some(seen) => (
                    seen.revision,
                    self.log
                        .generation
                        .load(std::sync::atomic::Ordering::Acquire),
                ),
            }
        };
        // The change may still be committing: answer only once it is
        // durable (Conflict, and a retry, if it was put back meanwhile).
        self.settled(generation).await?;
        let event = self
            .history(revision - 1, revision)
            .await?
            .into_iter()
            .next();
        event
            .ok_or_else(|| StoreError::NotFound {
                what: "change of revision",
                name: revision.to_string(),
            })
            .map(Some)
    }

    /// Request ids held now.
    pub async fn request_ids(&self) -> usize {
        self.state.lock().await.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_bounded_and_names_what_is_wrong() {
        assert!(RequestId::new("7f3a-01", "AllocatePrefix", b"x").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            let refused = RequestId::new(bad, "AllocatePrefix", b"x").unwrap_err();
            assert!(refused.to_string().contains("nemo-request-id"), "{refused}");
        }
    }

    #[test]
    fn one_call_one_fingerprint() {
        let a = RequestId::new("r", "AllocatePrefix", b"x").unwrap();
        assert_eq!(a, RequestId::new("r", "AllocatePrefix", b"x").unwrap());
        assert_ne!(a, RequestId::new("r", "AllocatePrefix", b"y").unwrap());
        assert_ne!(a, RequestId::new("r", "ReleasePrefix", b"x").unwrap());
    }

    #[test]
    fn the_oldest_goes_first() {
        let mut seen = SeenRequests::default();
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            seen.insert(
                id.into(),
                Seen {
                    fingerprint: String::new(),
                    revision: n as u64 + 1,
                },
            );
        }
        assert_eq!(seen.beyond(3), None);
        assert_eq!(seen.beyond(2), Some("a"));
        seen.remove("a");
        assert_eq!(seen.beyond(1), Some("b"));
    }
}
