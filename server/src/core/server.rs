//! The server and its models described: liveness, readiness, ServerMetadata, and each model's readiness,
//! metadata, config and statistics.

use std::sync::Arc;

use ferry_proto::inference::{self as pb, model_metadata_response::TensorMetadata};

use super::InferenceService;
use crate::{
    Error,
    auth::{Scope, Target},
    config::{ModelSpec, TensorSpec},
    request::full_dims,
};

/// The name ServerMetadata reports unless `--server-name` says otherwise.
pub const SERVER_NAME: &str = "ferry";
/// The longest name `--server-name` accepts.
pub const MAX_SERVER_NAME_BYTES: usize = 64;

/// The name ServerMetadata reports (gRPC and REST `GET /v2`): "ferry" by default, or another name, such as
/// "triton" for a drop-in replacement whose clients check it. Checked once, where it is configured: 1 to
/// [`MAX_SERVER_NAME_BYTES`] bytes of printable ASCII (letters, digits, punctuation and inner spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerName(Arc<str>);

impl ServerName {
    /// Accepts `name` if it is 1 to [`MAX_SERVER_NAME_BYTES`] bytes of printable ASCII that neither starts
    /// nor ends with a space; the error says which rule it breaks.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX_SERVER_NAME_BYTES {
            return Err(format!(
                "a server name is 1 to {MAX_SERVER_NAME_BYTES} bytes long, got {} bytes",
                name.len()
            ));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
            return Err(format!(
                "a server name is printable ASCII (letters, digits, punctuation, spaces), got {bad:?}"
            ));
        }
        if name.starts_with(' ') || name.ends_with(' ') {
            return Err("a server name must not start or end with a space".to_owned());
        }
        Ok(ServerName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ServerName {
    fn default() -> Self {
        ServerName(Arc::from(SERVER_NAME))
    }
}

impl std::str::FromStr for ServerName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        ServerName::parse(name)
    }
}

/// The protocol extensions Ferry serves, as ServerMetadata lists them.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "model_configuration",
    "model_repository",
    // Triton's name for honouring `unload_dependents` on unload requests (ensembles' members).
    "model_repository(unload_dependents)",
    "schedule_policy",
    "statistics",
    "system_shared_memory",
];

/// Triton lists `cuda_shared_memory` only when it can serve it: Ferry does when this machine has a GPU.
fn cuda_extension() -> Option<&'static str> {
    (!crate::gpu::inventory().devices.is_empty()).then_some("cuda_shared_memory")
}

impl InferenceService {
    /// Whether the server is live (ServerLive, `/v2/health/live`): always, while it answers at all.
    pub fn is_live(&self) -> bool {
        true
    }

    /// Whether the server is ready (ServerReady, `/v2/health/ready`). Start-up loading ends before the server
    /// accepts connections; after that, readiness follows the models and ends when shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.registry.is_ready()
    }

    /// ServerMetadata: the server's name, version and the extensions it serves.
    pub fn server_info(&self) -> pb::ServerMetadataResponse {
        pb::ServerMetadataResponse {
            name: self.server_name.as_str().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: EXTENSIONS
                .iter()
                .copied()
                .chain(cuda_extension())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// ModelReady: whether `version` of the model (any version, when empty; a version label's version)
    /// serves. As in Triton, only a version that is not a number (nor a label) is an error; anything else
    /// not serving is simply not ready.
    pub fn is_model_ready(&self, request: &pb::ModelReadyRequest) -> Result<bool, Error> {
        match self.registry.resolve(&request.name, &request.version) {
            Ok(_) => Ok(true),
            // A version that is neither a number nor a label of the model.
            Err(error @ Error::InvalidRequest(_)) => Err(error),
            Err(_) => Ok(false),
        }
    }

    /// ModelMetadata: the model's tensors (with the batch dimension, as clients see them) and its ready
    /// versions.
    pub fn describe_model(
        &self,
        request: &pb::ModelMetadataRequest,
    ) -> Result<pb::ModelMetadataResponse, Error> {
        self.authorize("ModelMetadata", Scope::Metadata, Target::Model(&request.name))?;
        let spec = if request.version.is_empty() {
            let entry = self.registry.model(&request.name)?;
            entry.spec.clone().ok_or_else(|| Error::NoAvailableVersion {
                model: request.name.clone(),
                reason: entry.not_ready_reason(),
            })?
        } else {
            Arc::clone(&self.registry.resolve(&request.name, &request.version)?.spec)
        };
        let entry = self.registry.model(&request.name)?;
        let versions = entry.ready_versions().map(|m| m.version.to_string()).collect();
        Ok(model_metadata(&spec, versions))
    }

    /// ModelConfig: the configuration the model runs with.
    pub fn model_config_of(&self, request: &pb::ModelConfigRequest) -> Result<pb::ModelConfig, Error> {
        self.authorize("ModelConfig", Scope::Metadata, Target::Model(&request.name))?;
        // Every served version runs the model's current config (a change that only touches instance_group
        // or version_policy keeps the versions' sessions), so the entry's config answers for each of them.
        if !request.version.is_empty() {
            self.registry.resolve(&request.name, &request.version)?;
        }
        let entry = self.registry.model(&request.name)?;
        let reason = entry.not_ready_reason();
        let spec = entry.spec.ok_or_else(|| Error::NoAvailableVersion {
            model: request.name.clone(),
            reason,
        })?;
        Ok(spec.config.clone())
    }

    /// ModelStatistics: the statistics of each ready version of the model (of every model the caller may
    /// see, when the name is empty), or of the one version asked for.
    pub fn statistics_of(
        &self,
        request: &pb::ModelStatisticsRequest,
    ) -> Result<pb::ModelStatisticsResponse, Error> {
        let all = request.name.is_empty();
        if !all {
            self.authorize("ModelStatistics", Scope::Stats, Target::Model(&request.name))?;
        }
        let model_stats = self
            .registry
            .ready_versions(&request.name, &request.version)?
            .iter()
            .filter(|model| !all || self.may_see(Scope::Stats, &model.spec.name))
            .map(|model| model.stats.snapshot(&model.spec.name, model.version))
            .collect();
        Ok(pb::ModelStatisticsResponse { model_stats })
    }
}

fn tensor_metadata(tensor: &TensorSpec, max_batch_size: usize) -> TensorMetadata {
    TensorMetadata {
        name: tensor.name.clone(),
        datatype: tensor.data_type.wire_name().to_owned(),
        shape: full_dims(tensor, max_batch_size),
    }
}

fn model_metadata(spec: &ModelSpec, versions: Vec<String>) -> pb::ModelMetadataResponse {
    pb::ModelMetadataResponse {
        name: spec.name.clone(),
        versions,
        platform: spec.config.platform.clone(),
        inputs: spec
            .inputs
            .iter()
            .map(|t| tensor_metadata(t, spec.max_batch_size))
            .collect(),
        outputs: spec
            .outputs
            .iter()
            .map(|t| tensor_metadata(t, spec.max_batch_size))
            .collect(),
    }
}
