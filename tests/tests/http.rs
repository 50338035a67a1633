//! End-to-end tests of the HTTP/REST front end: the real server on loopback ports, real ONNX Runtime, and a
//! plain HTTP/1.1 client over a TCP stream, so that malformed requests go out exactly as written. Answers are
//! checked against the gRPC front end where both protocols must agree, and Python's `tritonclient.http` runs
//! `tests/python/test_http.py` against the same server.

use std::{collections::HashMap, net::SocketAddr};

use bytes::Bytes;
use ferry_proto::inference::{
    ModelInferRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
    model_infer_request::InferInputTensor,
};
use ferry_tests::{HttpFrontEnd, TestServer, run_pytest};
use serde_json::{Value, json};

/// An HTTP answer as received.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The message of a Triton error body, checking the body has that form.
    fn error(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        let body = self.json();
        let object = body.as_object().expect("an error body is an object");
        assert_eq!(object.len(), 1, "{body}");
        body["error"].as_str().expect("error is a string").to_owned()
    }

    /// The JSON header and the binary part of a binary-extension answer.
    fn split_binary(&self) -> (Value, &[u8]) {
        assert_eq!(self.header("content-type"), Some("application/octet-stream"));
        let length: usize = self
            .header("inference-header-content-length")
            .expect("binary answers carry the header length")
            .parse()
            .expect("a number");
        let header = serde_json::from_slice(&self.body[..length]).expect("JSON header");
        (header, &self.body[length..])
    }
}

/// Sends one request with `Connection: close` and reads the whole answer (which must carry its length).
async fn send(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let reply = ferry_tests::rest_request_with_headers(address, method, path, headers, body)
        .await
        .expect("a complete HTTP answer with the length it announces");
    Reply {
        status: reply.status,
        headers: reply.headers.into_iter().collect(),
        body: reply.body,
    }
}

async fn get(http: &HttpFrontEnd, path: &str) -> Reply {
    send(http.address, "GET", path, &[], b"").await
}

async fn post_json(http: &HttpFrontEnd, path: &str, body: &Value) -> Reply {
    send(http.address, "POST", path, &[], body.to_string().as_bytes()).await
}

/// Posts `header` followed by `blobs`, with `Inference-Header-Content-Length` set to the header's length.
async fn post_binary(http: &HttpFrontEnd, path: &str, header: &Value, blobs: &[&[u8]]) -> Reply {
    let json = header.to_string();
    let length = json.len().to_string();
    post_raw(http, path, Some(&length), json.into_bytes(), blobs).await
}

async fn post_raw(
    http: &HttpFrontEnd,
    path: &str,
    length: Option<&str>,
    json: Vec<u8>,
    blobs: &[&[u8]],
) -> Reply {
    let mut body = json;
    for blob in blobs {
        body.extend_from_slice(blob);
    }
    let headers: Vec<(&str, String)> = length
        .map(|l| ("Inference-Header-Content-Length", l.to_owned()))
        .into_iter()
        .collect();
    send(http.address, "POST", path, &headers, &body).await
}

async fn start() -> (TestServer, HttpFrontEnd) {
    let server = TestServer::with_all_models().await.expect("server");
    let http = server.start_http().await.expect("REST front end");
    (server, http)
}

async fn stop(server: TestServer, http: HttpFrontEnd) {
    http.stop().await;
    server.stop().await;
}

fn le_bytes<const N: usize, T>(values: &[T], to: fn(&T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(to).collect()
}

fn i32_values(raw: &[u8]) -> Vec<i32> {
    raw.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn output<'a>(response: &'a Value, name: &str) -> &'a Value {
    response["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("output {name} missing from {response}"))
}

fn simple_inputs(a: &[i32], b: &[i32]) -> Value {
    json!([
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [a]},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b},
    ])
}

