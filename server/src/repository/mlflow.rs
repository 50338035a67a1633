//! MLflow model folders: a version folder holding an `MLmodel` file with the `onnx` flavour (what
//! `mlflow.onnx.save_model` and `mlflow.onnx.log_model` write) is served from the ONNX file the flavour names,
//! and the model signature the file records completes the shapes the ONNX model leaves open.
//!
//! The `MLmodel` file is YAML; its `signature` holds `inputs` and `outputs` as JSON strings, each a list of
//! `{"type": "tensor", "name": ..., "tensor-spec": {"dtype": ..., "shape": [...]}}` (MLflow's tensor-based
//! signature). Column-based signatures (tabular `{"type": "double", "name": ...}` entries) describe a
//! DataFrame, not the ONNX tensors, and are not used.

use std::path::Path;

use serde::Deserialize;

use super::files;
use crate::config::{ModelSignature, ModelTensor, TensorForm};

/// The name of MLflow's model description file.
pub const MLMODEL: &str = "MLmodel";

/// The largest `MLmodel` file Ferry reads; MLflow's are a few kilobytes, a large signature some hundreds.
pub const MAX_MLMODEL_BYTES: u64 = 1024 * 1024;

/// The tensors of a signature Ferry reads, per side.
pub const MAX_SIGNATURE_TENSORS: usize = 1024;

/// The dimensions of one tensor of a signature.
const MAX_SIGNATURE_RANK: usize = 64;

#[derive(Deserialize)]
struct MlModel {
    #[serde(default)]
    flavors: std::collections::BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    signature: Option<Signature>,
}

#[derive(Deserialize)]
struct Signature {
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    outputs: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "tensor-spec", default)]
    tensor_spec: Option<TensorSpec>,
}

#[derive(Deserialize)]
struct TensorSpec {
    shape: Vec<i64>,
}

/// One tensor of an MLflow signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureTensor {
    /// Its name, when the signature gives one.
    pub name: Option<String>,
    /// Its shape, -1 for open dimensions.
    pub shape: Vec<i64>,
}

/// What an `MLmodel` file with the `onnx` flavour says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlflowModel {
    /// The ONNX file, a plain file name inside the version folder (the flavour's `data`).
    pub data: String,
    /// The signature's input tensors; empty without a tensor-based signature.
    pub inputs: Vec<SignatureTensor>,
    /// The signature's output tensors.
    pub outputs: Vec<SignatureTensor>,
}

