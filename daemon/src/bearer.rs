//! The bearer-token check every call passes (RFC 6750), its secret
//! compared in constant time.

use std::sync::Arc;

use tonic::{Request, Status};

/// Checks the bearer token on every call (RFC 6750 form, in the
/// `authorization` metadata). `None` disables the check (lab use only).
#[derive(Debug, Clone)]
pub struct TokenCheck {
    expected: Option<Arc<String>>,
}

impl TokenCheck {
    /// A check for `token`, or none.
    pub fn new(token: Option<String>) -> TokenCheck {
        TokenCheck {
            expected: token.map(Arc::new),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token)
                if nemo_daemon::secret::same_secret(token.as_bytes(), expected.as_bytes()) =>
            {
                Ok(request)
            }
            Some(_) => Err(Status::unauthenticated("authorization: wrong token")),
            None => Err(Status::unauthenticated(
                "authorization: missing \"Bearer <token>\" metadata",
            )),
        }
    }
}
