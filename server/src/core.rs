//! The transport-free inference core: a decoded `ModelInferRequest` in, the response or Ferry's [`Error`] out.
//! The gRPC front end ([`crate::grpc`]), ModelStreamInfer ([`crate::stream`]) and REST ([`crate::http`]) each
//! decode their wire format, call [`InferenceService::infer`], and encode what it returns; none of them builds
//! another's request types.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use ferry_proto::inference::{self as pb, model_infer_response::InferOutputTensor};

use crate::{
    Error,
    grpc::ServerName,
    repository::Registry,
    request::InferRequest,
    shm::{OutputRegions, SharedMemoryRegistry},
};

/// The inference core every front end calls (gRPC unary and streaming, REST); cheap to clone, all state is in
/// the model registry and the shared memory regions.
#[derive(Debug, Clone)]
pub struct InferenceService {
    pub(crate) registry: Arc<Registry>,
    pub(crate) shared_memory: Arc<SharedMemoryRegistry>,
    pub(crate) max_message_bytes: usize,
    pub(crate) server_name: ServerName,
}

impl InferenceService {
    /// A service answering from `registry` whose shared memory regions are `shared_memory`: front ends
    /// that share it see each other's registrations, as Triton's gRPC and HTTP endpoints do.
    pub fn with_shared_memory(registry: Arc<Registry>, shared_memory: Arc<SharedMemoryRegistry>) -> Self {
        Self {
            registry,
            shared_memory,
            max_message_bytes: crate::MAX_MESSAGE_BYTES,
            server_name: ServerName::default(),
        }
    }

    /// The same service reporting `name` in ServerMetadata.
    pub fn with_server_name(self, name: ServerName) -> Self {
        Self {
            server_name: name,
            ..self
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

impl InferenceService {
    /// Runs one inference request: resolves the model, parses the request against it (shared memory
    /// included), queues it for the model's batcher, then ranks classified outputs, writes outputs that go to
    /// shared memory, and checks the response against the message size limit.
    pub async fn infer(&self, mut request: pb::ModelInferRequest) -> Result<pb::ModelInferResponse, Error> {
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
        let mut classifications = std::mem::take(&mut parsed.classifications);
        let mut outputs = model.infer(parsed).await?;
        if !classifications.is_empty() {
            // Ranking a large output is real work: off the async workers. The classifications travel to the
            // blocking thread and back, so that the answer below still knows which outputs became strings.
            let (spec, budget) = (Arc::clone(&model.spec), self.max_message_bytes);
            (outputs, classifications) = tokio::task::spawn_blocking(move || {
                crate::classification::apply(outputs, &classifications, &spec, budget)
                    .map(|outputs| (outputs, classifications))
            })
            .await
            .map_err(|error| Error::Internal(format!("the classification task failed: {error}")))??;
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
            )));
        }
        Ok(response)
    }
}
