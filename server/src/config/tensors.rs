//! A config's inputs and outputs, checked one by one and for names given twice.

use ferry_proto::inference::ModelTensorReshape;

use super::source::ConfigSource;
use crate::{DataType, Error};

/// One input or output as the config declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name, shared by the protocol and the ONNX graph.
    pub name: String,
    /// Its element type.
    pub data_type: DataType,
    /// Its shape without the batch dimension; -1 for a dimension of any size.
    pub dims: Vec<i64>,
    /// The shape the model sees instead of `dims` (without the batch dimension), when the config reshapes.
    pub reshape: Option<Vec<i64>>,
    /// Whether a request may leave this input out.
    pub optional: bool,
}

/// One `input` or `output` (`side`) of the config, checked: a name, a valid data type, dims that are -1 or
/// positive, and a reshape to as many elements.
pub(super) fn tensor_spec(
    side: &str,
    name: &str,
    data_type: i32,
    dims: &[i64],
    reshape: Option<&ModelTensorReshape>,
    optional: bool,
    source: ConfigSource<'_>,
) -> Result<TensorSpec, Error> {
    let quoted = format!("\"{name}\"");
    let at = |field: &'static str| [quoted.as_str(), field];
    if name.is_empty() {
        return Err(source.error(&[side], format!("an {side} has no name")));
    }
    let data_type = ferry_proto::inference::DataType::try_from(data_type)
        .ok()
        .and_then(DataType::from_config)
        .ok_or_else(|| {
            source.error(
                &at("data_type"),
                format!("{side} '{name}' has no valid data_type"),
            )
        })?;
    if dims.is_empty() {
        return Err(source.error(
            &at("dims"),
            format!(
                "{side} '{name}' has empty dims; use dims: [ 1 ] with reshape: {{ shape: [ ] }} for a scalar"
            ),
        ));
    }
    if let Some(bad) = dims.iter().find(|d| **d == 0 || **d < -1) {
        return Err(source.error(
            &at("dims"),
            format!("{side} '{name}' has dimension {bad} in dims {dims:?}; dimensions are -1 or positive"),
        ));
    }
    let reshape = reshape.map(|r| r.shape.clone());
    if let Some(shape) = &reshape {
        let fixed = |d: &[i64]| d.iter().all(|x| *x > 0).then(|| d.iter().product::<i64>());
        if let (Some(from), Some(to)) = (fixed(dims), fixed(shape))
            && from != to
        {
            return Err(source.error(
                &at("reshape"),
                format!(
                    "{side} '{name}' reshapes dims {dims:?} ({from} elements) to {shape:?} ({to} elements)"
                ),
            ));
        }
    }
    Ok(TensorSpec {
        name: name.to_owned(),
        data_type,
        dims: dims.to_vec(),
        reshape,
        optional,
    })
}

/// Refuses two inputs (or two outputs) of one name.
pub(super) fn check_unique(
    side: &str,
    tensors: &[TensorSpec],
    source: ConfigSource<'_>,
) -> Result<(), Error> {
    for (i, tensor) in tensors.iter().enumerate() {
        if tensors[..i].iter().any(|t| t.name == tensor.name) {
            let quoted = format!("\"{}\"", tensor.name);
            return Err(source.error(
                &[&quoted, &quoted],
                format!("{side} '{}' is declared twice", tensor.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::config_error;

    #[test]
    fn impossible_dims_name_the_tensor_and_line() {
        let text = "max_batch_size: 2\ninput [\n  {\n    name: \"x\"\n    data_type: TYPE_FP32\n    dims: [ 0 ]\n  }\n]\n";
        let (line, message) = config_error(text);
        assert_eq!(line, 6);
        assert!(
            message.contains("'x'") && message.contains("dimension 0"),
            "{message}"
        );
    }
}
