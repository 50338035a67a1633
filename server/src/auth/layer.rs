//! The tower layer both front ends put in front of their handlers: it admits or refuses a request from its
//! head ([`Access::admit`]) and hands the caller on in the request's extensions.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};

use super::{Access, TransportIdentity};
use crate::Error;

/// Which protocol a layer guards: it decides how actions are named and how a refusal is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Triton's gRPC protocol: refusals are trailers-only gRPC statuses.
    Grpc,
    /// Triton's REST protocol: refusals are `{"error": ...}` with 401 (and `WWW-Authenticate`) or 403.
    Http,
}

/// Admits requests to one front end; see the [module](super) docs for what is checked where.
pub struct AuthLayer<B> {
    access: Arc<Access>,
    front: Front,
    refuse: fn(Error) -> http::Response<B>,
}

impl<B> Clone for AuthLayer<B> {
    fn clone(&self) -> Self {
        AuthLayer {
            access: Arc::clone(&self.access),
            front: self.front,
            refuse: self.refuse,
        }
    }
}

impl<B> std::fmt::Debug for AuthLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

impl<B: Default> AuthLayer<B> {
    /// The layer for the gRPC front end: a refusal is the error's gRPC status.
    pub fn grpc(access: Arc<Access>) -> Self {
        AuthLayer {
            access,
            front: Front::Grpc,
            refuse: |error| tonic::Status::from(error).into_http(),
        }
    }
}

impl AuthLayer<axum::body::Body> {
    /// The layer for the REST front end: a refusal is answered as every REST failure is.
    pub fn http(access: Arc<Access>) -> Self {
        AuthLayer {
            access,
            front: Front::Http,
            refuse: |error| axum::response::IntoResponse::into_response(crate::http::HttpError::from(error)),
        }
    }
}

impl<S, B> tower::Layer<S> for AuthLayer<B> {
    type Service = AuthService<S, B>;

    fn layer(&self, inner: S) -> AuthService<S, B> {
        AuthService {
            inner,
            access: Arc::clone(&self.access),
            front: self.front,
            refuse: self.refuse,
        }
    }
}

/// The service [`AuthLayer`] wraps a front end in.
pub struct AuthService<S, B> {
    inner: S,
    access: Arc<Access>,
    front: Front,
    refuse: fn(Error) -> http::Response<B>,
}

impl<S: Clone, B> Clone for AuthService<S, B> {
    fn clone(&self) -> Self {
        AuthService {
            inner: self.inner.clone(),
            access: Arc::clone(&self.access),
            front: self.front,
            refuse: self.refuse,
        }
    }
}

impl<S: std::fmt::Debug, B> std::fmt::Debug for AuthService<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

impl<S, RequestBody, B> tower::Service<http::Request<RequestBody>> for AuthService<S, B>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<B>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        // A verified client certificate (mutual TLS) proves an identity unless something more specific did.
        let certified = match request.extensions().get::<TransportIdentity>() {
            Some(_) => None,
            None => request
                .extensions()
                .get::<crate::tls::ClientCertificate>()
                .map(TransportIdentity::of_certificate),
        };
        let transport = certified
            .as_ref()
            .or_else(|| request.extensions().get::<TransportIdentity>());
        let verdict = self
            .access
            .admit(self.front, request.uri().path(), request.headers(), transport);
        match verdict {
            Ok(identity) => {
                if let Some(identity) = identity {
                    request.extensions_mut().insert(identity);
                }
                Either::Left(self.inner.call(request))
            }
            Err(error) => Either::Right(ready(Ok((self.refuse)(error)))),
        }
    }
}
