//! Credentials per role and identity (issue 32): an operator's (every
//! call), a home agent's (it watches its own authorizations and reports
//! its own bindings), a hypervisor's (it registers itself and watches its
//! own placements). The token is shown once, when issued; the store keeps
//! its SHA-256 only (a token is 32 random octets, so a hash cannot be
//! guessed back), and the history records who was given a credential, not
//! the hash.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::OrNotFound;
use super::{check_name, encode, Store, StoreChange, StoreError};

/// Who a credential speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "role", content = "name", rename_all = "snake_case")]
pub enum Principal {
    /// An operator or an orchestrator: every call.
    Operator,
    /// The home agent of this name.
    HomeAgent(String),
    /// The hypervisor of this name.
    Hypervisor(String),
}

impl Principal {
    /// From the API's role and name (`operator`, `home_agent`,
    /// `hypervisor`).
    pub fn from_role(role: &str, name: &str) -> Result<Principal, StoreError> {
        let principal = match role {
            "operator" => Principal::Operator,
            "home_agent" => Principal::HomeAgent(name.to_owned()),
            "hypervisor" => Principal::Hypervisor(name.to_owned()),
            other => {
                return Err(StoreError::Invalid {
                    field: "role",
                    reason: format!("{other:?} is not operator, home_agent or hypervisor"),
                })
            }
        };
        match &principal {
            Principal::Operator if !name.is_empty() => Err(StoreError::Invalid {
                field: "name",
                reason: "an operator's credential names no home agent or hypervisor".into(),
            }),
            Principal::Operator => Ok(principal),
            Principal::HomeAgent(name) | Principal::Hypervisor(name) => {
                check_name("name", name)?;
                Ok(principal)
            }
        }
    }

    /// The role's name.
    pub fn role(&self) -> &'static str {
        match self {
            Principal::Operator => "operator",
            Principal::HomeAgent(_) => "home_agent",
            Principal::Hypervisor(_) => "hypervisor",
        }
    }

    /// The home agent's or hypervisor's name; empty for an operator.
    pub fn name(&self) -> &str {
        match self {
            Principal::Operator => "",
            Principal::HomeAgent(name) | Principal::Hypervisor(name) => name,
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Operator => f.write_str("operator"),
            Principal::HomeAgent(name) => write!(f, "home agent {name:?}"),
            Principal::Hypervisor(name) => write!(f, "hypervisor {name:?}"),
        }
    }
}

/// A credential as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Its id (`cred-` and 16 hex digits): what revokes it.
    pub id: String,
    /// Whom it speaks for.
    pub principal: Principal,
    /// When it was issued, ms since the Unix epoch.
    pub issued_unix_ms: i64,
    /// SHA-256 of the token, hex; empty in the history's copy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_sha256: String,
}

impl Credential {
    /// The credential without its hash, as the history records it.
    fn redacted(&self) -> Credential {
        Credential {
            token_sha256: String::new(),
            ..self.clone()
        }
    }
}

/// SHA-256 of a token, hex.
pub fn token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Most credentials a store holds (a few per home agent and hypervisor).
pub const MAX_CREDENTIALS: usize = 65_536;

/// The credentials held, by id and by their token's hash: a call's token is
/// found in one lookup, not by comparing it with every credential under the
/// store's lock (65,536 of them took milliseconds a call). Looking up by
/// the SHA-256 of the token leaks nothing a guess could use: matching a
/// hash's first octets is a preimage search.
#[derive(Debug, Default)]
pub struct CredentialTable {
    by_id: BTreeMap<String, Credential>,
    by_hash: HashMap<String, String>,
}

impl CredentialTable {
    /// Adds (or replaces) a credential.
    pub fn insert(&mut self, credential: Credential) {
        if let Some(earlier) = self.by_id.remove(&credential.id) {
            self.by_hash.remove(&earlier.token_sha256);
        }
        self.by_hash
            .insert(credential.token_sha256.clone(), credential.id.clone());
        self.by_id.insert(credential.id.clone(), credential);
    }

    /// Removes a credential by id.
    pub fn remove(&mut self, id: &str) -> Option<Credential> {
        let removed = self.by_id.remove(id)?;
        self.by_hash.remove(&removed.token_sha256);
        Some(removed)
    }

    /// A credential by id.
    pub fn get(&self, id: &str) -> Option<&Credential> {
        self.by_id.get(id)
    }

