//! The Triton-compatible gRPC front end: `inference.GRPCInferenceService` over the shared registry.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use ferry_proto::{
    GrpcInferenceService,
    inference::{
        self as pb, cuda_shared_memory_status_response::RegionStatus as CudaRegionStatus,
        model_metadata_response::TensorMetadata, model_repository_parameter::ParameterChoice,
        repository_index_response::ModelIndex, system_shared_memory_status_response::RegionStatus,
    },
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    Error,
    config::{ModelSpec, TensorSpec},
    repository::{LoadRequest, ModelName},
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
    "schedule_policy",
    "statistics",
    "system_shared_memory",
];

pub use crate::core::InferenceService;

type Reply<T> = Result<Response<T>, Status>;

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

/// Triton's answer to a repository name in a RepositoryIndex, load or unload request (`grpc_server.cc`).
fn refuse_repository_name(repository_name: &str) -> Result<(), Error> {
    if repository_name.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "'repository_name' specification is not supported".to_owned(),
        ))
    }
}

/// The model file parameters of a load request (`file:<version>/<path>`, bytes).
type LoadFiles = Vec<(String, Bytes)>;

/// Reads a load request's parameters: `config` (JSON text) and `file:<version>/<path>` (bytes), refusing
/// others with Triton's texts (`RegisterRepositoryModelLoad` in `grpc_server.cc`).
fn load_parameters(
    parameters: HashMap<String, pb::ModelRepositoryParameter>,
) -> Result<(Option<String>, LoadFiles), Error> {
    let (mut config, mut files) = (None, Vec::new());
    for (key, parameter) in parameters {
        let value = parameter.parameter_choice;
        match (key.as_str(), value) {
            ("config", Some(ParameterChoice::StringParam(json))) => config = Some(json),
            ("config", _) => {
                return Err(Error::invalid(
                    "invalid value type for load parameter 'config', expected string_param.",
                ));
            }
            (file, Some(ParameterChoice::BytesParam(bytes))) if file.starts_with("file:") => {
                files.push((file["file:".len()..].to_owned(), bytes));
            }
            (file, _) if file.starts_with("file:") => {
                return Err(Error::invalid(format!(
                    "invalid value type for load parameter '{file}', expected bytes_param."
                )));
            }
            (other, _) => {
                return Err(Error::invalid(format!("unrecognized load parameter '{other}'.")));
            }
        }
    }
    Ok((config, files))
}

