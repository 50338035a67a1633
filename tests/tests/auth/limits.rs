//! Abuse limits end to end (`--rate-limit`, `--max-in-flight-per-identity`): a burst passes and the next call
//! is refused with RESOURCE_EXHAUSTED / 429 and `Retry-After` until the bucket refills; each identity has its
//! own bucket and count while callers without credentials share one; open streams and requests whose body
//! is still coming count as in flight; and nothing is limited by default. Triton has no such limits, so
//! nothing here pins a Triton behaviour; the statuses are gRPC's and HTTP's own for "slow down".

use std::time::Duration;

use ferry_proto::{GrpcInferenceServiceClient, inference as pb};
use ferry_server::auth::{Access, AccessOptions, QuotaOptions, Rate};
use ferry_tests::{TestServer, rest_request_with_headers};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tonic::{Code, Status, metadata::MetadataValue, transport::Channel};

use super::{ADMIN_KEY, VIEWER_KEY, server_options, start};

/// How long a test waits for something that should happen within a second, on a busy shared machine.
const PATIENCE: Duration = Duration::from_secs(20);

async fn client(address: std::net::SocketAddr) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{address}"))
        .await
        .expect("client")
}

/// ServerMetadata (the `metadata` scope) with `key`, if any.
async fn metadata(client: &mut GrpcInferenceServiceClient<Channel>, key: Option<&str>) -> Result<(), Status> {
    let mut request = tonic::Request::new(pb::ServerMetadataRequest {});
    if let Some(key) = key {
        let value = MetadataValue::try_from(format!("Bearer {key}")).expect("metadata");
        request.metadata_mut().insert("authorization", value);
    }
    client.server_metadata(request).await.map(|_| ())
}

