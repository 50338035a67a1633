//! Inference: a decoded `ModelInferRequest` in, the response or Ferry's [`Error`] out. Once a request's model
//! is resolved to a serving version, a request that cannot become a valid request of the model (a body that
//! cannot be decoded, a wrong input, shape, byte count or region) counts as a failed request of the model in
//! ModelStatistics and the metrics, as one that fails in the queue or in ONNX Runtime does. gRPC decodes its
//! message before the model is known, REST decodes its body after ([`InferenceService::infer_with`]), so the
//! same mistake counts the same on both.

use std::{collections::HashMap, sync::Arc, time::Instant};

use bytes::Bytes;
use ferry_proto::inference::{
    self as pb, infer_parameter::ParameterChoice, model_infer_response::InferOutputTensor,
};

use super::InferenceService;
use crate::{
    Error,
    auth::{Scope, Target},
    model::ModelVersion,
    repository::{Routed, Routing},
    request::InferRequest,
    shm::OutputRegions,
};

impl InferenceService {
    /// Runs one decoded inference request: checks the caller may use the model, routes it to a version (a
    /// number, a label, or the model's traffic split, sticky by the request's `routing_key` parameter),
    /// then runs the request on it, and mirrors it to the policy's shadow version if there is one.
    pub async fn infer(&self, request: pb::ModelInferRequest) -> Result<pb::ModelInferResponse, Error> {
        self.authorize("ModelInfer", Scope::Infer, Target::Model(&request.model_name))?;
        let key = routing_key(&request.parameters)?;
        let routed = self
            .registry
            .route_or_load(&request.model_name, &request.model_version, Routing::Split(key))
            .await?;
        count(&routed);
        let shadow = self.shadow_of(&routed, &request);
        let served = self.run(&routed.model, request, Instant::now()).await?;
        if let Some(shadow) = shadow {
            self.spawn_shadow(shadow, &served);
        }
        Ok(routed_response(&routed, served))
    }

    /// Runs one inference request whose body is decoded only once its model is known: version `version` (a
    /// number, a label, or the policy's choice, when empty) of model `name` is resolved first, sticky by
    /// `header` (the `x-ferry-routing-key` header's routing key), then `decode` makes the request (and whatever else
    /// the front end needs back, `T`). A body that cannot become a request of a serving model counts as a
    /// failed request of the model, as a gRPC request the model refuses does. REST names the model in its
    /// path, as Triton's `HandleInfer` (`http_server.cc`) resolves it before it reads the body. Without a
    /// header, a `routing_key` parameter in the body routes the request once it is decoded.
    pub async fn infer_with<T>(
        &self,
        name: &str,
        version: &str,
        header: Option<&str>,
        decode: impl FnOnce() -> Result<(pb::ModelInferRequest, T), Error>,
    ) -> Result<(pb::ModelInferResponse, T), Error> {
        self.authorize("ModelInfer", Scope::Infer, Target::Model(name))?;
        let header = header
            .map(|key| check_routing_key(ROUTING_KEY_HEADER_FIELD, key))
            .transpose()?;
        let mut routed = self
            .registry
            .route_or_load(name, version, Routing::Split(header))
            .await?;
        let received = Instant::now();
        let (request, rest) = decode().inspect_err(|error| {
            routed
                .model
                .stats
                .record_request(Err(error.failure_reason()), received.elapsed());
        })?;
        if header.is_none()
            && version.is_empty()
            && routed.policy.as_ref().is_some_and(|policy| policy.splits())
            && let Some(key) = routing_key(&request.parameters)?
        {
            routed = self.registry.route(name, version, Routing::Split(Some(key)))?;
        }
        count(&routed);
        let shadow = self.shadow_of(&routed, &request);
        let served = self.run(&routed.model, request, received).await?;
        if let Some(shadow) = shadow {
            self.spawn_shadow(shadow, &served);
        }
        Ok((routed_response(&routed, served), rest))
    }

