//! The tower layer both front ends put in front of their handlers: it admits or refuses a request from its
//! head ([`Access::admit`]), holds the caller to its rate and in-flight limits when they are on
//! ([`super::quota`]), and hands the caller on in the request's extensions.
//!
//! A request's place in flight is held by its answer's body and given back when that body ends or is
//! dropped, so a streaming call (ModelStreamInfer) holds one place for as long as its stream is open, and a
//! unary gRPC answer, whose body is its message and trailers, gives it back once they are sent.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, header::RETRY_AFTER};

use super::{Access, Action, Identity, TransportIdentity, quota::InFlight};
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
    hold: fn(B, InFlight) -> B,
}

impl<B> Clone for AuthLayer<B> {
    fn clone(&self) -> Self {
        AuthLayer {
            access: Arc::clone(&self.access),
            front: self.front,
            refuse: self.refuse,
            hold: self.hold,
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

impl AuthLayer<tonic::body::Body> {
    /// The layer for the gRPC front end: a refusal is the error's gRPC status.
    pub fn grpc(access: Arc<Access>) -> Self {
        AuthLayer {
            access,
            front: Front::Grpc,
            refuse: |error| tonic::Status::from(error).into_http(),
            hold: |body, in_flight| tonic::body::Body::new(Held::new(body, in_flight)),
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
            hold: |body, in_flight| axum::body::Body::new(Held::new(body, in_flight)),
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
            hold: self.hold,
        }
    }
}

/// The service [`AuthLayer`] wraps a front end in.
pub struct AuthService<S, B> {
    inner: S,
    access: Arc<Access>,
    front: Front,
    refuse: fn(Error) -> http::Response<B>,
    hold: fn(B, InFlight) -> B,
}

impl<S: Clone, B> Clone for AuthService<S, B> {
    fn clone(&self) -> Self {
        AuthService {
            inner: self.inner.clone(),
            access: Arc::clone(&self.access),
            front: self.front,
            refuse: self.refuse,
            hold: self.hold,
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
    type Future =
        Either<Either<S::Future, Limited<S::Future, B>>, Ready<Result<http::Response<B>, S::Error>>>;

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
        let Some(action) = super::action_of(self.front, request.uri().path()) else {
            return Either::Left(Either::Left(self.inner.call(request)));
        };
        let identity = match self
            .access
            .admit_action(self.front, action, request.headers(), transport)
        {
            Ok(identity) => identity,
            Err(error) => return Either::Right(ready(Ok((self.refuse)(error)))),
        };
        let in_flight = match self.limit(action, &identity) {
            Ok(in_flight) => in_flight,
            Err(response) => return Either::Right(ready(Ok(response))),
        };
        // Handlers take a request without an identity for an anonymous caller
        // ([`crate::core::InferenceService::acting_for`]): an open server inserts nothing.
        if identity != Identity::Anonymous {
            request.extensions_mut().insert(identity);
        }
        let inner = self.inner.call(request);
        match in_flight {
            None => Either::Left(Either::Left(inner)),
            Some(in_flight) => Either::Left(Either::Right(Limited {
                inner,
                held: Some((in_flight, self.hold)),
            })),
        }
    }
}

impl<S, B> AuthService<S, B> {
    /// Holds `identity` to its limits when any is on and the request is an action of the protocol that
    /// needs a scope (health probes are never limited): its place in flight, or the refusal to answer.
    fn limit(&self, action: Action, identity: &Identity) -> Result<Option<InFlight>, http::Response<B>> {
        let Some(quotas) = self.access.quotas() else {
            return Ok(None);
        };
        if action.scope.is_none() {
            return Ok(None);
        }
        match quotas.admit(identity) {
            Ok(in_flight) => Ok(Some(in_flight)),
            Err(refusal) => {
                tracing::debug!(identity = %identity, reason = %refusal.error, "request refused by a limit");
                let mut response = (self.refuse)(refusal.error);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(refusal.retry_after_secs));
                Err(response)
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a request admitted under the limits: its body takes over the request's place in flight.
    pub struct Limited<F, B> {
        #[pin]
        inner: F,
        held: Option<(InFlight, fn(B, InFlight) -> B)>,
    }
}

impl<F, B, E> Future for Limited<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        // An error drops the place here; an answer's body carries it until the body ends or is dropped.
        Poll::Ready(match (result, this.held.take()) {
            (Ok(response), Some((in_flight, hold))) => Ok(response.map(|body| hold(body, in_flight))),
            (result, _) => result,
        })
    }
}

/// A response body holding its request's place in flight until it ends or is dropped.
struct Held<B> {
    inner: B,
    in_flight: Option<InFlight>,
}

impl<B> Held<B> {
    fn new(inner: B, in_flight: InFlight) -> Self {
        Held {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<B> http_body::Body for Held<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.in_flight = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
