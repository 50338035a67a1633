//! What a request asks to do, read from its head alone: the gRPC method, or the REST path.

use super::{Scope, restricted::TritonGroup};

/// One RPC, or the REST route that does the same: its name (Triton's RPC name, for messages and the audit
/// log), Triton's restricted group, and Ferry's scope (none for health, which stays open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The RPC's name, e.g. `RepositoryModelLoad`.
    pub name: &'static str,
    /// The group Triton's restricted-protocol flags put it in.
    pub group: TritonGroup,
    /// The scope a caller needs; `None` for health, open to all.
    pub scope: Option<Scope>,
    /// Whether it is an administrative change written to the audit log.
    pub audited: bool,
}

const fn action(name: &'static str, group: TritonGroup, scope: Option<Scope>) -> Action {
    Action {
        name,
        group,
        scope,
        audited: false,
    }
}

const fn audited(name: &'static str, group: TritonGroup, scope: Scope) -> Action {
    Action {
        name,
        group,
        scope: Some(scope),
        audited: true,
    }
}

/// Every RPC of `inference.GRPCInferenceService`, as named in its paths.
const RPCS: &[Action] = &[
    action("ServerLive", TritonGroup::Health, None),
    action("ServerReady", TritonGroup::Health, None),
    action("ModelReady", TritonGroup::Health, None),
    action("ServerMetadata", TritonGroup::Metadata, Some(Scope::Metadata)),
    action("ModelMetadata", TritonGroup::Metadata, Some(Scope::Metadata)),
    action("ModelConfig", TritonGroup::ModelConfig, Some(Scope::Metadata)),
    action("ModelInfer", TritonGroup::Inference, Some(Scope::Infer)),
    action("ModelStreamInfer", TritonGroup::Inference, Some(Scope::Infer)),
    action("ModelStatistics", TritonGroup::Statistics, Some(Scope::Stats)),
    action(
        "RepositoryIndex",
        TritonGroup::ModelRepository,
        Some(Scope::Repository),
    ),
    audited(
        "RepositoryModelLoad",
        TritonGroup::ModelRepository,
        Scope::Repository,
    ),
    audited(
        "RepositoryModelUnload",
        TritonGroup::ModelRepository,
        Scope::Repository,
    ),
    action(
        "SystemSharedMemoryStatus",
        TritonGroup::SharedMemory,
        Some(Scope::Shm),
    ),
    audited(
        "SystemSharedMemoryRegister",
        TritonGroup::SharedMemory,
        Scope::Shm,
    ),
    audited(
        "SystemSharedMemoryUnregister",
        TritonGroup::SharedMemory,
        Scope::Shm,
    ),
    action(
        "CudaSharedMemoryStatus",
        TritonGroup::SharedMemory,
        Some(Scope::Shm),
    ),
    audited("CudaSharedMemoryRegister", TritonGroup::SharedMemory, Scope::Shm),
    audited(
        "CudaSharedMemoryUnregister",
        TritonGroup::SharedMemory,
        Scope::Shm,
    ),
    audited("TraceSetting", TritonGroup::Trace, Scope::Settings),
    audited("LogSettings", TritonGroup::Logging, Scope::Settings),
];

/// Ferry's input drift report (`GET .../drift`): statistics, so the `stats` scope.
const DRIFT_REPORT: Action = action(
    crate::core::DRIFT_REPORT,
    TritonGroup::Statistics,
    Some(Scope::Stats),
);
/// Ferry's drift baseline change (`POST .../drift/baseline`): an administrative change of a served model,
/// so the `repository` scope, audited.
const DRIFT_BASELINE: Action = audited(
    crate::core::DRIFT_BASELINE,
    TritonGroup::ModelRepository,
    Scope::Repository,
);
/// Ferry's feedback post (`POST .../feedback`): the outcome of inferences, so the `infer` scope.
const POST_FEEDBACK: Action = action(
    crate::core::POST_FEEDBACK,
    TritonGroup::Inference,
    Some(Scope::Infer),
);
/// Ferry's live quality report (`GET .../quality`): statistics, so the `stats` scope.
const MODEL_QUALITY: Action = action(
    crate::core::MODEL_QUALITY,
    TritonGroup::Statistics,
    Some(Scope::Stats),
);
/// Every RPC of Ferry's own `ferry.traffic.v1.Traffic`: model administration, so the `repository` scope
/// and Triton's model-repository group; the changes are audited.
const TRAFFIC_RPCS: &[Action] = &[
    action(
        "GetTraffic",
        TritonGroup::ModelRepository,
        Some(Scope::Repository),
    ),
    audited("SetTraffic", TritonGroup::ModelRepository, Scope::Repository),
    audited("SetLabel", TritonGroup::ModelRepository, Scope::Repository),
    audited("Promote", TritonGroup::ModelRepository, Scope::Repository),
    audited("Rollback", TritonGroup::ModelRepository, Scope::Repository),
    action("History", TritonGroup::ModelRepository, Some(Scope::Repository)),
];

