//! The caller's credential, sent with every request: what a server with authentication (Ferry's
//! `--api-keys-file` or `--jwt-jwks`) identifies the caller by.

use std::fmt;

use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::Interceptor,
};

use crate::ClientError;

/// An API key or a bearer token, sent as `authorization: Bearer <secret>` on every request of a
/// [`crate::Client`]; none by default. Its `Debug` output never shows the secret.
#[derive(Clone, Default)]
pub struct Credentials(Option<AsciiMetadataValue>);

impl Credentials {
    /// No credential: requests go out as they are, as to a server without authentication.
    pub fn none() -> Self {
        Credentials(None)
    }

    /// An API key or a JWT, sent as a bearer token. Refused before anything is sent when it cannot be a
    /// header value (empty, or with characters outside visible ASCII).
    pub fn bearer(secret: &str) -> Result<Self, ClientError> {
        let visible = !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_graphic());
        let value = visible
            .then(|| MetadataValue::try_from(format!("Bearer {secret}")).ok())
            .flatten()
            .ok_or(ClientError::InvalidCredentials)?;
        let mut value: AsciiMetadataValue = value;
        value.set_sensitive(true);
        Ok(Credentials(Some(value)))
    }

    /// Whether a credential is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "Credentials(bearer, redacted)"
        } else {
            "Credentials(none)"
        })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_credential_is_sent_and_never_printed() {
        let mut credentials = Credentials::bearer("s3cret-key").expect("valid");
        let request = credentials.call(Request::new(())).expect("passes");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().expect("ascii")),
            Some("Bearer s3cret-key")
        );
        assert!(!format!("{credentials:?}").contains("s3cret"));
        let request = Credentials::none().call(Request::new(())).expect("passes");
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn secrets_that_cannot_be_headers_are_refused() {
        for secret in ["", "has space", "line\nbreak", "naïve"] {
            assert!(
                matches!(Credentials::bearer(secret), Err(ClientError::InvalidCredentials)),
                "{secret:?}"
            );
        }
    }
}
