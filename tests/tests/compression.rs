//! Compression end to end: NVIDIA's Python clients with gzip and deflate on both protocols
//! (`tests/python/test_compression.py`), gRPC answers compressed as Triton's
//! `--grpc-infer-response-compression-level` says, and decompression bombs and corrupt data answered at
//! once with the statuses Triton gives (gRPC: `RESOURCE_EXHAUSTED` and gRPC core's `INTERNAL`; REST: 413,
//! 400, and 415 with `Accept-Encoding` as in Triton's `HandleInfer`, src/http_server.cc), with the memory a
//! bomb takes bounded by the message limit.

use std::{
    collections::HashMap,
    io::Read,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ferry_proto::inference::{
    ModelInferRequest, ModelInferResponse, ModelStreamInferResponse, model_infer_request::InferInputTensor,
};
use ferry_server::{compression::grpc::ResponseCompression, repository::RepositoryOptions};
use ferry_tests::{TestServer, example_repository, run_pytest};
use flate2::{Compress, Compression, FlushCompress};
use prost::Message;
use tokio::net::TcpStream;

/// The message and body limit of the servers here: small, so that bombs are cheap to build.
const LIMIT: usize = 8 << 20;
/// How long a bomb may take to be refused: inflating up to the limit takes milliseconds, inflating what the
/// bomb holds (4 GiB) would take minutes in a debug build.
const FAST: Duration = Duration::from_secs(10);

async fn start(level: ResponseCompression) -> TestServer {
    let repository = RepositoryOptions {
        strict_readiness: false,
        ..RepositoryOptions::new(vec![example_repository()])
    };
    let mut options = TestServer::options(repository, LIMIT).expect("options");
    options.grpc_response_compression = level;
    TestServer::start_with_options(options).await.expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_compresses_requests_and_reads_compressed_answers() {
    let mut options = TestServer::options(
        RepositoryOptions {
            strict_readiness: false,
            ..RepositoryOptions::new(vec![example_repository(), ferry_tests::test_repository()])
        },
        ferry_server::MAX_MESSAGE_BYTES,
    )
    .expect("options");
    options.grpc_response_compression = ResponseCompression::Low;
    let server = TestServer::start_with_options(options).await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    let status = run_pytest(
        "test_compression.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(
        status.success(),
        "the tritonclient compression suite failed: {status}"
    );
}

/// A gzip (`gzip`) or zlib stream of zeros that inflates to `mebibytes` MiB, built without compressing that
/// much: after the first MiB, every further MiB of zeros deflates to the same run of back-references, so
/// one such run is repeated. The stream has no end; an inflater that stops at the limit never gets there.
fn bomb(gzip: bool, mebibytes: usize) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut deflate = Compress::new(Compression::best(), false);
    let run = |deflate: &mut Compress| {
        let mut out = Vec::with_capacity(1 << 16);
        let start = deflate.total_in();
        while deflate.total_in() - start < zeros.len() as u64 {
            let used = (deflate.total_in() - start) as usize;
            deflate
                .compress_vec(&zeros[used..], &mut out, FlushCompress::Sync)
                .expect("deflate");
            out.reserve(1 << 16);
        }
        out
    };
    let first = run(&mut deflate);
    let next = run(&mut deflate);
    let mut stream = if gzip {
        vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]
    } else {
        vec![0x78, 0xda]
    };
    stream.extend_from_slice(&first);
    for _ in 1..mebibytes {
        stream.extend_from_slice(&next);
    }
    stream
}

/// The most memory this process has held (`VmHWM`), after resetting the mark where the kernel allows it.
fn peak_memory(reset: bool) -> u64 {
    if reset {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzEncoder::new(data, Compression::default())
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

fn inflate(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out),
        other => panic!("unexpected coding {other}"),
    }
    .expect("inflates");
    out
}

