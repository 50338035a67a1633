//! A port's listener with its optional TLS acceptor, and the connections it yields: admitted by the
//! [`Gate`], then secured by a handshake in the connection's own task, so that a client slow to finish its
//! handshake never holds up the accept loop.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::{Stream, future::Either};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::mpsc,
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use super::{ConnectionInfo, Gate, TrackedIo};
use crate::tls::{Acceptor, HandshakeError};

/// Handshaken gRPC connections waiting for tonic to take them; more wait in their own tasks.
const HANDSHAKEN_QUEUE: usize = 64;

/// A port's listening socket and, when the port serves TLS, the acceptor that secures its connections.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<Acceptor>>,
}

impl Listener {
    /// Listens on `tcp`, with TLS when `tls` is given.
    pub fn new(tcp: TcpListener, tls: Option<Arc<Acceptor>>) -> Self {
        Listener { tcp, tls }
    }

    pub(super) fn into_parts(self) -> (TcpListener, Option<Arc<Acceptor>>) {
        (self.tcp, self.tls)
    }
}

impl From<TcpListener> for Listener {
    /// A plain-text listener.
    fn from(tcp: TcpListener) -> Self {
        Listener { tcp, tls: None }
    }
}

/// An admitted connection ready for HTTP: the tracked socket as it is, or inside a completed TLS session.
#[derive(Debug)]
pub struct ServedIo {
    stream: Transport,
    info: ConnectionInfo,
}

#[derive(Debug)]
enum Transport {
    Plain(TrackedIo),
    Tls(Box<TlsStream<TrackedIo>>),
}

impl ServedIo {
    /// What requests on this connection carry in their extensions.
    pub fn info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// Secures `io` with `tls` when given (within the acceptor's handshake timeout), or passes it through.
pub(super) async fn handshake(tls: Option<&Acceptor>, io: TrackedIo) -> Result<ServedIo, HandshakeError> {
    let info = io.info();
    match tls {
        None => Ok(ServedIo {
            stream: Transport::Plain(io),
            info,
        }),
        Some(acceptor) => {
            let (stream, certificate) = acceptor.accept(io).await?;
            Ok(ServedIo {
                stream: Transport::Tls(Box::new(stream)),
                info: info.with_client_certificate(certificate),
            })
        }
    }
}

/// Logs a failed handshake at debug level: scanners and misconfigured clients fail handshakes all day.
pub(super) fn report_handshake_failure(info: &ConnectionInfo, error: &HandshakeError) {
    tracing::debug!(peer = ?info.tcp.remote_addr(), %error, "closing a connection whose TLS handshake failed");
}

/// The connections of `listener` for tonic's `serve_with_incoming_shutdown`. Plain connections are yielded
/// as the gate admits them; TLS connections once their handshake completes, each in a task of its own. The
/// listener closes when tonic drops the stream (at shutdown).
pub(crate) fn incoming(
    gate: Arc<Gate>,
    listener: Listener,
) -> impl Stream<Item = std::io::Result<ServedIo>> + Send + 'static {
    let (tcp, tls) = listener.into_parts();
    let Some(acceptor) = tls else {
        return Either::Left(futures_util::stream::unfold(
            (tcp, gate),
            |(tcp, gate)| async move {
                let io = gate.accept(&tcp).await;
                let info = io.info();
                let io = ServedIo {
                    stream: Transport::Plain(io),
                    info,
                };
                Some((Ok(io), (tcp, gate)))
            },
        ));
    };
    let (ready, handshaken) = mpsc::channel(HANDSHAKEN_QUEUE);
    tokio::spawn(accept_tls(gate, tcp, acceptor, ready));
    Either::Right(futures_util::stream::unfold(
        handshaken,
        |mut handshaken| async move {
            let io = handshaken.recv().await?;
            Some((Ok(io), handshaken))
        },
    ))
}

/// Admits connections on `tcp` and starts each one's handshake in a task of its own, until the receiver of
/// `ready` is gone.
async fn accept_tls(
    gate: Arc<Gate>,
    tcp: TcpListener,
    acceptor: Arc<Acceptor>,
    ready: mpsc::Sender<ServedIo>,
) {
    loop {
        let io = tokio::select! {
            () = ready.closed() => return,
            io = gate.accept(&tcp) => io,
        };
        let acceptor = Arc::clone(&acceptor);
        let ready = ready.clone();
        tokio::spawn(async move {
            let info = io.info();
            let served = tokio::select! {
                () = ready.closed() => return,
                served = handshake(Some(&acceptor), io) => served,
            };
            match served {
                Ok(io) => {
                    // Fails only when the server stopped meanwhile; the connection is then closed.
                    let _ = ready.send(io).await;
                }
                Err(error) => report_handshake_failure(&info, &error),
            }
        });
    }
}

impl AsyncRead for ServedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Transport::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Transport::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Transport::Plain(io) => io.is_write_vectored(),
            Transport::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(io) => Pin::new(io).poll_flush(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Transport::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for ServedIo {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info()
    }
}
