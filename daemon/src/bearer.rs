//! Bearer tokens on gRPC calls (RFC 6750 form, in the `authorization`
//! metadata): the check a server runs on every call, its secret compared in
//! constant time ([`TokenCheck`]: the controller's API, the daemons' admin
//! APIs), and the client's side ([`BearerToken`]).

use std::sync::Arc;

use tonic::{Request, Status};

/// The bearer token a call presents (`authorization: Bearer <token>`).
pub fn presented(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

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
            crate::incoming::authenticated(request.extensions());
            return Ok(request);
        };
        match presented(request.metadata()) {
            Some(token) if crate::secret::same_secret(token.as_bytes(), expected.as_bytes()) => {
                crate::incoming::authenticated(request.extensions());
                Ok(request)
            }
            Some(_) => Err(Status::unauthenticated("authorization: wrong token")),
            None => Err(Status::unauthenticated(
                "authorization: missing \"Bearer <token>\" metadata",
            )),
        }
    }
}

/// Adds the bearer token, if any, to every call a client makes
/// (`XClient::with_interceptor(channel, BearerToken::new(token))`).
#[derive(Debug, Clone)]
pub struct BearerToken {
    value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl BearerToken {
    /// Calls carrying `token`, or none.
    pub fn new(
        token: Option<&str>,
    ) -> Result<BearerToken, tonic::metadata::errors::InvalidMetadataValue> {
        let value = token
            .map(|token| format!("Bearer {token}").parse())
            .transpose()?;
        Ok(BearerToken { value })
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn only_the_token_passes_and_the_client_sends_it() {
        let mut check = TokenCheck::new(Some("admin-token-0123456789".into()));
        let mut client =
            BearerToken::new(Some("admin-token-0123456789")).unwrap_or_else(|_| unreachable!());
        let sent = client
            .call(Request::new(()))
            .unwrap_or_else(|_| unreachable!());
        assert!(check.call(sent).is_ok());
        let mut stranger = BearerToken::new(Some("a-guess")).unwrap_or_else(|_| unreachable!());
        let wrong = check.call(
            stranger
                .call(Request::new(()))
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(
            wrong.map(drop).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let missing = check.call(Request::new(()));
        assert_eq!(
            missing.map(drop).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // No token configured: every call passes.
        assert!(TokenCheck::new(None).call(Request::new(())).is_ok());
    }
}
