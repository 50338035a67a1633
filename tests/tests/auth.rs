//! Identity and authorisation end to end: a real server with an API keys file, a JWKS file and a policy,
//! called over real gRPC (tonic) and real REST on every RPC and route, without credentials, with a wrong key,
//! with an expired, not yet valid, wrong-audience or badly signed token, as an identity without the scope,
//! and as one with it (by key and by token). Also: listings filtered per model, closed APIs, model file
//! uploads, the mTLS identity extension, the audit log, and Triton's restricted groups over tritonclient.

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use ferry_proto::{
    GrpcInferenceServiceClient,
    inference::{self as pb, model_repository_parameter::ParameterChoice},
};
use ferry_server::{
    ServerOptions,
    auth::{Access, AccessOptions, JwtOptions, Scope, keys::hash_key},
    repository::{ControlMode, RepositoryOptions},
};
use ferry_tests::{
    HttpFrontEnd, ShmObject, TestServer, example_repository, rest_request_with_headers, run_pytest,
};
use tonic::{Code, Status, metadata::MetadataValue, transport::Channel};

const ADMIN_KEY: &str = "admin-key-0123456789";
const OUTSIDER_KEY: &str = "outsider-key-0123456789";
const VIEWER_KEY: &str = "viewer-key-0123456789";
const WRONG_KEY: &str = "wrong-key-0123456789";

/// admin holds every scope; outsider holds `infer` for a model that does not exist, so it passes the layer
/// for inference and is refused by the core once the model is known; viewer sees `simple` only.
const POLICY: &str = r#"
[[grant]]
identity = "admin"
scopes = ["infer", "metadata", "stats", "repository", "shm", "settings"]

[[grant]]
identity = "outsider"
scopes = ["infer"]
models = ["no_such_model"]

[[grant]]
identity = "viewer"
scopes = ["metadata", "stats", "repository"]
models = ["simple"]
"#;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "ferry";

/// The keys tokens are signed with, made once per test run (no private key is committed): an HS256 secret
/// and an ES256 key pair, with the JWKS of their public halves.
struct Tokens {
    hs: jsonwebtoken::EncodingKey,
    es: jsonwebtoken::EncodingKey,
    jwks: String,
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        use base64::Engine as _;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let secret = b"the e2e HS256 secret, 32 bytes ok";
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("pair");
        let point = pair.public_key().as_ref();
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hs", "k": b64(secret)},
            {"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        ]});
        Tokens {
            hs: jsonwebtoken::EncodingKey::from_secret(secret),
            es: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwks: jwks.to_string(),
        }
    })
}

/// A token for `sub`, signed with the ES256 key (`es`) or the HS256 one, with the claims changed by `claims`.
fn token(sub: &str, es256: bool, claims: impl FnOnce(&mut serde_json::Value)) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut body = serde_json::json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600});
    claims(&mut body);
    let keys = tokens();
    let (algorithm, kid, key) = if es256 {
        (jsonwebtoken::Algorithm::ES256, "es", &keys.es)
    } else {
        (jsonwebtoken::Algorithm::HS256, "hs", &keys.hs)
    };
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &body, key).expect("token")
}

/// The audit lines (JSON) of every server in this test binary.
fn audit_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&log);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                ferry_server::auth::AUDIT_TARGET,
            ))
            .with_writer(move || SharedWriter(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        log
    })
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The audit lines written so far, as JSON objects' `fields`.
fn audit_lines() -> Vec<serde_json::Value> {
    let log = audit_log().lock().expect("log").clone();
    String::from_utf8_lossy(&log)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|line| line["fields"].clone())
        .collect()
}

/// A secured server: its keys and policy files live as long as it does.
struct Secured {
    server: TestServer,
    http: HttpFrontEnd,
    _files: tempfile::TempDir,
}

fn repository(upload: bool) -> RepositoryOptions {
    RepositoryOptions {
        control_mode: ControlMode::Explicit,
        startup_models: vec!["simple".into(), "mlp_classifier".into()],
        strict_readiness: false,
        allow_model_file_upload: upload,
        ..RepositoryOptions::new(vec![example_repository()])
    }
}

fn server_options(upload: bool) -> ServerOptions {
    TestServer::options(repository(upload), ferry_server::MAX_MESSAGE_BYTES).expect("options")
}

