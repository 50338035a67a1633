//! The real `ferry` process with TLS flags: it serves TLS on the ports asked, re-reads its certificate on
//! SIGHUP, keeps the old one (and logs why) when the new one is bad, and refuses to start with flags that
//! cannot work.

#[allow(dead_code)]
#[path = "support/pki.rs"]
mod pki;

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ferry_proto::{GrpcInferenceServiceClient, inference::ServerLiveRequest};
use pki::{Ca, Leaf, write_pem};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const REPOSITORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/model_repository");

/// A running `ferry` and the JSON log lines it has written so far.
struct Ferry {
    child: Child,
    grpc: SocketAddr,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Ferry {
    /// Starts ferry on free loopback ports with `flags` added, and waits until gRPC listens.
    async fn start(flags: &[String]) -> Ferry {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["--model-repository", REPOSITORY, "--log-format", "json"])
            .args(["--grpc-address", "127.0.0.1", "--grpc-port", "0"])
            .args(["--http-address", "127.0.0.1", "--http-port", "0"])
            .args(["--allow-metrics", "false"])
            .args(flags)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ferry starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) {
                    written.lock().expect("log").push(entry);
                }
            }
        });
        let mut ferry = Ferry {
            child,
            grpc: "0.0.0.0:0".parse().expect("address"),
            log,
        };
        let listening = ferry.wait_for("gRPC server listening").await;
        assert_eq!(listening["fields"]["tls"], true, "{listening}");
        ferry.grpc = listening["fields"]["address"]
            .as_str()
            .and_then(|address| address.parse().ok())
            .expect("gRPC address");
        ferry
    }

    /// The first log entry whose message contains `part`, waiting up to 60 s for it.
    async fn wait_for(&self, part: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|entry| {
                    entry["fields"]["message"]
                        .as_str()
                        .is_some_and(|message| message.contains(part))
                })
                .cloned();
            if let Some(entry) = found {
                return entry;
            }
            assert!(Instant::now() < deadline, "no log line containing {part:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn hangup(&self) {
        let pid = self.child.id().expect("ferry is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// How many log entries contain `part`.
    fn count(&self, part: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|entry| {
                entry["fields"]["message"]
                    .as_str()
                    .is_some_and(|message| message.contains(part))
            })
            .count()
    }
}

/// The certificate a new mutual TLS connection to `address` is shown, trusting `ca`, presenting `identity`.
async fn presented(address: SocketAddr, ca: &Ca, identity: &Leaf) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("CA"))
        .expect("CA added");
    let chain =
        vec![CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).expect("client certificate")];
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("client key");
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client identity");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(address).await.expect("connects");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    stream.get_ref().1.peer_certificates().expect("certificate")[0].to_vec()
}

fn der_of(leaf: &Leaf) -> Vec<u8> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
        .expect("PEM")
        .to_vec()
}

/// Whether `address` answers ServerLive over mutual TLS with `identity`.
async fn live(address: SocketAddr, ca: &Ca, identity: &Leaf) -> Result<bool, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert_pem))
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .expect("uri")
        .tls_config(tls)
        .expect("TLS")
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))?;
    GrpcInferenceServiceClient::new(channel)
        .server_live(ServerLiveRequest {})
        .await
        .map(|answer| answer.into_inner().live)
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("Ferry process test CA");
    let first = ca.server("first");
    let client = ca.client("operator", Vec::new());
    let cert = write_pem(dir.path(), "server.crt", &first.cert_pem);
    let key = write_pem(dir.path(), "server.key", &first.key_pem);
    let root = write_pem(dir.path(), "ca.crt", &ca.cert_pem);
    let path = |path: &std::path::Path| path.display().to_string();
    let ferry = Ferry::start(&[
        "--grpc-use-ssl-mutual=1".into(),
        format!("--grpc-server-cert={}", path(&cert)),
        format!("--grpc-server-key={}", path(&key)),
        format!("--grpc-root-cert={}", path(&root)),
        // Only SIGHUP reloads here.
        "--tls-reload-poll-secs=0".into(),
    ])
    .await;
    assert_eq!(live(ferry.grpc, &ca, &client).await, Ok(true));
    assert_eq!(presented(ferry.grpc, &ca, &client).await, der_of(&first));

    // A key that belongs to another certificate: refused, logged with the reason, the first stays.
    let second = ca.server("second");
    write_pem(dir.path(), "server.crt", &second.cert_pem);
    ferry.hangup();
    let refused = ferry.wait_for("cannot reload the TLS certificate").await;
    let error = refused["fields"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("does not match"), "{refused}");
    assert!(!error.contains(first.key_pem.lines().nth(1).expect("key line")));
    assert_eq!(live(ferry.grpc, &ca, &client).await, Ok(true));
    assert_eq!(presented(ferry.grpc, &ca, &client).await, der_of(&first));

    // The matching key: applied on the next SIGHUP.
    write_pem(dir.path(), "server.key", &second.key_pem);
    ferry.hangup();
    ferry.wait_for("TLS certificate reloaded").await;
    assert_eq!(presented(ferry.grpc, &ca, &client).await, der_of(&second));
    assert_eq!(live(ferry.grpc, &ca, &client).await, Ok(true));
    assert_eq!(ferry.count("TLS certificate reloaded"), 1);
}

#[test]
fn flags_that_cannot_work_stop_ferry_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("CA");
    let leaf = ca.server("server");
    let cert = write_pem(dir.path(), "server.crt", &leaf.cert_pem)
        .display()
        .to_string();
    let key = write_pem(dir.path(), "server.key", &leaf.key_pem)
        .display()
        .to_string();
    let run = |flags: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "--model-repository",
                REPOSITORY,
                "--grpc-port",
                "0",
                "--http-port",
                "0",
            ])
            .args(["--allow-metrics", "false"])
            .args(flags)
            .output()
            .expect("ferry runs");
        assert!(!output.status.success(), "ferry {flags:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&["--grpc-use-ssl", "--grpc-server-cert", &cert]);
    assert!(
        stderr.contains("--grpc-use-ssl needs --grpc-server-key"),
        "{stderr}"
    );
    let stderr = run(&[
        "--http-use-ssl-mutual",
        "--http-server-cert",
        &cert,
        "--http-server-key",
        &key,
    ]);
    assert!(
        stderr.contains("--http-use-ssl-mutual needs --http-root-cert"),
        "{stderr}"
    );
    let stderr = run(&[
        "--metrics-use-ssl=true",
        "--metrics-server-cert",
        &key,
        "--metrics-server-key",
        &key,
    ]);
    assert!(
        stderr.contains("--metrics-server-cert") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}
