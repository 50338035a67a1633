//! Real handshakes on loopback: files to configuration, the REST and gRPC accept paths with TLS and mutual
//! TLS, the client's identity in request extensions, the handshake timeout, and reloads.

#[path = "../../tests/support/pki.rs"]
mod pki;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use pki::{Ca, Leaf, write_pem};
use rcgen::SanType;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::*;
use crate::connection::{ConnectionLimits, Gate};

/// One port's certificate files in a temporary folder.
struct Files {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Files {
    /// A CA and a server certificate `server` signed by it, written as `server.crt`, `server.key`, `ca.crt`.
    fn new(server: &str) -> Files {
        let files = Files {
            dir: tempfile::tempdir().expect("temp dir"),
            ca: Ca::new("Ferry test CA"),
        };
        files.install(&files.ca.server(server));
        write_pem(files.dir.path(), "ca.crt", &files.ca.cert_pem);
        files
    }

    fn install(&self, leaf: &Leaf) {
        write_pem(self.dir.path(), "server.crt", &leaf.cert_pem);
        write_pem(self.dir.path(), "server.key", &leaf.key_pem);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls_files(&self, mutual: bool) -> TlsFiles {
        TlsFiles {
            server_cert: self.path("server.crt"),
            server_key: self.path("server.key"),
            root_cert: mutual.then(|| self.path("ca.crt")),
            mutual,
        }
    }

    fn acceptor(&self, port: Port, mutual: bool) -> Arc<Acceptor> {
        Acceptor::new(port, self.tls_files(mutual), Duration::from_secs(5)).expect("acceptor")
    }
}

/// A rustls client trusting `ca`, presenting `identity` if given, offering `alpn`.
fn client_config(ca: &str, identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA added");
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client chain");
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect_tls(
    address: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// The DER of the certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM")
        .to_vec()
}

/// A REST-like test port: answers `GET /who` with the client certificate the request carries.
struct HttpPort {
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve_who(acceptor: Option<Arc<Acceptor>>) -> HttpPort {
    serve_who_with(acceptor, ConnectionLimits::default()).await
}

async fn serve_who_with(acceptor: Option<Arc<Acceptor>>, limits: ConnectionLimits) -> HttpPort {
    let router = axum::Router::new().route(
        "/who",
        axum::routing::get(|request: axum::extract::Request| async move {
            match request.extensions().get::<ClientCertificate>() {
                Some(certificate) => format!(
                    "{}|{}|{}",
                    certificate.common_name().unwrap_or("-"),
                    certificate.subject(),
                    certificate
                        .sans()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => "anonymous".to_owned(),
            }
        }),
    );
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = tcp.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let gate = Gate::new(&limits);
    let listener = crate::connection::Listener::new(tcp, acceptor);
    tokio::spawn(crate::connection::serve_http(gate, listener, router, async {
        let _ = stopped.await;
    }));
    HttpPort { address, _stop: stop }
}

/// Sends `GET /who` on `stream` (HTTP/1.1, kept alive) and returns the body.
async fn who<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) -> String {
    stream
        .write_all(b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request written");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.expect("answer read");
        assert!(read > 0, "the connection closed before the answer ended");
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|value| value.trim().parse().ok())
                .expect("content-length");
            if answer.len() >= end + 4 + length {
                assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                return text[end + 4..end + 4 + length].to_owned();
            }
        }
    }
}

fn error_text(result: Result<Arc<Acceptor>, TlsError>) -> String {
    result.expect_err("the files are refused").to_string()
}

#[test]
fn wrong_files_are_refused_naming_the_flag_and_the_file_never_the_key() {
    let files = Files::new("server");
    let other = files.ca.server("other");
    let new = |files: TlsFiles| Acceptor::new(Port::Grpc, files, Duration::from_secs(1));

    // A key of another certificate.
    let mismatched = write_pem(files.dir.path(), "other.key", &other.key_pem);
    let message = error_text(new(TlsFiles {
        server_key: mismatched.clone(),
        ..files.tls_files(false)
    }));
    assert!(
        message.contains("--grpc-server-cert and --grpc-server-key"),
        "{message}"
    );
    assert!(message.contains("does not match"), "{message}");

    // A certificate where the key should be: no key, and nothing of the file quoted.
    let message = error_text(new(TlsFiles {
        server_key: files.path("server.crt"),
        ..files.tls_files(false)
    }));
    assert!(message.contains("--grpc-server-key"), "{message}");
    assert!(
        message.contains(&files.path("server.crt").display().to_string()),
        "{message}"
    );
    assert!(message.contains("no PEM private key"), "{message}");

    // A key where the certificate should be: the key's text is never part of a message.
    let message = error_text(new(TlsFiles {
        server_cert: files.path("server.key"),
        ..files.tls_files(false)
    }));
    assert!(message.contains("--grpc-server-cert"), "{message}");
    assert!(message.contains("no PEM certificate"), "{message}");
    let key_body: String = files
        .ca
        .server("x")
        .key_pem
        .lines()
        .nth(1)
        .expect("a key line")
        .to_owned();
    assert!(!message.contains(&key_body));

    // A file that is not there.
    let message = error_text(new(TlsFiles {
        server_cert: files.path("missing.crt"),
        ..files.tls_files(false)
    }));
    assert!(
        message.contains("--grpc-server-cert") && message.contains("cannot read"),
        "{message}"
    );

    // Mutual TLS without a CA file.
    let message = error_text(new(TlsFiles {
        root_cert: None,
        ..files.tls_files(true)
    }));
    assert!(
        message.contains("--grpc-use-ssl-mutual needs --grpc-root-cert"),
        "{message}"
    );

    // A CA file holding no certificate.
    let message = error_text(new(TlsFiles {
        root_cert: Some(files.path("server.key")),
        ..files.tls_files(true)
    }));
    assert!(message.contains("--grpc-root-cert"), "{message}");

    // A file far larger than any certificate.
    let huge = files.path("huge.crt");
    std::fs::write(&huge, vec![b'A'; (MAX_PEM_FILE_BYTES + 1) as usize]).expect("written");
    let message = error_text(new(TlsFiles {
        server_cert: huge,
        ..files.tls_files(false)
    }));
    assert!(message.contains("larger than 1048576 bytes"), "{message}");
}

#[test]
fn an_expired_server_certificate_is_refused() {
    let files = Files::new("server");
    files.install(&files.ca.server_until(
        "expired",
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
    ));
    let message = error_text(Acceptor::new(
        Port::Http,
        files.tls_files(false),
        Duration::from_secs(1),
    ));
    assert!(message.contains("--http-server-cert"), "{message}");
    assert!(message.contains("expired"), "{message}");
}

/// The `ferry` flags alone, for parsing tests.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    tls: TlsFlags,
}

#[test]
fn flags_follow_triton() {
    // Triton's bool spellings; mutual implies TLS (command_line_parser.cc, OPTION_GRPC_USE_SSL_MUTUAL).
    let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()));
    let cli = parse(&[
        "--grpc-use-ssl-mutual=1",
        "--grpc-server-cert",
        "c",
        "--grpc-server-key",
        "k",
    ])
    .expect("parsed");
    assert!(matches!(
        cli.tls.files(Port::Grpc),
        Err(TlsError::MissingRootCert { prefix: "grpc" })
    ));
    let cli = parse(&[
        "--grpc-use-ssl-mutual",
        "--grpc-server-cert",
        "c",
        "--grpc-server-key",
        "k",
        "--grpc-root-cert",
        "ca",
    ])
    .expect("parsed");
    let files = cli.tls.files(Port::Grpc).expect("valid").expect("TLS on");
    assert!(files.mutual);
    assert_eq!(files.root_cert, Some(PathBuf::from("ca")));

    // Without mutual TLS the CA is ignored, as in Triton.
    let cli = parse(&[
        "--http-use-ssl=true",
        "--http-server-cert=c",
        "--http-server-key=k",
        "--http-root-cert=ca",
    ])
    .expect("parsed");
    let files = cli.tls.files(Port::Http).expect("valid").expect("TLS on");
    assert_eq!((files.mutual, files.root_cert), (false, None));
    assert_eq!(cli.tls.files(Port::Grpc).expect("valid"), None);

    let cli = parse(&["--metrics-use-ssl", "--metrics-server-cert=c"]).expect("parsed");
    let error = cli.tls.files(Port::Metrics).expect_err("no key");
    assert_eq!(error.to_string(), "--metrics-use-ssl needs --metrics-server-key");

    // Off: certificate flags alone do nothing, as in Triton.
    let cli = parse(&["--grpc-use-ssl=0", "--grpc-server-cert=c"]).expect("parsed");
    assert_eq!(cli.tls.files(Port::Grpc).expect("valid"), None);
    assert!(parse(&["--grpc-use-ssl=maybe"]).is_err());
    assert_eq!(cli.tls.reload_poll(), Some(DEFAULT_RELOAD_POLL));
    assert!(parse(&["--tls-handshake-timeout-secs=0"]).is_err());
}