async fn start(change: impl FnOnce(&mut AccessOptions)) -> Secured {
    audit_log();
    let files = tempfile::tempdir().expect("dir");
    let keys: PathBuf = files.path().join("keys");
    let policy: PathBuf = files.path().join("policy.toml");
    let entries = format!(
        "# test identities\nadmin {}\noutsider {}\nviewer {}\n",
        hash_key(ADMIN_KEY.as_bytes()),
        hash_key(OUTSIDER_KEY.as_bytes()),
        hash_key(VIEWER_KEY.as_bytes())
    );
    std::fs::write(&keys, entries).expect("keys");
    std::fs::write(&policy, POLICY).expect("policy");
    let jwks = files.path().join("jwks.json");
    std::fs::write(&jwks, &tokens().jwks).expect("jwks");
    let mut options = AccessOptions {
        api_keys_file: Some(keys),
        policy_file: Some(policy),
        jwt: Some(JwtOptions {
            jwks_file: jwks,
            issuer: Some(ISSUER.to_owned()),
            audience: Some(AUDIENCE.to_owned()),
            leeway_secs: 5,
        }),
        ..AccessOptions::default()
    };
    change(&mut options);
    let access = Access::load(&options).expect("access");
    let server = TestServer::start_with_access(server_options(false), access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    Secured {
        server,
        http,
        _files: files,
    }
}

/// Who calls, in the table's cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    WrongKey,
    ExpiredToken,
    NotYetValidToken,
    WrongAudienceToken,
    BadlySignedToken,
    Outsider,
    Admin,
    AdminToken,
}

impl Caller {
    const ALL: [Caller; 9] = [
        Caller::Nobody,
        Caller::WrongKey,
        Caller::ExpiredToken,
        Caller::NotYetValidToken,
        Caller::WrongAudienceToken,
        Caller::BadlySignedToken,
        Caller::Outsider,
        Caller::Admin,
        Caller::AdminToken,
    ];

    /// The header that carries the credential: `authorization` for some keys, `x-api-key` for others, so
    /// both are used; tokens are bearer tokens.
    fn header(self) -> Option<(&'static str, String)> {
        let bearer = |credential: String| Some(("authorization", format!("Bearer {credential}")));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        match self {
            Caller::Nobody => None,
            Caller::WrongKey => Some(("x-api-key", WRONG_KEY.to_owned())),
            Caller::ExpiredToken => bearer(token("admin", false, |c| c["exp"] = (now - 60).into())),
            Caller::NotYetValidToken => bearer(token("admin", true, |c| c["nbf"] = (now + 60).into())),
            Caller::WrongAudienceToken => bearer(token("admin", false, |c| c["aud"] = "other".into())),
            Caller::BadlySignedToken => {
                // The admin's token with the signature of another token.
                let good = token("admin", true, |_| {});
                let other = token("outsider", true, |_| {});
                let (head, _) = good.rsplit_once('.').expect("jwt");
                let (_, signature) = other.rsplit_once('.').expect("jwt");
                bearer(format!("{head}.{signature}"))
            }
            Caller::Outsider => bearer(OUTSIDER_KEY.to_owned()),
            Caller::Admin => bearer(ADMIN_KEY.to_owned()),
            Caller::AdminToken => bearer(token("admin", true, |_| {})),
        }
    }

    /// What the refusal of a credential that identifies no one says, if this caller's does not.
    fn unauthenticated(self) -> Option<&'static str> {
        match self {
            Caller::WrongKey => Some("the API key is not valid"),
            Caller::ExpiredToken => Some("the bearer token has expired ('exp')"),
            Caller::NotYetValidToken => Some("the bearer token is not valid yet ('nbf')"),
            Caller::WrongAudienceToken => {
                Some("the bearer token is not for this server ('aud' is not --jwt-audience)")
            }
            Caller::BadlySignedToken => Some("the bearer token has a signature that does not verify"),
            _ => None,
        }
    }
}

fn with_caller<T>(message: T, caller: Caller) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some((name, value)) = caller.header() {
        request
            .metadata_mut()
            .insert(name, MetadataValue::try_from(value).expect("metadata"));
    }
    request
}

fn simple_infer() -> pb::ModelInferRequest {
    let tensor = |name: &str| pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    let raw: Vec<u8> = (0..16i32).flat_map(i32::to_le_bytes).collect();
    pb::ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
        raw_input_contents: vec![raw.clone().into(), raw.into()],
        ..Default::default()
    }
}

