//! gRPC message compression, as a tower layer in front of every service of the gRPC port.
//!
//! gRPC compresses each message on its own: a message's 5-byte prefix has a flag (1: compressed with the
//! call's `grpc-encoding`) and the length of what follows. tonic could inflate requests itself, but it does
//! so on the runtime worker that polls the call, and it compresses answers there too; a stream of small
//! deflate bombs would then keep every worker busy. This layer rewrites the message stream instead:
//!
//! - Requests with `grpc-encoding: gzip` or `deflate`, on any RPC: each compressed message is collected
//!   (its compressed size is refused above the message limit before it is collected), inflated on the
//!   blocking pool with [`super::inflate_into`], which stops one byte past `--grpc-max-message-bytes`, and
//!   handed on uncompressed. Too large: `RESOURCE_EXHAUSTED`; not valid data: `INTERNAL`, as gRPC's C core
//!   answers (`compression_filter.cc`). Other codings are left to tonic, which answers `UNIMPLEMENTED`.
//! - Answers of ModelInfer and ModelStreamInfer, when `--grpc-infer-response-compression-level` is not
//!   `none`: compressed on the blocking pool with the coding gRPC's C core picks for Triton's level from the
//!   client's `grpc-accept-encoding` ([`ResponseCompression::choose`]). Other RPCs answer uncompressed, as
//!   in Triton, which sets the level on its inference handlers only.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;
use tonic::{Status, body::Body as TonicBody};

use super::{Encoding, InflateError, compress_onto, inflate_into};

/// The header naming the coding of a call's compressed messages.
const ENCODING: &str = "grpc-encoding";
/// The header listing the codings a peer reads.
const ACCEPT_ENCODING: &str = "grpc-accept-encoding";
/// What Ferry reads, advertised on every answer.
const ACCEPTED: &str = "gzip,deflate,identity";
/// The RPCs whose answers are compressed, as Triton's level applies to its inference handlers.
const COMPRESSED_ANSWERS: [&str; 2] = [
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelStreamInfer",
];
/// The length of a gRPC message prefix: the compressed flag and a big-endian `u32` length.
const PREFIX: usize = 5;

/// Triton's `--grpc-infer-response-compression-level`: whether, and how, inference answers are compressed.
/// As in gRPC's C core, the level chooses the coding, not zlib's level (always the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ResponseCompression {
    /// Answers are never compressed (Triton's default).
    #[default]
    None,
    /// The first of gzip, deflate that the client reads.
    Low,
    /// The middle one of those the client reads: deflate when it reads both.
    Medium,
    /// The last of gzip, deflate that the client reads.
    High,
}

impl ResponseCompression {
    /// The coding for an answer to a client that sent `accept` (its `grpc-accept-encoding`), as gRPC's C
    /// core picks it for a level (`grpc_message_compression_algorithm_for_level`): gzip and deflate, in that
    /// order of "increasing compression", keeping those the client reads; low takes the first, high the
    /// last, medium the middle. `None` when the level is none or the client reads neither.
    pub fn choose(self, accept: Option<&HeaderValue>) -> Option<Encoding> {
        if self == ResponseCompression::None {
            return None;
        }
        let accepted = accept
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                let named: Vec<Encoding> = value.split(',').filter_map(Encoding::from_name).collect();
                [Encoding::Gzip, Encoding::Deflate]
                    .into_iter()
                    .filter(|encoding| named.contains(encoding))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        match self {
            ResponseCompression::None => None,
            ResponseCompression::Low => accepted.first().copied(),
            ResponseCompression::Medium => accepted.get(accepted.len() / 2).copied(),
            ResponseCompression::High => accepted.last().copied(),
        }
    }
}

/// Inflates compressed requests, bounded by `limit`, and compresses inference answers as `responses` says.
#[derive(Debug, Clone, Copy)]
pub struct CompressionLayer {
    limit: usize,
    responses: ResponseCompression,
}

impl CompressionLayer {
    /// Messages inflate to at most `limit` bytes (`--grpc-max-message-bytes`, and never more than a
    /// message prefix can state); inference answers are compressed as `responses` says.
    pub fn new(limit: usize, responses: ResponseCompression) -> Self {
        let limit = limit.min(u32::MAX as usize);
        CompressionLayer { limit, responses }
    }
}