/// The traffic RPC named `name`.
fn traffic_rpc(name: &str) -> Option<Action> {
    TRAFFIC_RPCS.iter().find(|rpc| rpc.name == name).copied()
}

/// gRPC health checking (`grpc.health.v1.Health`), which Triton's `health` group also restricts.
const GRPC_HEALTH: Action = action("Health", TritonGroup::Health, None);

/// The action of a gRPC request path, `/<service>/<method>`; `None` for paths outside Triton's protocol,
/// Ferry's drift service and health checking (server reflection), which pass untouched.
pub fn grpc_action(path: &str) -> Option<Action> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    match service {
        "inference.GRPCInferenceService" => RPCS.iter().find(|rpc| rpc.name == method).copied(),
        "grpc.health.v1.Health" => Some(GRPC_HEALTH),
        "ferry.drift.v1.DriftService" => [DRIFT_REPORT, DRIFT_BASELINE]
            .into_iter()
            .find(|action| action.name == method),
        "ferry.traffic.v1.Traffic" => traffic_rpc(method),
        "ferry.feedback.v1.Feedback" => [POST_FEEDBACK, MODEL_QUALITY]
            .into_iter()
            .find(|action| action.name == method),
        _ => None,
    }
}

/// The RPC named `name`.
fn rpc(name: &str) -> Option<Action> {
    RPCS.iter().find(|rpc| rpc.name == name).copied()
}