/// One RPC as `caller`: its status, or `Ok`.
async fn call(
    client: &mut GrpcInferenceServiceClient<Channel>,
    channel: &Channel,
    rpc: &str,
    caller: Caller,
    shm: &ShmObject,
) -> Result<(), Status> {
    macro_rules! unary {
        ($method:ident, $message:expr) => {
            client
                .$method(with_caller($message, caller))
                .await
                .map(|_| ())
        };
    }
    let simple = || "simple".to_owned();
    match rpc {
        "ServerLive" => unary!(server_live, pb::ServerLiveRequest {}),
        "ServerReady" => unary!(server_ready, pb::ServerReadyRequest {}),
        "ModelReady" => unary!(
            model_ready,
            pb::ModelReadyRequest {
                name: simple(),
                version: String::new()
            }
        ),
        "Health" => {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            health.check(with_caller(request, caller)).await.map(|_| ())
        }
        "ServerMetadata" => unary!(server_metadata, pb::ServerMetadataRequest {}),
        "ModelMetadata" => unary!(
            model_metadata,
            pb::ModelMetadataRequest {
                name: simple(),
                version: String::new()
            }
        ),
        "ModelConfig" => unary!(
            model_config,
            pb::ModelConfigRequest {
                name: simple(),
                version: String::new()
            }
        ),
        "ModelInfer" => unary!(model_infer, simple_infer()),
        "ModelStreamInfer" => {
            let mut request = with_caller(tokio_stream::iter(vec![simple_infer()]), caller);
            request
                .metadata_mut()
                .insert("triton_grpc_error", MetadataValue::from_static("true"));
            let mut responses = client.model_stream_infer(request).await?.into_inner();
            match responses.message().await? {
                Some(_) => Ok(()),
                None => Err(Status::internal("the stream ended without an answer")),
            }
        }
        "ModelStatistics" => {
            unary!(
                model_statistics,
                pb::ModelStatisticsRequest {
                    name: simple(),
                    version: String::new()
                }
            )
        }
        "RepositoryIndex" => unary!(repository_index, pb::RepositoryIndexRequest::default()),
        "RepositoryModelLoad" => unary!(
            repository_model_load,
            pb::RepositoryModelLoadRequest {
                model_name: "linear_auto".into(),
                ..Default::default()
            }
        ),
        "RepositoryModelUnload" => unary!(
            repository_model_unload,
            pb::RepositoryModelUnloadRequest {
                model_name: "linear_auto".into(),
                ..Default::default()
            }
        ),
        "SystemSharedMemoryStatus" => {
            unary!(
                system_shared_memory_status,
                pb::SystemSharedMemoryStatusRequest::default()
            )
        }
        "SystemSharedMemoryRegister" => unary!(
            system_shared_memory_register,
            pb::SystemSharedMemoryRegisterRequest {
                name: "grpc_region".into(),
                key: shm.key.clone(),
                offset: 0,
                byte_size: 64,
            }
        ),
        "SystemSharedMemoryUnregister" => unary!(
            system_shared_memory_unregister,
            pb::SystemSharedMemoryUnregisterRequest {
                name: "grpc_region".into()
            }
        ),
        "CudaSharedMemoryStatus" => unary!(
            cuda_shared_memory_status,
            pb::CudaSharedMemoryStatusRequest::default()
        ),
        "CudaSharedMemoryRegister" => unary!(
            cuda_shared_memory_register,
            pb::CudaSharedMemoryRegisterRequest {
                name: "cuda".into(),
                byte_size: 64,
                ..Default::default()
            }
        ),
        "CudaSharedMemoryUnregister" => unary!(
            cuda_shared_memory_unregister,
            pb::CudaSharedMemoryUnregisterRequest { name: "cuda".into() }
        ),
        "TraceSetting" => unary!(trace_setting, pb::TraceSettingRequest::default()),
        "LogSettings" => unary!(log_settings, pb::LogSettingsRequest::default()),
        other => panic!("no call for {other}"),
    }
}

