//! Every RPC of Triton's gRPC protocol (and gRPC health checking), for every caller of the table.

use ferry_proto::{GrpcInferenceServiceClient, inference as pb};
use ferry_tests::ShmObject;
use tonic::{Code, Status, metadata::MetadataValue, transport::Channel};

use super::{ADMIN_KEY, Caller, OUTSIDER_KEY, WRONG_KEY, audit_lines, audit_log, start};

fn with_caller<T>(message: T, caller: Caller) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some((name, value)) = caller.header() {
        request
            .metadata_mut()
            .insert(name, MetadataValue::try_from(value).expect("metadata"));
    }
    request
}

pub(super) fn simple_infer() -> pb::ModelInferRequest {
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
