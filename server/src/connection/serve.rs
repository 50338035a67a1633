//! The accept loop of the REST and metrics ports: hyper with the limits axum's own `serve` cannot set
//! (header read timeout, concurrent HTTP/2 streams) behind the server's [`Gate`], and TLS when the port has
//! it (the handshake runs in the connection's task, not in the loop).

use std::{future::Future, sync::Arc};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

use super::{
    Gate, Listener, TrackRequestsLayer,
    listener::{handshake, report_handshake_failure},
};

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets every connection
/// finish the requests it has (idle keep-alive connections close at once) and returns when all are closed.
pub(crate) async fn serve_http(
    gate: Arc<Gate>,
    listener: impl Into<Listener>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = gate.limits();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The gate keeps it at or above hyper's least buffer, below which this would panic.
        .max_buf_size(limits.max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes);
    let builder = Arc::new(builder);
    let (listener, tls) = listener.into().into_parts();
    // Connections watch `stopping` and each holds a clone of `open`, so the loop sees when the last one ends.
    let (stop, stopping) = watch::channel(false);
    let (all_closed, open) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let io = tokio::select! {
            () = &mut shutdown => break,
            io = gate.accept(&listener) => io,
        };
        let builder = Arc::clone(&builder);
        let mut stopping = stopping.clone();
        let open = open.clone();
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stop_requested = async {
                // An error means the server is gone, which asks for the same as a stop.
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            let mut stop_requested = std::pin::pin!(stop_requested);
            let info = io.info();
            let io = tokio::select! {
                io = handshake(tls.as_deref(), io) => match io {
                    Ok(io) => io,
                    Err(error) => return report_handshake_failure(&info, &error),
                },
                () = stop_requested.as_mut() => return,
            };
            let info = io.info();
            let service =
                TrackRequestsLayer
                    .layer(router)
                    .map_request(move |request: http::Request<Incoming>| {
                        let mut request = request.map(axum::body::Body::new);
                        request.extensions_mut().insert(info.clone());
                        request
                    });
            let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop_requested => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    all_closed.closed().await;
    Ok(())
}
