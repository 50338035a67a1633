//! The Triton-compatible gRPC front end: `inference.GRPCInferenceService` over the shared registry.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use ferry_proto::{
    GrpcInferenceService,
    inference::{
        self as pb, cuda_shared_memory_status_response::RegionStatus as CudaRegionStatus,
        model_infer_response::InferOutputTensor, model_metadata_response::TensorMetadata,
        model_repository_parameter::ParameterChoice, repository_index_response::ModelIndex,
        system_shared_memory_status_response::RegionStatus,
    },
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    Error,
    config::{ModelSpec, TensorSpec},
    repository::{LoadRequest, ModelName, Registry},
    request::{InferRequest, full_dims},
    shm::{OutputRegions, SharedMemoryRegistry},
};

/// The name ServerMetadata reports.
pub const SERVER_NAME: &str = "ferry";
/// The protocol extensions Ferry serves, as ServerMetadata lists them.
pub const EXTENSIONS: &[&str] = &[
    "model_configuration",
    "model_repository",
    "schedule_policy",
    "statistics",
    "system_shared_memory",
];

/// The gRPC service; cheap to clone, all state is in the model registry and the shared memory regions.
#[derive(Debug, Clone)]
pub struct InferenceService {
    registry: Arc<Registry>,
    shared_memory: Arc<SharedMemoryRegistry>,
    max_message_bytes: usize,
}

impl InferenceService {
    /// A service answering from `registry` whose shared memory regions are `shared_memory`: front ends
    /// that share it see each other's registrations, as Triton's gRPC and HTTP endpoints do.
    pub fn with_shared_memory(registry: Arc<Registry>, shared_memory: Arc<SharedMemoryRegistry>) -> Self {
        Self {
            registry,
            shared_memory,
            max_message_bytes: crate::MAX_MESSAGE_BYTES,
        }
    }

    /// The same service refusing responses larger than `bytes` with RESOURCE_EXHAUSTED before they are
    /// sent (tonic would answer OUT_OF_RANGE, which Triton's clients do not expect).
    pub fn with_max_message_bytes(self, bytes: usize) -> Self {
        Self {
            max_message_bytes: bytes,
            ..self
        }
    }
}

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

/// Reads a load request's parameters: `config` (JSON text) and `file:<version>/<path>` (bytes).
fn load_request(request: pb::RepositoryModelLoadRequest) -> Result<LoadRequest, Error> {
    let mut load = LoadRequest::new(ModelName::parse(request.model_name)?);
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
        let mut request = request.into_inner();
        let model = self
            .registry
            .resolve(&request.model_name, &request.model_version)?;
        // The parse does not need the name: move it into the response instead of copying it.
        let model_name = std::mem::take(&mut request.model_name);
        // Outputs' parameters outlive the parse only when some output has any (shared memory is checked
        // after the inputs, as in Triton).
        let requested = request
            .outputs
            .iter()
            .any(|output| !output.parameters.is_empty())
            .then(|| request.outputs.clone());
        let received = std::time::Instant::now();
        let mut parsed = InferRequest::parse_with_shared_memory(request, &model.spec, &self.shared_memory)
            .inspect_err(|_| {
                // A request the model refuses is a failed inference in the statistics and metrics, as in Triton.
                model.stats.record_request(false, received.elapsed());
            })?;
        // Checked before the model runs; holding the slices keeps their regions mapped until the reply.
        let output_regions =
            OutputRegions::resolve(&self.shared_memory, requested.as_deref().unwrap_or_default())?;
        let id = parsed.id.clone();
        let classifications = std::mem::take(&mut parsed.classifications);
        let mut outputs = model.infer(parsed).await?;
        if !classifications.is_empty() {
            // Ranking a large output is real work: off the async workers.
            let (spec, budget) = (Arc::clone(&model.spec), self.max_message_bytes);
            let classes = classifications.clone();
            outputs = tokio::task::spawn_blocking(move || {
                crate::classification::apply(outputs, &classes, &spec, budget)
            })
            .await
            .map_err(|error| Status::internal(format!("the classification task failed: {error}")))??;
        }
        // Every output must fit before any is written, so a failed request leaves the regions untouched.
        for output in &outputs {
            output_regions.check_fits(&model.spec.outputs[output.index].name, output.data.len())?;
        }
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
            // An output in shared memory keeps its place in raw_output_contents, empty, as in Triton, so
            // that clients still find the other outputs' bytes by position.
            let (parameters, raw) = match output_regions.write(&tensor.name, &output.data)? {
                Some(parameters) => (parameters, Bytes::new()),
                None => (HashMap::new(), output.data),
            };
            // A classified output answers with strings, whatever the model's type.
            let datatype = if classifications.iter().any(|c| c.output == output.index) {
                crate::DataType::Bytes.wire_name()
            } else {
                tensor.data_type.wire_name()
            };
            response.outputs.push(InferOutputTensor {
                name: tensor.name.clone(),
                datatype: datatype.to_owned(),
                shape: output.shape,
                parameters,
                contents: None,
            });
            response.raw_output_contents.push(raw);
        }
        let size = prost::Message::encoded_len(&response);
        if size > self.max_message_bytes {
            return Err(Error::TooLarge(format!(
                "the response of model '{}' is {size} bytes, over the {} bytes a message may have \
                 (--grpc-max-message-bytes); request fewer rows or outputs, or use shared memory for outputs",
                response.model_name, self.max_message_bytes
            ))
            .into());
        }
        Ok(Response::new(response))
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
        let entry = self.registry.model(&request.name)?;
        if !request.version.is_empty() {
            self.registry.resolve(&request.name, &request.version)?;
        }
        let spec = entry.spec.ok_or_else(|| Error::ModelNotReady {
            model: request.name.clone(),
            reason: entry.failure.unwrap_or_default(),
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
        // `unload_dependents` is accepted: Ferry has no ensembles, so a model has no dependents to unload.
        let name = ModelName::parse(request.into_inner().model_name)?;
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