/// `GET /v2` (server metadata) with `key`, if any: the status and the `Retry-After` header.
async fn rest_metadata(address: std::net::SocketAddr, key: Option<&str>) -> (u16, Option<String>, String) {
    let headers: Vec<_> = key
        .map(|key| ("authorization", format!("Bearer {key}")))
        .into_iter()
        .collect();
    let reply = rest_request_with_headers(address, "GET", "/v2", &headers, b"")
        .await
        .expect("REST answer");
    let retry_after = reply.header("retry-after").map(str::to_owned);
    (
        reply.status,
        retry_after,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

/// The whole seconds of a refusal's `retry-after`.
fn retry_after(status: &Status) -> u64 {
    status
        .metadata()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no retry-after on {status:?}"))
}

/// Calls `attempt` every 100 ms until it passes; panics after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !attempt().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_passes_then_calls_are_refused_with_retry_after_until_the_bucket_refills() {
    // One token every two seconds, three at once: the fourth call in a row is refused.
    let secured = start(|options| {
        options.quotas = QuotaOptions {
            rate: Some(Rate {
                per_second: 0.5,
                burst: 3,
            }),
            max_in_flight: None,
        };
    })
    .await;
    let mut admin = client(secured.server.address).await;
    for call in 0..3 {
        metadata(&mut admin, Some(ADMIN_KEY))
            .await
            .unwrap_or_else(|status| panic!("call {call} of the burst: {status:?}"));
    }
    let refused = metadata(&mut admin, Some(ADMIN_KEY))
        .await
        .expect_err("over the burst");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("identity 'admin'") && refused.message().contains("--rate-limit 0.5:3"),
        "{refused:?}"
    );
    assert!((1..=2).contains(&retry_after(&refused)), "{refused:?}");
    // REST shares the identity's bucket: 429 with Retry-After, in Ferry's JSON error.
    let (status, retry, body) = rest_metadata(secured.http.address, Some(ADMIN_KEY)).await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(
        body.contains("\"error\"") && body.contains("identity 'admin'"),
        "{body}"
    );
    // Another identity's bucket is untouched, and health is never limited.
    let mut viewer = client(secured.server.address).await;
    metadata(&mut viewer, Some(VIEWER_KEY))
        .await
        .expect("the viewer's own bucket");
    assert_eq!(rest_metadata(secured.http.address, Some(VIEWER_KEY)).await.0, 200);
    admin
        .server_live(pb::ServerLiveRequest {})
        .await
        .expect("health is not limited");
    // The bucket refills: within a few seconds the admin is served again.
    eventually("a refill", || {
        let mut admin = admin.clone();
        async move { metadata(&mut admin, Some(ADMIN_KEY)).await.is_ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_and_requests_whose_body_is_still_coming_count_as_in_flight() {
    let secured = start(|options| {
        options.quotas = QuotaOptions {
            rate: None,
            max_in_flight: Some(2),
        };
    })
    .await;
    let mut admin = client(secured.server.address).await;
    // A stream whose requests never come, open until its sender is dropped.
    let stream = |mut client: GrpcInferenceServiceClient<Channel>| async move {
        let (sender, requests) = tokio::sync::mpsc::channel::<pb::ModelInferRequest>(1);
        let requests = tokio_stream::wrappers::ReceiverStream::new(requests);
        let mut request = tonic::Request::new(requests);
        let value = MetadataValue::try_from(format!("Bearer {ADMIN_KEY}")).expect("metadata");
        request.metadata_mut().insert("authorization", value);
        let responses = client
            .model_stream_infer(request)
            .await
            .expect("a stream opens")
            .into_inner();
        (sender, responses)
    };
    let first = stream(admin.clone()).await;
    let second = stream(admin.clone()).await;
    let refused = metadata(&mut admin, Some(ADMIN_KEY))
        .await
        .expect_err("a third request in flight");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("identity 'admin'")
            && refused.message().contains("--max-in-flight-per-identity 2"),
        "{refused:?}"
    );
    assert_eq!(retry_after(&refused), 1);
    let mut viewer = client(secured.server.address).await;
    metadata(&mut viewer, Some(VIEWER_KEY))
        .await
        .expect("the viewer's own count");
    // A stream gives its place back when it ends: its requests end, then its answers.
    let (sender, mut responses) = first;
    drop(sender);
    assert!(responses.message().await.expect("a clean end").is_none());
    eventually("a closed stream's place given back", || {
        let mut admin = admin.clone();
        async move { metadata(&mut admin, Some(ADMIN_KEY)).await.is_ok() }
    })
    .await;
    // A REST request is in flight from its head on, while its body is still coming (it is refused or
    // admitted before that body is read).
    let mut slow = TcpStream::connect(secured.http.address).await.expect("connects");
    let head = format!(
        "POST /v2/models/simple/infer HTTP/1.1\r\nhost: ferry\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"inputs\""
    );
    slow.write_all(head.as_bytes()).await.expect("head sent");
    eventually("the slow request taking the second place", || async {
        let (status, retry, body) = rest_metadata(secured.http.address, Some(ADMIN_KEY)).await;
        if status == 429 {
            assert_eq!(retry.as_deref(), Some("1"));
            assert!(body.contains("--max-in-flight-per-identity 2"), "{body}");
        }
        status == 429
    })
    .await;
    drop(slow);
    eventually("an abandoned request's place given back", || async {
        rest_metadata(secured.http.address, Some(ADMIN_KEY)).await.0 == 200
    })
    .await;
    drop(second);
}

async fn open_server(quotas: QuotaOptions) -> (TestServer, ferry_tests::HttpFrontEnd) {
    let access = Access::load(&AccessOptions {
        quotas,
        ..AccessOptions::default()
    })
    .expect("access");
    let server = TestServer::start_with_access(server_options(false), access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    (server, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_credentials_share_one_bucket_and_nothing_is_limited_by_default() {
    let (server, http) = open_server(QuotaOptions {
        rate: Some(Rate {
            per_second: 0.01,
            burst: 2,
        }),
        max_in_flight: None,
    })
    .await;
    let mut one = client(server.address).await;
    let mut other = client(server.address).await;
    metadata(&mut one, None).await.expect("first of the burst");
    metadata(&mut one, None).await.expect("second of the burst");
    let refused = metadata(&mut other, None)
        .await
        .expect_err("another connection, the same anonymous bucket");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("identity 'anonymous'"), "{refused:?}");
    assert_eq!(rest_metadata(http.address, None).await.0, 429);

    // Without the flags, as in Triton, a hundred calls in a row from one caller all pass.
    let (server, http) = open_server(QuotaOptions::default()).await;
    let mut caller = client(server.address).await;
    for call in 0..100 {
        metadata(&mut caller, None)
            .await
            .unwrap_or_else(|status| panic!("call {call}: {status:?}"));
    }
    for _ in 0..20 {
        let (status, retry, body) = rest_metadata(http.address, None).await;
        assert_eq!((status, retry), (200, None), "{body}");
    }
}
