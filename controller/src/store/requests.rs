//! Request ids: a change made once, however often its client sends it.
//!
//! A client that was told "outcome unknown" (or lost its connection before
//! an answer) sends the same call again with the same request id. The
//! change a call makes records its id, with a fingerprint of the call, in
//! its own event (the history's record of the change, written in the same
//! commit: no extra key, so no extra cost per transaction). A call whose id
//! is recorded is answered from that change instead of being made again
//! (AWS's client tokens, Stripe's Idempotency-Key); one whose id was
//! recorded for a different call is refused, naming the id.
//!
//! Memory holds the ids of the newest [`MAX_REQUEST_IDS`] changes (read
//! back from the history when the store loads; some 150 bytes each); an
//! id older than that, or whose event the history trimmed, is forgotten.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::{Event, Store, StoreError};

/// Changes whose request ids are kept (the newest).
pub const MAX_REQUEST_IDS: u64 = 100_000;
/// The longest request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A call's request id and the fingerprint of the call it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// What memory holds for an id.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Keeps the request id of `event`, if it has one, and forgets those of
    /// changes [`MAX_REQUEST_IDS`] or more older.
    pub(super) fn record(&mut self, event: &Event) {
        if let Some(request) = &event.request {
            self.forget(event.revision);
            if let Some(old) = self.by_id.insert(
                request.id.clone(),
                Seen {
                    fingerprint: request.fingerprint.clone(),
                    revision: event.revision,
                },
            ) {
                self.by_revision.remove(&old.revision);
            }
            self.by_revision.insert(event.revision, request.id.clone());
        }
        let oldest_kept = event.revision.saturating_sub(MAX_REQUEST_IDS - 1);
        while let Some(entry) = self.by_revision.first_entry() {
            if *entry.key() >= oldest_kept {
                break;
            }
            let id = entry.remove();
            self.by_id.remove(&id);
        }
    }

    /// Forgets the request id of the change at `revision` (put back, or
    /// trimmed from the history).
    pub(super) fn forget(&mut self, revision: u64) {
        if let Some(id) = self.by_revision.remove(&revision) {
            self.by_id.remove(&id);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// The request ids of the newest [`MAX_REQUEST_IDS`] changes up to
/// `revision`, read from the history (when the store loads).
pub(super) async fn recorded(
    backend: &super::backend::Backend,
    revision: u64,
) -> Result<SeenRequests, StoreError> {
    let mut seen = SeenRequests::default();
    if revision == 0 {
        return Ok(seen);
    }
    let from = revision.saturating_sub(MAX_REQUEST_IDS - 1).max(1);
    for (_, value) in backend
        .scan(
            "events",
            Some(&from.to_be_bytes()),
            Some(&revision.to_be_bytes()),
        )
        .await?
    {
        seen.record(&super::decode::<Event>(&value)?);
    }
    Ok(seen)
}

tokio::task_local! {
    static REQUEST: Option<RequestId>;
}

/// Runs `operation` (one of the store's changes) as the call `request`
/// names: its commit records the id, or, when the id is recorded already,
/// it is refused with [`StoreError::AlreadyMade`] instead of made again.
pub async fn as_request<F: Future>(request: Option<RequestId>, operation: F) -> F::Output {
    REQUEST.scope(request, operation).await
}

/// Runs the changes an operation makes on the way to its own (a cascade's
/// releases) apart from its request id: the id is recorded with the
/// operation's last change only, so a retry after a crash part way makes
/// what is left and records the id then.
pub(super) async fn apart<F: Future>(steps: F) -> F::Output {
    REQUEST.scope(None, steps).await
}

/// The request the running change is made for, if any.
pub(super) fn current() -> Option<RequestId> {
    REQUEST.try_with(Clone::clone).ok().flatten()
}

/// What a commit does with the current request id: refuse it when its id
/// is recorded (made already, or used for another call), or return it to
/// record in the change's event.
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
    fn ids_follow_their_changes_and_the_oldest_go() {
        let event = |revision: u64, id: Option<&str>| Event {
            revision,
            at_unix_ms: 0,
            change: super::super::StoreChange::TenantCreated(super::super::Tenant {
                name: "t".into(),
                created_at_unix_ms: 0,
            }),
            request: id.map(|id| RequestId::new(id, "CreateTenant", b"t").unwrap()),
        };
        let mut seen = SeenRequests::default();
        seen.record(&event(1, Some("a")));
        seen.record(&event(2, None));
        seen.record(&event(3, Some("b")));
        assert_eq!(seen.get("a").map(|s| s.revision), Some(1));
        assert_eq!(seen.len(), 2);
        // Put back: forgotten with its change.
        seen.forget(3);
        assert_eq!(seen.get("b"), None);
        // MAX_REQUEST_IDS changes later, the first id is gone.
        seen.record(&event(MAX_REQUEST_IDS + 1, Some("c")));
        assert_eq!(seen.get("a"), None);
        assert_eq!(seen.len(), 1);
    }
}
