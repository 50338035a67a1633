//! Bad input gets a clear error and loses nothing: sizes from configs and clients checked before anything
//! is allocated, shared memory that cannot fault the server, model names and files that cannot leave their
//! folders, bounded instances, threads and echoed text, and the statuses Triton's clients expect. Each test
//! reproduces a way the server used to abort, leak or answer wrongly.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use ferry_proto::{
    GrpcInferenceService,
    inference::{
        InferParameter, ModelInferRequest, ModelRepositoryParameter, RepositoryIndexRequest,
        RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerLiveRequest,
        SystemSharedMemoryRegisterRequest, infer_parameter::ParameterChoice,
        model_infer_request::InferInputTensor, model_repository_parameter::ParameterChoice as Load,
    },
};
use ferry_server::{
    grpc::InferenceService,
    limits::ResourceLimits,
    repository::{ControlMode, RepositoryOptions},
    shm::SharedMemoryRegistry,
};
use ferry_tests::{TestServer, example_repository, repo_root, test_repository};
use tonic::{Code, Status};

/// A repository of the test's own: models copied from the bundled repositories, configs written by the test.
struct Repository {
    dir: tempfile::TempDir,
}

impl Repository {
    fn new() -> Self {
        Repository {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Model `name` with version 1 holding `source`'s model file and `config` as its config.pbtxt.
    fn model(&self, name: &str, source: &Path, config: &str) -> PathBuf {
        let folder = self.dir.path().join(name);
        std::fs::create_dir_all(folder.join("1")).expect("version folder");
        std::fs::copy(source.join("1/model.onnx"), folder.join("1/model.onnx")).expect("model file");
        std::fs::write(folder.join("config.pbtxt"), config).expect("config");
        folder
    }
}

fn options(repository: &Repository, mode: ControlMode, limits: ResourceLimits) -> RepositoryOptions {
    RepositoryOptions {
        control_mode: mode,
        strict_readiness: false,
        limits,
        // Some tests load models from files their requests carry.
        allow_model_file_upload: true,
        ..RepositoryOptions::new(vec![repository.root()])
    }
}

async fn start(repository: &Repository, mode: ControlMode, limits: ResourceLimits) -> TestServer {
    TestServer::start_with(options(repository, mode, limits), ferry_server::MAX_MESSAGE_BYTES)
        .await
        .expect("the server starts")
}

async fn alive(server: &TestServer) {
    let mut client = server.raw_client().await.expect("client");
    let live = client
        .server_live(ServerLiveRequest {})
        .await
        .expect("live")
        .into_inner();
    assert!(live.live);
}

impl Repository {
    /// Model `name`: the identity model over every type (1-D inputs of any length), with `dims` in its
    /// config instead of `-1`.
    /// `identity_types` as `name`, its dims `dims` and its inputs optional, so that a request may send one
    /// input alone and reach the checks on that input (Triton counts the inputs first).
    fn identity(&self, name: &str, dims: &str) {
        let source = test_repository().join("identity_types");
        let text = std::fs::read_to_string(source.join("config.pbtxt")).expect("config");
        let config = text
            .replace("dims: [ -1 ]", &format!("dims: [ {dims} ]"))
            .replace("name: \"IN_", "optional: true\n    name: \"IN_")
            .replace("identity_types", name);
        self.model(name, &source, &config);
    }
}

fn input(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    }
}

fn load_parameter(choice: Load) -> ModelRepositoryParameter {
    ModelRepositoryParameter {
        parameter_choice: Some(choice),
    }
}

async fn load(server: &TestServer, name: &str, parameters: Vec<(&str, Load)>) -> Result<(), Status> {
    let mut client = server.raw_client().await.expect("client");
    let request = RepositoryModelLoadRequest {
        model_name: name.into(),
        parameters: parameters
            .into_iter()
            .map(|(key, choice)| (key.to_owned(), load_parameter(choice)))
            .collect(),
        ..Default::default()
    };
    client.repository_model_load(request).await.map(|_| ())
}

const ADD_CONFIG: &str = r#"{"max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]"#;

fn add_model() -> Vec<u8> {
    std::fs::read(repo_root().join("tests/assets/add_1.onnx")).expect("asset")
}

/// Loads `name` from the request alone: `config` (JSON) and the y = x + 1 model as version 1.
async fn upload(server: &TestServer, name: &str, config: String) -> Result<(), Status> {
    load(
        server,
        name,
        vec![
            ("config", Load::StringParam(config)),
            ("file:1/model.onnx", Load::BytesParam(add_model().into())),
        ],
    )
    .await
}

/// `model_warmup` with `dims: [1099511627776]` in a load request's config used to abort the process on a
/// 4 TiB allocation.
#[tokio::test]
async fn a_huge_configured_warmup_fails_the_load_and_the_server_lives() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::Explicit, ResourceLimits::default()).await;
    let config = format!(
        r#"{ADD_CONFIG}, "model_warmup": [{{"name": "huge", "batch_size": 1,
            "inputs": {{"x": {{"data_type": "TYPE_FP32", "dims": [1099511627776], "zero_data": true}}}}}}]}}"#
    );
    let status = upload(&server, "warm", config)
        .await
        .expect_err("the warm-up is too large");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("model_warmup 'huge'") && status.message().contains("--max-request-bytes"),
        "{}",
        status.message()
    );
    alive(&server).await;
    server.stop().await;
}

