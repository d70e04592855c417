//! The store's tables in etcd (the v3 API): for a controller whose state
//! must outlive its machine. Each table is a key range under the
//! configured prefix, `<prefix><table>/<key in hex>` (hex keeps the order
//! of the binary keys, so the event history reads back in revision order).
//!
//! A batch is written as etcd transactions, each holding whole changes and
//! guarded by compare-and-swap on the stored revision: the transaction
//! applies only if the revision in etcd is the one this controller last
//! knew of. Several replicas write under one prefix at once: each follows
//! the others through a watch (`follow`), and a write based on a state
//! another replica changed meanwhile is refused as a conflict, put back in
//! memory and done again on the newer state (`log`).
//!
//! etcd refuses a transaction of more than `--max-txn-ops` operations (128
//! by default): a batch is cut between changes to stay under
//! [`MAX_TXN_OPS`]; a single change larger than that (deleting a tenant
//! with very many prefixes) needs an etcd started with a larger limit.

use std::collections::BTreeMap;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};

use super::{decode, StoreError, Write, REVISION_KEY};

mod fence;
mod upkeep;
pub use upkeep::{Candidacy, Leadership};

/// A record as read or followed: table, key, value (`None`: absent).
pub type Record = (&'static str, Vec<u8>, Option<Vec<u8>>);
/// A record's place: table and key.
pub type RecordKey = (&'static str, Vec<u8>);
/// Why writes were refused, and the records they would have touched.
pub type Refusal = (StoreError, Vec<RecordKey>);

/// What writing a batch did.
#[derive(Debug)]
pub struct Written {
    /// The newest of our revisions now in etcd (the one before the batch
    /// when none of it applied).
    pub through: u64,
    /// etcd's revision of each transaction that applied, in order.
    pub etcd_revisions: Vec<i64>,
    /// Why the rest was not written, and the records it would have
    /// touched (their memory must be put back).
    pub refused: Option<Refusal>,
}

/// A batch as whole changes: each one's writes and the revision it ends
/// at (its write of the revision key closes it).
fn split_changes(batch: Vec<Write>) -> Result<Vec<(Vec<Write>, u64)>, Refusal> {
    let mut changes = Vec::new();
    let mut current = Vec::new();
    let keys = |batch: &[Write]| batch.iter().map(Write::record).collect::<Vec<_>>();
    for write in &batch {
        let ends_at = match write {
            Write::Put { table, key, value } if *table == "meta" && key == REVISION_KEY => {
                Some(decode::<u64>(value).map_err(|e| (e, keys(&batch)))?)
            }
            _ => None,
        };
        current.push(write.clone());
        if let Some(revision) = ends_at {
            changes.push((std::mem::take(&mut current), revision));
        }
    }
    if !current.is_empty() {
        return Err((
            StoreError::Storage("a change without a revision: nothing would guard it".into()),
            keys(&batch),
        ));
    }
    Ok(changes)
}

/// Operations per transaction, under etcd's default `--max-txn-ops` (128).
pub const MAX_TXN_OPS: usize = 120;
/// Times a write etcd did not answer is sent again (each after a longer
/// pause: 0.1 s, 0.2 s, ...).
const TXN_ATTEMPTS: u32 = 5;
/// Records per read (etcd answers a range in pages).
const PAGE: i64 = 1000;

/// How to reach etcd: `[etcd]` in `controller.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// Client URLs of the cluster's members, e.g. `http://[2001:db8::1]:2379`.
    pub endpoints: Vec<String>,
    /// Where nemo's keys live; ends with `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long one request may take before the store counts etcd as
    /// unavailable, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// TLS (https:// endpoints): the CA certificate (PEM) that signed the
    /// members' certificates.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// TLS client authentication (etcd's --client-cert-auth): this
    /// controller's certificate (PEM), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    /// The key of `cert_file` (PEM).
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

fn default_prefix() -> String {
    "/nemo/".to_owned()
}

fn default_timeout_ms() -> u64 {
    5000
}

impl EtcdSettings {
    /// The endpoints reached in clear beyond this host: etcd holds every
    /// mobile router's key, so its members should require TLS client
    /// certificates (OPERATIONS: "The controller's state in etcd").
    pub fn plain_remote_endpoints(&self) -> Vec<&str> {
        self.endpoints
            .iter()
            .filter_map(|e| e.strip_prefix("http://").map(|rest| (e, rest)))
            .filter(|(_, rest)| {
                let host = rest.split('/').next().unwrap_or_default();
                let host = match host.rsplit_once(':') {
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                    _ => host,
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                !(host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback()))
            })
            .map(|(e, _)| e.as_str())
            .collect()
    }

    /// What is wrong with these settings, if anything (the field and why).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.endpoints.is_empty() {
            return Some(("endpoints", "at least one etcd client URL".into()));
        }
        if let Some(bad) = self
            .endpoints
            .iter()
            .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return Some((
                "endpoints",
                format!("{bad:?} is not an http:// or https:// URL"),
            ));
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') || self.prefix.len() > 256 {
            return Some((
                "prefix",
                format!(
                    "{:?} must start and end with '/' (at most 256 octets)",
                    self.prefix
                ),
            ));
        }
        if self.timeout_ms == 0 {
            return Some(("timeout_ms", "must be more than 0".into()));
        }
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != self.endpoints.len() {
            return Some(("endpoints", "all http:// or all https://, not both".into()));
        }
        if https != 0 && self.ca_file.is_none() {
            return Some((
                "ca_file",
                "https:// endpoints need the CA that signed the members' certificates".into(),
            ));
        }
        if https == 0 && (self.ca_file.is_some() || self.cert_file.is_some()) {
            return Some((
                "endpoints",
                "TLS files are set: the endpoints must be https://".into(),
            ));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return Some(("cert_file", "needs key_file".into())),
            (None, Some(_)) => return Some(("key_file", "needs cert_file".into())),
            _ => {}
        }
        None
    }
}