impl<S> tower::Layer<S> for CompressionLayer {
    type Service = CompressionService<S>;

    fn layer(&self, inner: S) -> CompressionService<S> {
        CompressionService { inner, layer: *self }
    }
}

/// The service [`CompressionLayer`] makes.
#[derive(Debug, Clone)]
pub struct CompressionService<S> {
    inner: S,
    layer: CompressionLayer,
}

impl<S, ResponseBody> tower::Service<Request<TonicBody>> for CompressionService<S>
where
    S: tower::Service<Request<TonicBody>, Response = Response<ResponseBody>>,
{
    type Response = Response<Transcoded<ResponseBody>>;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<TonicBody>) -> Self::Future {
        let answer = if COMPRESSED_ANSWERS.contains(&request.uri().path()) {
            self.layer
                .responses
                .choose(request.headers().get(ACCEPT_ENCODING))
        } else {
            None
        };
        let request_encoding = request
            .headers()
            .get(ENCODING)
            .and_then(|value| value.to_str().ok())
            .and_then(Encoding::from_name);
        let request = match request_encoding {
            Some(_) => {
                let (mut parts, body) = request.into_parts();
                parts.headers.remove(ENCODING);
                let body = Transcoded::new(body, Some(Mode::Inflate(self.layer.limit)));
                Request::from_parts(parts, TonicBody::new(body))
            }
            None => request,
        };
        Answered {
            inner: self.inner.call(request),
            answer,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a call through [`CompressionService`], whose messages are compressed with `answer`
    /// when one was chosen. A plain future rather than a boxed one: every gRPC call passes here.
    pub struct Answered<F> {
        #[pin]
        inner: F,
        answer: Option<Encoding>,
    }
}

impl<F, ResponseBody, E> Future for Answered<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    type Output = Result<Response<Transcoded<ResponseBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut parts, body) = ready!(this.inner.poll(cx))?.into_parts();
        parts
            .headers
            .entry(ACCEPT_ENCODING)
            .or_insert(HeaderValue::from_static(ACCEPTED));
        // A trailers-only answer (an error before any message) has no messages to compress.
        let answer = this
            .answer
            .take()
            .filter(|_| !parts.headers.contains_key("grpc-status"));
        if let Some(encoding) = answer {
            parts
                .headers
                .insert(ENCODING, HeaderValue::from_static(encoding.name()));
        }
        let body = Transcoded::new(body, answer.map(Mode::Compress));
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// What a [`Transcoded`] body does to the messages that need it.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Inflates compressed messages to at most this many bytes; passes uncompressed ones on.
    Inflate(usize),
    /// Compresses uncompressed messages with this coding.
    Compress(Encoding),
}

impl Mode {
    /// Whether a message with this compressed flag is rewritten (or passed on as it is).
    fn rewrites(self, flag: u8) -> bool {
        match self {
            Mode::Inflate(_) => flag == 1,
            Mode::Compress(_) => flag == 0,
        }
    }
}

/// A gRPC body whose messages are inflated or compressed on the way through; with no mode, the body as
/// it is.
pub struct Transcoded<B> {
    inner: B,
    mode: Option<Mode>,
    /// Bytes received and not yet handed on.
    pending: BytesMut,
    state: State,
    /// The message being inflated or compressed on the blocking pool, with its prefix.
    working: Option<JoinHandle<Result<Bytes, Status>>>,
    trailers: Option<HeaderMap>,
    /// The inner body has ended (or failed, or this body has).
    ended: bool,
}

/// Where the reader stands in the message stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting for a message prefix.
    Prefix,
    /// Handing on this many more bytes of a message that is passed on as it is.
    Forward(usize),
    /// Collecting a message of this many bytes to rewrite.
    Collect(usize),
}

/// What the reader found next in the bytes received.
enum Step {
    /// Bytes to hand on as they are.
    Forward(Bytes),
    /// A whole message to rewrite.
    Rewrite(Bytes),
}

impl<B> Transcoded<B> {
    fn new(inner: B, mode: Option<Mode>) -> Self {
        Transcoded {
            inner,
            mode,
            pending: BytesMut::new(),
            state: State::Prefix,
            working: None,
            trailers: None,
            ended: false,
        }
    }

