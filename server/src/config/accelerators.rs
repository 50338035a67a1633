//! `optimization { execution_accelerators { .. } }`: ONNX Runtime's TensorRT execution provider for GPU
//! instances, as Triton's ONNX Runtime backend reads it (name `tensorrt`, parameters `precision_mode` and
//! `max_workspace_size_bytes`, and the two partitioning knobs).

use ferry_proto::inference::{ModelConfig, model_optimization_policy::execution_accelerators::Accelerator};

use super::source::ConfigSource;
use crate::Error;

/// The precision TensorRT may build its engines in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Full precision (`FP32`, the default).
    Fp32,
    /// Half precision where TensorRT finds it faster (`FP16`).
    Fp16,
}

/// The TensorRT execution provider's settings, registered ahead of CUDA on GPU sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorRt {
    /// `precision_mode`.
    pub precision: Precision,
    /// `max_workspace_size_bytes`: scratch memory TensorRT may use while building; ONNX Runtime's default
    /// when absent.
    pub max_workspace_bytes: Option<usize>,
    /// `trt_max_partition_iterations`.
    pub max_partition_iterations: Option<u32>,
    /// `trt_min_subgraph_size`.
    pub min_subgraph_size: Option<usize>,
}

/// The GPU accelerator names Ferry knows.
const GPU_ACCELERATORS: &str = "'tensorrt'";
/// The TensorRT parameters Ferry knows.
const TENSORRT_PARAMETERS: &str =
    "precision_mode, max_workspace_size_bytes, trt_max_partition_iterations, trt_min_subgraph_size";

/// The TensorRT settings a config asks for, if any; unknown accelerators and parameters are errors.
pub(super) fn tensorrt(config: &ModelConfig, source: ConfigSource<'_>) -> Result<Option<TensorRt>, Error> {
    let Some(accelerators) = config
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref())
    else {
        return Ok(None);
    };
    if let Some(cpu) = accelerators.cpu_execution_accelerator.first() {
        return Err(source.error(
            &["cpu_execution_accelerator"],
            format!(
                "cpu_execution_accelerator '{}' is not supported by Ferry (its ONNX Runtime runs the default CPU \
                 provider); remove it",
                cpu.name
            ),
        ));
    }
    let mut found = None;
    for accelerator in &accelerators.gpu_execution_accelerator {
        match accelerator.name.as_str() {
            "tensorrt" if found.is_some() => {
                return Err(source.error(
                    &["gpu_execution_accelerator"],
                    "gpu_execution_accelerator names 'tensorrt' twice; give it once",
                ));
            }
            "tensorrt" => found = Some(tensorrt_parameters(accelerator, source)?),
            other => {
                return Err(source.error(
                    &["gpu_execution_accelerator", other],
                    format!("gpu_execution_accelerator '{other}' is not known to Ferry; the known ones are {GPU_ACCELERATORS}"),
                ));
            }
        }
    }
    Ok(found)
}

