//! Warm-up requests for a freshly loaded version: the config's `model_warmup` entries, or one zero-filled
//! request of batch 1 when there are none and one can be made up safely. Built as wire requests and parsed
//! like any other, so a configured warm-up that does not fit the model fails the load with the same clear
//! message a client would get.

use std::{io::Read, path::Path};

use bytes::Bytes;
use ferry_proto::inference::{
    ModelInferRequest, ModelWarmup,
    model_infer_request::InferInputTensor,
    model_warmup::{Input as WarmupInput, input::InputDataType},
};

use crate::{
    DataType, Error,
    config::{ModelSpec, TensorSpec},
    repository::files::{contained_file, is_plain_file_name},
    request::InferRequest,
};

/// The warm-up requests of `spec`, each with how many times to send it.
///
/// Configured `model_warmup` entries keep Triton's semantics: one that does not fit the model, or fails,
/// fails the load. Without them Ferry sends one zero-filled request of batch 1 of its own, only when that
/// is safe to make up (no BYTES input, whose empty strings many models reject, and within the request
/// memory limit); its failure is only logged ([`Warmup::required`] is false).
pub fn requests(spec: &ModelSpec, model_dir: &Path) -> Result<Warmup, Error> {
    if spec.config.model_warmup.is_empty() {
        return Ok(Warmup {
            requests: default_request(spec).into_iter().collect(),
            required: false,
        });
    }
    let requests = spec
        .config
        .model_warmup
        .iter()
        .map(|warmup| configured_request(spec, warmup, model_dir))
        .collect::<Result<_, _>>()?;
    Ok(Warmup {
        requests,
        required: true,
    })
}

/// What a new instance runs before it takes traffic.
#[derive(Debug, Default)]
pub struct Warmup {
    /// The requests, each with how many times to send it.
    pub requests: Vec<(InferRequest, u32)>,
    /// Whether a failure fails the load: true for the config's `model_warmup`, false for Ferry's own.
    pub required: bool,
}

/// Ferry's own warm-up request, when one can be made up safely.
fn default_request(spec: &ModelSpec) -> Option<(InferRequest, u32)> {
    match zero_request(spec) {
        Ok((request, _)) => Some((request, 1)),
        Err(reason) => {
            tracing::info!(model = %spec.name, %reason, "no default warm-up");
            None
        }
    }
}

/// One zero-filled request of batch 1 with the model's required inputs (variable dimensions taken as 1),
/// with the bytes its inputs take; or why none can be made up safely: a BYTES input, whose empty strings
/// many models reject, or inputs larger than the request memory limit.
pub(super) fn zero_request(spec: &ModelSpec) -> Result<(InferRequest, usize), String> {
    let required: Vec<&TensorSpec> = spec.inputs.iter().filter(|t| !t.optional).collect();
    if required.iter().any(|t| t.data_type == DataType::Bytes) {
        return Err("a BYTES input takes no made-up zeros".to_owned());
    }
    let mut total = 0usize;
    for tensor in &required {
        let bytes =
            elements(&fixed_dims(&tensor.dims)).and_then(|n| n.checked_mul(tensor.data_type.element_size()?));
        total = match bytes.and_then(|b| total.checked_add(b)) {
            Some(total) if total <= spec.max_request_bytes => total,
            _ => return Err("a zero request would be too large".to_owned()),
        };
    }
    let wire = ModelInferRequest {
        model_name: spec.name.clone(),
        inputs: required
            .iter()
            .map(|t| zero_input(t, spec.max_batch_size))
            .collect(),
        raw_input_contents: required
            .iter()
            .map(|t| {
                let count = elements(&fixed_dims(&t.dims)).unwrap_or(0);
                Bytes::from(vec![0u8; count * t.data_type.element_size().unwrap_or(0)])
            })
            .collect(),
        ..Default::default()
    };
    InferRequest::parse(wire, spec)
        .map(|request| (request, total))
        .map_err(|error| error.to_string())
}