/// A config whose dims made the default warm-up a huge zero tensor used to abort at start-up. Now the
/// server starts, the model serves, and a request of that shape is refused before it is allocated.
#[tokio::test]
async fn a_config_with_huge_dims_starts_and_refuses_huge_requests() {
    let repository = Repository::new();
    repository.identity("huge", "1099511627776");
    let server = start(&repository, ControlMode::None, ResourceLimits::default()).await;
    let mut client = server.raw_client().await.expect("client");
    let request = ModelInferRequest {
        model_name: "huge".into(),
        inputs: vec![input("IN_FP32", "FP32", vec![1_099_511_627_776])],
        raw_input_contents: vec![Bytes::from_static(&[0; 4])],
        ..Default::default()
    };
    let status = client.model_infer(request).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(
        status.message().contains("--max-request-bytes"),
        "{}",
        status.message()
    );
    server.stop().await;
}

/// A POSIX shared memory object of the test's own, unlinked when dropped.
struct ShmObject {
    key: String,
    path: PathBuf,
}

impl ShmObject {
    fn sized(tag: &str, size: u64) -> Self {
        let key = format!("/ferry_robust_{tag}_{}", std::process::id());
        let path = PathBuf::from(format!("/dev/shm{key}"));
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(size).expect("size the object (sparse)");
        ShmObject { key, path }
    }
}

impl Drop for ShmObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn register(server: &TestServer, name: &str, object: &ShmObject, byte_size: u64) {
    let mut client = server.raw_client().await.expect("client");
    client
        .system_shared_memory_register(SystemSharedMemoryRegisterRequest {
            name: name.into(),
            key: object.key.clone(),
            offset: 0,
            byte_size,
        })
        .await
        .expect("register");
}

fn in_region(region: &str, byte_size: i64) -> HashMap<String, InferParameter> {
    HashMap::from([
        (
            "shared_memory_region".to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(region.into())),
            },
        ),
        (
            "shared_memory_byte_size".to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(byte_size)),
            },
        ),
    ])
}

/// A 32 GiB `shared_memory_byte_size` in a (sparse) 64 GiB region used to abort in the copy out of the
/// region: the request memory limit now applies to shared memory too, before the copy.
#[tokio::test]
async fn a_huge_shared_memory_input_is_refused_before_the_copy() {
    let repository = Repository::new();
    repository.identity("identity_types", "-1");
    let server = start(&repository, ControlMode::None, ResourceLimits::default()).await;
    let object = ShmObject::sized("huge", 64 << 30);
    register(&server, "huge", &object, 64 << 30).await;
    let mut client = server.raw_client().await.expect("client");
    let mut tensor = input("IN_FP32", "FP32", vec![8 << 30]);
    tensor.parameters = in_region("huge", 32 << 30);
    let request = ModelInferRequest {
        model_name: "identity_types".into(),
        inputs: vec![tensor],
        ..Default::default()
    };
    let status = client.model_infer(request).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    alive(&server).await;
    server.stop().await;
}

