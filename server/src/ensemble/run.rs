//! Running one ensemble request: a dataflow loop that starts every step whose inputs exist, waits for the
//! next step to finish, adds its outputs to the request's tensors, and repeats until every step has run.

use std::{collections::HashMap, sync::Arc, time::Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ferry_proto::inference::{
    self as pb,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::{
    DataType, Error,
    cache::ResponseCache,
    config::EnsembleStep,
    model::ModelVersion,
    onnx::OutputTensor,
    repository::Registry,
    request::{InferRequest, SequenceFlags, TensorData},
};

/// How many ensembles deep a request may go (ensembles used as members of ensembles): a bound on the
/// recursion, should ensembles come to use each other in a cycle through reloads.
pub const MAX_ENSEMBLE_DEPTH: usize = 8;

/// One tensor of an ensemble request: an input of the request or an output of a step.
#[derive(Debug, Clone)]
struct Tensor {
    data_type: DataType,
    shape: Vec<i64>,
    /// Raw contents as the wire carries them (BYTES elements length-prefixed), shared, never copied.
    data: Bytes,
}

/// Runs a parsed `request` of `model`, received at `received`: an ensemble runs its steps (its statistics
/// count the request), any other model is answered by the response `cache` or its batcher. `depth` is the
/// number of ensembles this request is already inside.
pub async fn infer(
    registry: &Registry,
    cache: Option<&Arc<ResponseCache>>,
    model: &Arc<ModelVersion>,
    request: InferRequest,
    received: Instant,
    depth: usize,
) -> Result<Vec<OutputTensor>, Error> {
    let Some(steps) = &model.spec.ensemble else {
        return crate::cache::infer(cache, model, request, received).await;
    };
    let mut outcome = Outcome {
        model,
        received,
        recorded: false,
    };
    let result = if depth >= MAX_ENSEMBLE_DEPTH {
        Err(Error::invalid(format!(
            "ensemble '{}' is nested {depth} ensembles deep, more than the {MAX_ENSEMBLE_DEPTH} allowed: do \
             its ensemble members use it in turn?",
            model.spec.name
        )))
    } else {
        // Boxed: an ensemble member of an ensemble makes this future recursive.
        Box::pin(run(registry, cache, model, steps, request, depth + 1)).await
    };
    outcome.record(result.as_ref().map(|_| ()).map_err(Error::failure_reason));
    result
}

/// Records how an ensemble request ended, once: as it returned, or as canceled when its future is dropped
/// first (the client went away; the steps still queued are withdrawn with it), as a member's request is.
struct Outcome<'a> {
    model: &'a ModelVersion,
    received: Instant,
    recorded: bool,
}

impl Outcome<'_> {
    fn record(&mut self, outcome: Result<(), crate::stats::FailureReason>) {
        self.recorded = true;
        self.model.stats.record_request(outcome, self.received.elapsed());
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(Err(crate::stats::FailureReason::Canceled));
        }
    }
}

/// Runs `request` on the ensemble `ensemble` whose steps are `steps`: each step is sent to its member as
/// a request of its own through `registry` and the response `cache`, as soon as the tensors it reads exist.
/// A step's failure fails the request, with the step named.
async fn run(
    registry: &Registry,
    cache: Option<&Arc<ResponseCache>>,
    ensemble: &ModelVersion,
    steps: &[EnsembleStep],
    request: InferRequest,
    depth: usize,
) -> Result<Vec<OutputTensor>, Error> {
    let spec = &ensemble.spec;
    let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(spec.inputs.len() + steps.len());
    for input in request.inputs {
        let declared = &spec.inputs[input.index];
        let data = match input.data {
            TensorData::Fixed(bytes) => bytes,
            TensorData::Strings(elements) => length_prefixed(&elements),
        };
        tensors.insert(
            declared.name.clone(),
            Tensor {
                data_type: declared.data_type,
                shape: input.shape,
                data,
            },
        );
    }
    let mut waiting: Vec<usize> = (0..steps.len()).collect();
    let mut running = FuturesUnordered::new();
    loop {
        let (ready, still): (Vec<usize>, Vec<usize>) = waiting
            .into_iter()
            .partition(|&i| steps[i].input_map.values().all(|t| tensors.contains_key(t)));
        waiting = still;
        for index in ready {
            let step = &steps[index];
            let inputs: Vec<(String, Tensor)> = step
                .input_map
                .iter()
                .filter_map(|(input, tensor)| tensors.get(tensor).map(|t| (input.clone(), t.clone())))
                .collect();
            // Each step's request belongs to the ensemble request's sequence, as Triton's EnsembleContext
            // passes the correlation id and flags on to composing models.
            let tag = (request.id.clone(), request.sequence.clone());
            running.push(run_step(registry, cache, (index, step), inputs, tag, depth));
        }
        let Some(finished) = running.next().await else {
            break;
        };
        let (index, produced) =
            finished.map_err(|(index, error)| in_step(error, &steps[index].describe(index), ensemble))?;
        tracing::trace!(ensemble = %spec.name, step = index, "ensemble step done");
        tensors.extend(produced);
    }
    if let Some(&stuck) = waiting.first() {
        // The config check rules this out; a defect here must not hang the request.
        return Err(Error::Internal(format!(
            "ensemble '{}': {} never got its inputs",
            spec.name,
            steps[stuck].describe(stuck)
        )));
    }
    request
        .outputs
        .iter()
        .map(|&index| {
            let name = &spec.outputs[index].name;
            let tensor = tensors.remove(name).ok_or_else(|| {
                Error::Internal(format!(
                    "ensemble '{}': no step produced output '{name}'",
                    spec.name
                ))
            })?;
            Ok(OutputTensor {
                index,
                shape: tensor.shape,
                data: tensor.data,
            })
        })
        .collect()
}