#[tokio::test]
async fn health_metadata_config_statistics_and_index() {
    let (server, http) = start().await;
    // The KServe v2 REST spec's health bodies, which KServe's InferenceRESTClient reads (`is_server_live`,
    // `is_server_ready` in kserve/inference_client.py); Triton (`HandleServerHealth`) sends 200 with no body,
    // and its clients look only at the status.
    for (path, body) in [
        ("/v2/health/live", json!({"live": true})),
        ("/v2/health/ready", json!({"ready": true})),
    ] {
        let health = get(&http, path).await;
        assert_eq!(health.status, 200, "{path}");
        assert_eq!(health.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(health.json(), body, "{path}");
    }

    let metadata = get(&http, "/v2").await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.header("content-type"), Some("application/json"));
    let metadata = metadata.json();
    assert_eq!(metadata["name"], "ferry");
    assert!(
        metadata["extensions"]
            .as_array()
            .expect("list")
            .contains(&json!("model_repository"))
    );

    let model = get(&http, "/v2/models/mlp_classifier").await.json();
    assert_eq!(model["versions"], json!(["2", "1"]));
    assert_eq!(model["platform"], "onnxruntime_onnx");
    assert_eq!(
        model["inputs"],
        json!([{"name": "features", "datatype": "FP32", "shape": [-1, 32]}])
    );
    let one = get(&http, "/v2/models/mlp_classifier/versions/1").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["name"], "mlp_classifier");

    for (path, status) in [
        ("/v2/models/simple/ready", 200),
        ("/v2/models/mlp_classifier/versions/1/ready", 200),
        ("/v2/models/mlp_classifier/versions/3/ready", 400),
        ("/v2/models/corrupt/ready", 400),
        ("/v2/models/nope/ready", 400),
    ] {
        let reply = get(&http, path).await;
        assert_eq!(reply.status, status, "{path}");
        if status == 400 {
            assert!(reply.error().contains("not ready"), "{path}");
        }
    }

    let config = get(&http, "/v2/models/linear_auto/config").await.json();
    assert_eq!(config["name"], "linear_auto");
    assert_eq!(config["max_batch_size"], 4);
    assert_eq!(config["input"][0]["name"], "x");
    assert_eq!(config["input"][0]["dims"], json!([8]), "int64 arrays are numbers");
    assert_eq!(config["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(config["output"][0]["dims"], json!([3]));

    // Run one request so that the statistics have something to count.
    let reply = post_json(
        &http,
        "/v2/models/simple/infer",
        &json!({"inputs": simple_inputs(&[1; 16], &[2; 16])}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let stats = get(&http, "/v2/models/simple/stats").await.json();
    let simple = &stats["model_stats"][0];
    assert_eq!(
        (&simple["name"], &simple["version"]),
        (&json!("simple"), &json!("1"))
    );
    assert_eq!(simple["inference_stats"]["success"]["count"], 1);
    assert!(
        simple["inference_stats"]["success"]["ns"]
            .as_u64()
            .expect("a number")
            > 0
    );
    let all = get(&http, "/v2/models/stats").await.json();
    let names: Vec<&str> = all["model_stats"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"simple") && names.contains(&"mlp_classifier"),
        "{names:?}"
    );
    let v2 = get(&http, "/v2/models/mlp_classifier/versions/2/stats")
        .await
        .json();
    assert_eq!(v2["model_stats"].as_array().expect("list").len(), 1);

    let index = send(http.address, "POST", "/v2/repository/index", &[], b"")
        .await
        .json();
    let row = |name: &str| {
        index
            .as_array()
            .expect("the index is an array")
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {index}"))
            .clone()
    };
    assert_eq!(row("simple")["state"], "READY");
    assert_eq!(row("simple")["version"], "1");
    assert_eq!(row("corrupt")["state"], "UNAVAILABLE");
    assert!(
        row("corrupt")["reason"]
            .as_str()
            .expect("text")
            .contains("model.onnx")
    );
    let ready = post_json(&http, "/v2/repository/index", &json!({"ready": true}))
        .await
        .json();
    let ready = ready.as_array().expect("array");
    assert!(ready.iter().all(|m| m["state"] == "READY") && ready.iter().any(|m| m["name"] == "simple"));

    // Triton's statuses and texts (`HttpCodeFromError` and the handlers of http_server.cc).
    let unknown = get(&http, "/v2/models/no_such_model").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.error(),
        "Request for unknown model: 'no_such_model' is not found"
    );
    let unknown_version = get(&http, "/v2/models/simple/versions/9/config").await;
    assert_eq!(unknown_version.status, 404);
    assert_eq!(
        unknown_version.error(),
        "Request for unknown model: 'simple' version 9 is not found"
    );
    let wrong_method = send(http.address, "DELETE", "/v2/models/simple", &[], b"").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.error(), "Method Not Allowed");
    let no_route = get(&http, "/v3/anything").await;
    assert_eq!(no_route.status, 400);
    assert!(
        no_route.body.is_empty(),
        "Triton answers an unknown path with no body"
    );
    stop(server, http).await;
}