#[tokio::test]
async fn rest_over_tls_offers_h2_and_http1_and_needs_no_client_certificate() {
    let files = Files::new("server");
    let port = serve_who(Some(files.acceptor(Port::Http, false))).await;

    let mut stream = connect_tls(
        port.address,
        client_config(&files.ca.cert_pem, None, &[b"http/1.1"]),
    )
    .await
    .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(who(&mut stream).await, "anonymous");

    let stream = connect_tls(
        port.address,
        client_config(&files.ca.cert_pem, None, &[b"h2", b"http/1.1"]),
    )
    .await
    .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // Plain text on a TLS port gets no answer.
    let mut plain = TcpStream::connect(port.address).await.expect("connects");
    plain
        .write_all(b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("written");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!String::from_utf8_lossy(&answer).contains("anonymous"));
}

#[tokio::test]
async fn mutual_tls_puts_the_client_certificate_in_request_extensions_and_refuses_others() {
    let files = Files::new("server");
    let port = serve_who(Some(files.acceptor(Port::Http, true))).await;
    let alice = files.ca.client(
        "alice",
        vec![
            SanType::DnsName("alice.example".try_into().expect("DNS")),
            SanType::URI("spiffe://example.org/alice".try_into().expect("URI")),
            SanType::Rfc822Name("alice@example.org".try_into().expect("email")),
            SanType::IpAddress([10, 0, 0, 7].into()),
        ],
    );
    let mut stream = connect_tls(
        port.address,
        client_config(&files.ca.cert_pem, Some(&alice), &[b"http/1.1"]),
    )
    .await
    .expect("handshake");
    assert_eq!(
        who(&mut stream).await,
        "alice|CN=alice, O=Ferry tests|DNS:alice.example,URI:spiffe://example.org/alice,\
         email:alice@example.org,IP Address:10.0.0.7"
    );

    // No certificate, and one from another CA: the server ends the handshake. Under TLS 1.3 the client
    // learns it on its first read.
    let stranger = Ca::new("Another CA").client("mallory", Vec::new());
    for identity in [None, Some(&stranger)] {
        let refused = match connect_tls(
            port.address,
            client_config(&files.ca.cert_pem, identity, &[b"http/1.1"]),
        )
        .await
        {
            Err(_) => true,
            Ok(mut stream) => {
                let _ = stream
                    .write_all(b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await.is_err() || answer.is_empty()
            }
        };
        assert!(refused, "a client without a certificate of the CA is refused");
    }
}

#[tokio::test]
async fn a_client_that_never_completes_its_handshake_holds_up_nobody_and_is_closed() {
    let files = Files::new("server");
    let acceptor =
        Acceptor::new(Port::Grpc, files.tls_files(false), Duration::from_millis(300)).expect("acceptor");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = tcp.local_addr().expect("address");
    let gate = Gate::new(&ConnectionLimits::default());
    let incoming = crate::connection::incoming(gate, crate::connection::Listener::new(tcp, Some(acceptor)));
    let (ready, handshaken) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut incoming = std::pin::pin!(incoming);
        while let Some(io) = incoming.next().await {
            let _ = ready.send(io.expect("connection"));
        }
    });
    let mut handshaken = handshaken;

    // Connects and sends half a ClientHello, then nothing.
    let mut stalled = TcpStream::connect(address).await.expect("connects");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00])
        .await
        .expect("written");

    let client = connect_tls(address, client_config(&files.ca.cert_pem, None, &[b"h2"]))
        .await
        .expect("a second client completes its handshake meanwhile");
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let io = tokio::time::timeout(Duration::from_secs(2), handshaken.recv())
        .await
        .expect("the completed connection is yielded at once")
        .expect("a connection");
    assert!(io.info().client_certificate().is_none());

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stalled.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the stalled connection is closed after the handshake timeout"
    );
}