/// Every RPC of `inference.GRPCInferenceService` and gRPC health checking: the scope it needs (`None`: open)
/// and whether the admin's call succeeds (`false`: it fails, but for its own reasons, not the caller's).
const RPCS: &[(&str, Option<&str>, bool)] = &[
    ("ServerLive", None, true),
    ("ServerReady", None, true),
    ("ModelReady", None, true),
    ("Health", None, true),
    ("ServerMetadata", Some("metadata"), true),
    ("ModelMetadata", Some("metadata"), true),
    ("ModelConfig", Some("metadata"), true),
    ("ModelInfer", Some("infer"), true),
    ("ModelStreamInfer", Some("infer"), true),
    ("ModelStatistics", Some("stats"), true),
    ("RepositoryIndex", Some("repository"), true),
    ("RepositoryModelLoad", Some("repository"), true),
    ("RepositoryModelUnload", Some("repository"), true),
    ("SystemSharedMemoryStatus", Some("shm"), true),
    ("SystemSharedMemoryRegister", Some("shm"), true),
    ("SystemSharedMemoryUnregister", Some("shm"), true),
    ("CudaSharedMemoryStatus", Some("shm"), true),
    ("CudaSharedMemoryRegister", Some("shm"), false),
    ("CudaSharedMemoryUnregister", Some("shm"), true),
    ("TraceSetting", Some("settings"), true),
    ("LogSettings", Some("settings"), true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_admits_only_callers_with_its_scope() {
    let secured = start(|_| {}).await;
    let channel = Channel::from_shared(format!("http://{}", secured.server.address))
        .expect("uri")
        .connect()
        .await
        .expect("channel");
    let mut client = GrpcInferenceServiceClient::new(channel.clone());
    let shm = ShmObject::new("auth_grpc", 64);
    // Callers outside, so that each admitted caller loads before it unloads and registers before it
    // unregisters.
    for caller in Caller::ALL {
        for &(rpc, scope, admin_succeeds) in RPCS {
            let outcome = call(&mut client, &channel, rpc, caller, &shm).await;
            let case = format!("{rpc} as {caller:?}: {outcome:?}");
            match (scope, caller) {
                (None, _) => assert!(outcome.is_ok(), "{case}"),
                (Some(scope), Caller::Nobody) => {
                    let status = outcome.expect_err(&case);
                    assert_eq!(status.code(), Code::Unauthenticated, "{case}");
                    assert!(
                        status.message().contains(&format!("needs the '{scope}' scope")),
                        "{case}"
                    );
                    assert!(status.message().contains("authorization: Bearer <key>"), "{case}");
                }
                (Some(_), caller) if caller.unauthenticated().is_some() => {
                    let status = outcome.expect_err(&case);
                    assert_eq!(status.code(), Code::Unauthenticated, "{case}");
                    assert_eq!(Some(status.message()), caller.unauthenticated(), "{case}");
                }
                (Some(scope), Caller::Outsider) => {
                    let status = outcome.expect_err(&case);
                    assert_eq!(status.code(), Code::PermissionDenied, "{case}");
                    assert!(
                        status
                            .message()
                            .starts_with(&format!("identity 'outsider' lacks the '{scope}' scope")),
                        "{case}"
                    );
                }
                (Some(_), _) if admin_succeeds => assert!(outcome.is_ok(), "{case}"),
                (Some(_), _) => {
                    let code = outcome.expect_err(&case).code();
                    assert!(
                        !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                        "{case}"
                    );
                }
            }
        }
    }
    // The core, not the layer, refused the outsider's inference: it named the model.
    let status = call(&mut client, &channel, "ModelInfer", Caller::Outsider, &shm)
        .await
        .expect_err("refused");
    assert!(status.message().contains("for model 'simple'"), "{status:?}");

    // The admin's load and the outsider's refused unload were both audited.
    let lines = audit_lines();
    let found = |identity: &str, action: &str, object: &str, outcome: &str| {
        lines.iter().any(|line| {
            line["identity"] == identity
                && line["action"] == action
                && line["object"] == object
                && line["outcome"] == outcome
        })
    };
    assert!(
        found("admin", "RepositoryModelLoad", "linear_auto", "ok"),
        "{lines:?}"
    );
    assert!(
        found("admin", "SystemSharedMemoryRegister", "grpc_region", "ok"),
        "{lines:?}"
    );
    assert!(
        found("outsider", "RepositoryModelUnload", "", "refused"),
        "{lines:?}"
    );
    assert!(found("unverified", "TraceSetting", "", "refused"), "{lines:?}");
    let log = String::from_utf8_lossy(&audit_log().lock().expect("log")).into_owned();
    for secret in [ADMIN_KEY, OUTSIDER_KEY, WRONG_KEY] {
        assert!(!log.contains(secret), "a key reached the log");
    }
    secured.server.stop().await;
}

/// Every REST route (Triton's paths, with and without versions, repository names and regions): the scope
/// it needs and the admin's status.
fn rest_routes(shm_key: &str) -> Vec<(&'static str, String, String, Option<&'static str>, u16)> {
    let infer = serde_json::json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": vec![1; 16]},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": vec![2; 16]},
    ]})
    .to_string();
    let register = serde_json::json!({"key": shm_key, "offset": 0, "byte_size": 64}).to_string();
    let none = String::new;
    vec![
        ("GET", "/v2/health/live".into(), none(), None, 200),
        ("GET", "/v2/health/ready".into(), none(), None, 200),
        ("GET", "/v2/models/simple/ready".into(), none(), None, 200),
        (
            "GET",
            "/v2/models/simple/versions/1/ready".into(),
            none(),
            None,
            200,
        ),
        ("GET", "/v2".into(), none(), Some("metadata"), 200),
        ("GET", "/v2/models/simple".into(), none(), Some("metadata"), 200),
        (
            "GET",
            "/v2/models/simple/versions/1".into(),
            none(),
            Some("metadata"),
            200,
        ),
        (
            "GET",
            "/v2/models/simple/config".into(),
            none(),
            Some("metadata"),
            200,
        ),
        (
            "GET",
            "/v2/models/simple/versions/1/config".into(),
            none(),
            Some("metadata"),
            200,
        ),
        ("GET", "/v2/models/stats".into(), none(), Some("stats"), 200),
        (
            "GET",
            "/v2/models/simple/stats".into(),
            none(),
            Some("stats"),
            200,
        ),
        (
            "GET",
            "/v2/models/simple/versions/1/stats".into(),
            none(),
            Some("stats"),
            200,
        ),
        (
            "POST",
            "/v2/models/simple/infer".into(),
            infer.clone(),
            Some("infer"),
            200,
        ),
        (
            "POST",
            "/v2/models/simple/versions/1/infer".into(),
            infer,
            Some("infer"),
            200,
        ),
        (
            "POST",
            "/v2/repository/index".into(),
            none(),
            Some("repository"),
            200,
        ),
        (
            "POST",
            "/v2/repository/other/index".into(),
            none(),
            Some("repository"),
            200,
        ),
        (
            "POST",
            "/v2/repository/models/linear_auto/load".into(),
            none(),
            Some("repository"),
            200,
        ),
        (
            "POST",
            "/v2/repository/models/linear_auto/unload".into(),
            none(),
            Some("repository"),
            200,
        ),
        // Triton refuses a repository name on load and unload (501) once the caller is admitted.
        (
            "POST",
            "/v2/repository/other/models/linear_auto/load".into(),
            none(),
            Some("repository"),
            501,
        ),
        (
            "POST",
            "/v2/repository/other/models/linear_auto/unload".into(),
            none(),
            Some("repository"),
            501,
        ),
        (
            "GET",
            "/v2/systemsharedmemory/status".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/systemsharedmemory/region/rest_region/register".into(),
            register,
            Some("shm"),
            200,
        ),
        (
            "GET",
            "/v2/systemsharedmemory/region/rest_region/status".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/systemsharedmemory/region/rest_region/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/systemsharedmemory/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        // Register needs a region name (400) once the caller is admitted.
        (
            "POST",
            "/v2/systemsharedmemory/register".into(),
            none(),
            Some("shm"),
            400,
        ),
        (
            "GET",
            "/v2/cudasharedmemory/status".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "GET",
            "/v2/cudasharedmemory/region/c/status".into(),
            none(),
            Some("shm"),
            404,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/region/c/register".into(),
            "{}".into(),
            Some("shm"),
            400,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/region/c/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/unregister".into(),
            none(),
            Some("shm"),
            200,
        ),
        (
            "POST",
            "/v2/cudasharedmemory/register".into(),
            none(),
            Some("shm"),
            400,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_route_admits_only_callers_with_its_scope() {
    let secured = start(|_| {}).await;
    let shm = ShmObject::new("auth_rest", 64);
    let routes = rest_routes(&shm.key);
    for caller in Caller::ALL {
        for (method, path, body, scope, admin_status) in &routes {
            let (method, path, body, scope, admin_status) = (*method, path, body, *scope, *admin_status);
            let headers: Vec<(&str, String)> = caller.header().into_iter().collect();
            let reply =
                rest_request_with_headers(secured.http.address, method, path, &headers, body.as_bytes())
                    .await
                    .expect("reply");
            let case = format!("{method} {path} as {caller:?}: {} {}", reply.status, reply.text());
            let error = || -> String {
                serde_json::from_slice::<serde_json::Value>(&reply.body).expect(&case)["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            match (scope, caller) {
                (None, _) => assert_eq!(reply.status, 200, "{case}"),
                (Some(scope), Caller::Nobody) => {
                    assert_eq!(reply.status, 401, "{case}");
                    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
                    assert!(error().contains(&format!("needs the '{scope}' scope")), "{case}");
                }
                (Some(_), caller) if caller.unauthenticated().is_some() => {
                    assert_eq!(reply.status, 401, "{case}");
                    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
                    assert_eq!(Some(error().as_str()), caller.unauthenticated(), "{case}");
                }
                (Some(scope), Caller::Outsider) => {
                    assert_eq!(reply.status, 403, "{case}");
                    assert!(
                        error().starts_with(&format!("identity 'outsider' lacks the '{scope}' scope")),
                        "{case}"
                    );
                }
                (Some(_), _) => assert_eq!(reply.status, admin_status, "{case}"),
            }
        }
    }
    secured.http.stop().await;
    secured.server.stop().await;
}

/// A caller limited to `simple` sees only `simple` in listings, and is refused other models by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_only_the_models_a_caller_may_see() {
    let secured = start(|_| {}).await;
    let mut client = secured.server.raw_client().await.expect("client");
    let stats = client
        .model_statistics(as_viewer(pb::ModelStatisticsRequest::default()))
        .await
        .expect("stats")
        .into_inner();
    let names: Vec<_> = stats.model_stats.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["simple"]);
    let mut request = tonic::Request::new(pb::ModelStatisticsRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(ADMIN_KEY));
    let all = client
        .model_statistics(request)
        .await
        .expect("stats")
        .into_inner();
    assert!(
        all.model_stats.iter().any(|s| s.name == "mlp_classifier"),
        "the admin sees every model"
    );
    let index = client
        .repository_index(as_viewer(pb::RepositoryIndexRequest::default()))
        .await
        .expect("index")
        .into_inner();
    let names: Vec<_> = index.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["simple"]);
    let refused = client
        .model_metadata(as_viewer(pb::ModelMetadataRequest {
            name: "mlp_classifier".into(),
            version: String::new(),
        }))
        .await
        .expect_err("another model");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "identity 'viewer' lacks the 'metadata' scope for model 'mlp_classifier' that ModelMetadata needs; \
         grant it in the --auth-policy file"
    );
    // An unknown model is refused the same way, so a caller cannot tell which models exist.
    let unknown = client
        .model_metadata(as_viewer(pb::ModelMetadataRequest {
            name: "secret_model".into(),
            version: String::new(),
        }))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::PermissionDenied);
    secured.server.stop().await;
}

