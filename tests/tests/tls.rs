//! Transport security end to end: real handshakes on loopback with certificates made for the test.
//!
//! Clients: `tritonclient` gRPC and HTTP (tests/python/test_tls.py), grpcurl with `-cacert`, Ferry's Rust
//! client SDK, and a bare rustls client for REST and metrics. Refusals: a client trusting another CA, an
//! expired server certificate, a wrong server name, and under mutual TLS a client with no certificate or one
//! of another CA. And certificates replaced under load, by SIGHUP and by file change: no request fails and
//! new connections see the new certificate.
//!
//! Triton behaviour pinned: the `--grpc-use-ssl` / `--grpc-use-ssl-mutual` semantics of Triton's
//! `src/grpc/grpc_server.cc` (`SslServerCredentialsOptions`, client certificates required and verified
//! against `--grpc-root-cert` only under mutual TLS), exercised with the client options of Triton's
//! `qa/L0_grpc` SSL tests.

use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_client::{Client, ClientError, InferInput, InferRequest, TlsOptions};
use ferry_server::tls::spawn_reloader;
use ferry_tests::{
    TestServer, example_repository, repo_root, run_pytest,
    tls::{Ca, Leaf, TlsFixture, write_pem},
};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// One inference of `simple` (sum and difference of two INT32 [1, 16] tensors), checked.
async fn infer_simple(client: &Client) -> Result<(), ClientError> {
    let a: Vec<i32> = (0..16).collect();
    let request = InferRequest::new("simple")
        .with_input(InferInput::new("INPUT0", [1, 16]).with_data(&a))
        .with_input(InferInput::new("INPUT1", [1, 16]).with_data(&[1i32; 16]));
    let result = client.infer(request).await?;
    let sum = result.output_as::<i32>("OUTPUT0")?;
    assert_eq!(sum, a.iter().map(|x| x + 1).collect::<Vec<_>>());
    Ok(())
}

fn sdk_tls(fixture: &TlsFixture) -> TlsOptions {
    TlsOptions::new().with_ca_pem(fixture.ca.cert_pem.clone())
}

fn with_client(tls: TlsOptions, leaf: &Leaf) -> TlsOptions {
    tls.with_identity_pem(leaf.cert_pem.clone(), leaf.key_pem.clone())
}

/// The whole error chain of `error`, for matching on the reason a lower layer gave.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(" / ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connects with `tls` and makes one call; the error (of the connection or of the call) if either fails.
async fn call_with(address: SocketAddr, tls: TlsOptions) -> Result<(), String> {
    let client = Client::connect_with_tls(address.to_string(), tls)
        .await
        .map_err(|error| chain(&error))?;
    client
        .server_live()
        .await
        .map(drop)
        .map_err(|error| chain(&error))
}