#[tokio::test]
async fn json_inference_on_simple() {
    let (server, http) = start().await;
    let a: Vec<i32> = (0..16).collect();
    let b: Vec<i32> = (0..16).map(|x| 100 - 3 * x).collect();
    let reply = post_json(
        &http,
        "/v2/models/simple/infer",
        &json!({"id": "req-7", "inputs": simple_inputs(&a, &b)}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("inference-header-content-length").is_none());
    let response = reply.json();
    assert_eq!(response["model_name"], "simple");
    assert_eq!(response["model_version"], "1");
    assert_eq!(response["id"], "req-7");
    let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let difference: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert_eq!(output(&response, "OUTPUT0")["data"], json!(sum));
    assert_eq!(output(&response, "OUTPUT0")["shape"], json!([1, 16]));
    assert_eq!(output(&response, "OUTPUT0")["datatype"], "INT32");
    assert_eq!(output(&response, "OUTPUT1")["data"], json!(difference));

    // A subset of outputs, by version, without an id (which the response then leaves out).
    let reply = post_json(
        &http,
        "/v2/models/simple/versions/1/infer",
        &json!({"inputs": simple_inputs(&[5; 16], &[2; 16]), "outputs": [{"name": "OUTPUT1"}]}),
    )
    .await
    .json();
    assert_eq!(reply["outputs"].as_array().expect("list").len(), 1);
    assert_eq!(reply["outputs"][0]["data"], json!(vec![3; 16]));
    assert!(reply.get("id").is_none());

    // Many clients at once each get their own answer.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let address = http.address;
            tokio::spawn(async move {
                let body = json!({"id": format!("r{i}"), "inputs": simple_inputs(&[i; 16], &[1; 16])});
                let reply = send(
                    address,
                    "POST",
                    "/v2/models/simple/infer",
                    &[],
                    body.to_string().as_bytes(),
                )
                .await;
                let response = reply.json();
                assert_eq!(response["id"], format!("r{i}"));
                assert_eq!(output(&response, "OUTPUT0")["data"], json!(vec![i + 1; 16]));
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    stop(server, http).await;
}

#[tokio::test]
async fn json_inference_on_mlp_classifier_matches_grpc() {
    let (server, http) = start().await;
    let features: Vec<Vec<f32>> = (0..2)
        .map(|row| (0..32).map(|i| (i as f32 - 16.0) / 10.0 + row as f32).collect())
        .collect();
    for version in ["", "1", "2"] {
        let path = if version.is_empty() {
            "/v2/models/mlp_classifier/infer".to_owned()
        } else {
            format!("/v2/models/mlp_classifier/versions/{version}/infer")
        };
        let body =
            json!({"inputs": [{"name": "features", "shape": [2, 32], "datatype": "FP32", "data": features}]});
        let reply = post_json(&http, &path, &body).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let response = reply.json();
        assert_eq!(
            response["model_version"],
            if version.is_empty() { "2" } else { version }
        );
        let probabilities = output(&response, "probabilities");
        assert_eq!(probabilities["shape"], json!([2, 10]));
        let values: Vec<f32> = probabilities["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        for row in values.chunks(10) {
            let total: f32 = row.iter().sum();
            assert!((total - 1.0).abs() < 1e-4, "softmax rows sum to 1: {total}");
        }
        let label = output(&response, "label");
        assert_eq!(
            (&label["datatype"], &label["shape"]),
            (&json!("INT64"), &json!([2, 1]))
        );

        // The same request over gRPC gives bit-identical probabilities: JSON floats round-trip exactly.
        let mut client = server.raw_client().await.expect("client");
        let flat: Vec<f32> = features.concat();
        let grpc = client
            .model_infer(ModelInferRequest {
                model_name: "mlp_classifier".into(),
                model_version: version.into(),
                inputs: vec![InferInputTensor {
                    name: "features".into(),
                    datatype: "FP32".into(),
                    shape: vec![2, 32],
                    parameters: HashMap::new(),
                    contents: None,
                }],
                raw_input_contents: vec![Bytes::from(le_bytes(&flat, |v| v.to_le_bytes()))],
                ..Default::default()
            })
            .await
            .expect("gRPC infer")
            .into_inner();
        let position = grpc
            .outputs
            .iter()
            .position(|o| o.name == "probabilities")
            .expect("output");
        let expected: Vec<f32> = grpc.raw_output_contents[position]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(values, expected, "version '{version}'");
    }
    stop(server, http).await;
}

#[tokio::test]
async fn binary_tensors_in_and_out() {
    let (server, http) = start().await;
    let a: Vec<i32> = (0..16).map(|x| x * 7).collect();
    let b: Vec<i32> = (0..16).map(|x| -x).collect();
    let a_raw = le_bytes(&a, |v| v.to_le_bytes());
    let b_raw = le_bytes(&b, |v| v.to_le_bytes());
    let binary_input = |name: &str| json!({"name": name, "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}});
    let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let difference: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();

    // Both inputs binary, all outputs binary.
    let header = json!({
        "inputs": [binary_input("INPUT0"), binary_input("INPUT1")],
        "parameters": {"binary_data_output": true}
    });
    let reply = post_binary(&http, "/v2/models/simple/infer", &header, &[&a_raw, &b_raw]).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let (response, blobs) = reply.split_binary();
    assert_eq!(output(&response, "OUTPUT0")["parameters"]["binary_data_size"], 64);
    assert!(output(&response, "OUTPUT0").get("data").is_none());
    assert_eq!(blobs.len(), 128);
    assert_eq!(i32_values(&blobs[..64]), sum);
    assert_eq!(i32_values(&blobs[64..]), difference);

    // One input JSON and one binary; OUTPUT1 binary by its own parameter, OUTPUT0 JSON.
    let header = json!({
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a},
            binary_input("INPUT1"),
        ],
        "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1", "parameters": {"binary_data": true}}]
    });
    let reply = post_binary(&http, "/v2/models/simple/infer", &header, &[&b_raw]).await;
    let (response, blobs) = reply.split_binary();
    assert_eq!(output(&response, "OUTPUT0")["data"], json!(sum));
    assert_eq!(i32_values(blobs), difference);

    // binary_data_output, overridden to JSON for one output.
    let header = json!({
        "inputs": [binary_input("INPUT0"), binary_input("INPUT1")],
        "parameters": {"binary_data_output": true},
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": false}}, {"name": "OUTPUT1"}]
    });
    let reply = post_binary(&http, "/v2/models/simple/infer", &header, &[&a_raw, &b_raw]).await;
    let (response, blobs) = reply.split_binary();
    assert_eq!(output(&response, "OUTPUT0")["data"], json!(sum));
    assert_eq!(i32_values(blobs), difference);

    // Binary inputs with all outputs JSON: a plain JSON answer.
    let header = json!({"inputs": [binary_input("INPUT0"), binary_input("INPUT1")]});
    let reply = post_binary(&http, "/v2/models/simple/infer", &header, &[&a_raw, &b_raw]).await;
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(output(&reply.json(), "OUTPUT1")["data"], json!(difference));
    stop(server, http).await;
}

/// Every datatype through identity_types: JSON where JSON has a form, FP16 as binary both ways.
#[tokio::test]
async fn every_datatype_round_trips_including_bytes() {
    let (server, http) = start().await;
    let data = json!({
        "BOOL": [true, false, true],
        "UINT8": [0, 1, 255],
        "UINT16": [0, 1, 65535],
        "UINT32": [0, 1, u32::MAX],
        "UINT64": [0, 1, u64::MAX],
        "INT8": [-128, 0, 127],
        "INT16": [-32768, 0, 32767],
        "INT32": [i32::MIN, 0, i32::MAX],
        "INT64": [i64::MIN, 0, i64::MAX],
        "FP32": [-1.5, 0.1, 3.4e38],
        "FP64": [-1.5, 0.1, 1e300],
        "BYTES": ["", "ferry", "h\u{e9}llo \u{2603}"],
    });
    let fp16: Vec<u8> = [0x3c00u16, 0xc000, 0x0000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut inputs: Vec<Value> = data
        .as_object()
        .expect("object")
        .iter()
        .map(|(datatype, values)| json!({"name": format!("IN_{datatype}"), "shape": [3], "datatype": datatype, "data": values}))
        .collect();
    inputs.push(
        json!({"name": "IN_FP16", "shape": [3], "datatype": "FP16", "parameters": {"binary_data_size": 6}}),
    );
    let mut outputs = vec![json!({"name": "OUT_FP16", "parameters": {"binary_data": true}})];
    outputs.extend(
        data.as_object()
            .expect("object")
            .keys()
            .map(|dt| json!({"name": format!("OUT_{dt}")})),
    );
    let header = json!({"inputs": inputs, "outputs": outputs});
    let reply = post_binary(&http, "/v2/models/identity_types/infer", &header, &[&fp16]).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let (response, blobs) = reply.split_binary();
    for (datatype, values) in data.as_object().expect("object") {
        let out = output(&response, &format!("OUT_{datatype}"));
        assert_eq!(&out["datatype"], datatype);
        assert_eq!(&out["data"], values, "{datatype}");
    }
    assert_eq!(output(&response, "OUT_FP16")["parameters"]["binary_data_size"], 6);
    assert_eq!(blobs, fp16.as_slice());

    // BYTES in binary form: length-prefixed elements, both ways.
    let mut elements = Vec::new();
    for text in [&b"a\x00b"[..], b"", &[0xff, 0xfe]] {
        elements.extend_from_slice(&(text.len() as u32).to_le_bytes());
        elements.extend_from_slice(text);
    }
    let mut inputs = header["inputs"].as_array().expect("list").clone();
    for input in &mut inputs {
        if input["name"] == "IN_BYTES" {
            *input = json!({"name": "IN_BYTES", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": elements.len()}});
        }
    }
    // Binary inputs go in the order the JSON lists them: IN_BYTES comes before IN_FP16.
    let header =
        json!({"inputs": inputs, "outputs": [{"name": "OUT_BYTES", "parameters": {"binary_data": true}}]});
    let reply = post_binary(
        &http,
        "/v2/models/identity_types/infer",
        &header,
        &[&elements, &fp16],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let (_, blobs) = reply.split_binary();
    assert_eq!(blobs, elements.as_slice());

    // Non-UTF-8 BYTES cannot be JSON: the answer says to ask for binary output.
    let header = json!({"inputs": inputs, "outputs": [{"name": "OUT_BYTES"}]});
    let reply = post_binary(
        &http,
        "/v2/models/identity_types/infer",
        &header,
        &[&elements, &fp16],
    )
    .await;
    assert_eq!(reply.status, 400);
    let error = reply.error();
    assert!(
        error.contains("OUT_BYTES") && error.contains("binary_data"),
        "{error}"
    );
    stop(server, http).await;
}

#[tokio::test]
async fn malformed_requests_are_answered_with_clear_errors() {
    let (server, http) = start().await;
    let path = "/v2/models/simple/infer";
    let valid = json!({"inputs": simple_inputs(&[1; 16], &[2; 16])});
    let binary_header = json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
    ]});
    let json_len = binary_header.to_string().len();
    let blob = vec![0u8; 64];

    // (case, Inference-Header-Content-Length, JSON bytes, blobs, status, needles)
    type Case<'a> = (&'a str, Option<String>, Vec<u8>, Vec<&'a [u8]>, u16, Vec<&'a str>);
    let header_bytes = || binary_header.to_string().into_bytes();
    let with_input = |input: Value| {
        json!({"inputs": [input, simple_inputs(&[1; 16], &[2; 16])[1]]})
            .to_string()
            .into_bytes()
    };
    let cases: Vec<Case> = vec![
        (
            "header not a number",
            Some("abc".into()),
            header_bytes(),
            vec![&blob, &blob],
            400,
            vec!["decimal", "abc"],
        ),
        (
            "negative header",
            Some("-5".into()),
            header_bytes(),
            vec![&blob, &blob],
            400,
            // Triton's `GetInferenceHeaderLength`.
            vec!["inference header size should be in range (0, ", "got: -5; "],
        ),
        (
            "header past the body",
            Some("100000".into()),
            header_bytes(),
            vec![&blob, &blob],
            400,
            vec![
                "inference header size should be in range (0, ",
                "got: 100000; ",
                "only",
            ],
        ),
        (
            "header cuts the JSON",
            Some((json_len - 2).to_string()),
            header_bytes(),
            vec![&blob, &blob],
            500,
            // Triton's `TritonJson::Value::Parse`, an INTERNAL error there.
            vec!["failed to parse the request JSON buffer: ", "not valid JSON"],
        ),
        (
            "raw binary request",
            Some("0".into()),
            vec![],
            vec![&blob],
            400,
            vec!["not supported"],
        ),
        (
            "binary overruns",
            Some(json_len.to_string()),
            header_bytes(),
            vec![&blob, &blob[..10]],
            400,
            // Triton's `ParseJsonTritonIO`.
            vec![
                "unexpected size for input 'INPUT1', expecting 54 additional bytes for model 'simple'; ",
                "10 bytes",
            ],
        ),
        (
            "binary left over",
            Some(json_len.to_string()),
            header_bytes(),
            vec![&blob, &blob, &blob[..3]],
            400,
            vec![
                "unexpected additional input data for model 'simple'; ",
                "131 bytes",
                "add up to 128",
            ],
        ),
        (
            "binary without header",
            None,
            header_bytes(),
            vec![],
            400,
            vec!["unexpected size for input 'INPUT0', expecting 64 additional bytes for model 'simple'"],
        ),
        (
            "not JSON",
            None,
            b"{inputs".to_vec(),
            vec![],
            500,
            vec!["failed to parse the request JSON buffer: Missing a name for object member. at 1; "],
        ),
        (
            "empty body",
            None,
            vec![],
            vec![],
            500,
            vec!["failed to parse the request JSON buffer: The document is empty. at 0; "],
        ),
        (
            "not an object",
            None,
            b"[1, 2]".to_vec(),
            vec![],
            500,
            vec!["Unable to parse 'inputs': attempt to access non-existing object member 'inputs'; "],
        ),
        (
            "no inputs",
            None,
            b"{}".to_vec(),
            vec![],
            500,
            vec!["Unable to parse 'inputs': attempt to access non-existing object member 'inputs'; "],
        ),
        (
            "input without name",
            None,
            with_input(json!({"shape": [1, 16], "datatype": "INT32", "data": vec![0; 16]})),
            vec![],
            500,
            vec!["Unable to parse 'name': attempt to access non-existing object member 'name'; inputs[0]"],
        ),
        (
            "unknown datatype",
            None,
            with_input(json!({"name": "INPUT0", "shape": [1, 16], "datatype": "INT33", "data": vec![0; 16]})),
            vec![],
            400,
            vec!["INT33"],
        ),
        (
            "negative dimension",
            None,
            with_input(
                json!({"name": "INPUT0", "shape": [-1, 16], "datatype": "INT32", "data": vec![0; 16]}),
            ),
            vec![],
            500,
            vec![
                "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as unsigned-integer; ",
                "INPUT0",
            ],
        ),
        (
            "count differs from shape",
            None,
            with_input(json!({"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": vec![0; 15]})),
            vec![],
            500,
            vec![
                "Unable to parse 'data': Shape does not match true shape of 'data' field; ",
                "INPUT0",
                "15 values",
            ],
        ),
        (
            "out of range",
            None,
            with_input(
                json!({"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3_000_000_000u64]]}),
            ),
            vec![],
            400,
            vec!["INPUT0", "element 15", "3000000000", "INT32"],
        ),
        (
            "not an integer",
            None,
            with_input(
                json!({"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": vec![0.5; 16]}),
            ),
            vec![],
            500,
            vec![
                "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer; ",
                "element 0",
            ],
        ),
        (
            "data and binary",
            None,
            with_input(
                json!({"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": vec![0; 16], "parameters": {"binary_data_size": 64}}),
            ),
            vec![],
            400,
            vec!["INPUT0", "But set 'data' 'binary_data_size'"],
        ),
        (
            "neither data nor binary",
            None,
            with_input(json!({"name": "INPUT0", "shape": [1, 16], "datatype": "INT32"})),
            vec![],
            400,
            vec!["INPUT0", "But no field is set"],
        ),
        (
            "FP16 as JSON",
            None,
            with_input(
                json!({"name": "INPUT0", "shape": [1, 16], "datatype": "FP16", "data": vec![0.5; 16]}),
            ),
            vec![],
            400,
            vec![
                "receiving FP16 data via JSON is not supported. Please use the binary data format for input INPUT0",
            ],
        ),
        // Caught by the shared core, with the gRPC path's own message.
        (
            "wrong datatype for the model",
            None,
            with_input(
                json!({"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5; 16]}),
            ),
            vec![],
            400,
            vec!["INPUT0", "FP32", "INT32"],
        ),
        (
            "wrong shape for the model",
            None,
            with_input(json!({"name": "INPUT0", "shape": [1, 15], "datatype": "INT32", "data": vec![0; 15]})),
            vec![],
            400,
            vec!["INPUT0", "Expected [-1,16], got [1,15]"],
        ),
        (
            "unknown output",
            None,
            json!({"inputs": simple_inputs(&[1; 16], &[2; 16]), "outputs": [{"name": "OUTPUT9"}]})
                .to_string()
                .into_bytes(),
            vec![],
            400,
            vec!["OUTPUT9"],
        ),
        (
            "bad priority",
            None,
            json!({"inputs": simple_inputs(&[1; 16], &[2; 16]), "parameters": {"priority": -1}})
                .to_string()
                .into_bytes(),
            vec![],
            // Triton's `ParseJsonTritonParams` reads `priority` as an unsigned integer (INTERNAL, 500).
            500,
            vec![
                "Unable to parse 'priority': attempt to access JSON non-unsigned-integer as unsigned-integer; ",
            ],
        ),
    ];
    for (case, length, json, blobs, status, needles) in cases {
        let reply = post_raw(&http, path, length.as_deref(), json, &blobs).await;
        assert_eq!(
            reply.status,
            status,
            "{case}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let error = reply.error();
        for needle in needles {
            assert!(error.contains(needle), "{case}: '{error}' lacks '{needle}'");
        }
    }

    // Statuses come from the gRPC code, as Triton's do: an unknown model or version, or one with no
    // version available, is 404; a version that is not ready is 503.
    for (path, status, start) in [
        (
            "/v2/models/no_such_model/infer",
            404,
            "Request for unknown model: 'no_such_model' is not found",
        ),
        (
            "/v2/models/simple/versions/7/infer",
            404,
            "Request for unknown model: 'simple' version 7 is not found",
        ),
        (
            "/v2/models/corrupt/infer",
            404,
            "Request for unknown model: 'corrupt' has no available versions; ",
        ),
        (
            "/v2/models/corrupt/versions/1/infer",
            503,
            "Request for unknown model: 'corrupt' version 1 is not at ready state; ",
        ),
    ] {
        let reply = post_json(&http, path, &valid).await;
        assert_eq!(reply.status, status, "{path}");
        assert!(reply.error().starts_with(start), "{path}: {}", reply.error());
    }
    // The model is resolved before the body is read, as in Triton's `HandleInfer` (`http_server.cc`, which
    // asks `TRITONSERVER_ServerModelTransactionProperties` first): a body that is not even JSON, sent to a
    // model that does not exist, is answered with the unknown model.
    let reply = send(http.address, "POST", "/v2/models/no_such_model/infer", &[], b"{").await;
    assert_eq!(reply.status, 404, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(
        reply.error(),
        "Request for unknown model: 'no_such_model' is not found"
    );
    // A coding Ferry does not read is Triton's 415 (gzip and deflate: tests/tests/compression.rs).
    let brotli = send(
        http.address,
        "POST",
        path,
        &[("Content-Encoding", "br".into())],
        valid.to_string().as_bytes(),
    )
    .await;
    assert_eq!(brotli.status, 415);
    assert!(brotli.error().contains("'br'"));

    // The server still answers correctly after all of them.
    let reply = post_json(&http, path, &valid).await;
    assert_eq!(output(&reply.json(), "OUTPUT0")["data"], json!(vec![3; 16]));
    stop(server, http).await;
}

#[tokio::test]
async fn an_oversized_body_is_413_and_the_server_goes_on() {
    let server = TestServer::start_with_limit(vec![ferry_tests::example_repository()], 64 * 1024)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST front end");
    let header = json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 80 * 1024}},
    ]});
    let reply = post_binary(
        &http,
        "/v2/models/simple/infer",
        &header,
        &[&vec![0u8; 80 * 1024]],
    )
    .await;
    assert_eq!(reply.status, 413);
    let error = reply.error();
    assert!(error.contains("65536"), "{error}");
    let reply = post_json(
        &http,
        "/v2/models/simple/infer",
        &json!({"inputs": simple_inputs(&[1; 16], &[2; 16])}),
    )
    .await;
    assert_eq!(output(&reply.json(), "OUTPUT1")["data"], json!(vec![-1; 16]));
    stop(server, http).await;
}

/// Load and unload are translated to the gRPC requests and answered with the gRPC path's status, whatever
/// the model-control mode makes of them.
#[tokio::test]
async fn model_control_goes_through_the_grpc_core() {
    use base64::Engine as _;
    let (server, http) = start().await;
    let mut client = server.raw_client().await.expect("client");
    let config = r#"{"backend": "onnxruntime"}"#;
    let file = base64::engine::general_purpose::STANDARD.encode(b"not onnx");
    let reply = post_json(
        &http,
        "/v2/repository/models/no_such_model/load",
        &json!({"parameters": {"config": config, "file:1/model.onnx": file}}),
    )
    .await;
    let mut parameters = HashMap::new();
    parameters.insert(
        "config".to_owned(),
        ferry_proto::inference::ModelRepositoryParameter {
            parameter_choice: Some(
                ferry_proto::inference::model_repository_parameter::ParameterChoice::StringParam(
                    config.into(),
                ),
            ),
        },
    );
    parameters.insert(
        "file:1/model.onnx".to_owned(),
        ferry_proto::inference::ModelRepositoryParameter {
            parameter_choice: Some(
                ferry_proto::inference::model_repository_parameter::ParameterChoice::BytesParam(
                    Bytes::from_static(b"not onnx"),
                ),
            ),
        },
    );
    let grpc = client
        .repository_model_load(RepositoryModelLoadRequest {
            repository_name: String::new(),
            model_name: "no_such_model".into(),
            parameters,
        })
        .await;
    same_outcome(&reply, grpc.map(|_| ()));

    let reply = post_json(
        &http,
        "/v2/repository/models/no_such_model/unload",
        &json!({"parameters": {"unload_dependents": false}}),
    )
    .await;
    let grpc = client
        .repository_model_unload(RepositoryModelUnloadRequest {
            repository_name: String::new(),
            model_name: "no_such_model".into(),
            parameters: HashMap::new(),
        })
        .await;
    same_outcome(&reply, grpc.map(|_| ()));

    // Triton's `HandleRepositoryControl` and `HandleRepositoryIndex` pass their JSON reader's errors on:
    // INTERNAL there, so 500.
    let reply = post_json(&http, "/v2/repository/models/x/load", &json!({"parameters": []})).await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .error()
            .starts_with("attempt to get members for non-object; "),
        "{}",
        reply.error()
    );
    let reply = post_json(
        &http,
        "/v2/repository/models/x/load",
        &json!({"parameters": {"config": 1}}),
    )
    .await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .error()
            .starts_with("attempt to access JSON non-string as string; "),
        "{}",
        reply.error()
    );
    let reply = post_json(
        &http,
        "/v2/repository/models/x/unload",
        &json!({"parameters": {"unload_dependents": "yes"}}),
    )
    .await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.error().starts_with(
            "Unable to parse 'unload_dependents': attempt to access JSON non-boolean as boolean; "
        ),
        "{}",
        reply.error()
    );
    let reply = post_json(
        &http,
        "/v2/repository/models/x/load",
        &json!({"parameters": {"file:a": "%%"}}),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("base64"));
    let reply = post_json(&http, "/v2/repository/index", &json!({"ready": "yes"})).await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .error()
            .starts_with("attempt to access JSON non-boolean as boolean; 'ready'"),
        "{}",
        reply.error()
    );
    stop(server, http).await;
}

/// Checks that a REST answer and a gRPC answer to the same request agree: both succeed, or both fail with
/// the same message and the REST status that the gRPC code maps to.
fn same_outcome(reply: &Reply, grpc: Result<(), tonic::Status>) {
    match grpc {
        Ok(()) => assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body)),
        Err(status) => {
            assert_eq!(
                reply.status,
                ferry_server::http::http_status(status.code()).as_u16(),
                "{status:?}"
            );
            assert_eq!(reply.error(), status.message());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_gets_the_answers_onnxruntime_gives() {
    let (server, http) = start().await;
    let status = run_pytest("test_http.py", &[("FERRY_HTTP_URL", http.url())]).await;
    stop(server, http).await;
    assert!(status.success(), "the tritonclient.http suite failed: {status}");
}