/// `simple`'s request: INPUT0 = 0..16, INPUT1 = 1s; OUTPUT0 is then 1..17.
fn simple_request(id: &str) -> ModelInferRequest {
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    let raw =
        |values: Vec<i32>| Bytes::from(values.into_iter().flat_map(i32::to_le_bytes).collect::<Vec<u8>>());
    ModelInferRequest {
        model_name: "simple".into(),
        id: id.into(),
        inputs: vec![input("INPUT0"), input("INPUT1")],
        raw_input_contents: vec![raw((0..16).collect()), raw(vec![1; 16])],
        ..Default::default()
    }
}

fn output0(response: &ModelInferResponse) -> Vec<i32> {
    response.raw_output_contents[0]
        .chunks(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A gRPC call's answer as it came over the wire.
struct GrpcReply {
    headers: http::HeaderMap,
    /// `grpc-status`, from the trailers or (trailers-only) the headers.
    status: i32,
    message: String,
    /// The answer's messages: compressed flag and bytes.
    messages: Vec<(u8, Vec<u8>)>,
    /// The HEADERS frame ended the stream: an error answered before any message, as gRPC's C core requires
    /// it to be sent (it refuses a status in headers followed by an empty DATA frame).
    trailers_only: bool,
}

impl GrpcReply {
    /// The messages, inflated as `grpc-encoding` says when flagged.
    fn inflated(&self) -> Vec<Vec<u8>> {
        self.messages
            .iter()
            .map(|(flag, bytes)| match flag {
                0 => bytes.clone(),
                _ => {
                    let encoding = self.headers["grpc-encoding"].to_str().expect("ASCII");
                    inflate(encoding, bytes)
                }
            })
            .collect()
    }
}

/// Calls `method` of Triton's service over a raw HTTP/2 connection, sending `body` (whole gRPC messages,
/// flagged as the test wants) with `headers`.
async fn grpc(address: SocketAddr, method: &str, headers: &[(&str, &str)], body: Vec<u8>) -> GrpcReply {
    let tcp = TcpStream::connect(address).await.expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("ready");
    let mut request = http::Request::post(format!("http://ferry/inference.GRPCInferenceService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).expect("request"), false)
        .expect("stream opens");
    send.reserve_capacity(body.len());
    send.send_data(Bytes::from(body), true).expect("body sent");
    let response = response.await.expect("answer");
    let headers = response.headers().clone();
    let mut received = response.into_body();
    let trailers_only = received.is_end_stream();
    let mut data = Vec::new();
    while let Some(chunk) = received.data().await {
        let chunk = chunk.expect("answer body");
        let _ = received.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = received.trailers().await.expect("trailers").unwrap_or_default();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| headers.get(name))
            .map(|value| value.to_str().expect("ASCII").to_owned())
    };
    let status = field("grpc-status")
        .expect("grpc-status")
        .parse()
        .expect("a code");
    let message = field("grpc-message").unwrap_or_default();
    let mut messages = Vec::new();
    let mut rest = &data[..];
    while rest.len() >= 5 {
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        messages.push((rest[0], rest[5..5 + length].to_vec()));
        rest = &rest[5 + length..];
    }
    assert!(rest.is_empty(), "the answer ends inside a message");
    GrpcReply {
        headers,
        status,
        message,
        messages,
        trailers_only,
    }
}

const ACCEPT_BOTH: (&str, &str) = ("grpc-accept-encoding", "identity,deflate,gzip");

#[tokio::test]
async fn grpc_answers_are_compressed_as_the_level_and_the_client_choose() {
    let request = frame(1, &gzip(&simple_request("compressed").encode_to_vec()));
    let metadata = frame(0, &[]);
    // Triton's level picks the coding as gRPC core does: low the first of gzip, deflate the client reads,
    // medium and high the last; none (the default) never compresses.
    for (level, accept, expected) in [
        (ResponseCompression::None, "identity,deflate,gzip", None),
        (ResponseCompression::Low, "identity,deflate,gzip", Some("gzip")),
        (
            ResponseCompression::High,
            "identity,deflate,gzip",
            Some("deflate"),
        ),
        (ResponseCompression::High, "gzip,identity", Some("gzip")),
        (ResponseCompression::Medium, "identity", None),
    ] {
        let server = start(level).await;
        let headers = [("grpc-encoding", "gzip"), ("grpc-accept-encoding", accept)];
        let reply = grpc(server.address, "ModelInfer", &headers, request.clone()).await;
        assert_eq!(reply.status, 0, "{level:?} {accept}: {}", reply.message);
        let encoding = reply
            .headers
            .get("grpc-encoding")
            .map(|value| value.to_str().expect("ASCII"));
        assert_eq!(encoding, expected, "{level:?} {accept}");
        assert_eq!(reply.messages.len(), 1);
        assert_eq!(
            reply.messages[0].0,
            u8::from(expected.is_some()),
            "{level:?} {accept}"
        );
        let response = ModelInferResponse::decode(&reply.inflated()[0][..]).expect("a ModelInferResponse");
        assert_eq!(
            output0(&response),
            (1..17).collect::<Vec<_>>(),
            "{level:?} {accept}"
        );

        // Like Triton, only inference answers are compressed.
        let reply = grpc(server.address, "ServerMetadata", &headers, metadata.clone()).await;
        assert_eq!(reply.status, 0, "{}", reply.message);
        assert!(!reply.headers.contains_key("grpc-encoding"));
        assert_eq!(reply.messages[0].0, 0);

        // Every answer of a stream is compressed with the stream's coding.
        let stream = [
            frame(1, &gzip(&simple_request("first").encode_to_vec())),
            frame(0, &simple_request("second").encode_to_vec()),
        ]
        .concat();
        let reply = grpc(server.address, "ModelStreamInfer", &headers, stream).await;
        assert_eq!(reply.status, 0, "{}", reply.message);
        let answers: Vec<ModelStreamInferResponse> = reply
            .inflated()
            .iter()
            .map(|bytes| ModelStreamInferResponse::decode(&bytes[..]).expect("a stream answer"))
            .collect();
        // Answers come as requests finish, in any order.
        let mut ids: Vec<&str> = answers
            .iter()
            .map(|answer| {
                assert_eq!(answer.error_message, "");
                let response = answer.infer_response.as_ref().expect("a response");
                assert_eq!(output0(response), (1..17).collect::<Vec<_>>());
                response.id.as_str()
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["first", "second"]);
        for (flag, _) in &reply.messages {
            assert_eq!(*flag, u8::from(expected.is_some()), "{level:?} {accept}");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn a_grpc_decompression_bomb_is_resource_exhausted_at_once_with_bounded_memory() {
    let server = start(ResponseCompression::None).await;
    for (encoding, gzip) in [("gzip", true), ("deflate", false)] {
        // 4 GiB of zeros in about 4 MiB: within the 8 MiB limit compressed, far beyond it inflated.
        let payload = bomb(gzip, 4096);
        assert!(payload.len() < LIMIT, "{} bytes", payload.len());
        for method in ["ModelInfer", "ModelStreamInfer"] {
            let before = peak_memory(true);
            let started = Instant::now();
            let reply = grpc(
                server.address,
                method,
                &[("grpc-encoding", encoding), ACCEPT_BOTH],
                frame(1, &payload),
            )
            .await;
            let took = started.elapsed();
            let grown = peak_memory(false).saturating_sub(before);
            assert_eq!(
                reply.status,
                tonic::Code::ResourceExhausted as i32,
                "{method} {encoding}: {}",
                reply.message
            );
            assert!(
                reply.message.contains(&LIMIT.to_string())
                    && reply.message.contains("--grpc-max-message-bytes"),
                "{}",
                reply.message
            );
            assert_eq!(reply.trailers_only, method == "ModelInfer", "{method} {encoding}");
            assert!(took < FAST, "{method} {encoding}: refused after {took:?}");
            assert!(
                grown < 1 << 30,
                "{method} {encoding}: the process grew by {grown} bytes"
            );
        }
    }
    // A compressed message larger than the limit on the wire is refused from its prefix alone.
    let mut claimed = vec![1];
    claimed.extend_from_slice(&(LIMIT as u32 + 1).to_be_bytes());
    claimed.extend_from_slice(&[0x78, 0xda]);
    let reply = grpc(
        server.address,
        "ModelInfer",
        &[("grpc-encoding", "deflate")],
        claimed,
    )
    .await;
    assert_eq!(
        reply.status,
        tonic::Code::ResourceExhausted as i32,
        "{}",
        reply.message
    );

    // The server goes on answering.
    let reply = grpc(
        server.address,
        "ModelInfer",
        &[("grpc-encoding", "gzip")],
        frame(1, &gzip(&simple_request("after").encode_to_vec())),
    )
    .await;
    assert_eq!(reply.status, 0, "{}", reply.message);
    server.stop().await;
}

#[tokio::test]
async fn corrupt_grpc_messages_are_internal_as_in_grpc_core() {
    let server = start(ResponseCompression::None).await;
    let valid = gzip(&simple_request("cut").encode_to_vec());
    for (case, encoding, payload) in [
        ("not gzip at all", "gzip", b"plain bytes, not compressed".to_vec()),
        ("cut short", "gzip", valid[..valid.len() - 6].to_vec()),
        ("empty", "deflate", Vec::new()),
    ] {
        let reply = grpc(
            server.address,
            "ModelInfer",
            &[("grpc-encoding", encoding)],
            frame(1, &payload),
        )
        .await;
        assert_eq!(
            reply.status,
            tonic::Code::Internal as i32,
            "{case}: {}",
            reply.message
        );
        assert!(reply.trailers_only, "{case}");
        assert!(reply.message.contains("decompress"), "{case}: {}", reply.message);
    }
    // A coding the server does not read: UNIMPLEMENTED, as gRPC answers it.
    let reply = grpc(
        server.address,
        "ModelInfer",
        &[("grpc-encoding", "snappy")],
        frame(1, b"x"),
    )
    .await;
    assert_eq!(
        reply.status,
        tonic::Code::Unimplemented as i32,
        "{}",
        reply.message
    );
    server.stop().await;
}

/// A REST answer: status, headers (names in lower case) and body.
struct HttpReply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl HttpReply {
    fn json(&self) -> serde_json::Value {
        let body = match self.headers.get("content-encoding") {
            Some(encoding) => inflate(encoding, &self.body),
            None => self.body.clone(),
        };
        serde_json::from_slice(&body).expect("a JSON body")
    }
}

async fn post(address: SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> HttpReply {
    let reply = ferry_tests::rest_request_with_headers(address, "POST", path, headers, body)
        .await
        .expect("a complete HTTP answer");
    HttpReply {
        status: reply.status,
        headers: reply.headers.into_iter().collect(),
        body: reply.body,
    }
}

fn simple_json() -> serde_json::Value {
    serde_json::json!({
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": (0..16).collect::<Vec<i32>>()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": vec![1; 16]},
        ]
    })
}

const INFER: &str = "/v2/models/simple/infer";

#[tokio::test]
async fn a_rest_decompression_bomb_is_413_at_once_with_bounded_memory() {
    let server = start(ResponseCompression::None).await;
    let http = server.start_http().await.expect("REST front end");
    for (encoding, gzip) in [("gzip", true), ("deflate", false)] {
        let payload = bomb(gzip, 4096);
        let before = peak_memory(true);
        let started = Instant::now();
        let reply = post(
            http.address,
            INFER,
            &[("Content-Encoding", encoding.into())],
            &payload,
        )
        .await;
        let took = started.elapsed();
        let grown = peak_memory(false).saturating_sub(before);
        assert_eq!(
            reply.status,
            413,
            "{encoding}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let error = reply.json()["error"].as_str().expect("an error").to_owned();
        assert!(
            error.contains(&LIMIT.to_string()) && error.contains("--grpc-max-message-bytes"),
            "{error}"
        );
        assert!(took < FAST, "{encoding}: refused after {took:?}");
        assert!(grown < 1 << 30, "{encoding}: the process grew by {grown} bytes");
    }
    let reply = post(http.address, INFER, &[], simple_json().to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "the server goes on");
    http.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn rest_reads_and_writes_gzip_and_deflate_as_triton_does() {
    let server = start(ResponseCompression::None).await;
    let http = server.start_http().await.expect("REST front end");
    let json = simple_json().to_string();
    let expected = serde_json::json!((1..17).collect::<Vec<i32>>());

    // Request and answer codings, chosen by Accept-Encoding as Triton does (highest q, first on a tie).
    for (content, accept, answered) in [
        ("gzip", None, None),
        ("deflate", Some("gzip"), Some("gzip")),
        ("gzip", Some("gzip;q=0.5, deflate"), Some("deflate")),
        ("identity", Some("identity, gzip"), None),
        ("deflate", Some("br"), None),
    ] {
        let body = match content {
            "gzip" => gzip(json.as_bytes()),
            "deflate" => ferry_server::compression::compress(
                ferry_server::compression::Encoding::Deflate,
                json.as_bytes(),
            ),
            _ => json.clone().into_bytes(),
        };
        let mut headers = vec![("Content-Encoding", content.to_owned())];
        if let Some(accept) = accept {
            headers.push(("Accept-Encoding", accept.to_owned()));
        }
        let reply = post(http.address, INFER, &headers, &body).await;
        assert_eq!(
            reply.status,
            200,
            "{content} {accept:?}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(
            reply.headers.get("content-encoding").map(String::as_str),
            answered,
            "{accept:?}"
        );
        assert_eq!(
            reply.json()["outputs"][0]["data"],
            expected,
            "{content} {accept:?}"
        );
    }

    // Binary tensors: Inference-Header-Content-Length counts in the inflated body, in the request and in
    // the answer.
    let header = serde_json::json!({
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut raw = header.clone().into_bytes();
    raw.extend((0..16).flat_map(i32::to_le_bytes));
    raw.extend([1i32; 16].iter().flat_map(|v| v.to_le_bytes()));
    let headers = [
        ("Content-Encoding", "gzip".to_owned()),
        ("Accept-Encoding", "deflate".to_owned()),
        ("Inference-Header-Content-Length", header.len().to_string()),
    ];
    let reply = post(http.address, INFER, &headers, &gzip(&raw)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers["content-encoding"], "deflate");
    let body = inflate("deflate", &reply.body);
    let json_length: usize = reply.headers["inference-header-content-length"]
        .parse()
        .expect("a length");
    let outputs: Vec<i32> = body[json_length..]
        .chunks(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(outputs, (1..17).collect::<Vec<_>>());

    // Data that does not inflate: 400 (Triton fails to parse what it inflated); an unknown coding: 415 with
    // the codings Triton lists.
    for (case, encoding, body) in [
        ("not gzip", "gzip", json.clone().into_bytes()),
        ("cut short", "deflate", gzip(json.as_bytes())[..20].to_vec()),
        ("empty", "gzip", Vec::new()),
    ] {
        let reply = post(
            http.address,
            INFER,
            &[("Content-Encoding", encoding.into())],
            &body,
        )
        .await;
        assert_eq!(reply.status, 400, "{case}");
        let error = reply.json()["error"].as_str().expect("an error").to_owned();
        assert!(error.contains("inflate"), "{case}: {error}");
    }
    let reply = post(
        http.address,
        INFER,
        &[("Content-Encoding", "br".into())],
        json.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 415);
    assert_eq!(reply.headers["accept-encoding"], "gzip, deflate");
    assert!(reply.json()["error"].as_str().expect("an error").contains("'br'"));
    // Errors are never compressed.
    let reply = post(
        http.address,
        "/v2/models/no_such_model/infer",
        &[("Accept-Encoding", "gzip".into())],
        json.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 404);
    assert!(!reply.headers.contains_key("content-encoding"));
    http.stop().await;
    server.stop().await;
}
