//! The Triton-compatible gRPC front end: `inference.GRPCInferenceService` over the transport-free core
//! ([`crate::core`]). Each RPC unwraps its message, calls the core acting for the caller the auth layer
//! admitted ([`crate::auth`]), and wraps the answer; a failure becomes its status through
//! [`crate::Error::grpc_code`].

use ferry_proto::{GrpcInferenceService, inference as pb};
use tonic::{Request, Response, Status, Streaming};

pub use crate::core::InferenceService;

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Reply<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse { live: self.is_live() }))
    }

    async fn server_ready(&self, _: Request<pb::ServerReadyRequest>) -> Reply<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.is_ready(),
        }))
    }

    async fn model_ready(&self, request: Request<pb::ModelReadyRequest>) -> Reply<pb::ModelReadyResponse> {
        let ready = self
            .acting_for(request.extensions())
            .is_model_ready(request.get_ref())?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Reply<pb::ServerMetadataResponse> {
        Ok(Response::new(self.server_info()))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Reply<pb::ModelMetadataResponse> {
        Ok(Response::new(
            self.acting_for(request.extensions())
                .describe_model(request.get_ref())?,
        ))
    }

    async fn model_infer(&self, request: Request<pb::ModelInferRequest>) -> Reply<pb::ModelInferResponse> {
        let core = self.acting_for(request.extensions());
        let (metadata, _, mut request) = request.into_parts();
        if let Some(key) = routing_key(&metadata)? {
            crate::core::give_routing_key(&mut request, key);
        }
        Ok(Response::new(core.infer(request).await?))
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
        // The call's routing key applies to each of the stream's requests that carries none of its own.
        let key = routing_key(request.metadata())?.map(str::to_owned);
        Ok(Response::new(crate::stream::serve(
            self.acting_for(request.extensions()).into_owned(),
            request.into_inner(),
            grpc_errors,
            key,
        )))
    }

    async fn model_config(&self, request: Request<pb::ModelConfigRequest>) -> Reply<pb::ModelConfigResponse> {
        let config = self
            .acting_for(request.extensions())
            .model_config_of(request.get_ref())?;
        Ok(Response::new(pb::ModelConfigResponse { config: Some(config) }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Reply<pb::ModelStatisticsResponse> {
        Ok(Response::new(
            self.acting_for(request.extensions())
                .statistics_of(request.get_ref())?,
        ))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Reply<pb::RepositoryIndexResponse> {
        Ok(Response::new(
            self.acting_for(request.extensions())
                .list_models(request.get_ref())?,
        ))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Reply<pb::RepositoryModelLoadResponse> {
        let core = self.acting_for(request.extensions());
        core.load_model(request.into_inner()).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Reply<pb::RepositoryModelUnloadResponse> {
        let core = self.acting_for(request.extensions());
        core.unload_model(request.into_inner()).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Reply<pb::SystemSharedMemoryStatusResponse> {
        let core = self.acting_for(request.extensions());
        Ok(Response::new(core.system_regions(&request.get_ref().name)?))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryRegisterResponse> {
        self.acting_for(request.extensions())
            .register_system_region(request.get_ref())?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryUnregisterResponse> {
        self.acting_for(request.extensions())
            .unregister_system_region(&request.get_ref().name)?;
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        request: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Reply<pb::CudaSharedMemoryStatusResponse> {
        let core = self.acting_for(request.extensions());
        Ok(Response::new(core.cuda_regions(&request.get_ref().name)?))
    }

    async fn cuda_shared_memory_register(
        &self,
        request: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryRegisterResponse> {
        self.acting_for(request.extensions())
            .register_cuda_region(request.get_ref())?;
        Ok(Response::new(pb::CudaSharedMemoryRegisterResponse {}))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        request: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryUnregisterResponse> {
        self.acting_for(request.extensions())
            .unregister_cuda_region(&request.get_ref().name)?;
        Ok(Response::new(pb::CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(
        &self,
        request: Request<pb::TraceSettingRequest>,
    ) -> Reply<pb::TraceSettingResponse> {
        let core = self.acting_for(request.extensions());
        Ok(Response::new(core.trace_settings(request.into_inner())?))
    }

    async fn log_settings(&self, request: Request<pb::LogSettingsRequest>) -> Reply<pb::LogSettingsResponse> {
        let core = self.acting_for(request.extensions());
        Ok(Response::new(core.log_settings(request.into_inner())?))
    }
}

/// The call's `x-ferry-routing-key` metadata, if it has one: visible ASCII within the key's bound, or
/// INVALID_ARGUMENT.
fn routing_key(metadata: &tonic::metadata::MetadataMap) -> Result<Option<&str>, Status> {
    let Some(key) = metadata.get(crate::core::ROUTING_KEY_HEADER) else {
        return Ok(None);
    };
    let key = key.to_str().map_err(|_| {
        Status::invalid_argument(format!(
            "the {} metadata must be visible ASCII",
            crate::core::ROUTING_KEY_HEADER
        ))
    })?;
    Ok(Some(crate::core::check_routing_key(
        crate::core::ROUTING_KEY_HEADER_FIELD,
        key,
    )?))
}
