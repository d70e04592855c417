//! What one replica at a time does to keep the store bounded in etcd:
//! trimming our event history and compacting etcd's own key history.
//!
//! The replica that does it is elected with etcd's lease API: it holds the
//! key `<prefix>maintainer`, created only while absent and bound to a
//! lease it renews, so the key goes when its holder dies or loses etcd,
//! and another replica takes it. Every trim is fenced by that key's
//! creation revision: a holder whose lease expired without it noticing
//! (a long pause) cannot trim any more.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    Txn, TxnOp, TxnOpResponse,
};

use super::{unavailable, EtcdTables};
use crate::store::StoreError;

/// Holding the maintainer's key.
pub struct Leadership {
    lease: i64,
    /// The key's creation revision: what fences the holder's writes.
    created: i64,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", &self.lease)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// What asking for the maintainer's key gave.
#[derive(Debug)]
pub enum Candidacy {
    /// This replica holds it now.
    Leading(Box<Leadership>),
    /// Another replica does: its name.
    Following(String),
}

impl EtcdTables {
    fn maintainer_key(&self) -> String {
        format!("{}maintainer", self.prefix)
    }

    /// Takes the maintainer's key for `who` on a lease of `ttl`, unless
    /// another replica holds it.
    pub async fn lead(&self, who: &str, ttl: Duration) -> Result<Candidacy, StoreError> {
        let mut client = self.client.clone();
        let ttl = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| unavailable("granting a lease", e))?
            .id();
        let key = self.maintainer_key();
        let answer = client
            .txn(
                Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        who,
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key.as_str(), None)]),
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                let _ = client.lease_revoke(lease).await;
                return Err(unavailable("taking the maintainer's key", error));
            }
        };
        if !answer.succeeded() {
            let _ = client.lease_revoke(lease).await;
            let holder = answer
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                    _ => None,
                })
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .unwrap_or_default();
            return Ok(Candidacy::Following(holder));
        }
        let created = answer.header().map_or(0, |h| h.revision());
        match client.lease_keep_alive(lease).await {
            Ok((keeper, answers)) => Ok(Candidacy::Leading(Box::new(Leadership {
                lease,
                created,
                keeper,
                answers,
            }))),
            Err(error) => {
                let _ = client.lease_revoke(lease).await;
                Err(unavailable("renewing the maintainer's lease", error))
            }
        }
    }

    /// Renews the lease; `false` when it has expired (another replica may
    /// lead now) or etcd did not answer within `wait` (a member that went
    /// silent must not keep this replica believing it leads).
    pub async fn renew(&self, leadership: &mut Leadership, wait: Duration) -> bool {
        if leadership.keeper.keep_alive().await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(wait, leadership.answers.message()).await,
            Ok(Ok(Some(answer))) if answer.ttl() > 0
        )
    }

    /// The revision of the oldest event etcd holds (`None`: none).
    pub async fn first_event(&self) -> Result<Option<u64>, StoreError> {
        let mut client = self.client.clone();
        let mut answer = client
            .get(
                format!("{}events/", self.prefix),
                Some(
                    GetOptions::new()
                        .with_range(self.table_end("events"))
                        .with_limit(1)
                        .with_keys_only(),
                ),
            )
            .await
            .map_err(|e| unavailable("reading the history", e))?;
        let strip = format!("{}events/", self.prefix).len();
        Ok(answer
            .take_kvs()
            .into_iter()
            .next()
            .and_then(|kv| kv.key().get(strip..).and_then(super::unhex))
            .and_then(|key| <[u8; 8]>::try_from(key).ok())
            .map(u64::from_be_bytes))
    }

    /// Deletes the events `from..=through` in one transaction, if
    /// `leadership` still holds the maintainer's key; `false` when it does
    /// not (nothing deleted).
    pub async fn delete_events(
        &self,
        leadership: &Leadership,
        from: u64,
        through: u64,
    ) -> Result<bool, StoreError> {
        let mut client = self.client.clone();
        let start = self.key("events", &from.to_be_bytes());
        let end = self.key("events", &(through + 1).to_be_bytes());
        let answer = client
            .txn(
                Txn::new()
                    .when([Compare::create_revision(
                        self.maintainer_key(),
                        CompareOp::Equal,
                        leadership.created,
                    )])
                    .and_then([TxnOp::delete(
                        start,
                        Some(DeleteOptions::new().with_range(end)),
                    )]),
            )
            .await
            .map_err(|e| unavailable("trimming the history", e))?;
        Ok(answer.succeeded())
    }

    /// etcd's revision now.
    pub async fn etcd_revision(&self) -> Result<i64, StoreError> {
        let mut client = self.client.clone();
        Ok(client
            .get(
                self.maintainer_key(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| unavailable("reading", e))?
            .header()
            .map_or(0, |h| h.revision()))
    }

    /// Drops etcd's key history before `etcd_revision` (etcd keeps every
    /// old value until compacted, and refuses writes once its quota is
    /// full). Compacted already that far (by an earlier maintainer): done.
    pub async fn compact(&self, etcd_revision: i64) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        match client.compact(etcd_revision, None).await {
            Ok(_) => Ok(()),
            Err(error) if error.to_string().contains("compacted") => Ok(()),
            Err(error) => Err(unavailable("compacting", error)),
        }
    }
}
