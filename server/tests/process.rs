//! The real `ferry` process: how it stops on a signal, and how it refuses connections beyond its cap.
//!
//! SIGTERM under load: readiness turns false at once while requests are still answered, the listeners
//! close after the drain delay, requests and streams already accepted finish, and ferry exits 0 with a log
//! line for each phase.
//!
//! What counts as accepted: a request the server began to read. A request may fail only if it never got
//! that far: its connection was refused because the listener had closed, HTTP/2 refused its stream
//! (REFUSED_STREAM, or a GOAWAY whose last stream id is below it: both promise the server did not process
//! it), or the client still held it queued for a connection that had been told to go away (hyper hands such
//! a request back unsent). Such failures can only
//! happen after the drain delay, since the listeners stay open until then.

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_proto::{
    GrpcInferenceServiceClient,
    inference::{
        ModelInferRequest, ServerMetadataRequest, ServerReadyRequest, model_infer_request::InferInputTensor,
    },
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const DRAIN: Duration = Duration::from_secs(2);
const EXIT_TIMEOUT_SECS: u64 = 20;

/// A running `ferry` and the JSON log lines it has written so far.
struct Ferry {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Ferry {
    /// Starts ferry on free loopback ports, with `flags` added, and waits until it listens.
    async fn start(flags: &[&str]) -> Ferry {
        let repository = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/model_repository");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["--model-repository", repository, "--log-format", "json"])
            .args(["--grpc-address", "127.0.0.1", "--grpc-port", "0"])
            .args(["--http-address", "127.0.0.1", "--http-port", "0"])
            .args(["--metrics-address", "127.0.0.1", "--metrics-port", "0"])
            .args(flags)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ferry starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addresses, mut listening) = tokio::sync::mpsc::unbounded_channel();
        let written = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let message = entry["fields"]["message"].as_str().unwrap_or_default();
                if let Some(address) = entry["fields"]["address"].as_str()
                    && message.contains("listening")
                {
                    let _ = addresses.send((
                        message.to_owned(),
                        address.parse::<SocketAddr>().expect("address"),
                    ));
                }
                written.lock().expect("log").push(entry);
            }
        });
        let (mut grpc, mut http) = (None, None);
        while grpc.is_none() || http.is_none() {
            let (message, address) = tokio::time::timeout(Duration::from_secs(60), listening.recv())
                .await
                .expect("ferry listens within a minute")
                .expect("ferry runs");
            if message.starts_with("gRPC") {
                grpc = Some(address);
            } else if message.starts_with("HTTP") {
                http = Some(address);
            }
        }
        Ferry {
            child,
            grpc: grpc.expect("gRPC address"),
            http: http.expect("HTTP address"),
            log,
        }
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("ferry is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// The first log entry whose message contains `part`.
    fn entry(&self, part: &str) -> Option<serde_json::Value> {
        let log = self.log.lock().expect("log");
        log.iter()
            .find(|entry| {
                entry["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(part))
            })
            .cloned()
    }

    fn messages(&self) -> Vec<String> {
        let log = self.log.lock().expect("log");
        log.iter()
            .filter_map(|entry| entry["fields"]["message"].as_str().map(str::to_owned))
            .collect()
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connects")
    }
}

fn add(id: &str) -> ModelInferRequest {
    let ones: Vec<u8> = (0..16).flat_map(|_| 1i32.to_le_bytes()).collect();
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    ModelInferRequest {
        model_name: "simple".into(),
        id: id.into(),
        inputs: vec![input("INPUT0"), input("INPUT1")],
        raw_input_contents: vec![Bytes::from(ones.clone()), Bytes::from(ones)],
        ..Default::default()
    }
}

/// One unary call of the load: when it ended and how.
struct Outcome {
    ended: Instant,
    result: Result<(), tonic::Status>,
}

/// Whether a failed call provably never reached the server: its connection was refused; HTTP/2 refused its
/// stream, with REFUSED_STREAM or with a GOAWAY whose last stream id is below it (RFC 9113, 6.8: such streams
/// were not processed; the streams at or below it were all answered before the server closed the connection,
/// as the `shutdown complete` line, which means no connection was cut, confirms); or hyper gave it back
/// unsent because it was still queued on the client when the connection closed.
fn never_accepted(status: &tonic::Status) -> bool {
    let mut text = format!("{status:?}");
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        text.push_str(&format!(" / {error:?}"));
        source = error.source();
    }
    let refused = status.code() == tonic::Code::Unavailable
        && ["Connection refused", "REFUSED_STREAM", "refused stream"]
            .iter()
            .any(|sign| text.contains(sign));
    // tonic reports a stream cut off by a graceful GOAWAY as INTERNAL.
    let above_goaway =
        status.code() == tonic::Code::Internal && text.contains("GoAway(b\"\", NO_ERROR, Remote)");
    let unsent = status.code() == tonic::Code::Cancelled && text.contains(r#"Canceled, "connection closed""#);
    refused || above_goaway || unsent
}

/// The status line's code of a raw HTTP/1.1 request.
async fn http_status(address: SocketAddr, request: &str) -> u16 {
    let mut stream = TcpStream::connect(address).await.expect("REST connects");
    stream.write_all(request.as_bytes()).await.expect("request sent");
    read_status(&mut stream).await
}

async fn read_status(stream: &mut TcpStream) -> u16 {
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer read");
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

const READY: &str = "GET /v2/health/ready HTTP/1.1\r\nhost: ferry\r\nconnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_then_finishes_accepted_requests_and_exits_0() {
    let drain = DRAIN.as_secs().to_string();
    let exit_timeout = EXIT_TIMEOUT_SECS.to_string();
    let mut ferry = Ferry::start(&[
        "--shutdown-drain-secs",
        &drain,
        "--exit-timeout-secs",
        &exit_timeout,
    ])
    .await;
    let control = ferry.channel().await;
    let mut inference = GrpcInferenceServiceClient::new(control.clone());
    let mut health = HealthClient::new(control.clone());
    assert!(
        inference
            .server_ready(ServerReadyRequest {})
            .await
            .expect("ServerReady")
            .into_inner()
            .ready
    );
    assert_eq!(http_status(ferry.http, READY).await, 200);

    // Load: eight clients, each on its own connection, calling as fast as answers come.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for worker in 0..8 {
        let mut client = GrpcInferenceServiceClient::new(ferry.channel().await);
        let (stop, outcomes) = (Arc::clone(&stop), Arc::clone(&outcomes));
        load.push(tokio::spawn(async move {
            let mut call = 0;
            while !stop.load(Ordering::Relaxed) {
                call += 1;
                let result = client
                    .model_infer(add(&format!("{worker}-{call}")))
                    .await
                    .map(|_| ());
                let failed = result.is_err();
                outcomes.lock().expect("outcomes").push(Outcome {
                    ended: Instant::now(),
                    result,
                });
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // Long-lived calls opened before the signal: a health Watch and a ModelStreamInfer stream.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Watch")
        .into_inner();
    let first = watch.message().await.expect("Watch answers").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let (stream_requests, requests) = tokio::sync::mpsc::channel(4);
    let mut stream = inference
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("ModelStreamInfer")
        .into_inner();
    stream_requests.send(add("before")).await.expect("stream open");
    let answer = stream
        .message()
        .await
        .expect("stream answers")
        .expect("an answer");
    assert_eq!(answer.error_message, "");
    // A REST request whose body is still on its way when the listeners close.
    let ones = [1; 16];
    let input =
        |name: &str| serde_json::json!({"name": name, "shape": [1, 16], "datatype": "INT32", "data": ones});
    let body = serde_json::json!({"inputs": [input("INPUT0"), input("INPUT1")]}).to_string();
    let mut slow_rest = TcpStream::connect(ferry.http).await.expect("REST connects");
    let head = format!(
        "POST /v2/models/simple/infer HTTP/1.1\r\nhost: ferry\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow_rest.write_all(head.as_bytes()).await.expect("head sent");
    slow_rest
        .write_all(&body.as_bytes()[..10])
        .await
        .expect("part of the body sent");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    ferry.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Not ready at once, everywhere, while inference goes on.
    assert!(
        !inference
            .server_ready(ServerReadyRequest {})
            .await
            .expect("ServerReady")
            .into_inner()
            .ready
    );
    assert_eq!(http_status(ferry.http, READY).await, 400, "REST readiness");
    let checked = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Check");
    assert_eq!(checked.into_inner().status, ServingStatus::NotServing as i32);
    let changed = tokio::time::timeout(Duration::from_secs(1), watch.message())
        .await
        .expect("Watch reports the change within a second")
        .expect("Watch answers")
        .expect("a status");
    assert_eq!(changed.status, ServingStatus::NotServing as i32);
    assert!(
        signalled.elapsed() < DRAIN,
        "the checks above ran within the drain delay"
    );

    // The listeners close after the drain delay: a new connection is refused from then on.
    let closed = loop {
        if TcpStream::connect(ferry.grpc).await.is_err() {
            break Instant::now();
        }
        assert!(
            signalled.elapsed() < DRAIN + Duration::from_secs(5),
            "the gRPC listener never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        closed >= signalled + DRAIN,
        "the listener closed before the drain delay passed"
    );

    // Accepted before the close, finished after it: the stream and the slow REST request.
    stream_requests
        .send(add("after"))
        .await
        .expect("stream still open");
    let answer = stream
        .message()
        .await
        .expect("stream answers after the close")
        .expect("an answer");
    assert_eq!(answer.error_message, "");
    drop(stream_requests);
    assert!(stream.message().await.expect("the stream ends cleanly").is_none());
    slow_rest
        .write_all(&body.as_bytes()[10..])
        .await
        .expect("rest of the body sent");
    assert_eq!(
        read_status(&mut slow_rest).await,
        200,
        "the REST request accepted before the close"
    );
    drop((watch, inference, health, control));

    let status = tokio::time::timeout(Duration::from_secs(EXIT_TIMEOUT_SECS - 5), ferry.child.wait())
        .await
        .expect("ferry exits once its requests are done, well before the exit timeout")
        .expect("ferry's status");
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.expect("load worker");
    }
    assert_eq!(status.code(), Some(0), "exit status: {status:?}");

    let outcomes = outcomes.lock().expect("outcomes");
    let answered_while_draining = outcomes
        .iter()
        .filter(|o| o.result.is_ok() && o.ended > signalled + Duration::from_millis(300) && o.ended < closed)
        .count();
    assert!(
        answered_while_draining > 0,
        "no inference was answered during the drain delay"
    );
    for outcome in outcomes.iter() {
        if let Err(status) = &outcome.result {
            assert!(
                outcome.ended >= signalled + DRAIN,
                "a call failed before the listeners closed: {status:?}"
            );
            assert!(never_accepted(status), "an accepted call failed: {status:?}");
        }
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    eprintln!(
        "{} calls answered, {answered_while_draining} of them while draining; {failed} refused after close",
        outcomes.len() - failed
    );

    let messages = ferry.messages();
    let position = |phase: &str| {
        messages
            .iter()
            .position(|m| m.contains(phase))
            .unwrap_or_else(|| panic!("no log line for '{phase}' in {messages:#?}"))
    };
    let phases = [
        "shutdown 1/3",
        "shutdown 2/3",
        "shutdown 3/3",
        "shutdown complete",
    ]
    .map(position);
    assert!(phases.is_sorted(), "phases logged out of order: {messages:#?}");
}

/// Sends a keep-alive GET for liveness, reads the answer (headers, then the `{"live": true}` body its
/// Content-Length announces, so that the next answer on the connection starts clean) and says whether it
/// was 200.
async fn live(stream: &mut TcpStream) -> bool {
    let request = b"GET /v2/health/live HTTP/1.1\r\nhost: ferry\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => answer.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if stream.read_exact(&mut body).await.is_err() {
        return false;
    }
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_with_a_warning() {
    let ferry = Ferry::start(&["--max-connections", "2"]).await;
    let limits = ferry
        .entry("connection limits")
        .expect("the limits are logged at start");
    assert_eq!(limits["fields"]["max_connections"], 2, "{limits}");

    let mut first = TcpStream::connect(ferry.http).await.expect("connects");
    let mut second = TcpStream::connect(ferry.http).await.expect("connects");
    assert!(live(&mut first).await && live(&mut second).await);
    let mut third = TcpStream::connect(ferry.http).await.expect("the kernel accepts");
    assert!(!live(&mut third).await, "a connection beyond the cap was served");
    let mut rest = Vec::new();
    third.read_to_end(&mut rest).await.ok();
    assert!(rest.is_empty(), "the refused connection got an answer");
    assert!(live(&mut first).await, "an admitted connection stopped working");

    let deadline = Instant::now() + Duration::from_secs(5);
    let warning = loop {
        if let Some(warning) = ferry.entry("refusing new connections") {
            break warning;
        }
        assert!(
            Instant::now() < deadline,
            "no warning about the refused connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["fields"]["max_connections"], 2, "{warning}");
    assert!(
        warning["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--max-connections")),
        "the warning names the flag: {warning}"
    );
}

/// `--server-name` sets the name ServerMetadata reports on both protocols (a drop-in replacement reports
/// "triton"), and a name that is not 1 to 64 bytes of printable ASCII stops ferry before it loads anything.
#[tokio::test]
async fn server_name_is_configurable_and_checked() {
    let ferry = Ferry::start(&["--server-name", "triton"]).await;
    let mut client = GrpcInferenceServiceClient::new(ferry.channel().await);
    let metadata = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(metadata.name, "triton");
    let mut stream = TcpStream::connect(ferry.http).await.expect("connects");
    stream
        .write_all(b"GET /v2 HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains(r#""name":"triton""#), "{answer}");

    let long = "x".repeat(65);
    for bad in ["", " triton", "tri\nton", "tritón", long.as_str()] {
        let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["--model-repository", "/nonexistent", "--server-name", bad])
            .output()
            .await
            .expect("ferry runs");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{bad:?} is refused as a usage error"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--server-name") && stderr.contains("a server name"),
            "{bad:?}: {stderr}"
        );
    }
}

/// `--cache-config local,size=N` gives the server a cache of N bytes, and Triton's deprecated
/// `--response-cache-byte-size N` the same, with a line saying what to write instead (as Triton's parser).
#[tokio::test]
async fn the_cache_flags_give_the_server_a_cache() {
    for (flags, deprecated) in [
        (["--cache-config", "local,size=4096"], false),
        (["--response-cache-byte-size", "4096"], true),
    ] {
        let ferry = Ferry::start(&flags).await;
        let line = ferry.entry("response cache on").expect("the cache is announced");
        assert_eq!(line["fields"]["bytes"], 4096, "{line}");
        assert_eq!(
            ferry.entry("--cache-config=local,size=4096").is_some(),
            deprecated,
            "{:?}",
            ferry.messages()
        );
    }
    let ferry = Ferry::start(&["--cache-config", "local,size=0"]).await;
    assert!(ferry.entry("response cache on").is_none(), "size 0 is no cache");
}

/// SIGTERM while the models load ends ferry at once with status 0 and a log line, before any listener opens.
/// Before ferry handled signals that early, the signal took its default action: death by SIGTERM here, and
/// for PID 1 in a container nothing at all, so a pod deleted while loading waited for the kubelet's SIGKILL
/// (deploy/container, docs/deployment.md). The copies of `simple` make loading last long enough to interrupt;
/// the ONNX Runtime line is written once the handlers are in place.
#[tokio::test]
async fn sigterm_while_models_load_exits_at_once_with_status_0() {
    let repository = tempfile::tempdir().expect("temp dir");
    let simple = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/model_repository/simple");
    let config = std::fs::read_to_string(format!("{simple}/config.pbtxt")).expect("config");
    let model = std::fs::read(format!("{simple}/1/model.onnx")).expect("model");
    for copy in 0..300 {
        let folder = repository.path().join(format!("simple_{copy}"));
        std::fs::create_dir_all(folder.join("1")).expect("folder");
        let renamed = config.replace("name: \"simple\"", &format!("name: \"simple_{copy}\""));
        std::fs::write(folder.join("config.pbtxt"), renamed).expect("config");
        std::fs::write(folder.join("1/model.onnx"), &model).expect("model");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--model-repository")
        .arg(repository.path())
        .args([
            "--log-format",
            "json",
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            "0",
        ])
        .args(["--http-address", "127.0.0.1", "--http-port", "0"])
        .args(["--metrics-address", "127.0.0.1", "--metrics-port", "0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ferry starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut log = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("ferry logs within a minute")
            .expect("stdout reads")
            .expect("ferry runs until it has found ONNX Runtime");
        let found = line.contains("using ONNX Runtime");
        log.push(line);
        if found {
            break;
        }
    }
    let pid = child.id().expect("ferry is running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("ferry exits within 10 s of SIGTERM")
        .expect("wait");
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(line);
    }
    let log = log.join("\n");
    assert_eq!(status.code(), Some(0), "{status}\n{log}");
    assert!(log.contains("signal while the models load"), "{log}");
    assert!(
        !log.contains("listening"),
        "the signal came after loading:\n{log}"
    );
}

/// The payload log flags reach the server: a model whose config logs every request writes its records
/// under `--payload-log-dir`, one file per `--payload-log-max-file-bytes`, keeping `--payload-log-max-files`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_log_flags_choose_the_folder_and_the_rotation() {
    let repository = tempfile::tempdir().expect("temp dir");
    let logs = tempfile::tempdir().expect("temp dir");
    let simple = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/model_repository/simple");
    let model = repository.path().join("logged");
    std::fs::create_dir_all(model.join("1")).expect("mkdir");
    std::fs::copy(simple.join("1/model.onnx"), model.join("1/model.onnx")).expect("model");
    let config = std::fs::read_to_string(simple.join("config.pbtxt"))
        .expect("config")
        .replace("name: \"simple\"", "name: \"logged\"")
        + "parameters { key: \"ferry.payload_log.rate\" value { string_value: \"1\" } }\n";
    std::fs::write(model.join("config.pbtxt"), config).expect("config");
    let ferry = Ferry::start(&[
        "--model-repository",
        repository.path().to_str().expect("utf-8"),
        "--payload-log-dir",
        logs.path().to_str().expect("utf-8"),
        // One record per file (each is about 900 bytes), two files kept.
        "--payload-log-max-file-bytes",
        "100",
        "--payload-log-max-files",
        "2",
    ])
    .await;
    let mut client = GrpcInferenceServiceClient::new(ferry.channel().await);
    for call in 0..4 {
        let request = ModelInferRequest {
            model_name: "logged".into(),
            ..add(&format!("call-{call}"))
        };
        client.model_infer(request).await.expect("answered");
    }
    let folder = logs.path().join("logged/1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let files = loop {
        let mut files: Vec<String> = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let last = std::fs::read_to_string(folder.join("payload-3.jsonl")).unwrap_or_default();
        if last.contains("call-3") || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(files, ["payload-2.jsonl", "payload-3.jsonl"]);
    let record = std::fs::read_to_string(folder.join("payload-2.jsonl")).expect("file");
    assert!(
        record.contains("\"id\":\"call-2\"") && record.lines().count() == 1,
        "{record}"
    );
    ferry.terminate();
}