/// The action of a REST path (Triton's routes, `HTTPAPIServer::Handle`); `None` for paths REST does not
/// serve, which the router refuses. The method plays no part: a wrong one is refused by the router after
/// the caller is admitted, as Triton checks the restriction before the method.
pub fn http_action(path: &str) -> Option<Action> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v2"] => rpc("ServerMetadata"),
        ["v2", "health", "live"] => rpc("ServerLive"),
        ["v2", "health", "ready"] => rpc("ServerReady"),
        ["v2", "models", "stats"] => rpc("ModelStatistics"),
        ["v2", "models", _model, rest @ ..] => {
            let rest = match rest {
                ["versions", _version, rest @ ..] => rest,
                rest => rest,
            };
            match rest {
                [] => rpc("ModelMetadata"),
                ["ready"] => rpc("ModelReady"),
                ["config"] => rpc("ModelConfig"),
                ["stats"] => rpc("ModelStatistics"),
                ["infer"] => rpc("ModelInfer"),
                ["drift"] => Some(DRIFT_REPORT),
                ["drift", "baseline"] => Some(DRIFT_BASELINE),
                ["feedback"] => Some(POST_FEEDBACK),
                ["quality"] => Some(MODEL_QUALITY),
                // One path serves GET and PUT; the layer does not see the method, so a refused read is
                // audited as the write it could have been, rather than a refused write going unaudited.
                ["traffic"] => traffic_rpc("SetTraffic"),
                ["traffic", "labels", _label] => traffic_rpc("SetLabel"),
                ["traffic", "promote"] => traffic_rpc("Promote"),
                ["traffic", "rollback"] => traffic_rpc("Rollback"),
                ["traffic", "history"] => traffic_rpc("History"),
                _ => None,
            }
        }
        ["v2", "repository", .., "index"] => rpc("RepositoryIndex"),
        ["v2", "repository", .., "load"] => rpc("RepositoryModelLoad"),
        ["v2", "repository", .., "unload"] => rpc("RepositoryModelUnload"),
        ["v2", kind @ ("systemsharedmemory" | "cudasharedmemory"), .., verb] => {
            let prefix = if *kind == "systemsharedmemory" {
                "SystemSharedMemory"
            } else {
                "CudaSharedMemory"
            };
            let name = match *verb {
                "status" => "Status",
                "register" => "Register",
                "unregister" => "Unregister",
                _ => return None,
            };
            RPCS.iter()
                .find(|rpc| rpc.name.strip_prefix(prefix) == Some(name))
                .copied()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_has_an_action() {
        for rpc in RPCS {
            let path = format!("/inference.GRPCInferenceService/{}", rpc.name);
            assert_eq!(grpc_action(&path), Some(*rpc));
        }
        for rpc in TRAFFIC_RPCS {
            let path = format!("/ferry.traffic.v1.Traffic/{}", rpc.name);
            assert_eq!(grpc_action(&path), Some(*rpc));
            assert_eq!(rpc.scope, Some(Scope::Repository));
        }
        assert_eq!(grpc_action("/grpc.health.v1.Health/Check"), Some(GRPC_HEALTH));
        assert_eq!(
            grpc_action("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(grpc_action("/inference.GRPCInferenceService/Nope"), None);
        assert_eq!(
            grpc_action("/ferry.drift.v1.DriftService/DriftBaseline"),
            Some(DRIFT_BASELINE)
        );
        assert_eq!(
            grpc_action("/ferry.drift.v1.DriftService/DriftReport"),
            Some(DRIFT_REPORT)
        );
        assert_eq!(grpc_action("/ferry.drift.v1.DriftService/Nope"), None);
        assert_eq!(
            grpc_action("/ferry.feedback.v1.Feedback/PostFeedback").and_then(|a| a.scope),
            Some(Scope::Infer)
        );
        assert_eq!(
            grpc_action("/ferry.feedback.v1.Feedback/ModelQuality").and_then(|a| a.scope),
            Some(Scope::Stats)
        );
    }

    #[test]
    fn rest_routes_are_the_rpcs_they_do() {
        let cases = [
            ("/v2", "ServerMetadata"),
            ("/v2/health/live", "ServerLive"),
            ("/v2/health/ready", "ServerReady"),
            ("/v2/models/stats", "ModelStatistics"),
            ("/v2/models/simple", "ModelMetadata"),
            ("/v2/models/simple/versions/1", "ModelMetadata"),
            ("/v2/models/simple/ready", "ModelReady"),
            ("/v2/models/simple/versions/1/config", "ModelConfig"),
            ("/v2/models/simple/stats", "ModelStatistics"),
            ("/v2/models/simple/versions/1/infer", "ModelInfer"),
            ("/v2/models/simple/drift", "DriftReport"),
            ("/v2/models/simple/feedback", "PostFeedback"),
            ("/v2/models/simple/versions/1/quality", "ModelQuality"),
            ("/v2/models/simple/versions/1/drift/baseline", "DriftBaseline"),
            ("/v2/repository/index", "RepositoryIndex"),
            ("/v2/models/simple/traffic", "SetTraffic"),
            ("/v2/models/simple/traffic/labels/canary", "SetLabel"),
            ("/v2/models/simple/traffic/promote", "Promote"),
            ("/v2/models/simple/traffic/rollback", "Rollback"),
            ("/v2/models/simple/traffic/history", "History"),
            ("/v2/repository/models/simple/load", "RepositoryModelLoad"),
            ("/v2/repository/r/models/simple/unload", "RepositoryModelUnload"),
            ("/v2/systemsharedmemory/status", "SystemSharedMemoryStatus"),
            (
                "/v2/systemsharedmemory/region/r/register",
                "SystemSharedMemoryRegister",
            ),
            (
                "/v2/cudasharedmemory/region/r/unregister",
                "CudaSharedMemoryUnregister",
            ),
        ];
        for (path, name) in cases {
            assert_eq!(http_action(path).map(|a| a.name), Some(name), "{path}");
        }
        let freeze = http_action("/v2/models/m/drift/baseline").expect("drift baseline");
        assert_eq!((freeze.scope, freeze.audited), (Some(Scope::Repository), true));
        assert_eq!(
            http_action("/v2/models/m/versions/2/drift").and_then(|a| a.scope),
            Some(Scope::Stats)
        );
        for path in [
            "/",
            "/v2/models/m/drift/nope",
            "/v2/nope",
            "/v2/models/simple/nope",
            "/v2/systemsharedmemory/x",
        ] {
            assert_eq!(http_action(path), None, "{path}");
        }
    }
}