/// One `model_warmup` entry as a request, its sizes checked against the request memory limit before any
/// buffer is made.
fn configured_request(
    spec: &ModelSpec,
    warmup: &ModelWarmup,
    model_dir: &Path,
) -> Result<(InferRequest, u32), Error> {
    let fail = |message: String| Error::ModelLoad(format!("model_warmup '{}': {message}", warmup.name));
    let batched = spec.max_batch_size > 0;
    let rows = warmup.batch_size.max(1) as usize;
    if batched && rows > spec.max_batch_size {
        return Err(fail(format!(
            "batch_size {rows} is larger than the model's max_batch_size {}",
            spec.max_batch_size
        )));
    }
    let copies = if batched { rows } else { 1 };
    let mut wire = ModelInferRequest {
        model_name: spec.name.clone(),
        ..Default::default()
    };
    let mut total = 0usize;
    for (name, input) in &warmup.inputs {
        let data_type = ferry_proto::inference::DataType::try_from(input.data_type)
            .ok()
            .and_then(DataType::from_config)
            .ok_or_else(|| fail(format!("input '{name}' has no valid data_type")))?;
        let count = elements(&fixed_dims(&input.dims));
        let row_bytes = count.and_then(|n| n.checked_mul(data_type.element_size().unwrap_or(4)));
        total = row_bytes
            .and_then(|b| b.checked_mul(copies))
            .and_then(|b| total.checked_add(b))
            .filter(|total| *total <= spec.max_request_bytes)
            .ok_or_else(|| {
                Error::TooLarge(format!(
                    "model_warmup '{}': input '{name}' with dims {:?} and batch_size {rows} needs more than the \
                     {} bytes a request may take (--max-request-bytes)",
                    warmup.name, input.dims, spec.max_request_bytes
                ))
            })?;
        let row = row_data(input, data_type, count.unwrap_or(0), model_dir).map_err(fail)?;
        let shape: Vec<i64> = batched
            .then_some(rows as i64)
            .into_iter()
            .chain(input.dims.iter().copied())
            .collect();
        wire.inputs.push(InferInputTensor {
            name: name.clone(),
            datatype: data_type.wire_name().to_owned(),
            shape,
            ..Default::default()
        });
        wire.raw_input_contents.push(row.repeat(copies).into());
    }
    let request = InferRequest::parse(wire, spec).map_err(|e| fail(e.to_string()))?;
    Ok((request, warmup.count.max(1)))
}

/// A dims list with every variable dimension taken as 1.
fn fixed_dims(dims: &[i64]) -> Vec<i64> {
    dims.iter().map(|d| if *d < 0 { 1 } else { *d }).collect()
}

/// The element count of `dims`, or `None` when it overflows.
fn elements(dims: &[i64]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))
}

fn zero_input(tensor: &TensorSpec, max_batch_size: usize) -> InferInputTensor {
    let batch = (max_batch_size > 0).then_some(1);
    InferInputTensor {
        name: tensor.name.clone(),
        datatype: tensor.data_type.wire_name().to_owned(),
        shape: batch.into_iter().chain(fixed_dims(&tensor.dims)).collect(),
        ..Default::default()
    }
}

/// Zero contents: zero bytes, or empty strings for BYTES (a 4-byte zero length each).
fn zeros(data_type: DataType, elements: usize) -> Vec<u8> {
    vec![0u8; elements * data_type.element_size().unwrap_or(4)]
}

