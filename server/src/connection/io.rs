//! One admitted connection: the socket, its permit, and the clock that closes it when it has gone quiet.
//!
//! The socket alone cannot tell an idle connection from one waiting on a long inference, so requests are
//! counted too: [`TrackRequests`] finds the connection's [`ConnectionInfo`] in each request's extensions
//! and marks the request in flight until its response body has been sent in full.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::ConnectionLimits;
use crate::tls::ClientCertificate;

/// What a connection has done lately, shared by its socket and the requests it carries.
#[derive(Debug)]
struct Activity {
    accepted: Instant,
    /// Milliseconds from `accepted` to the last byte moved or the last request ended.
    last_active_ms: AtomicU64,
    in_flight: AtomicUsize,
    any_request: AtomicBool,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// Why a connection was closed by its own clock.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    /// No request headers arrived in time after the connection was accepted.
    NoRequest,
    /// Nothing happened for the idle timeout.
    Idle,
}

impl Activity {
    fn touch(&self) {
        let elapsed = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(elapsed, Ordering::Relaxed);
    }

    /// When the connection expires if nothing happens meanwhile; `None` while a request is in flight.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.any_request.load(Ordering::Acquire) {
            return Some((self.accepted + self.header_read_timeout, Expiry::NoRequest));
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        Some((self.accepted + last + self.idle_timeout, Expiry::Idle))
    }
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.any_request.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted TCP connection. It gives its permit back when dropped, ends itself (the next read sees
/// end of file) once its deadline passes with no request in flight, and gathers the answers of a batch
/// into one send ([`TrackedIo::poll_write`]).
#[derive(Debug)]
pub struct TrackedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    clock: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    /// The last write was put off for one turn of the scheduler: the next one goes to the socket.
    write_put_off: bool,
}

impl TrackedIo {
    pub(super) fn new(stream: TcpStream, permit: OwnedSemaphorePermit, limits: &ConnectionLimits) -> Self {
        let accepted = Instant::now();
        TrackedIo {
            stream,
            activity: Arc::new(Activity {
                accepted,
                last_active_ms: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                any_request: AtomicBool::new(false),
                header_read_timeout: limits.header_read_timeout,
                idle_timeout: limits.idle_timeout,
            }),
            clock: Box::pin(tokio::time::sleep_until(accepted + limits.header_read_timeout)),
            _permit: permit,
            write_put_off: false,
        }
    }

    /// What requests on this connection carry in their extensions, for [`TrackRequests`].
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tcp: self.stream.connect_info(),
            activity: Arc::clone(&self.activity),
            client_certificate: None,
        }
    }

    /// Whether the connection's time is up; otherwise sets the clock to wake the reader when it may be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let now = Instant::now();
            match self.activity.deadline() {
                // A request in flight: look again an idle timeout from now, unless a look is already due.
                None => {
                    if self.clock.deadline() <= now {
                        let next = now + self.activity.idle_timeout;
                        self.clock.as_mut().reset(next);
                    }
                }
                Some((deadline, expiry)) if deadline <= now => {
                    let peer = self.stream.peer_addr().ok();
                    match expiry {
                        Expiry::NoRequest => tracing::debug!(
                            ?peer,
                            "closing a connection that sent no request headers within the header read timeout"
                        ),
                        Expiry::Idle => tracing::debug!(?peer, "closing an idle connection"),
                    }
                    return true;
                }
                // The deadline moves with every request and byte, earlier or later than the clock is set.
                Some((deadline, _)) => {
                    if self.clock.deadline() != deadline {
                        self.clock.as_mut().reset(deadline);
                    }
                }
            }
            if self.clock.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.activity.touch();
                }
                Poll::Ready(result)
            }
            // End of file: the HTTP server closes the connection as if the client had.
            Poll::Pending if this.expired(cx) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TrackedIo {
    /// While other requests on the connection still wait for their answers, puts each first write off by
    /// one turn of the scheduler (the task wakes itself and yields). An instance answers a batch's
    /// requests at once, and each request's task hands its response to the HTTP/2 connection and wakes the
    /// connection's task, which tokio runs next: without the turn, every response leaves in a send system
    /// call of its own, and on loopback each send also runs the receiver's TCP processing. After it, the
    /// other answers of the batch have joined the connection's buffer and leave in the same send: at 32
    /// in flight on mlp_small, 0.28 sends per request instead of 0.76 (docs/benchmarks.md). With nothing
    /// else in flight a write goes out at once, so a lone request waits for no turn.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if !this.write_put_off && this.activity.in_flight.load(Ordering::Relaxed) > 0 {
            this.write_put_off = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.write_put_off = false;
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for TrackedIo {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info()
    }
}