    /// The credential whose token hashes to `hash`.
    pub fn by_token_hash(&self, hash: &str) -> Option<&Credential> {
        self.by_hash.get(hash).and_then(|id| self.by_id.get(id))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every credential, by id.
    pub fn values(&self) -> impl Iterator<Item = &Credential> {
        self.by_id.values()
    }
}

impl Store {
    /// Issues a credential for `principal`; returns it and its token (the
    /// only time the token is seen).
    pub async fn issue_credential(
        &self,
        principal: Principal,
    ) -> Result<(Credential, String), StoreError> {
        let id_octets = nemo_daemon::secret::random_octets::<8>()
            .map_err(|e| StoreError::Storage(format!("random id: {e}")))?;
        let id = format!(
            "cred-{}",
            id_octets
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let token = super::identities::fresh_key()?;
        let credential = Credential {
            id,
            principal,
            issued_unix_ms: nemo_daemon::clock::unix_ms(std::time::SystemTime::now()),
            token_sha256: token_sha256(&token),
        };
        self.retrying(|| self.issue_credential_once(credential.clone()))
            .await?;
        Ok((credential, token))
    }

    async fn issue_credential_once(&self, credential: Credential) -> Result<(), StoreError> {
        let state = self.state.lock().await;
        if state.credentials.len() >= MAX_CREDENTIALS {
            return Err(StoreError::Precondition(format!(
                "role: this store holds {MAX_CREDENTIALS} credentials already; revoke some"
            )));
        }
        let record = encode(&credential)?;
        self.change(
            state,
            StoreChange::CredentialIssued(credential.redacted()),
            |t| {
                t.credentials
                    .insert(credential.id.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state.credentials.insert(credential.clone());
            },
        )
        .await?;
        Ok(())
    }

    /// Revokes a credential: its token is refused from the next call on
    /// (the API ends the daemons' watches it opened: `api::callers`).
    pub async fn revoke_credential(&self, id: &str) -> Result<Credential, StoreError> {
        self.retrying(|| self.revoke_credential_once(id)).await
    }

    async fn revoke_credential_once(&self, id: &str) -> Result<Credential, StoreError> {
        let state = self.state.lock().await;
        let credential = state
            .credentials
            .get(id)
            .cloned()
            .or_not_found("credential", id)?;
        self.change(
            state,
            StoreChange::CredentialRevoked(credential.redacted()),
            |t| {
                t.credentials.remove(id.as_bytes());
                Ok(())
            },
            |state| {
                state.credentials.remove(id);
            },
        )
        .await?;
        Ok(credential.redacted())
    }

    /// Every credential, without hashes.
    pub async fn credentials(&self) -> Vec<Credential> {
        self.state
            .lock()
            .await
            .credentials
            .values()
            .map(Credential::redacted)
            .collect()
    }

    /// Whether the credential `id` exists (is not revoked).
    pub async fn credential_exists(&self, id: &str) -> bool {
        self.state.lock().await.credentials.get(id).is_some()
    }

    /// Whom `token` speaks for, if it is a credential's.
    pub async fn principal_of(&self, token: &str) -> Option<(String, Principal)> {
        let hash = token_sha256(token);
        self.state
            .lock()
            .await
            .credentials
            .by_token_hash(&hash)
            .map(|c| (c.id.clone(), c.principal.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_table_finds_a_token_by_its_hash_and_forgets_it_with_its_credential() {
        let credential = |id: &str, token: &str| Credential {
            id: id.into(),
            principal: Principal::Operator,
            issued_unix_ms: 0,
            token_sha256: token_sha256(token),
        };
        let mut table = CredentialTable::default();
        table.insert(credential("cred-a", "token-a"));
        table.insert(credential("cred-b", "token-b"));
        let found = |table: &CredentialTable, token: &str| {
            table
                .by_token_hash(&token_sha256(token))
                .map(|c| c.id.clone())
        };
        assert_eq!(found(&table, "token-a").as_deref(), Some("cred-a"));
        assert_eq!(found(&table, "token-c"), None);
        // Re-stored with another hash (a record read again): the old one goes.
        table.insert(credential("cred-a", "token-a2"));
        assert_eq!(found(&table, "token-a"), None);
        assert_eq!(found(&table, "token-a2").as_deref(), Some("cred-a"));
        assert!(table.remove("cred-a").is_some());
        assert_eq!(found(&table, "token-a2"), None);
        assert_eq!(table.len(), 1);
    }

    #[tokio::test]
    async fn a_credential_is_known_by_its_token_until_revoked_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(60))
            .await
            .unwrap();
        let hv = Principal::from_role("hypervisor", "hv-a").unwrap();
        let (credential, token) = store.issue_credential(hv.clone()).await.unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(
            store.principal_of(&token).await,
            Some((credential.id.clone(), hv.clone()))
        );
        assert_eq!(store.principal_of("a-guess").await, None);
        // Neither the token nor its hash is listed or in the history.
        let listed = store.credentials().await;
        assert!(listed.iter().all(|c| c.token_sha256.is_empty()));
        let history = serde_json::to_string(&store.events_after(0).await.unwrap().0).unwrap();
        assert!(!history.contains(&token) && !history.contains(&token_sha256(&token)));
        drop(store);
        let store = Store::open(dir.path(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.principal_of(&token).await.map(|(_, p)| p), Some(hv));
        store.revoke_credential(&credential.id).await.unwrap();
        assert_eq!(store.principal_of(&token).await, None);
        assert!(matches!(
            store.revoke_credential(&credential.id).await,
            Err(StoreError::NotFound { .. })
        ));
        // Roles and names are checked.
        assert!(Principal::from_role("root", "").is_err());
        assert!(Principal::from_role("operator", "hv-a").is_err());
        assert!(Principal::from_role("hypervisor", "").is_err());
    }
}