/// Checks an unload request's `unload_dependents` parameter, the one Triton reads; Ferry has no
/// ensembles, so a model has no dependents and the value changes nothing.
fn check_unload_parameters(parameters: &HashMap<String, pb::ModelRepositoryParameter>) -> Result<(), Error> {
    match parameters.get("unload_dependents").map(|p| &p.parameter_choice) {
        None | Some(Some(ParameterChoice::BoolParam(_))) => Ok(()),
        Some(_) => Err(Error::invalid(
            "invalid value type for 'unload_dependents' parameter, expected bool_param.",
        )),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Reply<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<pb::ServerReadyRequest>) -> Reply<pb::ServerReadyResponse> {
        // Start-up loading ends before the server accepts connections; after that, readiness follows the models.
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.registry.is_ready(),
        }))
    }

    async fn model_ready(&self, request: Request<pb::ModelReadyRequest>) -> Reply<pb::ModelReadyResponse> {
        let request = request.into_inner();
        // As in Triton, only a version string that is not a number is an error; anything else not serving
        // is simply not ready.
        if !request.version.is_empty() {
            crate::repository::parse_version(&request.version)?;
        }
        let ready = self.registry.resolve(&request.name, &request.version).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Reply<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: self.server_name.as_str().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Reply<pb::ModelMetadataResponse> {
        let request = request.into_inner();
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
        Ok(Response::new(model_metadata(&spec, versions)))
    }

    async fn model_infer(&self, request: Request<pb::ModelInferRequest>) -> Reply<pb::ModelInferResponse> {
        Ok(Response::new(self.infer(request.into_inner()).await?))
    }

    type ModelStreamInferStream = crate::stream::ResponseStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        let grpc_errors = request
            .metadata()
            .get("triton_grpc_error")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(Response::new(crate::stream::serve(
            self.clone(),
            request.into_inner(),
            grpc_errors,
        )))
    }

    async fn model_config(&self, request: Request<pb::ModelConfigRequest>) -> Reply<pb::ModelConfigResponse> {
        let request = request.into_inner();
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
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(spec.config.clone()),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Reply<pb::ModelStatisticsResponse> {
        let request = request.into_inner();
        let model_stats = self
            .registry
            .ready_versions(&request.name, &request.version)?
            .iter()
            .map(|model| model.stats.snapshot(&model.spec.name, model.version))
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Reply<pb::RepositoryIndexResponse> {
        let request = request.into_inner();
        refuse_repository_name(&request.repository_name)?;
        let models = self
            .registry
            .index()
            .into_iter()
            .filter(|row| !request.ready || row.state == "READY")
            .map(|row| ModelIndex {
                name: row.name,
                version: row.version,
                state: row.state.to_owned(),
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Reply<pb::RepositoryModelLoadResponse> {
        // Triton's order: the repository name, the parameters' types, the control mode, the model name.
        let request = request.into_inner();
        refuse_repository_name(&request.repository_name)?;
        let (config_json, files) = load_parameters(request.parameters)?;
        self.registry.check_model_control()?;
        let load = LoadRequest {
            name: ModelName::parse(request.model_name)?,
            config_json,
            files,
        };
        let registry = Arc::clone(&self.registry);
        // Loading opens sessions and warms them up: never on an async worker.
        tokio::task::spawn_blocking(move || registry.load_request(load))
            .await
            .map_err(|error| Status::internal(format!("the load task failed: {error}")))??;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Reply<pb::RepositoryModelUnloadResponse> {
        let request = request.into_inner();
        refuse_repository_name(&request.repository_name)?;
        check_unload_parameters(&request.parameters)?;
        self.registry.check_model_control()?;
        let name = ModelName::parse(request.model_name)?;
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || registry.unload_request(&name))
            .await
            .map_err(|error| Status::internal(format!("the unload task failed: {error}")))??;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Reply<pb::SystemSharedMemoryStatusResponse> {
        let regions = self
            .shared_memory
            .status(&request.into_inner().name)?
            .into_iter()
            .map(|region| {
                let status = RegionStatus {
                    name: region.name.clone(),
                    key: region.key,
                    offset: region.offset,
                    byte_size: region.byte_size,
                };
                (region.name, status)
            })
            .collect();
        Ok(Response::new(pb::SystemSharedMemoryStatusResponse { regions }))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryRegisterResponse> {
        let request = request.into_inner();
        // shm_open and mmap are quick system calls, not worth a blocking thread.
        self.shared_memory
            .register(&request.name, &request.key, request.offset, request.byte_size)?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryUnregisterResponse> {
        self.shared_memory.unregister(&request.into_inner().name);
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        request: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Reply<pb::CudaSharedMemoryStatusResponse> {
        let regions = self
            .shared_memory
            .cuda()
            .status(&request.into_inner().name, &self.shared_memory)?
            .into_iter()
            .map(|region| {
                let status = CudaRegionStatus {
                    name: region.name.clone(),
                    device_id: region.device_id,
                    byte_size: region.byte_size,
                };
                (region.name, status)
            })
            .collect();
        Ok(Response::new(pb::CudaSharedMemoryStatusResponse { regions }))
    }

    async fn cuda_shared_memory_register(
        &self,
        request: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryRegisterResponse> {
        let request = request.into_inner();
        self.shared_memory.cuda().register(
            &request.name,
            &request.raw_handle,
            request.device_id,
            request.byte_size,
        )?;
        Ok(Response::new(pb::CudaSharedMemoryRegisterResponse {}))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        request: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryUnregisterResponse> {
        self.shared_memory.cuda().unregister(&request.into_inner().name);
        Ok(Response::new(pb::CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(
        &self,
        request: Request<pb::TraceSettingRequest>,
    ) -> Reply<pb::TraceSettingResponse> {
        Ok(Response::new(crate::settings::trace_setting(
            request.into_inner(),
        )?))
    }

    async fn log_settings(&self, request: Request<pb::LogSettingsRequest>) -> Reply<pb::LogSettingsResponse> {
        Ok(Response::new(crate::settings::log_settings(
            request.into_inner(),
        )?))
    }
}