#[tokio::test]
async fn grpc_requests_carry_the_client_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let files = Files::new("server");
    let acceptor = files.acceptor(Port::Grpc, true);
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = tcp.local_addr().expect("address");
    let gate = Gate::new(&ConnectionLimits::default());
    let incoming = crate::connection::incoming(gate, crate::connection::Listener::new(tcp, Some(acceptor)));
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = Arc::clone(&seen);
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            // The recording layer sits inside the one that puts the certificate in the extensions.
            .layer(crate::connection::TrackRequestsLayer)
            .layer(tower::util::MapRequestLayer::new(
                move |request: http::Request<tonic::body::Body>| {
                    let name = request
                        .extensions()
                        .get::<ClientCertificate>()
                        .and_then(|certificate| certificate.common_name().map(str::to_owned));
                    record.lock().expect("record").push(name);
                    request
                },
            ))
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    let bob = files.ca.client("bob", Vec::new());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&files.ca.cert_pem))
        .identity(Identity::from_pem(&bob.cert_pem, &bob.key_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .expect("uri")
        .tls_config(tls)
        .expect("TLS")
        .connect()
        .await
        .expect("mutual TLS handshake");
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health over mutual TLS");
    assert_eq!(*seen.lock().expect("seen"), vec![Some("bob".to_owned())]);
}

#[tokio::test]
async fn reload_serves_new_handshakes_the_new_certificate_and_leaves_open_connections_alone() {
    let files = Files::new("first");
    let acceptor = files.acceptor(Port::Http, false);
    let port = serve_who(Some(Arc::clone(&acceptor))).await;
    let config = client_config(&files.ca.cert_pem, None, &[b"http/1.1"]);
    let first_der = der_of(&std::fs::read_to_string(files.path("server.crt")).expect("read"));

    let mut open = connect_tls(port.address, Arc::clone(&config))
        .await
        .expect("handshake");
    assert_eq!(presented(&open), first_der);
    assert_eq!(who(&mut open).await, "anonymous");

    let second = files.ca.server("second");
    files.install(&second);
    assert!(
        tokio::task::spawn_blocking({
            let acceptor = Arc::clone(&acceptor);
            move || acceptor.reload()
        })
        .await
        .expect("reload ran")
        .expect("reloaded")
    );
    let fresh = connect_tls(port.address, Arc::clone(&config))
        .await
        .expect("handshake");
    assert_eq!(presented(&fresh), der_of(&second.cert_pem));
    // The connection opened before goes on, with what it negotiated.
    assert_eq!(who(&mut open).await, "anonymous");
    assert_eq!(presented(&open), first_der);

    // Unchanged files: nothing to do.
    assert!(!acceptor.reload().expect("unchanged"));

    // A bad new pair (key of another certificate): refused, the second certificate stays.
    write_pem(files.dir.path(), "server.key", &files.ca.server("third").key_pem);
    assert!(matches!(acceptor.reload(), Err(TlsError::CertifiedKey { .. })));
    let still = connect_tls(port.address, Arc::clone(&config))
        .await
        .expect("handshake");
    assert_eq!(presented(&still), der_of(&second.cert_pem));
}

#[tokio::test]
async fn polling_applies_a_change_once_two_looks_agree() {
    let files = Files::new("first");
    let first = der_of(&std::fs::read_to_string(files.path("server.crt")).expect("read"));
    let acceptor = files.acceptor(Port::Http, false);
    let port = serve_who(Some(Arc::clone(&acceptor))).await;
    let config = client_config(&files.ca.cert_pem, None, &[b"http/1.1"]);
    let serving = || async {
        let stream = connect_tls(port.address, Arc::clone(&config))
            .await
            .expect("handshake");
        presented(&stream)
    };
    let poll = || {
        let acceptor = Arc::clone(&acceptor);
        async move {
            tokio::task::spawn_blocking(move || acceptor.poll())
                .await
                .expect("poll ran")
        }
    };

    // The certificate is replaced first, the key a poll later: the half-done pair is never tried.
    let second = files.ca.server("second");
    write_pem(files.dir.path(), "server.crt", &second.cert_pem);
    poll().await;
    assert_eq!(serving().await, first, "one look applies nothing");
    write_pem(files.dir.path(), "server.key", &second.key_pem);
    poll().await;
    assert_eq!(serving().await, first, "the files changed since the last look");
    poll().await;
    assert_eq!(
        serving().await,
        der_of(&second.cert_pem),
        "two looks agree: applied"
    );

    // A broken certificate is kept out however often it is looked at.
    std::fs::write(files.path("server.crt"), "not a certificate").expect("written");
    for _ in 0..3 {
        poll().await;
    }
    assert_eq!(serving().await, der_of(&second.cert_pem));
    // Put right, it is applied.
    let third = files.ca.server("third");
    files.install(&third);
    poll().await;
    poll().await;
    assert_eq!(serving().await, der_of(&third.cert_pem));
}

#[test]
fn client_certificate_names_come_from_the_certificate() {
    let ca = Ca::new("CA");
    let leaf = ca.client("carol", vec![SanType::IpAddress("::1".parse().expect("ip"))]);
    let certificate = ClientCertificate::from_der(&der_of(&leaf.cert_pem)).expect("parsed");
    assert_eq!(certificate.common_name(), Some("carol"));
    assert_eq!(
        certificate.sans(),
        &[SubjectAltName::Ip("::1".parse().expect("ip"))]
    );
    assert_eq!(
        SubjectAltName::Ip("::1".parse().expect("ip")).to_string(),
        "IP Address:::1"
    );
    assert!(ClientCertificate::from_der(b"not DER").is_none());
}
