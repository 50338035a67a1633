//! The Triton-compatible gRPC front end: `inference.GRPCInferenceService` over the shared registry.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use ferry_proto::{
    GrpcInferenceService,
    inference::{
        self as pb, model_infer_response::InferOutputTensor, model_metadata_response::TensorMetadata,
        model_repository_parameter::ParameterChoice, repository_index_response::ModelIndex,
    },
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    Error,
    config::{ModelSpec, TensorSpec},
    repository::{LoadRequest, Registry},
    request::{InferRequest, full_dims},
};

/// The name ServerMetadata reports.
pub const SERVER_NAME: &str = "ferry";
/// The protocol extensions Ferry serves, as ServerMetadata lists them.
pub const EXTENSIONS: &[&str] = &[
    "model_configuration",
    "model_repository",
    "schedule_policy",
    "statistics",
];

/// The gRPC service; cheap to clone, all state is in the registry.
#[derive(Debug, Clone)]
pub struct InferenceService {
    registry: Arc<Registry>,
}

impl InferenceService {
    /// A service answering from `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// Answers an RPC that Ferry does not serve yet, naming it.
fn unimplemented<T>(rpc: &'static str) -> Reply<T> {
    Err(Error::Unimplemented(rpc).into())
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

/// Reads a load request's parameters: `config` (JSON text) and `file:<version>/<path>` (bytes).
fn load_request(request: pb::RepositoryModelLoadRequest) -> Result<LoadRequest, Error> {
    let mut load = LoadRequest {
        name: request.model_name,
        ..LoadRequest::default()
    };
    for (key, parameter) in request.parameters {
        let value = parameter.parameter_choice;
        match (key.as_str(), value) {
            ("config", Some(ParameterChoice::StringParam(json))) => load.config_json = Some(json),
            ("config", other) => {
                return Err(Error::invalid(format!(
                    "parameter 'config' must be a string of JSON, got {other:?}"
                )));
            }
            (file, Some(ParameterChoice::BytesParam(bytes))) if file.starts_with("file:") => {
                load.files.push((file["file:".len()..].to_owned(), bytes));
            }
            (file, _) if file.starts_with("file:") => {
                return Err(Error::invalid(format!(
                    "parameter '{file}' must carry the file's bytes (bytes_param)"
                )));
            }
            (other, _) => {
                return Err(Error::invalid(format!(
                    "unknown load parameter '{other}'; expected 'config' or 'file:<version>/<path>'"
                )));
            }
        }
    }
    Ok(load)
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
        let ready = self.registry.resolve(&request.name, &request.version).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Reply<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Reply<pb::ModelMetadataResponse> {
        let request = request.into_inner();
        let entry = self.registry.model(&request.name)?;
        let spec = if request.version.is_empty() {
            entry.spec.clone().ok_or_else(|| Error::ModelNotReady {
                model: request.name.clone(),
                reason: entry.failure.clone().unwrap_or_default(),
            })?
        } else {
            Arc::clone(&self.registry.resolve(&request.name, &request.version)?.spec)
        };
        let versions = entry.ready_versions().map(|m| m.version.to_string()).collect();
        Ok(Response::new(model_metadata(&spec, versions)))
    }

    async fn model_infer(&self, request: Request<pb::ModelInferRequest>) -> Reply<pb::ModelInferResponse> {
        let request = request.into_inner();
        let model = self
            .registry
            .resolve(&request.model_name, &request.model_version)?;
        let model_name = request.model_name.clone();
        let parsed = InferRequest::parse(request, &model.spec)?;
        let id = parsed.id.clone();
        let outputs = model.infer(parsed).await?;
        let mut response = pb::ModelInferResponse {
            model_name,
            model_version: model.version.to_string(),
            id,
            parameters: HashMap::new(),
            outputs: Vec::with_capacity(outputs.len()),
            raw_output_contents: Vec::with_capacity(outputs.len()),
        };
        for output in outputs {
            let tensor = &model.spec.outputs[output.index];
            response.outputs.push(InferOutputTensor {
                name: tensor.name.clone(),
                datatype: tensor.data_type.wire_name().to_owned(),
                shape: output.shape,
                parameters: HashMap::new(),
                contents: None,
            });
            response.raw_output_contents.push(output.data);
        }
        Ok(Response::new(response))
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send + 'static>>;

    async fn model_stream_infer(
        &self,
        _: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Reply<Self::ModelStreamInferStream> {
        unimplemented("ModelStreamInfer")
    }

    async fn model_config(&self, request: Request<pb::ModelConfigRequest>) -> Reply<pb::ModelConfigResponse> {
        let request = request.into_inner();
        let spec = if request.version.is_empty() {
            let entry = self.registry.model(&request.name)?;
            entry.spec.ok_or_else(|| Error::ModelNotReady {
                model: request.name.clone(),
                reason: entry.failure.unwrap_or_default(),
            })?
        } else {
            Arc::clone(&self.registry.resolve(&request.name, &request.version)?.spec)
        };
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
        let load = load_request(request.into_inner())?;
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
        // `unload_dependents` is accepted: Ferry has no ensembles, so a model has no dependents to unload.
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || registry.unload_request(&request.model_name))
            .await
            .map_err(|error| Status::internal(format!("the unload task failed: {error}")))??;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Reply<pb::SystemSharedMemoryStatusResponse> {
        unimplemented("SystemSharedMemoryStatus")
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryRegisterResponse> {
        unimplemented("SystemSharedMemoryRegister")
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryUnregisterResponse> {
        unimplemented("SystemSharedMemoryUnregister")
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Reply<pb::CudaSharedMemoryStatusResponse> {
        unimplemented("CudaSharedMemoryStatus")
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryRegisterResponse> {
        unimplemented("CudaSharedMemoryRegister")
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryUnregisterResponse> {
        unimplemented("CudaSharedMemoryUnregister")
    }

    async fn trace_setting(&self, _: Request<pb::TraceSettingRequest>) -> Reply<pb::TraceSettingResponse> {
        unimplemented("TraceSetting")
    }

    async fn log_settings(&self, _: Request<pb::LogSettingsRequest>) -> Reply<pb::LogSettingsResponse> {
        unimplemented("LogSettings")
    }
}