/// The tables, in one etcd cluster, under one prefix.
#[derive(Clone)]
pub struct EtcdTables {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTables")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, error: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(format!("etcd: {what}: {error}"))
}

/// Times a read that never reached a member (the connection to it was
/// down: a balanced channel hands its first request after a member came
/// back the old connect error) is sent again, 50 ms apart.
const READ_ATTEMPTS: u32 = 3;

/// Runs the read `attempt` (idempotent) on a clone of `client`, again when
/// it never reached etcd.
async fn read<T, F>(
    what: &str,
    client: &Client,
    mut attempt: impl FnMut(Client) -> F,
) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 1;
    loop {
        match attempt(client.clone()).await {
            Ok(answer) => return Ok(answer),
            Err(error) if tries < READ_ATTEMPTS && fence::never_made(&error) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => return Err(unavailable(what, error)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

impl EtcdTables {
    /// Connects to the cluster (any member that answers).
    pub async fn connect(settings: &EtcdSettings) -> Result<EtcdTables, StoreError> {
        let timeout = std::time::Duration::from_millis(settings.timeout_ms);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(std::time::Duration::from_secs(10), timeout)
            // A member that lost its leader fails requests and ends watches
            // at once instead of holding them: the follower then knows it
            // may be stale, and a change is refused without waiting.
            .with_require_leader(true);
        if let Some(ca_file) = &settings.ca_file {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    StoreError::Unavailable(format!("etcd: reading {}: {e}", path.display()))
                })
            };
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(ca_file)?));
            if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&settings.endpoints, Some(options))
            .await
            .map_err(|e| unavailable("connecting", e))?;
        Ok(EtcdTables {
            client,
            prefix: settings.prefix.clone(),
        })
    }

    /// Where its keys live.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, table: &str, key: &[u8]) -> String {
        format!("{}{table}/{}", self.prefix, hex(key))
    }

    /// The first key after every key of `table`.
    fn table_end(&self, table: &str) -> String {
        // '0' follows '/'.
        format!("{}{table}0", self.prefix)
    }

    /// Writes `batch` (whole changes, each ending with its revision) as
    /// transactions guarded by the stored revision: the first must find
    /// `before` there. Within a transaction a key is written once (etcd
    /// refuses a key twice), with its last value in the batch. Says how far
    /// it got: a batch cut into several transactions may stop part way.
    pub async fn write(&self, batch: Vec<Write>, before: u64) -> Written {
        let mut written = Written {
            through: before,
            etcd_revisions: Vec::new(),
            refused: None,
        };
        let changes = match split_changes(batch) {
            Ok(changes) => changes,
            Err((error, keys)) => {
                written.refused = Some((error, keys));
                return written;
            }
        };
        let mut client = self.client.clone();
        let revision_key = self.key("meta", REVISION_KEY);
        // Whole changes packed into transactions of at most MAX_TXN_OPS
        // keys (one change larger than that goes alone): `first..next` are
        // the changes of the transaction being filled.
        let mut first = 0;
        let mut keys: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for next in 0..=changes.len() {
            let own: BTreeMap<String, Option<Vec<u8>>> = match changes.get(next) {
                Some((writes, _)) => writes
                    .iter()
                    .map(|write| match write {
                        Write::Put { table, key, value } => {
                            (self.key(table, key), Some(value.clone()))
                        }
                        Write::Delete { table, key } => (self.key(table, key), None),
                    })
                    .collect(),
                None => BTreeMap::new(),
            };
            let added = own.keys().filter(|key| !keys.contains_key(*key)).count();
            let last = next == changes.len();
            if (last || keys.len() + added > MAX_TXN_OPS) && !keys.is_empty() {
                // The changes before this one go first, on their own.
                let through = changes[next - 1].1;
                match self
                    .transact(
                        &mut client,
                        &revision_key,
                        written.through,
                        through,
                        std::mem::take(&mut keys),
                    )
                    .await
                {
                    Ok(etcd_revision) => {
                        written.through = through;
                        written.etcd_revisions.push(etcd_revision);
                        first = next;
                    }
                    Err(error) => {
                        let unapplied = changes[first..]
                            .iter()
                            .flat_map(|(writes, _)| writes.iter().map(Write::record))
                            .collect();
                        written.refused = Some((error, unapplied));
                        return written;
                    }
                }
            }
            keys.extend(own);
        }
        written
    }

    /// One transaction: these keys written, if etcd still holds revision
    /// `expected`; it brings etcd to `through`. Returns etcd's revision of
    /// it. Sent again when etcd did not answer (its member died, a leader
    /// changed): the guard makes that safe, and a transaction that did
    /// apply before its answer was lost is recognised by its own event at
    /// `through`. Refused with [`StoreError::Conflict`] when another
    /// replica wrote first. When every attempt went unanswered its fate is
    /// settled (fence.rs): made, not made and fenced for good
    /// ([`StoreError::Unavailable`]), or, when etcd answers nothing,
    /// [`StoreError::OutcomeUnknown`].
    async fn transact(
        &self,
        client: &mut Client,
        revision_key: &str,
        expected: u64,
        through: u64,
        keys: BTreeMap<String, Option<Vec<u8>>>,
    ) -> Result<i64, StoreError> {
        let event_key = self.key("events", &through.to_be_bytes());
        let our_event = keys.get(&event_key).cloned().flatten();
        let ops: Vec<TxnOp> = keys
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => TxnOp::put(key, value, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        let guard = if expected == 0 {
            Compare::version(revision_key, CompareOp::Equal, 0)
        } else {
            Compare::value(
                revision_key,
                CompareOp::Equal,
                serde_json::to_vec(&expected).map_err(|e| StoreError::Storage(e.to_string()))?,
            )
        };
        let fence = fence::Fence::new(&self.prefix)?;
        let txn = Txn::new()
            .when([guard, fence.guard()])
            .and_then(ops)
            .or_else([
                TxnOp::get(revision_key, None),
                TxnOp::get(&*event_key, None),
            ]);
        let mut attempt = 0u32;
        // Whether an attempt may have reached etcd's log (its fate is
        // then unknown until settled).
        let mut maybe_made = false;
        loop {
            match client.txn(txn.clone()).await {
                Ok(response) if response.succeeded() => {
                    return Ok(response.header().map_or(0, |h| h.revision()))
                }
                Ok(response) => {
                    let mut found = response.op_responses().into_iter().map(|op| match op {
                        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                        _ => None,
                    });
                    let (held_revision, held_event) =
                        (found.next().flatten(), found.next().flatten());
                    if let Some(event) = held_event {
                        if attempt > 0 && Some(event.value()) == our_event.as_deref() {
                            // An earlier attempt applied; its answer was lost.
                            return Ok(event.mod_revision());
                        }
                    }
                    let at = match held_revision {
                        Some(kv) => decode::<u64>(kv.value())?,
                        None => 0,
                    };
                    return Err(StoreError::Conflict { at });
                }
                Err(error) if attempt < TXN_ATTEMPTS => {
                    maybe_made |= !fence::never_made(&error);
                    attempt += 1;
                    tracing::warn!(%error, attempt, "etcd: a write went unanswered; sending it again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                        .await;
                }
                Err(error) if !maybe_made && fence::never_made(&error) => {
                    return Err(unavailable("writing", error))
                }
                // Sent, unanswered: made or not is decided now, for good
                // (fence.rs), before the caller is told either.
                Err(error) => {
                    let ours = our_event.as_deref().unwrap_or_default();
                    return fence.settle(client, &event_key, ours, &error).await;
                }
            }
        }
    }

    /// The values these records had at etcd revision `revision` (`None`:
    /// absent then): what a replica puts back when changes it applied in
    /// memory were refused.
    pub async fn read_at(
        &self,
        records: &[RecordKey],
        revision: i64,
    ) -> Result<Vec<Record>, StoreError> {
        let mut values = Vec::with_capacity(records.len());
        for chunk in records.chunks(MAX_TXN_OPS) {
            let gets: Vec<TxnOp> = chunk
                .iter()
                .map(|(table, key)| {
                    TxnOp::get(
                        self.key(table, key),
                        Some(GetOptions::new().with_revision(revision)),
                    )
                })
                .collect();
            let txn = Txn::new().and_then(gets);
            let response = read("reading back", &self.client, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
            for ((table, key), op) in chunk.iter().zip(response.op_responses()) {
                let value = match op {
                    TxnOpResponse::Get(mut get) => get
                        .take_kvs()
                        .into_iter()
                        .next()
                        .map(|kv| kv.into_key_value().1),
                    _ => None,
                };
                values.push((*table, key.clone(), value));
            }
        }
        Ok(values)
    }

    /// The revision of our history etcd holds now (0: none yet).
    pub async fn current_revision(&self) -> Result<u64, StoreError> {
        let key = self.key("meta", REVISION_KEY);
        let mut answer = read("reading", &self.client, |mut client| {
            let key = key.clone();
            async move { client.get(key, None).await }
        })
        .await?;
        match answer.take_kvs().into_iter().next() {
            Some(kv) => decode(kv.value()),
            None => Ok(0),
        }
    }

    /// Every record of `tables` as etcd held them at one revision, and
    /// that revision: a consistent state to load while other replicas
    /// write.
    pub async fn snapshot(
        &self,
        tables: &[&'static str],
    ) -> Result<(Vec<(&'static str, Vec<u8>, Vec<u8>)>, i64), StoreError> {
        let key = self.key("meta", REVISION_KEY);
        let revision = read("reading", &self.client, |mut client| {
            let key = key.clone();
            async move { client.get(key, None).await }
        })
        .await?
        .header()
        .map_or(0, |h| h.revision());
        let mut records = Vec::new();
        for table in tables {
            for (key, value) in self.scan_at(table, None, None, revision).await? {
                records.push((*table, key, value));
            }
        }
        Ok((records, revision))
    }

    /// Follows every change under the prefix after etcd revision `after`.
    pub async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
        let mut client = self.client.clone();
        client
            .watch(
                self.prefix.clone(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(after + 1),
                ),
            )
            .await
            .map_err(|e| unavailable("watching", e))
    }

    /// The next transactions another writer made, each as its etcd
    /// revision and records (`None`: deleted), in order. `Ok(None)` when
    /// the stream ended; `Storage` when etcd compacted what it would have
    /// sent (the follower then loads anew), `Unavailable` when it failed.
    pub async fn next_transactions(
        &self,
        stream: &mut WatchStream,
    ) -> Result<Option<Vec<(i64, Vec<Record>)>>, StoreError> {
        let Some(response) = stream
            .message()
            .await
            .map_err(|e| unavailable("watching", e))?
        else {
            return Ok(None);
        };
        if response.canceled() || response.compact_revision() > 0 {
            // Storage, not Unavailable: watching again from there cannot
            // work, the follower loads anew.
            return Err(StoreError::Storage(format!(
                "etcd: the watch was cancelled (compacted through {}): {}",
                response.compact_revision(),
                response.cancel_reason()
            )));
        }
        let mut transactions: Vec<(i64, Vec<Record>)> = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some((table, key)) = self.record_of(kv.key()) else {
                continue;
            };
            let value = match event.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            let revision = kv.mod_revision();
            match transactions.last_mut() {
                Some((at, records)) if *at == revision => records.push((table, key, value)),
                _ => transactions.push((revision, vec![(table, key, value)])),
            }
        }
        Ok(Some(transactions))
    }

    /// The table and key an etcd key under the prefix names.
    fn record_of(&self, etcd_key: &[u8]) -> Option<(&'static str, Vec<u8>)> {
        let rest = etcd_key.strip_prefix(self.prefix.as_bytes())?;
        let slash = rest.iter().position(|b| *b == b'/')?;
        let table = super::records::table_named(std::str::from_utf8(&rest[..slash]).ok()?)?;
        Some((table, unhex(&rest[slash + 1..])?))
    }

    /// The records of `table` with keys in `from..=through` (all when both
    /// are `None`), in key order.
    pub async fn scan(
        &self,
        table: &str,
        from: Option<&[u8]>,
        through: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.scan_at(table, from, through, 0).await
    }

    /// As [`EtcdTables::scan`], at etcd revision `revision` (0: the newest).
    async fn scan_at(
        &self,
        table: &str,
        from: Option<&[u8]>,
        through: Option<&[u8]>,
        revision: i64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut start = match from {
            Some(from) => self.key(table, from),
            None => format!("{}{table}/", self.prefix),
        }
        .into_bytes();
        let end = match through {
            // Just after the last key wanted.
            Some(through) => {
                let mut end = self.key(table, through).into_bytes();
                end.push(0);
                end
            }
            None => self.table_end(table).into_bytes(),
        };
        let strip = format!("{}{table}/", self.prefix).len();
        let mut records = Vec::new();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let mut page = read("reading", &self.client, |mut client| {
                let (start, options) = (start.clone(), options.clone());
                async move { client.get(start, Some(options)).await }
            })
            .await?;
            let more = page.more();
            let kvs = page.take_kvs();
            let last = kvs.last().map(|kv| kv.key().to_vec());
            for kv in kvs {
                let (key, value) = kv.into_key_value();
                let key = key.get(strip..).and_then(unhex).ok_or_else(|| {
                    StoreError::Storage(format!("etcd: a foreign key in table {table}"))
                })?;
                records.push((key, value));
            }
            match (more, last) {
                (true, Some(mut last)) => {
                    last.push(0);
                    start = last;
                }
                _ => return Ok(records),
            }
        }
    }

    /// Puts records as they are, in transactions of at most
    /// [`MAX_TXN_OPS`] keys, without the revision guard (a copy into an
    /// empty prefix; the caller writes the revision last).
    pub async fn put_records(
        &self,
        records: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        let mut ops = Vec::with_capacity(MAX_TXN_OPS);
        let mut records = records.into_iter().peekable();
        while let Some((table, key, value)) = records.next() {
            ops.push(TxnOp::put(self.key(table, &key), value, None));
            if ops.len() == MAX_TXN_OPS || records.peek().is_none() {
                client
                    .txn(Txn::new().and_then(std::mem::take(&mut ops)))
                    .await
                    .map_err(|e| unavailable("copying", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_in_hex() {
        let mut keys: Vec<Vec<u8>> = vec![
            5u64.to_be_bytes().to_vec(),
            256u64.to_be_bytes().to_vec(),
            1u64.to_be_bytes().to_vec(),
        ];
        let mut encoded: Vec<String> = keys.iter().map(|k| hex(k)).collect();
        keys.sort();
        encoded.sort();
        let decoded: Vec<Vec<u8>> = encoded
            .iter()
            .map(|e| unhex(e.as_bytes()).unwrap())
            .collect();
        assert_eq!(decoded, keys);
        assert_eq!(unhex(b"0g"), None);
        assert_eq!(unhex(b"abc"), None);
    }

    /// Issue 32, item 10: plain http:// beyond this host is named (the
    /// controller warns at start); loopback and https:// are not.
    #[test]
    fn plain_endpoints_beyond_this_host_are_named() {
        let settings = |endpoints: &[&str]| EtcdSettings {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            prefix: default_prefix(),
            timeout_ms: default_timeout_ms(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        };
        let mixed = settings(&[
            "http://[::1]:2379",
            "http://127.0.0.1:2379",
            "http://localhost:2379",
            "http://[2001:db8::1]:2379",
            "http://192.0.2.1:2379",
        ]);
        assert_eq!(
            mixed.plain_remote_endpoints(),
            ["http://[2001:db8::1]:2379", "http://192.0.2.1:2379"]
        );
        assert!(settings(&["https://[2001:db8::1]:2379"])
            .plain_remote_endpoints()
            .is_empty());
    }
}
