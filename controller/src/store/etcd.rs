//! The store's tables in etcd (the v3 API): for a controller whose state
//! must outlive its machine. Each table is a key range under the
//! configured prefix, `<prefix><table>/<key in hex>` (hex keeps the order
//! of the binary keys, so the event history reads back in revision order).
//!
//! A batch is written as etcd transactions, each holding whole changes and
//! guarded by compare-and-swap on the stored revision: the transaction
//! applies only if the revision in etcd is the one this controller last
//! wrote. Another controller writing under the same prefix therefore makes
//! this one's next write fail instead of interleaving with it, and this
//! one then stops acknowledging (`log`), as after any failed commit;
//! restarted, it loads the current state. One writer per prefix at a time:
//! several replicas serving at once (each following the others through a
//! watch) are not built yet.
//!
//! etcd refuses a transaction of more than `--max-txn-ops` operations (128
//! by default): a batch is cut between changes to stay under
//! [`MAX_TXN_OPS`]; a single change larger than that (deleting a tenant
//! with very many prefixes) needs an etcd started with a larger limit.

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};

use super::{decode, StoreError, Write, REVISION_KEY};

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
            .with_keep_alive(std::time::Duration::from_secs(10), timeout);
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
    /// transactions guarded by the stored revision. Within a transaction
    /// a key is written once (etcd refuses a key twice), with its last
    /// value in the batch.
    pub async fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        let revision_key = self.key("meta", REVISION_KEY);
        // The batch as whole changes: each one's writes and the revision it
        // ends at.
        let mut changes: Vec<(Vec<Write>, u64)> = Vec::new();
        let mut current = Vec::new();
        for write in batch {
            let ends_at = match &write {
                Write::Put { table, key, value } if *table == "meta" && key == REVISION_KEY => {
                    Some(decode::<u64>(value)?)
                }
                _ => None,
            };
            current.push(write);
            if let Some(revision) = ends_at {
                changes.push((std::mem::take(&mut current), revision));
            }
        }
        if !current.is_empty() {
            return Err(StoreError::Storage(
                "a change without a revision: nothing would guard it".into(),
            ));
        }
        // Whole changes packed into transactions of at most MAX_TXN_OPS
        // keys (one change larger than that goes alone).
        let Some(first) = changes.first() else {
            return Ok(());
        };
        let mut before = first.1.saturating_sub(1);
        let mut keys: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
        let mut through = before;
        for (writes, revision) in changes {
            let mut own: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
            for write in writes {
                match write {
                    Write::Put { table, key, value } => {
                        own.insert(self.key(table, &key), Some(value))
                    }
                    Write::Delete { table, key } => own.insert(self.key(table, &key), None),
                };
            }
            let added = own.keys().filter(|key| !keys.contains_key(*key)).count();
            if keys.len() + added > MAX_TXN_OPS && !keys.is_empty() {
                // This change does not fit beside the ones before it: they
                // go first, on their own.
                self.transact(
                    &mut client,
                    &revision_key,
                    before,
                    through,
                    std::mem::take(&mut keys),
                )
                .await?;
                before = through;
            }
            keys.extend(own);
            through = revision;
        }
        self.transact(&mut client, &revision_key, before, through, keys)
            .await
    }

    /// One transaction: these keys written, if etcd still holds revision
    /// `expected`; it brings etcd to `through`. Sent again when etcd did
    /// not answer (its member died, a leader changed): the guard makes
    /// that safe, and a transaction that did apply before its answer was
    /// lost is recognised by its own event at `through`.
    async fn transact(
        &self,
        client: &mut Client,
        revision_key: &str,
        expected: u64,
        through: u64,
        keys: std::collections::BTreeMap<String, Option<Vec<u8>>>,
    ) -> Result<(), StoreError> {
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
        let txn = Txn::new().when([guard]).and_then(ops);
        let mut attempt = 0u32;
        loop {
            match client.txn(txn.clone()).await {
                Ok(response) if response.succeeded() => return Ok(()),
                Ok(_) => {
                    let held = client
                        .get(event_key.clone(), None)
                        .await
                        .map_err(|e| unavailable("reading back", e))?
                        .take_kvs()
                        .into_iter()
                        .next()
                        .map(|kv| kv.into_key_value().1);
                    if attempt > 0 && held.is_some() && held == our_event {
                        // An earlier attempt applied; its answer was lost.
                        return Ok(());
                    }
                    return Err(StoreError::Storage(format!(
                        "etcd: the store under {:?} is no longer at revision {expected} (another controller wrote to it); writing through {through} refused",
                        self.prefix
                    )));
                }
                Err(error) if attempt < TXN_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "etcd: a write went unanswered; sending it again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                        .await;
                }
                Err(error) => return Err(unavailable("writing", error)),
            }
        }
    }

    /// The records of `table` with keys in `from..=through` (all when both
    /// are `None`), in key order.
    pub async fn scan(
        &self,
        table: &str,
        from: Option<&[u8]>,
        through: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut client = self.client.clone();
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
            let mut page = client
                .get(
                    start.clone(),
                    Some(GetOptions::new().with_range(end.clone()).with_limit(PAGE)),
                )
                .await
                .map_err(|e| unavailable("reading", e))?;
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

    /// The value of `key` in `table`.
    pub async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut client = self.client.clone();
        let mut answer = client
            .get(self.key(table, key), None)
            .await
            .map_err(|e| unavailable("reading", e))?;
        Ok(answer
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| kv.into_key_value().1))
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
}
