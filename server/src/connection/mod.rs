//! Bounds on what one client, or many, can hold of a server through its connections.
//!
//! Every listener of a [`crate::Server`] accepts through one [`Gate`]: a connection holds one of a fixed
//! number of permits for its whole life, and a connection beyond that number is closed at once (with a
//! rate-limited warning), so that file descriptors never run out under a flood. Each admitted connection is
//! a [`TrackedIo`] that closes itself when it sends no request in time (see [`ConnectionLimits`]), and the
//! HTTP/2 servers advertise a bound on concurrent streams, which also bounds the responses one connection
//! can leave buffered by never opening its flow-control window. On a port with TLS ([`Listener`]), an
//! admitted connection's handshake runs in its own task, bounded by the handshake timeout, before HTTP
//! starts on it ([`ServedIo`]).

mod io;
mod listener;
mod serve;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

pub use io::{ConnectionInfo, TrackRequests, TrackRequestsLayer, TrackedBody, TrackedIo};
pub(crate) use listener::incoming;
pub use listener::{Listener, ServedIo};
pub(crate) use serve::serve_http;
use tokio::{net::TcpListener, sync::Semaphore};

/// Default of [`ConnectionLimits::max_connections`]: far above what one client needs, far below what
/// exhausts memory; lowered further at start to fit the file descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of [`ConnectionLimits::max_concurrent_streams`]: as many concurrent calls per connection as
/// gRPC clients usually multiplex; clients queue further calls themselves instead of failing them.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Default of [`ConnectionLimits::header_read_timeout`]: hyper's default for HTTP/1, generous for any
/// client that means to send a request.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ConnectionLimits::max_header_bytes`]: HTTP/2's own default in hyper (and so tonic), far
/// above what Triton's clients send (a few hundred bytes, plus a credential).
pub const DEFAULT_MAX_HEADER_BYTES: u32 = 16 * 1024;
/// The least [`ConnectionLimits::max_header_bytes`]: hyper's HTTP/1 read buffer cannot be smaller.
pub const MIN_MAX_HEADER_BYTES: u32 = 8 * 1024;
/// Default of [`ConnectionLimits::idle_timeout`]: long enough for clients that pool connections between
/// bursts, short enough that abandoned ones give their slot back.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// File descriptors kept for everything but client connections: listeners, model files, ONNX Runtime,
/// logs and shared memory regions.
const RESERVED_FILE_DESCRIPTORS: u64 = 128;
/// The least time between two warnings about refused connections, so that a flood does not flood the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Limits on client connections, shared by the gRPC, REST and metrics ports of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once on all ports together; more are closed as soon as they are accepted.
    /// Lowered at start to what the file descriptor limit allows (after raising its soft limit if it can).
    pub max_connections: usize,
    /// Streams (calls) open at once on one HTTP/2 connection, advertised as SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// How long a new connection may take to send its first request's headers, and on HTTP/1 every
    /// request's headers; a connection that has not by then is closed.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight and no bytes moving stays open.
    pub idle_timeout: Duration,
    /// The largest request head, in bytes: on HTTP/2 (gRPC and REST) SETTINGS_MAX_HEADER_LIST_SIZE (names
    /// and values plus 32 bytes a header; a larger head resets the stream or closes the connection), on
    /// HTTP/1 hyper's read buffer (a larger head is answered 431). The read buffer also bounds how much of
    /// an HTTP/1 body is read at once. At least [`MIN_MAX_HEADER_BYTES`].
    pub max_header_bytes: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// The admission of connections to one server, shared by its listeners.
#[derive(Debug)]
pub struct Gate {
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    refusals: Mutex<Refusals>,
}

/// Refused connections not yet reported, and when the last report was written.
#[derive(Debug, Default)]
struct Refusals {
    unreported: u64,
    last_report: Option<Instant>,
}

impl Gate {
    /// A gate admitting at most `limits.max_connections` connections, or fewer when the file descriptor limit
    /// cannot hold that many; logs the number it settles on.
    pub fn new(limits: &ConnectionLimits) -> Arc<Self> {
        let max_connections = fit_to_file_limit(limits.max_connections);
        tracing::info!(
            max_connections,
            max_concurrent_streams = limits.max_concurrent_streams,
            header_read_timeout_secs = limits.header_read_timeout.as_secs_f64(),
            idle_timeout_secs = limits.idle_timeout.as_secs_f64(),
            max_header_bytes = limits.max_header_bytes,
            "connection limits"
        );
        Arc::new(Gate {
            limits: ConnectionLimits {
                max_connections,
                max_header_bytes: limits.max_header_bytes.max(MIN_MAX_HEADER_BYTES),
                ..limits.clone()
            },
            permits: Arc::new(Semaphore::new(max_connections)),
            refusals: Mutex::default(),
        })
    }

    /// The limits in force, with the connection cap as it was fitted to the file descriptor limit.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Waits for the next connection on `listener` that fits under the cap. Connections beyond the cap are
    /// closed at once, so that their clients fail fast instead of waiting in the backlog.
    pub async fn accept(&self, listener: &TcpListener) -> TrackedIo {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors or a connection reset before it was accepted: wait a little
                    // rather than spin on an error that persists.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                drop(stream);
                self.report_refusal();
                continue;
            };
            // Small responses must not wait for Nagle's algorithm.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
            return TrackedIo::new(stream, permit, &self.limits);
        }
    }

    /// Counts a refused connection and warns about those not yet reported, at most once per interval.
    fn report_refusal(&self) {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals.unreported += 1;
        let now = Instant::now();
        if refusals
            .last_report
            .is_some_and(|last| now.duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            refused = refusals.unreported,
            max_connections = self.limits.max_connections,
            "refusing new connections: the server holds as many as --max-connections allows"
        );
        refusals.unreported = 0;
        refusals.last_report = Some(now);
    }
}

/// The largest connection cap up to `wanted` that the file descriptor limit can hold, raising the soft limit
/// towards the hard one first when it is too low.
fn fit_to_file_limit(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return wanted;
    }
    let needed = u64::try_from(wanted)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_FILE_DESCRIPTORS);
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < needed && limit.rlim_max > limit.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: needed.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return wanted;
    }
    let fitting =
        usize::try_from(limit.rlim_cur.saturating_sub(RESERVED_FILE_DESCRIPTORS)).unwrap_or(usize::MAX);
    if fitting < wanted {
        tracing::warn!(
            wanted,
            fitting,
            file_limit = limit.rlim_cur,
            "--max-connections lowered to fit the open file limit (raise it with ulimit -n)"
        );
    }
    wanted.min(fitting).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_within_the_file_limit_is_kept() {
        assert_eq!(fit_to_file_limit(4), 4);
    }
}
