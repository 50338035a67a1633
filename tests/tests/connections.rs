//! Connection bounds on the gRPC, REST and metrics ports: streams per HTTP/2 connection, header read and
//! idle timeouts, and the cap on connections, each set small here so that the tests take seconds.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_server::{connection::ConnectionLimits, repository::RepositoryOptions};
use ferry_tests::{TestServer, example_repository};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn start(limits: ConnectionLimits) -> TestServer {
    let repository = RepositoryOptions {
        strict_readiness: false,
        ..RepositoryOptions::new(vec![example_repository()])
    };
    TestServer::start_with_connections(repository, ferry_server::MAX_MESSAGE_BYTES, limits)
        .await
        .expect("server")
}

/// An HTTP/2 connection to the gRPC port, driven in the background; the handle ends when the connection does.
async fn h2_connect(address: SocketAddr) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(address).await.expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let driven = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, driven)
}

/// Starts a gRPC call with an empty request message: a health Watch stays open, a Check answers at once.
fn grpc_call(
    client: &mut h2::client::SendRequest<Bytes>,
    method: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::post(format!("http://ferry/grpc.health.v1.Health/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("stream opens");
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("message sent");
    (response, body)
}

/// Whether the server closes `stream` within `within` (what it sends meanwhile, such as HTTP/2 settings, is
/// skipped).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Sends a keep-alive GET and reads its whole answer (these carry a content-length); returns the status code.
async fn get(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nhost: ferry\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request sent");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.expect("answer read");
        assert!(
            n > 0,
            "connection closed mid-answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("content-length"));
            if answer.len() >= end + 4 + length {
                return text[9..12].parse().expect("status code");
            }
        }
    }
}

#[tokio::test]
async fn http2_advertises_max_concurrent_streams_and_opens_no_more() {
    let limits = ConnectionLimits {
        max_concurrent_streams: 2,
        ..ConnectionLimits::default()
    };
    let server = start(limits).await;
    let (mut client, _driven) = h2_connect(server.address).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        client = client.ready().await.expect("ready");
        let (response, body) = grpc_call(&mut client, "Watch");
        let response = response.await.expect("Watch answers");
        assert_eq!(response.status(), 200);
        open.push((response, body));
    }
    assert_eq!(
        client.current_max_send_streams(),
        2,
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    // A third call waits for a slot instead of opening a third stream.
    client = client.ready().await.expect("ready");
    let (third, _third_body) = grpc_call(&mut client, "Check");
    let mut third = Box::pin(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "a third stream was opened beyond the limit"
    );
    open.pop();
    let third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third call opens once a stream closes")
        .expect("Check answers");
    assert_eq!(third.status(), 200);

    // REST speaks HTTP/2 too when a client starts with it, under the same limit.
    let http = server.start_http().await.expect("REST");
    let (mut rest, _driven) = h2_connect(http.address).await;
    let live = http::Request::get("http://ferry/v2/health/live")
        .body(())
        .expect("request");
    let (response, _) = rest.send_request(live, true).expect("stream opens");
    assert_eq!(response.await.expect("REST answers").status(), 200);
    assert_eq!(
        rest.current_max_send_streams(),
        2,
        "REST's SETTINGS_MAX_CONCURRENT_STREAMS"
    );
}

#[tokio::test]
async fn connections_that_send_no_request_headers_are_closed_after_the_header_read_timeout() {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let server = start(limits).await;
    let http = server.start_http().await.expect("REST");
    let metrics = server.start_metrics().await.expect("metrics");
    let started = Instant::now();
    let mut silent = Vec::new();
    for address in [server.address, http.address, metrics.address] {
        silent.push(TcpStream::connect(address).await.expect("connects"));
    }
    // Half a request on each HTTP/1 port, the HTTP/2 preface alone on the gRPC port.
    let mut half_sent = Vec::new();
    for (address, start) in [
        (
            http.address,
            "GET /v2/health/live HTTP/1.1\r\nhost: fe".as_bytes(),
        ),
        (metrics.address, "GET /metrics HTTP/1.1\r\n".as_bytes()),
        (server.address, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_bytes()),
    ] {
        let mut stream = TcpStream::connect(address).await.expect("connects");
        stream.write_all(start).await.expect("sent");
        half_sent.push(stream);
    }
    for stream in silent.iter_mut().chain(half_sent.iter_mut()) {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "a connection without request headers stayed open"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_but_not_while_a_call_is_open() {
    let limits = ConnectionLimits {
        idle_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let server = start(limits).await;
    let http = server.start_http().await.expect("REST");

    let mut rest = TcpStream::connect(http.address).await.expect("connects");
    assert_eq!(get(&mut rest, "/v2/health/live").await, 200);
    assert!(
        closed_within(&mut rest, Duration::from_secs(4)).await,
        "an idle REST connection stayed open"
    );

    // A Watch in flight keeps its connection open well past the idle timeout.
    let (mut client, driven) = h2_connect(server.address).await;
    let (watch, watch_body) = grpc_call(&mut client, "Watch");
    let watch = watch.await.expect("Watch answers");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client = client.ready().await.expect("the connection is still open");
    let (check, _check_body) = grpc_call(&mut client, "Check");
    assert_eq!(check.await.expect("Check answers").status(), 200);
    // Once the Watch ends, the connection is idle and closes.
    drop((watch, watch_body, client));
    tokio::time::timeout(Duration::from_secs(4), driven)
        .await
        .expect("an idle gRPC connection stayed open")
        .expect("connection task");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_those_admitted_keep_working() {
    let limits = ConnectionLimits {
        max_connections: 2,
        ..ConnectionLimits::default()
    };
    let server = start(limits).await;
    let http = server.start_http().await.expect("REST");
    let mut first = TcpStream::connect(http.address).await.expect("connects");
    let mut second = TcpStream::connect(http.address).await.expect("connects");
    assert_eq!(get(&mut first, "/v2/health/live").await, 200);
    assert_eq!(get(&mut second, "/v2/health/live").await, 200);

    let mut third = TcpStream::connect(http.address)
        .await
        .expect("the kernel accepts");
    let _ = third
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: ferry\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "a connection beyond the cap was served"
    );
    assert_eq!(get(&mut first, "/v2/health/live").await, 200);
    assert_eq!(get(&mut second, "/v2/health/live").await, 200);

    // Closing one admits a new one (once the server has seen the close).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = TcpStream::connect(http.address).await.expect("connects");
        let request = next
            .write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: ferry\r\n\r\n")
            .await;
        let mut buffer = [0u8; 12];
        if request.is_ok() && next.read_exact(&mut buffer).await.is_ok() {
            assert_eq!(&buffer, b"HTTP/1.1 200");
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ServerMetadata over gRPC and `GET /v2` over REST, each with an `x-padding` header of `bytes` bytes: whether
/// the gRPC call passed, and the REST status (`None` when the server closed the connection before answering).
async fn with_header_of(
    server: &TestServer,
    http: SocketAddr,
    bytes: usize,
) -> (Result<(), tonic::Status>, Option<u16>) {
    let padding = "p".repeat(bytes);
    let mut client = server.raw_client().await.expect("client");
    let mut request = tonic::Request::new(ferry_proto::inference::ServerMetadataRequest {});
    request.metadata_mut().insert(
        "x-padding",
        tonic::metadata::MetadataValue::try_from(padding.as_str()).expect("metadata"),
    );
    let grpc = client.server_metadata(request).await.map(|_| ());
    let rest = ferry_tests::rest_request_with_headers(http, "GET", "/v2", &[("x-padding", padding)], b"")
        .await
        .ok()
        .map(|reply| reply.status);
    (grpc, rest)
}

/// `--max-header-bytes` bounds request heads on both ports: 16 KiB by default (h2's own default, which
/// tonic keeps; hyper's HTTP/1 default would be about 400 KiB), so a 1 KiB header passes and a 20 KiB one
/// is refused (gRPC fails the call, HTTP/1 answers 431 or closes), and a larger cap lets the 20 KiB one pass.
#[tokio::test]
async fn request_heads_are_bounded_by_max_header_bytes() {
    let server = start(ConnectionLimits::default()).await;
    let http = server.start_http().await.expect("REST");
    let (grpc, rest) = with_header_of(&server, http.address, 1024).await;
    grpc.expect("a 1 KiB header passes on gRPC");
    assert_eq!(rest, Some(200));
    let (grpc, rest) = with_header_of(&server, http.address, 20 * 1024).await;
    let status = grpc.expect_err("a 20 KiB header is over the default on gRPC");
    // h2 answers the stream with 431 (Request Header Fields Too Large), which tonic reports as Unknown.
    assert!(status.message().contains("431"), "{status:?}");
    assert!(matches!(rest, Some(431) | None), "REST answered {rest:?}");

    let limits = ConnectionLimits {
        max_header_bytes: 64 * 1024,
        ..ConnectionLimits::default()
    };
    let server = start(limits).await;
    let http = server.start_http().await.expect("REST");
    let (grpc, rest) = with_header_of(&server, http.address, 20 * 1024).await;
    grpc.expect("a 20 KiB header passes under a 64 KiB cap");
    assert_eq!(rest, Some(200));
}