/// The connection a request came on, put in its extensions (by tonic on the gRPC port, by
/// [`super::serve_http`] on the others).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer and local addresses.
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
    client_certificate: Option<ClientCertificate>,
}

impl ConnectionInfo {
    /// The client's verified certificate, on a port that requires one (mutual TLS).
    pub fn client_certificate(&self) -> Option<&ClientCertificate> {
        self.client_certificate.as_ref()
    }

    pub(super) fn with_client_certificate(self, client_certificate: Option<ClientCertificate>) -> Self {
        ConnectionInfo {
            client_certificate,
            ..self
        }
    }
}

/// Adds [`TrackRequests`] to a service stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests { inner }
    }
}

/// Marks each request in flight on its connection until its response body ends, so that a connection
/// waiting on a slow inference or an open stream is never taken for idle. Also puts, under mutual TLS, the
/// connection's [`ClientCertificate`] in the request's extensions. The peer's address is in the
/// [`ConnectionInfo`] tonic leaves there, not copied into a [`TcpConnectInfo`] of its own for
/// `Request::remote_addr`: nothing in Ferry asks for it, and each extension costs every request an
/// allocation.
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for TrackRequests<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
{
    type Response = http::Response<TrackedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let info = request.extensions().get::<ConnectionInfo>().cloned();
        let in_flight = info.map(|info| {
            // The caller's identity under mutual TLS, for the layers and handlers inside.
            if let Some(certificate) = info.client_certificate {
                request.extensions_mut().insert(certificate);
            }
            InFlight::start(&info.activity)
        });
        Tracked {
            inner: self.inner.call(request),
            in_flight,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a tracked request: its body takes over the request's place in flight. A plain future
    /// rather than a boxed one: every request on every port passes here.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, ResponseBody, E> Future for Tracked<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, E>>,
{
    type Output = Result<http::Response<TrackedBody<ResponseBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that keeps its request in flight until it is dropped, after its last frame.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: Option<InFlight>,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> Arc<Activity> {
        Arc::new(Activity {
            accepted: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            any_request: AtomicBool::new(false),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        })
    }

    #[test]
    fn a_new_connection_has_the_header_read_timeout_then_none_while_a_request_runs_then_the_idle_timeout() {
        let activity = activity();
        let (deadline, expiry) = activity.deadline().expect("a deadline");
        assert!(matches!(expiry, Expiry::NoRequest));
        assert_eq!(deadline, activity.accepted + Duration::from_secs(30));

        let first = InFlight::start(&activity);
        let second = InFlight::start(&activity);
        assert!(activity.deadline().is_none());
        drop(first);
        assert!(activity.deadline().is_none(), "one request is still in flight");
        drop(second);
        let (deadline, expiry) = activity.deadline().expect("a deadline");
        assert!(matches!(expiry, Expiry::Idle));
        assert!(deadline >= activity.accepted + Duration::from_secs(300));
        assert!(deadline <= Instant::now() + Duration::from_secs(300));
    }

    /// Counts the wake-ups of a task.
    struct CountingWaker(AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_write_waits_one_turn_while_other_requests_wait_for_answers_and_none_otherwise() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connects");
        let (server, _) = listener.accept().await.expect("accepts");
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        let mut io = TrackedIo::new(server, permit, &ConnectionLimits::default());
        let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);

        let Poll::Ready(Ok(5)) = Pin::new(&mut io).poll_write(&mut cx, b"alone") else {
            panic!("with no request in flight a write goes out at once");
        };
        let in_flight = InFlight::start(&io.activity);
        assert!(Pin::new(&mut io).poll_write(&mut cx, b"first").is_pending());
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the task is woken for its next turn"
        );
        let Poll::Ready(Ok(11)) = Pin::new(&mut io).poll_write(&mut cx, b"first+other") else {
            panic!("the write after the turn goes out");
        };
        assert!(
            Pin::new(&mut io).poll_write(&mut cx, b"next").is_pending(),
            "every write waits its turn while requests are in flight"
        );
        drop(in_flight);
        let Poll::Ready(Ok(4)) = Pin::new(&mut io).poll_write(&mut cx, b"last") else {
            panic!("the turn was taken");
        };
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);

        drop(io);
        let mut received = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut { client }, &mut received)
            .await
            .expect("reads");
        assert_eq!(received, b"alonefirst+otherlast");
    }
}
