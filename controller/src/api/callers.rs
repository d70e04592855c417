//! Who calls, and what they may call (issue 32). The configured token
//! (`token_file`) is an operator's; a credential issued through the API
//! speaks for an operator, a home agent or a hypervisor
//! (`store::credentials`). A home agent may watch its own authorizations
//! and report its own bindings; a hypervisor may register itself and watch
//! its own placements; everything else is an operator's. A daemon still
//! using the operator token is warned about once per name: one compromised
//! host with it holds every tenant.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tonic::{Request, Status};

use super::Service;
use crate::store::credentials::Principal;

/// What the interceptor found on a call.
#[derive(Debug, Clone)]
enum Caller {
    /// The configured operator token, or no token configured (lab use).
    Operator,
    /// Another bearer token: a credential's, or nobody's.
    Presented(String),
}

/// The interceptor every call passes: it refuses a call without a bearer
/// token (when a token is configured) and notes who presented what, for
/// [`Service::allow`].
#[derive(Debug, Clone)]
pub struct CallerCheck {
    operator: Option<Arc<String>>,
}

impl CallerCheck {
    /// Checks against the operator `token`, or none (every call passes as
    /// an operator's: lab use only).
    pub fn new(token: Option<String>) -> CallerCheck {
        CallerCheck {
            operator: token.map(Arc::new),
        }
    }
}

impl tonic::service::Interceptor for CallerCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match &self.operator {
            None => Caller::Operator,
            Some(operator) => match nemo_daemon::bearer::presented(request.metadata()) {
                Some(token)
                    if nemo_daemon::secret::same_secret(token.as_bytes(), operator.as_bytes()) =>
                {
                    Caller::Operator
                }
                Some(token) if token.len() <= 256 => Caller::Presented(token.to_owned()),
                Some(_) => return Err(Status::unauthenticated("authorization: wrong token")),
                None => {
                    return Err(Status::unauthenticated(
                        "authorization: missing \"Bearer <token>\" metadata",
                    ))
                }
            },
        };
        if matches!(caller, Caller::Operator) {
            nemo_daemon::incoming::authenticated(request.extensions());
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Access<'a> {
    /// An operator's credential.
    Operator,
    /// The credential of the home agent of this name (or an operator's).
    HomeAgent(&'a str),
    /// The credential of the hypervisor of this name (or an operator's).
    Hypervisor(&'a str),
}

/// Names of daemons warned about for using the operator token.
#[derive(Debug, Default)]
pub(super) struct Warned(Mutex<HashSet<String>>);

impl Service {
    /// Whether the call `method` in `request` may be made with what its
    /// caller presented: `UNAUTHENTICATED` for a token that is nobody's
    /// (or was revoked), `PERMISSION_DENIED` naming the credential for one
    /// outside its role. Allowed: the credential's id, `None` for the
    /// configured operator token.
    pub(super) async fn allow<T>(
        &self,
        request: &Request<T>,
        method: &str,
        access: Access<'_>,
    ) -> Result<Option<String>, Status> {
        let (id, principal) = match request.extensions().get::<Caller>() {
            // A call that did not pass the interceptor (tests of the
            // service alone) is an operator's, as with no token configured.
            None | Some(Caller::Operator) => {
                self.warn_operator_token(access);
                return Ok(None);
            }
            Some(Caller::Presented(token)) => {
                self.store.principal_of(token).await.ok_or_else(|| {
                    Status::unauthenticated(
                        "authorization: the token is no credential's (wrong, or revoked)",
                    )
                })?
            }
        };
        // The credential is someone's: the connection may stay
        // (`nemo_daemon::incoming`'s deadline), even if this call is
        // outside its role.
        nemo_daemon::incoming::authenticated(request.extensions());
        let allowed = match (&principal, access) {
            (Principal::Operator, _) => true,
            (Principal::HomeAgent(name), Access::HomeAgent(wanted)) => name == wanted,
            (Principal::Hypervisor(name), Access::Hypervisor(wanted)) => name == wanted,
            _ => false,
        };
        if allowed {
            return Ok(Some(id));
        }
        let asked = match access {
            Access::Operator => String::new(),
            Access::HomeAgent(name) => format!(" for home agent {name:?}"),
            Access::Hypervisor(name) => format!(" for hypervisor {name:?}"),
        };
        tracing::warn!(credential = %id, %principal, method, "a call outside its credential's role refused");
        Err(Status::permission_denied(format!(
            "credential {id} ({principal}) may not call {method}{asked}"
        )))
    }

    /// Warns, once per daemon, that a daemon's call came with the operator
    /// token.
    fn warn_operator_token(&self, access: Access<'_>) {
        let daemon = match access {
            Access::Operator => return,
            Access::HomeAgent(name) => format!("home agent {name:?}"),
            Access::Hypervisor(name) => format!("hypervisor {name:?}"),
        };
        let Ok(mut warned) = self.warned.0.lock() else {
            return;
        };
        if warned.len() < 4096 && warned.insert(daemon.clone()) {
            tracing::warn!(
                %daemon,
                "a daemon calls with the operator token: issue it a credential of its own \
                 (nemoctl credential issue) so that its host cannot act for every tenant"
            );
        }
    }
}

/// What a call made with credential `id` gets once it is revoked.
pub(super) fn revoked(id: &str) -> Status {
    Status::unauthenticated(format!("authorization: credential {id} was revoked"))
}

/// Whether `change` revokes `credential` (`None`: the configured operator
/// token, which only a restart with another file revokes).
pub(super) fn revokes(change: &crate::store::StoreChange, credential: Option<&str>) -> bool {
    matches!((change, credential), (crate::store::StoreChange::CredentialRevoked(c), Some(id)) if c.id == id)
}

/// Ends a watch opened with credential `id` when the credential is
/// revoked: its stream gets `UNAUTHENTICATED` and ends. `changes` is
/// subscribed before the credential is checked once more, so that a
/// revocation in between is not missed.
pub(super) async fn revoked_ends<U: Send + 'static>(
    store: &crate::store::Store,
    id: String,
    stream: tokio::sync::mpsc::Sender<Result<U, Status>>,
) -> Result<(), Status> {
    let mut changes = store.changes.subscribe();
    if !store.credential_exists(&id).await {
        return Err(revoked(&id));
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stream.closed() => return,
                change = changes.recv() => match change {
                    Ok(event) => {
                        if revokes(&event.change, Some(&id)) {
                            let _ = stream.send(Err(revoked(&id))).await;
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(())
}