fn as_viewer<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(VIEWER_KEY));
    request
}

/// `--disable-api` closes a group to everyone, admin included, and says which flag did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_api_is_closed_to_everyone() {
    let secured = start(|options| options.disabled = vec![Scope::Repository, Scope::Shm]).await;
    let admin = [("authorization", format!("Bearer {ADMIN_KEY}"))];
    let reply = rest_request_with_headers(secured.http.address, "POST", "/v2/repository/index", &admin, b"")
        .await
        .expect("reply");
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply.text().contains("--disable-api repository"),
        "{}",
        reply.text()
    );
    let mut client = secured.server.raw_client().await.expect("client");
    let mut request = tonic::Request::new(pb::SystemSharedMemoryStatusRequest::default());
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(ADMIN_KEY));
    let status = client
        .system_shared_memory_status(request)
        .await
        .expect_err("closed");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("--disable-api shm"), "{status:?}");
    let mut request = tonic::Request::new(simple_infer());
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static(ADMIN_KEY));
    client.model_infer(request).await.expect("inference stays open");
    secured.server.stop().await;
}

/// A load request that carries model files, over gRPC and REST: refused by default, naming the flag, and
/// loaded with `--allow-model-file-upload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_file_uploads_need_their_flag() {
    let model = std::fs::read(example_repository().join("simple/1/model.onnx")).expect("model");
    let config = r#"{"max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                  {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": [16]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16]},
                   {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [16]}]}"#;
    let load = || pb::RepositoryModelLoadRequest {
        model_name: "uploaded".into(),
        parameters: [
            ("config".to_owned(), ParameterChoice::StringParam(config.into())),
            (
                "file:1/model.onnx".to_owned(),
                ParameterChoice::BytesParam(model.clone().into()),
            ),
        ]
        .into_iter()
        .map(|(key, choice)| {
            (
                key,
                pb::ModelRepositoryParameter {
                    parameter_choice: Some(choice),
                },
            )
        })
        .collect(),
        ..Default::default()
    };
    for upload in [false, true] {
        let server = TestServer::start_with_options(server_options(upload))
            .await
            .expect("server");
        let http = server.start_http().await.expect("REST");
        let mut client = server.raw_client().await.expect("client");
        let outcome = client.repository_model_load(load()).await;
        let body = serde_json::json!({"parameters": {
            "config": config,
            "file:1/model.onnx": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &model),
        }})
        .to_string();
        let reply = rest_request_with_headers(
            http.address,
            "POST",
            "/v2/repository/models/uploaded/load",
            &[],
            body.as_bytes(),
        )
        .await
        .expect("reply");
        if upload {
            outcome.expect("loaded from the request");
            assert_eq!(reply.status, 200, "{}", reply.text());
        } else {
            let status = outcome.expect_err("refused");
            assert_eq!(status.code(), Code::PermissionDenied);
            assert!(
                status.message().contains("--allow-model-file-upload"),
                "{status:?}"
            );
            assert_eq!(reply.status, 403, "{}", reply.text());
            assert!(
                reply.text().contains("--allow-model-file-upload"),
                "{}",
                reply.text()
            );
        }
        http.stop().await;
        server.stop().await;
    }
}