/// Reads `<version>/MLmodel` of the model folder `model_dir`: `None` when the version folder has none.
pub fn read(model_dir: &Path, version: u64) -> Result<Option<MlflowModel>, String> {
    let name = format!("{version}/{MLMODEL}");
    let Some(text) = files::read_text(model_dir, &name, MAX_MLMODEL_BYTES)? else {
        return Ok(None);
    };
    let path = model_dir.join(&name);
    parse(&text)
        .map(Some)
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// Parses the text of an `MLmodel` file.
pub fn parse(text: &str) -> Result<MlflowModel, String> {
    let model: MlModel =
        serde_norway::from_str(text).map_err(|error| format!("not an MLflow MLmodel file: {error}"))?;
    let Some(onnx) = model.flavors.get("onnx") else {
        let flavours: Vec<&str> = model.flavors.keys().map(String::as_str).collect();
        return Err(format!(
            "the model has no onnx flavour (flavours: {}); Ferry serves MLflow models saved with \
             mlflow.onnx.save_model or mlflow.onnx.log_model",
            flavours.join(", ")
        ));
    };
    let data = onnx
        .get("data")
        .and_then(serde_norway::Value::as_str)
        .ok_or("the onnx flavour names no data file")?;
    if !files::is_plain_file_name(data) {
        return Err(format!(
            "the onnx flavour's data must be a file name inside the version folder, without '/' or '..', \
             got '{data}'"
        ));
    }
    let (inputs, outputs) = match &model.signature {
        Some(signature) => (
            tensors(signature.inputs.as_deref(), "inputs")?,
            tensors(signature.outputs.as_deref(), "outputs")?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    Ok(MlflowModel {
        data: data.to_owned(),
        inputs,
        outputs,
    })
}

/// The tensors of one side of a signature; a column-based side gives none.
fn tensors(json: Option<&str>, side: &str) -> Result<Vec<SignatureTensor>, String> {
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let entries: Vec<Entry> = serde_json::from_str(json)
        .map_err(|error| format!("signature {side} is not MLflow's JSON list of specs: {error}"))?;
    if entries.len() > MAX_SIGNATURE_TENSORS {
        return Err(format!(
            "signature {side} lists {} tensors, more than the {MAX_SIGNATURE_TENSORS} Ferry reads",
            entries.len()
        ));
    }
    if entries.iter().any(|entry| entry.kind != "tensor") {
        return Ok(Vec::new());
    }
    entries
        .into_iter()
        .map(|entry| {
            let spec = entry
                .tensor_spec
                .ok_or_else(|| format!("signature {side}: a tensor without its tensor-spec"))?;
            if spec.shape.len() > MAX_SIGNATURE_RANK || spec.shape.iter().any(|d| *d < -1) {
                return Err(format!(
                    "signature {side}: shape {:?} is not a shape (at most {MAX_SIGNATURE_RANK} dimensions, \
                     each -1 or more)",
                    spec.shape
                ));
            }
            Ok(SignatureTensor {
                name: entry.name,
                shape: spec.shape,
            })
        })
        .collect()
}

/// Fills the dimensions `signature` (the ONNX model's) leaves open with those of the MLflow signature.
///
/// A signature tensor is matched by name, or, when the signature names none of that side's tensors and
/// lists as many as the model has, by position. A dimension the model fixes stays; a dimension the model
/// leaves open (-1) takes the signature's when that is fixed; a model tensor of unknown rank takes the
/// signature's shape. A matched tensor whose rank differs from the model's, or whose fixed dimension
/// contradicts it, fails the load.
pub fn complete_signature(signature: &mut ModelSignature, mlflow: &MlflowModel) -> Result<(), String> {
    fill_side(&mut signature.inputs, &mlflow.inputs, "input")?;
    fill_side(&mut signature.outputs, &mlflow.outputs, "output")
}

fn fill_side(model: &mut [ModelTensor], listed: &[SignatureTensor], side: &str) -> Result<(), String> {
    let by_position =
        !listed.is_empty() && listed.iter().all(|t| t.name.is_none()) && listed.len() == model.len();
    for (position, tensor) in model.iter_mut().enumerate() {
        if tensor.form != TensorForm::Tensor || tensor.data_type.is_none() {
            continue;
        }
        let found = if by_position {
            listed.get(position)
        } else {
            listed
                .iter()
                .find(|t| t.name.as_deref() == Some(tensor.name.as_str()))
        };
        let Some(found) = found else { continue };
        if tensor.shape.is_empty() {
            tensor.shape = found.shape.clone();
            continue;
        }
        let contradicts = tensor.shape.len() != found.shape.len()
            || tensor
                .shape
                .iter()
                .zip(&found.shape)
                .any(|(model, listed)| *model >= 0 && *listed >= 0 && model != listed);
        if contradicts {
            return Err(format!(
                "the MLmodel signature gives {side} '{}' shape {:?} but the ONNX model declares {:?}",
                tensor.name, found.shape, tensor.shape
            ));
        }
        for (model, listed) in tensor.shape.iter_mut().zip(&found.shape) {
            if *model < 0 {
                *model = *listed;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataType;

    /// An MLmodel as `mlflow.onnx.save_model` writes it (PyYAML folds the long JSON strings of the signature
    /// over several lines).
    const MLMODEL_TEXT: &str = "artifact_path: null\nflavors:\n  onnx:\n    code: null\n    data: model.onnx\n    \
        onnx_version: 1.23.2\n    providers:\n    - CUDAExecutionProvider\n    - CPUExecutionProvider\n  \
        python_function:\n    data: model.onnx\n    env:\n      conda: conda.yaml\n      virtualenv: python_env.yaml\n    \
        loader_module: mlflow.onnx\n    python_version: 3.11.7\nmlflow_version: 3.17.2\nmodel_size_bytes: 1234\n\
        model_uuid: 0a1b\nsignature:\n  inputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float32\",\n    \
        \"shape\": [-1, 4]}}]'\n  outputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float32\",\n    \
        \"shape\": [-1, 3]}}]'\n  params: null\nutc_time_created: '2026-11-30 19:40:00.000000'\n";

    fn tensor(name: &str, shape: &[i64]) -> ModelTensor {
        ModelTensor {
            name: name.into(),
            data_type: Some(DataType::Fp32),
            shape: shape.to_vec(),
            form: TensorForm::Tensor,
        }
    }

    #[test]
    fn an_onnx_flavour_and_its_signature_are_read() {
        let model = parse(MLMODEL_TEXT).expect("parses");
        assert_eq!(model.data, "model.onnx");
        assert_eq!(
            model.inputs,
            [SignatureTensor {
                name: None,
                shape: vec![-1, 4]
            }]
        );
        assert_eq!(model.outputs[0].shape, [-1, 3]);
    }

    #[test]
    fn other_flavours_and_unsafe_data_paths_are_refused() {
        let sklearn = "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n  sklearn:\n    \
                       pickled_model: model.pkl\n";
        let error = parse(sklearn).expect_err("no onnx flavour");
        assert!(
            error.contains("no onnx flavour (flavours: python_function, sklearn)"),
            "{error}"
        );
        let escaping = "flavors:\n  onnx:\n    data: ../../other/model.onnx\n";
        let error = parse(escaping).expect_err("escapes");
        assert!(error.contains("got '../../other/model.onnx'"), "{error}");
        let error = parse("flavors: [").expect_err("not YAML");
        assert!(error.contains("not an MLflow MLmodel file"), "{error}");
    }

    #[test]
    fn column_signatures_complete_nothing() {
        let text = "flavors:\n  onnx:\n    data: model.onnx\nsignature:\n  inputs: '[{\"type\": \"double\", \
                    \"name\": \"sepal length\", \"required\": true}]'\n";
        let model = parse(text).expect("parses");
        assert!(model.inputs.is_empty());
    }

    #[test]
    fn open_dimensions_are_filled_and_contradictions_refused() {
        let model = parse(MLMODEL_TEXT).expect("parses");
        let mut signature = ModelSignature {
            inputs: vec![tensor("x", &[-1, -1])],
            outputs: vec![tensor("y", &[])],
        };
        complete_signature(&mut signature, &model).expect("completes");
        assert_eq!(signature.inputs[0].shape, [-1, 4]);
        assert_eq!(
            signature.outputs[0].shape,
            [-1, 3],
            "an unknown rank takes the signature's shape"
        );

        let mut two_outputs = ModelSignature {
            inputs: vec![tensor("x", &[-1, 4])],
            outputs: vec![tensor("label", &[-1]), tensor("y", &[-1, -1])],
        };
        complete_signature(&mut two_outputs, &model).expect("unnamed and uneven: not matched");
        assert_eq!(two_outputs.outputs[1].shape, [-1, -1]);

        let mut named = model.clone();
        named.inputs[0].name = Some("x".into());
        let mut contradicting = ModelSignature {
            inputs: vec![tensor("x", &[-1, 5])],
            outputs: Vec::new(),
        };
        let error = complete_signature(&mut contradicting, &named).expect_err("4 is not 5");
        assert!(
            error.contains("gives input 'x' shape [-1, 4] but the ONNX model declares [-1, 5]"),
            "{error}"
        );
    }
}