/// A rustls client trusting `ca` and offering `alpn`.
fn rustls_client(ca: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA PEM"))
        .expect("CA added");
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake with the server at `address`: the DER of the certificate it presented.
async fn presented_certificate(address: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(address).await?;
    let stream = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await?;
    Ok(stream.get_ref().1.peer_certificates().expect("certificate")[0].to_vec())
}

/// `GET path` over a new TLS connection (HTTP/1.1): the status and the body.
async fn https_get(
    address: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let tcp = TcpStream::connect(address).await?;
    let mut stream = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    // A peer that closes without close_notify still sent its whole answer before.
    if let Err(error) = stream.read_to_end(&mut answer).await
        && answer.is_empty()
    {
        return Err(error);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_and_http_over_tls_and_mutual_tls() {
    let fixture = TlsFixture::new();
    let other = Ca::new("Another CA");
    let stranger = other.client("stranger", Vec::new());
    write_pem(fixture.dir(), "other-ca.crt", &other.cert_pem);
    write_pem(fixture.dir(), "other-client.crt", &stranger.cert_pem);
    write_pem(fixture.dir(), "other-client.key", &stranger.key_pem);

    let tls = TestServer::start_with_tls(vec![example_repository()], fixture.ports(false))
        .await
        .expect("TLS server");
    let tls_http = tls.start_http().await.expect("TLS REST");
    let mutual = TestServer::start_with_tls(vec![example_repository()], fixture.ports(true))
        .await
        .expect("mutual TLS server");
    let mutual_http = mutual.start_http().await.expect("mutual TLS REST");

    let status = run_pytest(
        "test_tls.py",
        &[
            ("FERRY_TLS_GRPC_URL", tls.url()),
            ("FERRY_TLS_HTTP_URL", tls_http.url()),
            ("FERRY_MTLS_GRPC_URL", mutual.url()),
            ("FERRY_MTLS_HTTP_URL", mutual_http.url()),
            ("FERRY_TLS_DIR", fixture.dir().display().to_string()),
        ],
    )
    .await;
    tls_http.stop().await;
    mutual_http.stop().await;
    tls.stop().await;
    mutual.stop().await;
    assert!(status.success(), "the tritonclient TLS suite failed: {status}");
}

/// Runs `grpcurl <flags> <address> <command...>`: whether it succeeded, and what it printed.
fn grpcurl(address: SocketAddr, flags: &[&str], command: &[&str]) -> (bool, String) {
    let binary = repo_root().join(".venv/bin/grpcurl");
    assert!(
        binary.exists(),
        "{} is missing: run `make setup`",
        binary.display()
    );
    let output = Command::new(binary)
        .args(flags)
        .arg(address.to_string())
        .args(command)
        .output()
        .expect("grpcurl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_with_cacert_and_with_a_client_certificate() {
    let fixture = TlsFixture::new();
    let ca = fixture.path("ca.crt").display().to_string();
    let server = TestServer::start_with_tls(vec![example_repository()], fixture.ports(false))
        .await
        .expect("server");
    let (ok, listed) = grpcurl(server.address, &["-cacert", &ca], &["list"]);
    assert!(
        ok && listed.contains("inference.GRPCInferenceService"),
        "{listed}"
    );
    let (ok, ready) = grpcurl(
        server.address,
        &["-cacert", &ca],
        &["inference.GRPCInferenceService/ServerReady"],
    );
    assert!(ok && ready.contains("\"ready\": true"), "{ready}");
    // The system's CAs do not know the test CA.
    let (ok, refused) = grpcurl(server.address, &[], &["list"]);
    assert!(!ok && refused.contains("certificate"), "{refused}");
    server.stop().await;

    let mutual = TestServer::start_with_tls(vec![example_repository()], fixture.ports(true))
        .await
        .expect("server");
    let (cert, key) = (
        fixture.path("client.crt").display().to_string(),
        fixture.path("client.key").display().to_string(),
    );
    let (ok, ready) = grpcurl(
        mutual.address,
        &["-cacert", &ca, "-cert", &cert, "-key", &key],
        &["inference.GRPCInferenceService/ServerLive"],
    );
    assert!(ok && ready.contains("\"live\": true"), "{ready}");
    let (ok, refused) = grpcurl(mutual.address, &["-cacert", &ca], &["list"]);
    assert!(!ok, "no client certificate, no answer: {refused}");
    mutual.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_over_tls_and_mutual_tls_and_what_it_refuses() {
    let fixture = TlsFixture::new();
    let server = TestServer::start_with_tls(vec![example_repository()], fixture.ports(false))
        .await
        .expect("server");

    let client = Client::connect_with_tls(server.url(), sdk_tls(&fixture))
        .await
        .expect("TLS connection");
    infer_simple(&client).await.expect("inference over TLS");
    // An https:// URL is the same.
    let client = Client::connect_with_tls(format!("https://{}", server.url()), sdk_tls(&fixture))
        .await
        .expect("https URL");
    assert!(client.server_ready().await.expect("ready"));
    // A plain http:// URL with TLS options is refused before any connection.
    let error = Client::connect_with_tls(format!("http://{}", server.url()), sdk_tls(&fixture))
        .await
        .expect_err("http with TLS options");
    assert!(matches!(error, ClientError::TlsNeedsHttps { .. }), "{error}");

    // Server name: the certificate names localhost and 127.0.0.1; another name is refused.
    call_with(server.address, sdk_tls(&fixture).with_server_name("localhost"))
        .await
        .expect("server name localhost");
    let refused = call_with(
        server.address,
        sdk_tls(&fixture).with_server_name("other.example"),
    )
    .await
    .expect_err("wrong server name");
    assert!(refused.contains("not valid for name"), "{refused}");

    // A client trusting another CA.
    let other = Ca::new("Another CA");
    let refused = call_with(
        server.address,
        TlsOptions::new().with_ca_pem(other.cert_pem.clone()),
    )
    .await
    .expect_err("another CA");
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("unknown issuer"),
        "{refused}"
    );
    // Plain text to a TLS port.
    let plain = async { Client::connect(server.url()).await?.server_live().await };
    assert!(plain.await.is_err(), "plain text gets no answer from a TLS port");
    server.stop().await;

    // Mutual TLS: the test CA's client certificate is accepted; none, or another CA's, is refused.
    let mutual = TestServer::start_with_tls(vec![example_repository()], fixture.ports(true))
        .await
        .expect("server");
    let client = Client::connect_with_tls(mutual.url(), with_client(sdk_tls(&fixture), &fixture.client))
        .await
        .expect("mutual TLS connection");
    infer_simple(&client).await.expect("inference over mutual TLS");
    call_with(mutual.address, sdk_tls(&fixture))
        .await
        .expect_err("no client certificate");
    let stranger = other.client("stranger", Vec::new());
    call_with(mutual.address, with_client(sdk_tls(&fixture), &stranger))
        .await
        .expect_err("a client certificate of another CA");
    mutual.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_that_expires_is_refused_by_clients() {
    let fixture = TlsFixture::new();
    // Valid for two more seconds when the server loads it, expired when the client connects.
    let not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    fixture.install_server(&fixture.ca.server_until("short-lived", not_after));
    let server = TestServer::start_with_tls(vec![example_repository()], fixture.ports(false))
        .await
        .expect("server");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = call_with(server.address, sdk_tls(&fixture))
        .await
        .expect_err("an expired certificate");
    assert!(refused.to_lowercase().contains("expired"), "{refused}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_metrics_over_tls() {
    let fixture = TlsFixture::new();
    let server = TestServer::start_with_tls(vec![example_repository()], fixture.ports(false))
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let metrics = server.start_metrics().await.expect("metrics");
    let config = rustls_client(&fixture.ca.cert_pem, &[b"http/1.1"]);
    let (status, body) = https_get(http.address, Arc::clone(&config), "/v2")
        .await
        .expect("REST over TLS");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\":\"ferry\""), "{body}");
    let (status, body) = https_get(metrics.address, Arc::clone(&config), "/metrics")
        .await
        .expect("metrics over TLS");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nv_inference_count"), "{body}");
    // A client trusting another CA gets nothing.
    let other = rustls_client(&Ca::new("Another CA").cert_pem, &[b"http/1.1"]);
    assert!(https_get(metrics.address, other, "/metrics").await.is_err());
    http.stop().await;
    metrics.stop().await;
    server.stop().await;
}

/// Counts of one kind of request sent during the reload test.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn record<E: std::fmt::Display>(&self, what: &str, result: Result<(), E>) {
        match result {
            Ok(()) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(error) => {
                eprintln!("{what} failed: {error}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_replaced_under_load_by_sighup_and_by_file_change_fail_no_request() {
    let fixture = TlsFixture::new();
    let ports = fixture.ports(false);
    let server = TestServer::start_with_tls(vec![example_repository()], ports.clone())
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    // First SIGHUP alone (no polling), then polling alone (no signal).
    let mut reloader = spawn_reloader(ports.acceptors(), None).expect("SIGHUP handler installed");

    let stop = Arc::new(AtomicBool::new(false));
    let (kept, fresh, rest) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let mut load = tokio::task::JoinSet::new();
    // Requests on connections opened before the first change, multiplexed.
    let client = Client::connect_with_tls(server.url(), sdk_tls(&fixture))
        .await
        .expect("connected");
    for _ in 0..2 {
        let (client, stop, kept) = (client.clone(), Arc::clone(&stop), Arc::clone(&kept));
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                kept.record("inference on a kept connection", infer_simple(&client).await);
            }
        });
    }
    // A new gRPC connection for every request.
    {
        let (url, tls, stop, fresh) = (
            server.url(),
            sdk_tls(&fixture),
            Arc::clone(&stop),
            Arc::clone(&fresh),
        );
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = async {
                    let client = Client::connect_with_tls(url.clone(), tls.clone()).await?;
                    infer_simple(&client).await
                };
                fresh.record("inference on a new connection", result.await);
            }
        });
    }
    // A new REST connection for every request.
    {
        let (address, config, stop, rest) = (
            http.address,
            rustls_client(&fixture.ca.cert_pem, &[b"http/1.1"]),
            Arc::clone(&stop),
            Arc::clone(&rest),
        );
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = match https_get(address, Arc::clone(&config), "/v2/health/ready").await {
                    Ok((200, _)) => Ok(()),
                    Ok((status, body)) => Err(format!("status {status}: {body}")),
                    Err(error) => Err(error.to_string()),
                };
                rest.record("REST request on a new connection", result);
            }
        });
    }

    let grpc_config = rustls_client(&fixture.ca.cert_pem, &[b"h2"]);
    let rest_config = rustls_client(&fixture.ca.cert_pem, &[b"http/1.1"]);
    for rotation in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leaf = fixture.ca.server(&format!("rotation {rotation}"));
        fixture.install_server(&leaf);
        let by_signal = rotation < 2;
        if rotation == 2 {
            reloader.abort();
            reloader = spawn_reloader(ports.acceptors(), Some(Duration::from_millis(200))).expect("reloader");
        }
        if by_signal {
            let status = Command::new("kill")
                .args(["-HUP", &std::process::id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
        let expected = der_of(&leaf.cert_pem);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let grpc = presented_certificate(server.address, Arc::clone(&grpc_config)).await;
            let rest = presented_certificate(http.address, Arc::clone(&rest_config)).await;
            if grpc.as_ref().ok() == Some(&expected) && rest.as_ref().ok() == Some(&expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rotation {rotation} ({}) not seen by new connections within 10 s",
                if by_signal { "SIGHUP" } else { "file change" }
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    reloader.abort();

    for (what, tally) in [("kept gRPC", &kept), ("new gRPC", &fresh), ("new REST", &rest)] {
        let (ok, failed) = tally.counts();
        eprintln!("{what}: {ok} requests answered, {failed} failed");
        assert_eq!(failed, 0, "{what}: {failed} requests failed ({ok} succeeded)");
        assert!(ok > 4, "{what}: only {ok} requests were sent");
    }
    http.stop().await;
    server.stop().await;
}

/// Under mutual TLS the client certificate names the caller for authorisation: with a policy granting
/// `infer` and `metadata` to `test-client` (the fixture certificate's common name) and nothing to anyone
/// else, that certificate infers without a key, while another certificate of the same CA is refused with
/// PERMISSION_DENIED naming the scope, and so is a caller presenting none on a TLS-only port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_caller_for_the_policy() {
    use ferry_server::auth::{Access, AccessOptions};
    let fixture = TlsFixture::new();
    let policy = fixture.path("policy.toml");
    std::fs::write(
        &policy,
        "[[grant]]\nidentity = \"test-client\"\nscopes = [\"infer\", \"metadata\"]\n",
    )
    .expect("policy");
    let access = Access::load(&AccessOptions {
        policy_file: Some(policy),
        ..AccessOptions::default()
    })
    .expect("access");
    let server =
        TestServer::start_with_tls_and_access(vec![example_repository()], fixture.ports(true), access)
            .await
            .expect("server");
    let client = Client::connect_with_tls(server.url(), with_client(sdk_tls(&fixture), &fixture.client))
        .await
        .expect("mutual TLS connection");
    infer_simple(&client).await.expect("test-client may infer");
    let stranger = fixture.ca.client("stranger", Vec::new());
    let client = Client::connect_with_tls(server.url(), with_client(sdk_tls(&fixture), &stranger))
        .await
        .expect("a certificate of the trusted CA connects");
    let refused = infer_simple(&client).await.expect_err("stranger holds no scope");
    let message = chain(&refused);
    assert!(message.contains("PERMISSION_DENIED"), "{message}");
    assert!(
        message.contains("'stranger'") && message.contains("'infer'"),
        "the refusal names the caller and the scope: {message}"
    );
    server.stop().await;
}