fn tensorrt_parameters(accelerator: &Accelerator, source: ConfigSource<'_>) -> Result<TensorRt, Error> {
    let mut settings = TensorRt {
        precision: Precision::Fp32,
        max_workspace_bytes: None,
        max_partition_iterations: None,
        min_subgraph_size: None,
    };
    let mut keys: Vec<&String> = accelerator.parameters.keys().collect();
    keys.sort();
    for key in keys {
        let value = accelerator.parameters[key].trim();
        let number = |what: &str| -> Result<u64, Error> {
            value.parse::<u64>().map_err(|_| {
                source.error(
                    &["tensorrt", key.as_str()],
                    format!("tensorrt parameter {key} must be {what}, got '{value}'"),
                )
            })
        };
        match key.as_str() {
            "precision_mode" => {
                settings.precision = match value {
                    "FP32" => Precision::Fp32,
                    "FP16" => Precision::Fp16,
                    other => {
                        return Err(source.error(
                            &["tensorrt", "precision_mode"],
                            format!(
                                "tensorrt parameter precision_mode must be FP32 or FP16, got '{other}' (INT8 needs a \
                                 calibration table, which Ferry does not take)"
                            ),
                        ));
                    }
                };
            }
            "max_workspace_size_bytes" => {
                let bytes = number("a byte count")?;
                settings.max_workspace_bytes = Some(usize::try_from(bytes).unwrap_or(usize::MAX));
            }
            "trt_max_partition_iterations" => {
                let count = number("a whole number")?;
                settings.max_partition_iterations = Some(u32::try_from(count).unwrap_or(u32::MAX));
            }
            "trt_min_subgraph_size" => {
                let size = number("a whole number")?;
                settings.min_subgraph_size = Some(usize::try_from(size).unwrap_or(usize::MAX));
            }
            other => {
                return Err(source.error(
                    &["tensorrt", other],
                    format!("tensorrt parameter '{other}' is not known to Ferry; the known ones are {TENSORRT_PARAMETERS}"),
                ));
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{config_error, spec_from};

    fn accelerators(body: &str) -> String {
        format!(
            "max_batch_size: 2\ninstance_group [ {{ kind: KIND_AUTO }} ]\n\
             optimization {{ execution_accelerators {{\n{body}\n}} }}\n"
        )
    }

    /// Triton's ONNX Runtime backend reads `precision_mode` and `max_workspace_size_bytes` of an accelerator
    /// named `tensorrt` (onnxruntime_backend `src/onnxruntime.cc`, `ModelState::LoadModel`).
    #[test]
    fn tensorrt_takes_precision_and_workspace() {
        let spec = spec_from(&accelerators(
            "gpu_execution_accelerator : [ { name : \"tensorrt\"\n\
             parameters { key: \"precision_mode\" value: \"FP16\" }\n\
             parameters { key: \"max_workspace_size_bytes\" value: \"1073741824\" } } ]",
        ))
        .expect("valid");
        assert_eq!(
            spec.instances.tensorrt,
            Some(TensorRt {
                precision: Precision::Fp16,
                max_workspace_bytes: Some(1 << 30),
                max_partition_iterations: None,
                min_subgraph_size: None,
            })
        );
        let plain = spec_from("max_batch_size: 2\n").expect("valid");
        assert_eq!(plain.instances.tensorrt, None);
    }

    #[test]
    fn unknown_names_parameters_and_values_are_refused() {
        for (body, expected) in [
            (
                "gpu_execution_accelerator : [ { name : \"tensorrtx\" } ]",
                "'tensorrtx' is not known",
            ),
            (
                "gpu_execution_accelerator : [ { name : \"tensorrt\" parameters { key: \"precision\" value: \"FP16\" } } ]",
                "parameter 'precision' is not known",
            ),
            (
                "gpu_execution_accelerator : [ { name : \"tensorrt\" parameters { key: \"precision_mode\" value: \"INT8\" } } ]",
                "got 'INT8'",
            ),
            (
                "gpu_execution_accelerator : [ { name : \"tensorrt\" parameters { key: \"max_workspace_size_bytes\" value: \"1G\" } } ]",
                "got '1G'",
            ),
            (
                "cpu_execution_accelerator : [ { name : \"openvino\" } ]",
                "'openvino' is not supported",
            ),
        ] {
            let (_, message) = config_error(&accelerators(body));
            assert!(message.contains(expected), "{body}: {message}");
        }
    }

    #[test]
    fn tensorrt_is_refused_on_the_cpu() {
        let text = "max_batch_size: 2\ninstance_group [ { kind: KIND_CPU } ]\n\
             optimization { execution_accelerators { gpu_execution_accelerator : [ { name : \"tensorrt\" } ] } }\n";
        let (_, message) = config_error(text);
        assert!(
            message.contains("tensorrt") && message.contains("KIND_CPU") && message.contains("KIND_GPU"),
            "{message}"
        );
    }
}