/// Runs one step: a request of the step's member, resolved and parsed as a client's request would be,
/// answered from the cache or by the member's batcher. Returns the ensemble tensors it produced.
async fn run_step(
    registry: &Registry,
    cache: Option<&Arc<ResponseCache>>,
    (index, step): (usize, &EnsembleStep),
    inputs: Vec<(String, Tensor)>,
    (id, sequence): (String, Option<SequenceFlags>),
    depth: usize,
) -> Result<(usize, Vec<(String, Tensor)>), (usize, Error)> {
    let fail = |error| (index, error);
    let member = registry
        .resolve(&step.model_name, &step.version_string())
        .map_err(fail)?;
    let received = Instant::now();
    let mut wire = pb::ModelInferRequest {
        model_name: step.model_name.clone(),
        model_version: step.version_string(),
        id,
        parameters: HashMap::new(),
        inputs: Vec::with_capacity(inputs.len()),
        outputs: step
            .output_map
            .keys()
            .map(|name| InferRequestedOutputTensor {
                name: name.clone(),
                parameters: HashMap::new(),
            })
            .collect(),
        raw_input_contents: Vec::with_capacity(inputs.len()),
    };
    for (name, tensor) in inputs {
        wire.inputs.push(InferInputTensor {
            name,
            datatype: tensor.data_type.wire_name().to_owned(),
            shape: tensor.shape,
            parameters: HashMap::new(),
            contents: None,
        });
        wire.raw_input_contents.push(tensor.data);
    }
    let mut parsed = InferRequest::parse(wire, &member.spec)
        .inspect_err(|error| {
            member
                .stats
                .record_request(Err(error.failure_reason()), received.elapsed());
        })
        .map_err(fail)?;
    parsed.sequence = sequence;
    let outputs = infer(registry, cache, &member, parsed, received, depth)
        .await
        .map_err(fail)?;
    let produced = outputs
        .into_iter()
        .filter_map(|output| {
            let declared = member.spec.outputs.get(output.index)?;
            let tensor = step.output_map.get(&declared.name)?;
            Some((
                tensor.clone(),
                Tensor {
                    data_type: declared.data_type,
                    shape: output.shape,
                    data: output.data,
                },
            ))
        })
        .collect();
    Ok((index, produced))
}

/// BYTES elements as the wire carries them: each preceded by its length, 4 bytes little-endian.
fn length_prefixed(elements: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for element in elements {
        // Each element came off the wire with a 4-byte length, so it fits.
        out.put_u32_le(u32::try_from(element.len()).unwrap_or(u32::MAX));
        out.put_slice(element);
    }
    out.freeze()
}

/// A step's failure as the ensemble's: the same kind of error, its message prefixed with the step (`at`).
/// A member that does not serve makes the ensemble unavailable, as in Triton.
fn in_step(error: Error, at: &str, ensemble: &ModelVersion) -> Error {
    let name = &ensemble.spec.name;
    match error {
        Error::InvalidRequest(m) => Error::InvalidRequest(format!("ensemble '{name}' {at}: {m}")),
        Error::QueueTimeout(m) => Error::QueueTimeout(format!("ensemble '{name}' {at}: {m}")),
        Error::Overloaded(m) => Error::Overloaded(format!("ensemble '{name}' {at}: {m}")),
        Error::TooLarge(m) => Error::TooLarge(format!("ensemble '{name}' {at}: {m}")),
        error @ (Error::UnknownModel { .. }
        | Error::UnknownVersion { .. }
        | Error::NoAvailableVersion { .. }
        | Error::VersionNotReady { .. }) => Error::VersionNotReady {
            model: name.clone(),
            version: ensemble.version,
            reason: format!("{at}: {error}"),
        },
        // Triton's INTERNAL, as ONNX Runtime's own failures; the member's text (with its "onnx runtime
        // failed" prefix) follows the step.
        other => Error::Internal(format!("ensemble '{name}' {at}: {other}")),
    }
}
