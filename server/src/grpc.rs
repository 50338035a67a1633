//! The Triton-compatible gRPC front end: `inference.GRPCInferenceService` over the transport-free core
//! ([`crate::core`]). Each RPC unwraps its message, calls the core, and wraps the answer; a failure becomes
//! its status through [`crate::Error::grpc_code`].

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
        let ready = self.is_model_ready(request.get_ref())?;
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
        Ok(Response::new(self.describe_model(request.get_ref())?))
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
        let config = self.model_config_of(request.get_ref())?;
        Ok(Response::new(pb::ModelConfigResponse { config: Some(config) }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Reply<pb::ModelStatisticsResponse> {
        Ok(Response::new(self.statistics_of(request.get_ref())?))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Reply<pb::RepositoryIndexResponse> {
        Ok(Response::new(self.list_models(request.get_ref())?))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Reply<pb::RepositoryModelLoadResponse> {
        self.load_model(request.into_inner()).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Reply<pb::RepositoryModelUnloadResponse> {
        self.unload_model(request.into_inner()).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Reply<pb::SystemSharedMemoryStatusResponse> {
        Ok(Response::new(self.system_regions(&request.get_ref().name)?))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryRegisterResponse> {
        self.register_system_region(request.get_ref())?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::SystemSharedMemoryUnregisterResponse> {
        self.unregister_system_region(&request.get_ref().name);
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        request: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Reply<pb::CudaSharedMemoryStatusResponse> {
        Ok(Response::new(self.cuda_regions(&request.get_ref().name)?))
    }

    async fn cuda_shared_memory_register(
        &self,
        request: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryRegisterResponse> {
        self.register_cuda_region(request.get_ref())?;
        Ok(Response::new(pb::CudaSharedMemoryRegisterResponse {}))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        request: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Reply<pb::CudaSharedMemoryUnregisterResponse> {
        self.unregister_cuda_region(&request.get_ref().name);
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