/// A client that truncated its registered object and then inferred from it used to kill the server with
/// SIGBUS.
#[tokio::test]
async fn a_truncated_shared_memory_object_gives_an_error() {
    let server = TestServer::start(vec![example_repository()])
        .await
        .expect("server");
    let object = ShmObject::sized("truncated", 128);
    register(&server, "inputs", &object, 128).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&object.path)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    let mut client = server.raw_client().await.expect("client");
    let tensors = ["INPUT0", "INPUT1"].map(|name| {
        let mut tensor = input(name, "INT32", vec![1, 16]);
        tensor.parameters = in_region("inputs", 64);
        tensor
    });
    let request = ModelInferRequest {
        model_name: "simple".into(),
        inputs: tensors.to_vec(),
        ..Default::default()
    };
    let status = client.model_infer(request).await.expect_err("truncated");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("truncated"), "{}", status.message());
    alive(&server).await;
    server.stop().await;
}

/// Entries of the root folder whose names start with `prefix`: where `../../<prefix>` uploads used to land.
fn escaped(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/")
        .expect("read /")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// A load named `../../x` or an absolute path used to write its `file:` uploads outside the upload folder
/// (and serve them), over gRPC and over REST with the name URL-encoded.
#[tokio::test]
async fn model_names_cannot_escape_the_upload_folder() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::Explicit, ResourceLimits::default()).await;
    let prefix = format!("ferry-escape-{}", std::process::id());
    for name in [
        format!("../../{prefix}"),
        format!("/{prefix}"),
        String::new(),
        "a\0b".to_owned(),
    ] {
        let status = upload(&server, &name, format!("{ADD_CONFIG}}}"))
            .await
            .expect_err("not a model name");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{name:?}: {}",
            status.message()
        );
    }
    let http = server.start_http().await.expect("REST");
    let body = serde_json::json!({"parameters": {
        "config": format!("{ADD_CONFIG}}}"),
        "file:1/model.onnx": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, add_model()),
    }});
    let path = format!("/v2/repository/models/..%2F..%2F{prefix}-rest/load");
    let status = post(http.address, &path, body.to_string().as_bytes()).await;
    assert_eq!(status, 400, "REST refuses the name too");
    assert!(
        escaped(&prefix).is_empty(),
        "files were written outside: {:?}",
        escaped(&prefix)
    );
    server.stop().await;
}

/// Sends a POST and returns the HTTP status.
async fn post(address: std::net::SocketAddr, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(body).await.expect("body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("answer");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

/// The upload folders of this process's registries (one per test server).
fn upload_folders() -> Vec<PathBuf> {
    let prefix = format!("ferry-uploads-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .flat_map(|e| {
            std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
        })
        .map(|e| e.path())
        .collect()
}

/// Uploaded files used to stay behind forever (401 MB after a clean exit); now a failed load leaves none,
/// and unloading a model removes its files.
#[tokio::test]
async fn uploads_are_removed_when_a_load_fails_and_when_the_model_is_unloaded() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::Explicit, ResourceLimits::default()).await;
    let before = upload_folders();
    let failed = load(
        &server,
        "broken_upload",
        vec![
            ("config", Load::StringParam(format!("{ADD_CONFIG}}}"))),
            (
                "file:1/model.onnx",
                Load::BytesParam(Bytes::from_static(b"not onnx")),
            ),
        ],
    )
    .await;
    assert!(failed.is_err());
    let mine = |folders: Vec<PathBuf>, name: &str| -> Vec<PathBuf> {
        folders
            .into_iter()
            .filter(|p| !before.contains(p))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(name))
            })
            .collect()
    };
    assert!(
        mine(upload_folders(), "broken_upload").is_empty(),
        "a failed load leaves no files"
    );
    upload(&server, "uploaded", format!("{ADD_CONFIG}}}"))
        .await
        .expect("loads");
    assert_eq!(
        mine(upload_folders(), "uploaded").len(),
        1,
        "the served files exist"
    );
    let mut client = server.raw_client().await.expect("client");
    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: "uploaded".into(),
            ..Default::default()
        })
        .await
        .expect("unload");
    assert!(
        mine(upload_folders(), "uploaded").is_empty(),
        "unloading removes them"
    );
    server.stop().await;
}