    /// Runs `request` on `model`, received at `received`: parses it against the model (shared memory
    /// included), answers it from the response cache or queues it for the model's batcher (an ensemble runs its steps,
    /// each such a request of its member), then ranks classified outputs, writes outputs that go
    /// to shared memory, and checks the response against the message size limit.
    pub(super) async fn run(
        &self,
        model: &Arc<ModelVersion>,
        mut request: pb::ModelInferRequest,
        received: Instant,
    ) -> Result<pb::ModelInferResponse, Error> {
        // The parse does not need the name: move it into the response instead of copying it.
        let model_name = std::mem::take(&mut request.model_name);
        // Outputs' parameters outlive the parse only when some output has any (shared memory is checked
        // after the inputs, as in Triton).
        let requested = request
            .outputs
            .iter()
            .any(|output| !output.parameters.is_empty())
            .then(|| request.outputs.clone());
        let mut parsed = InferRequest::parse_with_shared_memory(request, &model.spec, &self.shared_memory)
            .inspect_err(|error| {
                // A request the model refuses is a failed inference in the statistics and metrics, as in Triton.
                model
                    .stats
                    .record_request(Err(error.failure_reason()), received.elapsed());
            })?;
        // Checked before the model runs; holding the slices keeps their regions mapped until the reply.
        let output_regions =
            OutputRegions::resolve(&self.shared_memory, requested.as_deref().unwrap_or_default())?;
        if let Some(drift) = &model.drift {
            // A counter, and for a sampled request a refcount per input and a non-blocking send: nothing
            // here waits for the drift statistics.
            drift.offer(&parsed.inputs);
        }
        // A sampled request is captured by refcount here (and given an id if it has none); everything else
        // happens on the payload log's writer thread.
        let mut payload = model.payload_log.as_ref().and_then(|log| {
            log.sample(&mut parsed.id, &parsed.inputs, &model.spec)
                .map(|c| (log, c))
        });
        // A version that keeps live quality joins truths by id: every request has one.
        if let Some(quality) = &model.quality {
            quality.ensure_id(&mut parsed.id);
        }
        let id = parsed.id.clone();
        let mut classifications = std::mem::take(&mut parsed.classifications);
        // An ensemble runs its steps; any other model is answered by the response cache when it enables it,
        // or runs and the cache keeps the answer.
        let cache = self.registry.options().response_cache.as_ref();
        let mut outputs = crate::ensemble::infer(&self.registry, cache, model, parsed, received, 0).await?;
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
        // The prediction live quality reads: its place in the response and a refcount of its bytes.
        let mut prediction = None;
        for output in outputs {
            let tensor = &model.spec.outputs[output.index];
            // A classified output answers with strings, whatever the model's type.
            let datatype = if classifications.iter().any(|c| c.output == output.index) {
                crate::DataType::Bytes
            } else {
                tensor.data_type
            };
            if let Some((log, capture)) = &mut payload {
                log.add_output(capture, &tensor.name, datatype, &output.shape, &output.data);
            }
            if let Some(quality) = &model.quality
                && quality.output() == output.index
            {
                prediction = Some((quality, datatype, response.outputs.len(), output.data.clone()));
            }
            // An output in shared memory keeps its place in raw_output_contents, empty, as in Triton, so
            // that clients still find the other outputs' bytes by position.
            let (parameters, raw) = match output_regions.write(&tensor.name, &output.data)? {
                Some(parameters) => (parameters, Bytes::new()),
                None => (HashMap::new(), output.data),
            };
            response.outputs.push(InferOutputTensor {
                name: tensor.name.clone(),
                datatype: datatype.wire_name().to_owned(),
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
        if let Some((log, capture)) = payload {
            log.submit(capture, received.elapsed());
        }
        if let Some((quality, datatype, position, data)) = prediction {
            // A refcount and a non-blocking send: the monitor's thread reads the values.
            quality.record(&response.id, datatype, &response.outputs[position].shape, data);
        }
        Ok(response)
    }
}

/// The request parameter that carries a routing key (the `x-ferry-routing-key` header's equivalent).
pub const ROUTING_KEY_PARAMETER: &str = "routing_key";
/// The response parameter that names the rule that chose the answering version.
pub const ROUTE_PARAMETER: &str = "ferry_route";

/// The request's routing key, if its parameters carry one: a string of at most
/// [`MAX_ROUTING_KEY_BYTES`](crate::traffic::MAX_ROUTING_KEY_BYTES) bytes.
fn routing_key(parameters: &HashMap<String, pb::InferParameter>) -> Result<Option<&str>, Error> {
    if parameters.is_empty() {
        return Ok(None);
    }
    match parameters.get(ROUTING_KEY_PARAMETER).map(|p| &p.parameter_choice) {
        None => Ok(None),
        Some(Some(ParameterChoice::StringParam(key))) => {
            check_routing_key("parameter 'routing_key'", key).map(Some)
        }
        Some(_) => Err(Error::invalid(format!(
            "invalid value type for '{ROUTING_KEY_PARAMETER}' parameter, expected string_param."
        ))),
    }
}

/// Gives `request` the routing key `key` of its call's `x-ferry-routing-key` header (gRPC metadata), where
/// the core reads keys, unless the request carries a `routing_key` parameter of its own. `key` has passed
/// [`check_routing_key`].
pub fn give_routing_key(request: &mut pb::ModelInferRequest, key: &str) {
    request
        .parameters
        .entry(ROUTING_KEY_PARAMETER.to_owned())
        .or_insert_with(|| pb::InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam(key.to_owned())),
        });
}

/// A routing key within its bound, checked before a front end copies it; `field` is where it came from (the
/// header or the parameter), for the error.
pub fn check_routing_key<'k>(field: &str, key: &'k str) -> Result<&'k str, Error> {
    crate::limits::check_string_length(field, key, crate::traffic::MAX_ROUTING_KEY_BYTES)?;
    Ok(key)
}

/// How the `x-ferry-routing-key` header is named in errors.
pub const ROUTING_KEY_HEADER_FIELD: &str = "header 'x-ferry-routing-key'";

/// Counts a request under the rule that routed it, if one did, before it runs (so failures count too).
fn count(routed: &Routed) {
    if let Some(rule) = &routed.rule {
        rule.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The response, naming the rule that routed it when one did.
fn routed_response(routed: &Routed, mut response: pb::ModelInferResponse) -> pb::ModelInferResponse {
    if let Some(rule) = &routed.rule {
        response.parameters.insert(
            ROUTE_PARAMETER.to_owned(),
            pb::InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(rule.name.to_string())),
            },
        );
    }
    response
}
