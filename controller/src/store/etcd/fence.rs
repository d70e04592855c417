//! Whether a transaction etcd did not answer was made, decided for good.
//!
//! A transaction sent to etcd and left unanswered (a member died, the
//! quorum went, the client's deadline passed) may still be committed later:
//! its proposal can sit in a leader's log, or in a follower forwarding it,
//! until the cluster recovers. Answering the caller "not made" then would
//! be a lie an orchestrator acts on (it retries, and gets two prefixes).
//!
//! So every transaction also requires its own fence key, `<prefix>fences/
//! <random>`, to be absent. When its fate is unknown, the replica asks etcd
//! in one transaction: if the transaction's event is there, it was made;
//! otherwise the fence is written, and from then on the transaction can
//! never be made, whenever its proposal arrives. Only when even that
//! question goes unanswered is the caller told the outcome is unknown.
//! Fences are bound to a lease and go by themselves after an hour; the
//! follower ignores them (no table of the store is named `fences`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use crate::store::StoreError;

/// How long a fence stays: far longer than a proposal can wait in etcd
/// (a request times out on the server after seconds; a leader that lost
/// its quorum steps down within an election timeout).
const FENCE_TTL_SECS: i64 = 3600;
/// Times the fate of a transaction is asked before it is said unknown.
const SETTLE_ATTEMPTS: u32 = 3;

/// The key one transaction requires absent.
#[derive(Debug, Clone)]
pub(super) struct Fence {
    key: String,
}

impl Fence {
    /// A fence of its own for a transaction under `prefix`: this process's
    /// random id (read once; no other replica has it) and a count, so a
    /// transaction costs no read of the kernel's randomness.
    pub(super) fn new(prefix: &str) -> Result<Fence, StoreError> {
        static PROCESS: OnceLock<String> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let process = match PROCESS.get() {
            Some(process) => process,
            None => {
                let id = nemo_daemon::secret::random_octets::<16>()
                    .map_err(|e| StoreError::Storage(format!("random fence id: {e}")))?;
                PROCESS.get_or_init(|| super::hex(&id))
            }
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ok(Fence {
            key: format!("{prefix}fences/{process}-{n:x}"),
        })
    }

    /// The condition the transaction adds to its own: the fence is absent.
    pub(super) fn guard(&self) -> Compare {
        Compare::version(self.key.clone(), CompareOp::Equal, 0)
    }

    /// Decides the fate of the fenced transaction, which wrote `our_event`
    /// at `event_key`: `Ok(etcd revision)` when it was made (its event is
    /// there), [`StoreError::Unavailable`] when it was not and now never
    /// will be (the fence is written), [`StoreError::OutcomeUnknown`] when
    /// etcd answered neither question. `why` is what left it unanswered.
    pub(super) async fn settle(
        &self,
        client: &mut Client,
        event_key: &str,
        our_event: &[u8],
        why: &etcd_client::Error,
    ) -> Result<i64, StoreError> {
        let mut last = None;
        for attempt in 0..SETTLE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                    .await;
            }
            match self.ask(client, event_key, our_event).await {
                Ok(Some(etcd_revision)) => {
                    tracing::info!(
                        fence = self.key,
                        "etcd: a transaction left unanswered was made after all"
                    );
                    return Ok(etcd_revision);
                }
                Ok(None) => {
                    tracing::warn!(
                        fence = self.key,
                        error = %why,
                        "etcd: a transaction left unanswered was not made; fenced, it never will be"
                    );
                    return Err(StoreError::Unavailable(format!(
                        "etcd: writing: {why} (not made, and fenced: it never will be)"
                    )));
                }
                Err(error) => last = Some(error),
            }
        }
        let asked = last.map_or_else(String::new, |e| e.to_string());
        tracing::error!(
            fence = self.key,
            error = %why,
            %asked,
            "etcd: whether a transaction was made cannot be told now"
        );
        Err(StoreError::OutcomeUnknown(format!(
            "etcd did not answer whether the change was made ({why}; asking again: {asked})"
        )))
    }

    /// One question: made (`Some(etcd revision)`), or fenced now (`None`).
    async fn ask(
        &self,
        client: &mut Client,
        event_key: &str,
        our_event: &[u8],
    ) -> Result<Option<i64>, etcd_client::Error> {
        let lease = client.lease_grant(FENCE_TTL_SECS, None).await?.id();
        let txn = Txn::new()
            .when([Compare::value(event_key, CompareOp::Equal, our_event)])
            .and_then([TxnOp::get(event_key, None)])
            .or_else([TxnOp::put(
                self.key.clone(),
                Vec::new(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let response = client.txn(txn).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        let made_at = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                _ => None,
            })
            .map_or(0, |kv| kv.mod_revision());
        Ok(Some(made_at))
    }
}

/// Whether an error proves the request was never made: etcd refused it
/// before proposing it (no leader), or no connection carried it. etcd's
/// own client retries a mutation only on these (clientv3's
/// `isSafeRetryMutableRPC`).
pub(super) fn never_made(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable
                && (status.message().contains("etcdserver: no leader")
                    || status.message().contains("error trying to connect")
                    || status.message().contains("tcp connect error"))
        }
        _ => false,
    }
}