    /// The next step the bytes received allow, if any.
    fn step(&mut self, mode: Mode) -> Result<Option<Step>, Status> {
        loop {
            match self.state {
                State::Prefix => {
                    if self.pending.len() < PREFIX {
                        return Ok(None);
                    }
                    let flag = self.pending[0];
                    let length = u32::from_be_bytes([
                        self.pending[1],
                        self.pending[2],
                        self.pending[3],
                        self.pending[4],
                    ]) as usize;
                    if !mode.rewrites(flag) {
                        self.state = State::Forward(length);
                        return Ok(Some(Step::Forward(self.pending.split_to(PREFIX).freeze())));
                    }
                    if let Mode::Inflate(limit) = mode
                        && length > limit
                    {
                        return Err(too_large(length, limit));
                    }
                    self.pending.advance(PREFIX);
                    self.state = State::Collect(length);
                }
                State::Forward(0) => self.state = State::Prefix,
                State::Forward(left) => {
                    if self.pending.is_empty() {
                        return Ok(None);
                    }
                    let take = left.min(self.pending.len());
                    self.state = State::Forward(left - take);
                    return Ok(Some(Step::Forward(self.pending.split_to(take).freeze())));
                }
                State::Collect(length) => {
                    if self.pending.len() < length {
                        return Ok(None);
                    }
                    self.state = State::Prefix;
                    return Ok(Some(Step::Rewrite(self.pending.split_to(length).freeze())));
                }
            }
        }
    }
}

/// A compressed message whose size (compressed, or once inflated) is above the message limit.
fn too_large(length: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "the compressed message is larger than the server's limit of {limit} bytes once inflated \
         (--grpc-max-message-bytes); it is {length} bytes compressed"
    ))
}

/// Rewrites one message, with its new prefix: on the blocking pool, since either way can take a while.
fn rewrite(mode: Mode, message: Bytes) -> Result<Bytes, Status> {
    let (flag, mut framed) = match mode {
        Mode::Inflate(limit) => {
            let mut framed = vec![0; PREFIX];
            inflate_into(&message, limit, &mut framed).map_err(|error| match error {
                InflateError::TooLarge { limit } => too_large(message.len(), limit),
                InflateError::Corrupt { .. } => {
                    Status::internal(format!("cannot decompress the request message: {error}"))
                }
            })?;
            (0, framed)
        }
        Mode::Compress(encoding) => {
            let mut framed = Vec::with_capacity(PREFIX + message.len() / 2 + 64);
            framed.put_bytes(0, PREFIX);
            (1, compress_onto(framed, encoding, &[&message]))
        }
    };
    let length = u32::try_from(framed.len() - PREFIX).map_err(|_| {
        Status::resource_exhausted(format!(
            "a message of {} bytes cannot be framed",
            framed.len() - PREFIX
        ))
    })?;
    framed[0] = flag;
    framed[1..PREFIX].copy_from_slice(&length.to_be_bytes());
    Ok(Bytes::from(framed))
}

