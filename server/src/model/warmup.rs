//! Warm-up requests for a freshly loaded version: the config's `model_warmup` entries, or one zero-filled
//! request of batch 1 when there are none. Built as wire requests and parsed like any other, so a warm-up
//! that does not fit the model fails the load with the same clear message a client would get.

use std::path::Path;

use bytes::Bytes;
use ferry_proto::inference::{
    ModelInferRequest,
    model_infer_request::InferInputTensor,
    model_warmup::{Input as WarmupInput, input::InputDataType},
};

use crate::{
    DataType, Error,
    config::{ModelSpec, TensorSpec},
    request::InferRequest,
};

/// The warm-up requests of `spec`, each with how many times to send it.
pub fn requests(spec: &ModelSpec, model_dir: &Path) -> Result<Vec<(InferRequest, u32)>, Error> {
    if spec.config.model_warmup.is_empty() {
        let wire = ModelInferRequest {
            model_name: spec.name.clone(),
            inputs: spec
                .inputs
                .iter()
                .filter(|t| !t.optional)
                .map(|t| zero_input(t, spec.max_batch_size))
                .collect(),
            raw_input_contents: spec
                .inputs
                .iter()
                .filter(|t| !t.optional)
                .map(|t| zeros(t.data_type, elements(&fixed_dims(&t.dims))))
                .collect(),
            ..Default::default()
        };
        return Ok(vec![(InferRequest::parse(wire, spec)?, 1)]);
    }
    spec.config
        .model_warmup
        .iter()
        .map(|warmup| {
            let fail =
                |message: String| Error::ModelLoad(format!("model_warmup '{}': {message}", warmup.name));
            let rows = warmup.batch_size.max(1) as usize;
            let mut wire = ModelInferRequest {
                model_name: spec.name.clone(),
                ..Default::default()
            };
            for (name, input) in &warmup.inputs {
                let data_type = ferry_proto::inference::DataType::try_from(input.data_type)
                    .ok()
                    .and_then(DataType::from_config)
                    .ok_or_else(|| fail(format!("input '{name}' has no valid data_type")))?;
                let row = row_data(input, data_type, model_dir).map_err(fail)?;
                let batched = spec.max_batch_size > 0;
                let shape: Vec<i64> = batched
                    .then_some(rows as i64)
                    .into_iter()
                    .chain(input.dims.iter().copied())
                    .collect();
                let copies = if batched { rows } else { 1 };
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
        })
        .collect()
}

/// A dims list with every variable dimension taken as 1.
fn fixed_dims(dims: &[i64]) -> Vec<i64> {
    dims.iter().map(|d| if *d < 0 { 1 } else { *d }).collect()
}

fn elements(dims: &[i64]) -> usize {
    dims.iter().map(|d| *d as usize).product()
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

/// Raw zero contents: zero bytes, or empty strings for BYTES (a 4-byte zero length each).
fn zeros(data_type: DataType, elements: usize) -> Bytes {
    Bytes::from(vec![0u8; elements * data_type.element_size().unwrap_or(4)])
}

/// The raw contents of one batch row of a warm-up input.
fn row_data(input: &WarmupInput, data_type: DataType, model_dir: &Path) -> Result<Vec<u8>, String> {
    let count = elements(&fixed_dims(&input.dims));
    match &input.input_data_type {
        Some(InputDataType::InputDataFile(file)) => {
            if file.contains("..") || Path::new(file).is_absolute() {
                return Err(format!(
                    "input_data_file '{file}' must name a file inside the warmup folder"
                ));
            }
            let path = model_dir.join("warmup").join(file);
            std::fs::read(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))
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
        _ => Ok(zeros(data_type, count).to_vec()),
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
        assert_eq!(built.len(), 1);
        let (request, count) = &built[0];
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
        let (request, count) = &built[0];
        assert_eq!(*count, 3);
        assert_eq!(request.inputs[0].shape, [2, 2, 3]);

        let wrong = format!(
            "{MODEL}model_warmup [ {{ name: \"w\" batch_size: 1 inputs {{ key: \"x\" value {{ data_type: TYPE_INT32 dims: [ 3 ] zero_data: true }} }} }} ]\n"
        );
        let error = requests(&spec(&wrong), Path::new("/nonexistent")).expect_err("INT32 is not FP32");
        assert!(error.to_string().contains("model_warmup 'w'"), "{error}");
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