/// The identity a TLS layer proved with a client certificate ([`TransportIdentity`]) is the caller when no
/// key is sent: the policy's grants for that name apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_identity_is_a_caller() {
    use ferry_server::auth::{AuthLayer, TransportIdentity};
    use tower::ServiceExt as _;
    let secured = start(|_| {}).await;
    let service = ferry_server::core::InferenceService::with_shared_memory(
        Arc::clone(secured.server.registry_arc()),
        Arc::default(),
    );
    let access = Arc::clone(secured.server.access());
    let app = ferry_server::http::router(service.with_access(Arc::clone(&access)), 1 << 20)
        .layer(AuthLayer::http(access));
    let request = |identity: Option<&str>| {
        let mut request = http::Request::get("/v2/models/simple")
            .body(String::new())
            .expect("request");
        if let Some(name) = identity {
            request
                .extensions_mut()
                .insert(TransportIdentity(name.to_owned()));
        }
        request
    };
    let viewer = app
        .clone()
        .oneshot(request(Some("viewer")))
        .await
        .expect("answer");
    assert_eq!(viewer.status(), 200);
    let stranger = app
        .clone()
        .oneshot(request(Some("stranger")))
        .await
        .expect("answer");
    assert_eq!(stranger.status(), 403);
    let nobody = app.oneshot(request(None)).await.expect("answer");
    assert_eq!(nobody.status(), 401);
    secured.server.stop().await;
}

/// Triton's `--grpc-restricted-protocol` and `--http-restricted-api`, driven by tritonclient with its
/// `headers=` argument, as Triton's own `L0_grpc` restricted protocol tests do
/// (`qa/L0_grpc/grpc_client_test.py`, `RestrictedProtocolTest`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_meets_tritons_restricted_groups() {
    let access = Access::load(&AccessOptions {
        grpc_restricted: vec![
            "model-repository:admin-key=admin-value".to_owned(),
            "inference,health:infer-key=infer-value".to_owned(),
        ],
        http_restricted: vec![
            "model-repository:admin-key=admin-value".to_owned(),
            "inference,health:infer-key=infer-value".to_owned(),
        ],
        ..AccessOptions::default()
    })
    .expect("access");
    let server = TestServer::start_with_access(server_options(false), access)
        .await
        .expect("server");
    let http = server.start_http().await.expect("REST");
    let status = run_pytest(
        "test_restricted.py",
        &[("FERRY_GRPC_URL", server.url()), ("FERRY_HTTP_URL", http.url())],
    )
    .await;
    http.stop().await;
    server.stop().await;
    assert!(status.success(), "the restricted-group tests failed: {status}");
}