impl<B> Body for Transcoded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(mode) = this.mode else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        loop {
            if let Some(working) = &mut this.working {
                let done = ready!(Pin::new(working).poll(cx));
                this.working = None;
                let framed = done
                    .map_err(|error| Status::internal(format!("message rewriting failed: {error}")))
                    .and_then(|framed| framed);
                return Poll::Ready(Some(match framed {
                    Ok(framed) => Ok(Frame::data(framed)),
                    Err(status) => Err(this.fail(status)),
                }));
            }
            match this.step(mode) {
                Ok(Some(Step::Forward(bytes))) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Ok(Some(Step::Rewrite(message))) => {
                    this.working = Some(tokio::task::spawn_blocking(move || rewrite(mode, message)));
                    continue;
                }
                Ok(None) => {}
                Err(status) => return Poll::Ready(Some(Err(this.fail(status)))),
            }
            if this.ended {
                if let State::Collect(length) = this.state {
                    let status = Status::internal(format!(
                        "the body ended inside a compressed message, after {} of its {length} bytes",
                        this.pending.len()
                    ));
                    return Poll::Ready(Some(Err(this.fail(status))));
                }
                if this.pending.is_empty() {
                    return Poll::Ready(this.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))));
                }
                // The body ended inside a message prefix: hand it on and let the reader say so.
                return Poll::Ready(Some(Ok(Frame::data(this.pending.split().freeze()))));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => this.ended = true,
                Some(Err(error)) => {
                    this.ended = true;
                    this.pending.clear();
                    this.state = State::Prefix;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                            this.ended = true;
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A trailers-only answer must say so, or HTTP/2 sends its end in a DATA frame of its own, which
        // gRPC's C core refuses ("Data frame with END_STREAM flag received").
        match self.mode {
            None => self.inner.is_end_stream(),
            Some(_) => {
                self.working.is_none()
                    && self.pending.is_empty()
                    && self.trailers.is_none()
                    && matches!(self.state, State::Prefix | State::Forward(0))
                    && (self.ended || self.inner.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

impl<B> Transcoded<B> {
    /// Ends the body with `status`: nothing more is handed on, not even the inner body's trailers.
    fn fail(&mut self, status: Status) -> tower::BoxError {
        self.ended = true;
        self.pending.clear();
        self.state = State::Prefix;
        self.trailers = None;
        status.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::{compress, inflate};

    fn accept(value: &'static str) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(value))
    }

    #[test]
    fn levels_choose_as_grpc_core_does() {
        let both = accept("identity,deflate,gzip");
        assert_eq!(ResponseCompression::None.choose(both.as_ref()), None);
        assert_eq!(
            ResponseCompression::Low.choose(both.as_ref()),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            ResponseCompression::Medium.choose(both.as_ref()),
            Some(Encoding::Deflate)
        );
        assert_eq!(
            ResponseCompression::High.choose(both.as_ref()),
            Some(Encoding::Deflate)
        );
        let gzip = accept("gzip, identity");
        for level in [
            ResponseCompression::Low,
            ResponseCompression::Medium,
            ResponseCompression::High,
        ] {
            assert_eq!(level.choose(gzip.as_ref()), Some(Encoding::Gzip), "{level:?}");
            assert_eq!(level.choose(accept("identity").as_ref()), None, "{level:?}");
            assert_eq!(level.choose(None), None, "{level:?}");
        }
    }

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut framed = vec![flag];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    #[test]
    fn the_reader_forwards_and_collects_messages_split_anywhere() {
        let packed = compress(Encoding::Gzip, b"inflate me");
        let stream = [framed(0, b"as it is"), framed(1, &packed), framed(0, b"")].concat();
        for split in 0..stream.len() {
            let mut body = Transcoded::new((), None);
            let mut forwarded = Vec::new();
            let mut rewritten = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                body.pending.extend_from_slice(chunk);
                while let Some(step) = body.step(Mode::Inflate(1024)).expect("valid") {
                    match step {
                        Step::Forward(bytes) => forwarded.extend_from_slice(&bytes),
                        Step::Rewrite(message) => rewritten.push(message),
                    }
                }
            }
            assert_eq!(
                forwarded,
                [framed(0, b"as it is"), framed(0, b"")].concat(),
                "{split}"
            );
            assert_eq!(rewritten, [Bytes::from(packed.clone())], "{split}");
        }
    }

    #[test]
    fn rewriting_inflates_and_compresses_with_prefixes() {
        let packed = compress(Encoding::Deflate, &[7; 1000]);
        let inflated = rewrite(Mode::Inflate(1000), Bytes::from(packed.clone())).expect("inflates");
        assert_eq!(&inflated[..], &framed(0, &[7; 1000])[..]);
        let status = rewrite(Mode::Inflate(999), Bytes::from(packed)).expect_err("too large");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("999 bytes"), "{}", status.message());
        let status = rewrite(Mode::Inflate(1000), Bytes::from_static(b"not zlib")).expect_err("corrupt");
        assert_eq!(status.code(), tonic::Code::Internal);
        let compressed =
            rewrite(Mode::Compress(Encoding::Gzip), Bytes::from_static(&[3; 500])).expect("gzip");
        assert_eq!(compressed[0], 1);
        let length = u32::from_be_bytes([compressed[1], compressed[2], compressed[3], compressed[4]]);
        assert_eq!(length as usize, compressed.len() - PREFIX);
        assert_eq!(inflate(&compressed[PREFIX..], 500).expect("gzip"), vec![3; 500]);
    }

    #[test]
    fn a_compressed_message_too_large_on_the_wire_is_refused_before_it_is_collected() {
        let mut body = Transcoded::new((), None);
        body.pending.extend_from_slice(&[1, 0, 0, 4, 1]);
        let status = body.step(Mode::Inflate(1024)).err().expect("too large");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }
}