/// `default_model_filename` set to an absolute path or `../..` used to load a model from anywhere on the
/// disk, and its error told whether `/etc/shadow` exists. A model file that is a link out of the folder,
/// or a FIFO, is refused the same way.
#[tokio::test]
async fn model_files_stay_inside_their_folder() {
    let repository = Repository::new();
    let add = "max_batch_size: 8\ninput [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
               output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n";
    let source = test_repository().join("add_one_batched");
    for (name, filename) in [
        ("absolute", "/etc/shadow"),
        ("absolute_missing", "/etc/ferry-no-such-file"),
        ("dotdot", "../../../../etc/passwd"),
    ] {
        repository.model(
            name,
            &source,
            &format!("{add}default_model_filename: \"{filename}\"\n"),
        );
    }
    let linked = repository.model("linked", &source, add);
    std::fs::remove_file(linked.join("1/model.onnx")).expect("remove");
    std::os::unix::fs::symlink("/etc/passwd", linked.join("1/model.onnx")).expect("symlink");
    let fifo = repository.model("fifo", &source, add);
    std::fs::remove_file(fifo.join("1/model.onnx")).expect("remove");
    let made = std::process::Command::new("mkfifo")
        .arg(fifo.join("1/model.onnx"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let fifo_config = repository.model("fifo_config", &source, add);
    std::fs::remove_file(fifo_config.join("config.pbtxt")).expect("remove");
    let made = std::process::Command::new("mkfifo")
        .arg(fifo_config.join("config.pbtxt"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::os::unix::fs::symlink(repository.root().join("loop"), repository.root().join("loop")).expect("loop");

    // Start-up must not block on the FIFOs.
    let server = tokio::time::timeout(
        Duration::from_secs(60),
        start(&repository, ControlMode::None, ResourceLimits::default()),
    )
    .await
    .expect("start-up does not block on a FIFO");
    let mut client = server.raw_client().await.expect("client");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner()
        .models;
    let reason = |name: &str| -> String {
        let rows: Vec<_> = index.iter().filter(|m| m.name == name).collect();
        assert!(!rows.is_empty(), "{name} is listed");
        assert!(rows.iter().all(|m| m.state == "UNAVAILABLE"), "{name}: {rows:?}");
        rows.iter()
            .map(|m| m.reason.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let absolute = reason("absolute");
    assert!(absolute.contains("default_model_filename"), "{absolute}");
    assert_eq!(
        absolute.replace("/etc/shadow", "X").replace("absolute", "Y"),
        reason("absolute_missing")
            .replace("/etc/ferry-no-such-file", "X")
            .replace("absolute_missing", "Y"),
        "the message does not tell whether the file exists"
    );
    assert!(reason("dotdot").contains("default_model_filename"));
    assert!(
        reason("linked").contains("outside its model folder"),
        "{}",
        reason("linked")
    );
    assert!(
        reason("fifo").contains("not a regular file"),
        "{}",
        reason("fifo")
    );
    assert!(
        reason("fifo_config").contains("not a regular file"),
        "{}",
        reason("fifo_config")
    );
    assert!(
        !reason("loop").is_empty(),
        "a symlink loop is listed with its reason"
    );
    server.stop().await;
}

/// `instance_group { count: 2000 }` used to start 2,011 threads and `intra_op_thread_count: 20000` thousands
/// more; now each has a limit, and all instances together share a thread budget.
#[tokio::test]
async fn instances_and_threads_are_bounded() {
    let repository = Repository::new();
    let limits = ResourceLimits {
        max_model_threads: 8,
        ..ResourceLimits::default()
    };
    let server = start(&repository, ControlMode::Explicit, limits).await;
    let upload_with =
        |name: &'static str, extra: &str| upload(&server, name, format!("{ADD_CONFIG}, {extra}}}"));
    let group = |count: u32| format!(r#""instance_group": [{{"count": {count}, "kind": "KIND_CPU"}}]"#);
    let threads = |key: &str, n: u32| {
        format!(
            r#"{}, "parameters": {{"{key}": {{"string_value": "{n}"}}}}"#,
            group(1)
        )
    };
    for (extra, flag) in [
        (group(2000), "--max-instances-per-model"),
        (
            threads("intra_op_thread_count", 20000),
            "--max-threads-per-instance",
        ),
        (
            threads("inter_op_thread_count", 20000),
            "--max-threads-per-instance",
        ),
    ] {
        let status = upload_with("greedy", &extra).await.expect_err(flag);
        assert!(status.message().contains(flag), "{}", status.message());
        assert!(
            status.message().contains("the load request's 'config' parameter"),
            "the error names where the config came from, not the upload folder: {}",
            status.message()
        );
    }
    // Two instances of 2 threads each (its own, and the one more that an intra-op pool of 2 starts): 4 of
    // the 8 threads.
    let two = format!(
        r#"{}, "parameters": {{"intra_op_thread_count": {{"string_value": "2"}}}}"#,
        group(2)
    );
    upload_with("first", &two).await.expect("fits");
    upload_with("second", &two).await.expect("fits");
    let status = upload_with("third", &two).await.expect_err("over the budget");
    assert!(
        status.message().contains("--max-model-threads"),
        "{}",
        status.message()
    );
    let mut client = server.raw_client().await.expect("client");
    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: "first".into(),
            ..Default::default()
        })
        .await
        .expect("unload");
    // The unloaded instances give their threads back once they stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Err(status) = upload_with("third", &two).await {
        assert!(std::time::Instant::now() < deadline, "{}", status.message());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// A 64 MB request of empty BYTES elements used to take 1.56 GB once decoded (24× its size): BYTES elements
/// now count what they cost to hold.
#[tokio::test]
async fn empty_bytes_elements_count_against_the_request_memory_limit() {
    let repository = Repository::new();
    repository.identity("identity", "-1");
    let limits = ResourceLimits {
        max_request_bytes: 4 << 20,
        ..ResourceLimits::default()
    };
    let server = start(&repository, ControlMode::None, limits).await;
    let mut client = server.raw_client().await.expect("client");
    let elements = (2 << 20) / 4;
    let request = ModelInferRequest {
        model_name: "identity".into(),
        inputs: vec![input("IN_BYTES", "BYTES", vec![elements as i64])],
        raw_input_contents: vec![Bytes::from(vec![0u8; elements * 4])],
        ..Default::default()
    };
    let status = client.model_infer(request).await.expect_err("too costly");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("IN_BYTES"), "{}", status.message());
    server.stop().await;
}

/// A 10 MB string in a config used to come back in an 8.7 MB `grpc-message` header and a 10 MB
/// RepositoryIndex.
#[tokio::test]
async fn long_client_text_is_not_echoed_whole() {
    let repository = Repository::new();
    let server = start(&repository, ControlMode::Explicit, ResourceLimits::default()).await;
    let long = "p".repeat(10 << 20);
    let config = format!(r#"{ADD_CONFIG}, "platform": "{long}"}}"#);
    let status = upload(&server, "long", config)
        .await
        .expect_err("no such platform");
    assert!(
        status.message().len() < 2048,
        "{} bytes echoed",
        status.message().len()
    );
    let mut client = server.raw_client().await.expect("client");
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner();
    let largest = index.models.iter().map(|m| m.reason.len()).max().unwrap_or(0);
    assert!(largest < 2048, "an index reason of {largest} bytes");
    let mut request = ModelInferRequest {
        model_name: "x".repeat(1 << 20),
        ..Default::default()
    };
    let status = client.model_infer(request.clone()).await.expect_err("unknown");
    assert!(
        status.message().len() < 2048,
        "{} bytes echoed",
        status.message().len()
    );
    request.model_name = "simple".into();
    request.model_version = "v".repeat(1 << 20);
    let status = client.model_infer(request).await.expect_err("unknown");
    assert!(
        status.message().len() < 2048,
        "{} bytes echoed",
        status.message().len()
    );
    server.stop().await;
}

/// Triton answers INVALID_ARGUMENT for a version that is not a number, or is negative (its
/// `GetModelVersionFromString`, with these messages); Ferry answered NOT_FOUND.
#[tokio::test]
async fn a_version_that_is_not_a_number_is_invalid() {
    let server = TestServer::start(vec![example_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    for (version, message) in [
        (
            "latest",
            "failed to get model version from specified version string 'latest'",
        ),
        (
            "1.5",
            "failed to get model version from specified version string '1.5'",
        ),
        (
            "-1",
            "invalid model version specified '-1' , version should be an integral value > 0",
        ),
    ] {
        let request = ModelInferRequest {
            model_name: "simple".into(),
            model_version: version.into(),
            ..Default::default()
        };
        let status = client.model_infer(request).await.expect_err(version);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{version}: {}",
            status.message()
        );
        assert!(status.message().contains(message), "{}", status.message());
    }
    for version in ["0", "7"] {
        let request = ModelInferRequest {
            model_name: "simple".into(),
            model_version: version.into(),
            ..Default::default()
        };
        let status = client.model_infer(request).await.expect_err("no such version");
        assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    }
    server.stop().await;
}

/// With fewer `raw_input_contents` than inputs, the message names the inputs that have none.
#[tokio::test]
async fn missing_raw_contents_are_named() {
    let server = TestServer::start(vec![example_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let request = ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![
            input("INPUT0", "INT32", vec![1, 16]),
            input("INPUT1", "INT32", vec![1, 16]),
        ],
        raw_input_contents: vec![Bytes::from(vec![0u8; 64])],
        ..Default::default()
    };
    let status = client.model_infer(request).await.expect_err("one missing");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("'INPUT1'"), "{}", status.message());
    server.stop().await;
}

/// A response over the message limit got tonic's OUT_OF_RANGE; clients expect RESOURCE_EXHAUSTED, and the
/// answer now names the limit.
#[tokio::test]
async fn a_response_over_the_message_limit_is_resource_exhausted() {
    let server = TestServer::start(vec![example_repository()])
        .await
        .expect("server");
    let registry = std::sync::Arc::new(SharedMemoryRegistry::default());
    let service =
        InferenceService::with_shared_memory(std::sync::Arc::clone(server.registry_arc()), registry)
            .with_max_message_bytes(100);
    let request = ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![
            input("INPUT0", "INT32", vec![1, 16]),
            input("INPUT1", "INT32", vec![1, 16]),
        ],
        raw_input_contents: vec![Bytes::from(vec![1u8; 64]), Bytes::from(vec![2u8; 64])],
        ..Default::default()
    };
    let status = service
        .model_infer(tonic::Request::new(request))
        .await
        .expect_err("the response is over 100 bytes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(
        status.message().contains("--grpc-max-message-bytes"),
        "{}",
        status.message()
    );
    server.stop().await;
}

/// An empty input tensor is 2 bytes on the wire and some 300 bytes decoded: a 256 MB message of them used
/// to ask for tens of gigabytes before any check ran. It is refused before it is decoded, on unary calls
/// and on streams alike.
#[tokio::test]
async fn a_request_that_would_explode_when_decoded_is_refused() {
    let server = TestServer::start(vec![example_repository()])
        .await
        .expect("server");
    let mut client = server.raw_client().await.expect("client");
    let request = ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![InferInputTensor::default(); 1 << 20],
        ..Default::default()
    };
    let status = client.model_infer(request.clone()).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("once decoded"), "{}", status.message());
    let stream = client
        .model_stream_infer(tokio_stream::iter([request]))
        .await
        .map(|response| response.into_inner());
    let refused = match stream {
        Err(status) => status,
        Ok(mut responses) => match responses.message().await {
            Err(status) => status,
            Ok(other) => panic!("the stream answered {other:?}"),
        },
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{}", refused.message());
    alive(&server).await;
    server.stop().await;
}