/// The raw contents of one batch row of a warm-up input, of `count` elements (already checked against the
/// request memory limit).
fn row_data(
    input: &WarmupInput,
    data_type: DataType,
    count: usize,
    model_dir: &Path,
) -> Result<Vec<u8>, String> {
    match &input.input_data_type {
        Some(InputDataType::InputDataFile(file)) => {
            if !is_plain_file_name(file) {
                return Err(format!(
                    "input_data_file '{file}' must name a file inside the warmup folder"
                ));
            }
            let path = contained_file(model_dir, &model_dir.join("warmup").join(file))?;
            let expected = count * data_type.element_size().unwrap_or(1);
            let mut data = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(expected as u64 + 1).read_to_end(&mut data))
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            Ok(data)
        }
        Some(InputDataType::RandomData(true)) if data_type != DataType::Bytes => {
            let size = data_type.element_size().unwrap_or(1);
            // Random bits would make NaNs and infinities; small non-negative integers fit every type.
            let mut state = 0x2545_f491_u32;
            let mut bytes = vec![0u8; count * size];
            for element in bytes.chunks_mut(size) {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                element[0] = if data_type == DataType::Bool {
                    (state >> 31) as u8
                } else {
                    (state >> 28) as u8
                };
            }
            Ok(bytes)
        }
        _ => Ok(zeros(data_type, count)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, complete_config, parse_model_config};

    fn spec(text: &str) -> ModelSpec {
        let mut config = parse_model_config(text, "c").expect("parses");
        complete_config(&mut config, None, "c").expect("completes");
        ModelSpec::from_config(
            config,
            "m",
            ConfigSource {
                path: "c",
                text: Some(text),
            },
        )
        .expect("valid")
    }

    const MODEL: &str = "max_batch_size: 4\ninput [ { name: \"x\", data_type: TYPE_FP32, dims: [ -1, 3 ] } ]\n\
                         output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 3 ] } ]\n";

    #[test]
    fn without_model_warmup_one_zero_request_of_batch_one_is_sent() {
        let built = requests(&spec(MODEL), Path::new("/nonexistent")).expect("built");
        assert!(!built.required, "Ferry's own warm-up never fails a load");
        assert_eq!(built.requests.len(), 1);
        let (request, count) = &built.requests[0];
        assert_eq!(*count, 1);
        assert_eq!(request.inputs[0].shape, [1, 1, 3]);
        assert_eq!(request.batch_size, 1);
    }

    #[test]
    fn model_warmup_entries_are_built_and_checked() {
        let text = format!(
            "{MODEL}model_warmup [ {{ name: \"w\" batch_size: 2 count: 3 inputs {{ key: \"x\" value {{ data_type: TYPE_FP32 dims: [ 2, 3 ] random_data: true }} }} }} ]\n"
        );
        let built = requests(&spec(&text), Path::new("/nonexistent")).expect("built");
        assert!(built.required);
        let (request, count) = &built.requests[0];
        assert_eq!(*count, 3);
        assert_eq!(request.inputs[0].shape, [2, 2, 3]);

        let wrong = format!(
            "{MODEL}model_warmup [ {{ name: \"w\" batch_size: 1 inputs {{ key: \"x\" value {{ data_type: TYPE_INT32 dims: [ 3 ] zero_data: true }} }} }} ]\n"
        );
        let error = requests(&spec(&wrong), Path::new("/nonexistent")).expect_err("INT32 is not FP32");
        assert!(error.to_string().contains("model_warmup 'w'"), "{error}");
    }

    /// A 4 TiB warm-up input (from a load request's config or a config.pbtxt) used to abort the process.
    #[test]
    fn huge_warmup_dims_fail_the_load_before_any_allocation() {
        for dims in ["1099511627776", "9223372036854775807", "65536, 65536"] {
            let text = format!(
                "{MODEL}model_warmup [ {{ name: \"w\" batch_size: 1 inputs {{ key: \"x\" value {{ data_type: TYPE_FP32 dims: [ {dims} ] zero_data: true }} }} }} ]\n"
            );
            let error = requests(&spec(&text), Path::new("/nonexistent")).expect_err(dims);
            assert!(
                matches!(&error, Error::TooLarge(m) if m.contains("model_warmup 'w'") && m.contains("--max-request-bytes")),
                "{dims}: {error}"
            );
        }
        let too_many_rows = format!(
            "{MODEL}model_warmup [ {{ name: \"w\" batch_size: 4000000000 inputs {{ key: \"x\" value {{ data_type: TYPE_FP32 dims: [ 3 ] zero_data: true }} }} }} ]\n"
        );
        let error = requests(&spec(&too_many_rows), Path::new("/nonexistent")).expect_err("rows");
        assert!(error.to_string().contains("max_batch_size 4"), "{error}");
    }

    /// A config whose dims make the default zero request huge used to abort the server at start-up; and
    /// BYTES inputs got empty strings, which models such as Triton's `simple_string` reject.
    #[test]
    fn no_default_warmup_when_it_cannot_be_made_up_safely() {
        let huge = "max_batch_size: 4\ninput [ { name: \"x\", data_type: TYPE_FP32, dims: [ 1099511627776 ] } ]\n\
                    output [ { name: \"y\", data_type: TYPE_FP32, dims: [ 3 ] } ]\n";
        let built = requests(&spec(huge), Path::new("/nonexistent")).expect("no error");
        assert!(built.requests.is_empty() && !built.required);
        let strings = "max_batch_size: 4\ninput [ { name: \"x\", data_type: TYPE_STRING, dims: [ 1 ] } ]\n\
                       output [ { name: \"y\", data_type: TYPE_INT32, dims: [ 1 ] } ]\n";
        let built = requests(&spec(strings), Path::new("/nonexistent")).expect("no error");
        assert!(built.requests.is_empty());
    }

    #[test]
    fn warmup_files_must_stay_in_the_warmup_folder() {
        let text = format!(
            "{MODEL}model_warmup [ {{ name: \"w\" inputs {{ key: \"x\" value {{ data_type: TYPE_FP32 dims: [ 3 ] input_data_file: \"../../etc/passwd\" }} }} }} ]\n"
        );
        let error = requests(&spec(&text), Path::new("/nonexistent")).expect_err("escapes the folder");
        assert!(error.to_string().contains("inside the warmup folder"), "{error}");
    }
}
