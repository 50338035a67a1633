//! The command line's JSON forms of tensors: inputs are read from
//! `{"NAME": {"datatype": "INT32", "shape": [1, 16], "data": [...]}}` and outputs are printed in the same
//! shape of object, so a script can feed one call's output to the next.

use anyhow::{Context, bail};
use ferry_client::half::{bf16, f16};
use ferry_client::proto::ModelConfig;
use ferry_client::{ClientError, InferInput, InferResult, TensorElement};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value, json};

/// The datatypes the protocol defines, listed in errors so a typo can be fixed without the docs.
const DATATYPES: &str =
    "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES";

/// Parses the inputs object. `data` may be flat or nested to any depth (nesting is flattened row-major);
/// `BYTES` elements are JSON strings. Whether `data` fills `shape` is checked when the request is built.
pub fn parse_inputs(text: &str) -> anyhow::Result<Vec<InferInput>> {
    let value: Value = serde_json::from_str(text).context("inputs are not valid JSON")?;
    let Value::Object(inputs) = value else {
        bail!(
            "inputs must be a JSON object of name -> {{datatype, shape, data}}, not {}",
            kind(&value)
        );
    };
    inputs
        .iter()
        .map(|(name, spec)| parse_input(name, spec))
        .collect()
}

fn parse_input(name: &str, spec: &Value) -> anyhow::Result<InferInput> {
    if !spec.is_object() {
        bail!(
            "input {name:?} must be an object of datatype, shape and data, not {}",
            kind(spec)
        );
    }
    let field = |key: &str| {
        spec.get(key)
            .with_context(|| format!("input {name:?} has no {key:?}"))
    };
    let datatype = field("datatype")?
        .as_str()
        .with_context(|| format!("input {name:?}: \"datatype\" must be a string"))?;
    let shape = field("shape")?
        .as_array()
        .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .with_context(|| format!("input {name:?}: \"shape\" must be an array of integers"))?;
    let mut values = Vec::new();
    flatten(field("data")?, &mut values);

    let input = InferInput::new(name, shape);
    let elements = Elements {
        input: name,
        datatype,
        values: &values,
    };
    Ok(match datatype {
        "BOOL" => input.with_data(&elements.convert(Value::as_bool)?),
        "UINT8" => input.with_data(&elements.unsigned::<u8>()?),
        "UINT16" => input.with_data(&elements.unsigned::<u16>()?),
        "UINT32" => input.with_data(&elements.unsigned::<u32>()?),
        "UINT64" => input.with_data(&elements.unsigned::<u64>()?),
        "INT8" => input.with_data(&elements.signed::<i8>()?),
        "INT16" => input.with_data(&elements.signed::<i16>()?),
        "INT32" => input.with_data(&elements.signed::<i32>()?),
        "INT64" => input.with_data(&elements.signed::<i64>()?),
        "FP16" => input.with_data(&elements.convert(|v| v.as_f64().map(f16::from_f64))?),
        "BF16" => input.with_data(&elements.convert(|v| v.as_f64().map(bf16::from_f64))?),
        // Narrowing to f32 is the point: JSON numbers are f64.
        "FP32" => input.with_data(&elements.convert(|v| v.as_f64().map(|f| f as f32))?),
        "FP64" => input.with_data(&elements.convert(Value::as_f64)?),
        "BYTES" => input.with_bytes(&elements.convert(Value::as_str)?),
        other => bail!("input {name:?}: unknown datatype {other:?}; expected one of {DATATYPES}"),
    })
}

/// Appends the scalars of `value` in row-major order, descending into nested arrays.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        scalar => out.push(scalar),
    }
}

/// The flattened data of one input, with what an error about it must name.
struct Elements<'a> {
    input: &'a str,
    datatype: &'a str,
    values: &'a [&'a Value],
}

impl<'a> Elements<'a> {
    /// Converts every element, naming the first that does not fit the datatype.
    fn convert<T>(&self, convert: impl Fn(&'a Value) -> Option<T>) -> anyhow::Result<Vec<T>> {
        self.values
            .iter()
            .enumerate()
            .map(|(index, &value)| {
                convert(value).with_context(|| {
                    format!(
                        "input {:?}: data[{index}] = {value} is not a valid {}",
                        self.input, self.datatype
                    )
                })
            })
            .collect()
    }

    fn signed<T: TryFrom<i64>>(&self) -> anyhow::Result<Vec<T>> {
        self.convert(|value| value.as_i64().and_then(|int| T::try_from(int).ok()))
    }

    fn unsigned<T: TryFrom<u64>>(&self) -> anyhow::Result<Vec<T>> {
        self.convert(|value| value.as_u64().and_then(|int| T::try_from(int).ok()))
    }
}

/// The printed form of a result: model name and version, and each output's datatype, shape and flat data.
/// `FP16` and `BF16` print as numbers, non-finite floats as `null`, and `BYTES` elements as strings, or
/// as arrays of byte values when they are not UTF-8.
pub fn result_to_json(result: &InferResult) -> Result<Value, ClientError> {
    let mut outputs = Map::new();
    for name in result.output_names() {
        let datatype = result.output_datatype(name)?;
        let output = json!({
            "datatype": datatype,
            "shape": result.output_shape(name)?,
            "data": output_data(result, name, datatype)?,
        });
        outputs.insert(name.to_owned(), output);
    }
    Ok(json!({
        "model_name": result.model_name(),
        "model_version": result.model_version(),
        "outputs": outputs,
    }))
}

fn output_data(result: &InferResult, name: &str, datatype: &str) -> Result<Value, ClientError> {
    fn values<T: TensorElement>(
        result: &InferResult,
        name: &str,
        to_json: impl Fn(T) -> Value,
    ) -> Result<Value, ClientError> {
        Ok(result.output_as::<T>(name)?.into_iter().map(to_json).collect())
    }
    match datatype {
        "BOOL" => values::<bool>(result, name, Value::from),
        "UINT8" => values::<u8>(result, name, Value::from),
        "UINT16" => values::<u16>(result, name, Value::from),
        "UINT32" => values::<u32>(result, name, Value::from),
        "UINT64" => values::<u64>(result, name, Value::from),
        "INT8" => values::<i8>(result, name, Value::from),
        "INT16" => values::<i16>(result, name, Value::from),
        "INT32" => values::<i32>(result, name, Value::from),
        "INT64" => values::<i64>(result, name, Value::from),
        "FP16" => values::<f16>(result, name, |v| single(v.into())),
        "BF16" => values::<bf16>(result, name, |v| single(v.into())),
        "FP32" => values::<f32>(result, name, single),
        "FP64" => values::<f64>(result, name, Value::from),
        "BYTES" => Ok(result
            .output_bytes(name)?
            .into_iter()
            .map(|item| match std::str::from_utf8(&item) {
                Ok(text) => Value::from(text),
                Err(_) => Value::from(item.to_vec()),
            })
            .collect()),
        other => Err(ClientError::MalformedTensor {
            tensor: name.to_owned(),
            reason: format!("unknown datatype {other:?}; expected one of {DATATYPES}"),
        }),
    }
}

/// A model configuration in protobuf's JSON mapping with the proto's own field names (`max_batch_size`),
/// the form Triton's `config.pbtxt` documentation and `tritonclient` use; default-valued fields are left out.
pub fn config_to_json(config: &ModelConfig) -> anyhow::Result<String> {
    let pool =
        DescriptorPool::decode(ferry_proto::FILE_DESCRIPTOR_SET).context("cannot read Ferry's protos")?;
    let descriptor = pool
        .get_message_by_name("inference.ModelConfig")
        .context("the protos lack inference.ModelConfig")?;
    let message = DynamicMessage::decode(descriptor, config.encode_to_vec().as_slice())?;
    let mut out = serde_json::Serializer::pretty(Vec::new());
    message.serialize_with_options(&mut out, &SerializeOptions::new().use_proto_field_name(true))?;
    Ok(String::from_utf8(out.into_inner())?)
}

/// A single-precision float as the shortest decimal that reads back to it (`0.1`, not the
/// `0.10000000149011612` a plain widening to f64 prints); non-finite values become `null`.
fn single(value: f32) -> Value {
    value.to_string().parse::<f64>().map_or(Value::Null, Value::from)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ferry_client::InferRequest;
    use ferry_client::proto::ModelInferResponse;
    use ferry_client::proto::model_infer_response::InferOutputTensor;

    use super::*;

    /// Parses `inputs`, then answers as an identity model would (each input back as an output of the same
    /// name) and renders the result.
    fn echo(inputs: &str) -> anyhow::Result<Value> {
        let request = parse_inputs(inputs)?
            .into_iter()
            .fold(InferRequest::new("m"), InferRequest::with_input)
            .into_proto()?;
        let response = ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: request
                .inputs
                .into_iter()
                .map(|input| InferOutputTensor {
                    name: input.name,
                    datatype: input.datatype,
                    shape: input.shape,
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: request.raw_input_contents,
            ..Default::default()
        };
        Ok(result_to_json(&response.into())?)
    }

    #[test]
    fn every_datatype_round_trips() {
        let cases = [
            ("BOOL", json!([true, false])),
            ("UINT8", json!([0, 255])),
            ("UINT16", json!([0, 65535])),
            ("UINT32", json!([0, 4294967295u32])),
            ("UINT64", json!([0, u64::MAX])),
            ("INT8", json!([-128, 127])),
            ("INT16", json!([-32768, 32767])),
            ("INT32", json!([i32::MIN, i32::MAX])),
            ("INT64", json!([i64::MIN, i64::MAX])),
            ("FP16", json!([-1.5, 0.25])),
            ("BF16", json!([-1.5, 0.25])),
            ("FP32", json!([-1.5, 0.1])),
            ("FP64", json!([-1.5, 0.1])),
            ("BYTES", json!(["hello", ""])),
        ];
        for (datatype, data) in cases {
            let inputs = json!({"X": {"datatype": datatype, "shape": [2], "data": data}});
            let printed = echo(&inputs.to_string()).unwrap();
            let expected = json!({
                "model_name": "m",
                "model_version": "1",
                "outputs": {"X": {"datatype": datatype, "shape": [2], "data": data}},
            });
            assert_eq!(printed, expected, "{datatype}");
        }
    }

    #[test]
    fn nested_data_is_flattened_row_major() {
        let inputs = r#"{"X": {"datatype": "INT32", "shape": [2, 2, 1], "data": [[[1], [2]], [[3], [4]]]}}"#;
        let printed = echo(inputs).unwrap();
        assert_eq!(printed["outputs"]["X"]["data"], json!([1, 2, 3, 4]));
        assert_eq!(printed["outputs"]["X"]["shape"], json!([2, 2, 1]));
    }

    #[test]
    fn data_that_does_not_fill_the_shape_is_rejected() {
        let err = echo(r#"{"X": {"datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5]]}}"#);
        let message = format!("{:#}", err.unwrap_err());
        assert_eq!(
            message,
            "tensor \"X\" with shape [2, 3] needs 6 elements, given 5"
        );
    }

    #[test]
    fn malformed_inputs_are_named() {
        let error = |inputs: &str| format!("{:#}", parse_inputs(inputs).err().unwrap());
        assert!(error("[1]").contains("must be a JSON object"));
        assert_eq!(
            error(r#"{"X": 1}"#),
            "input \"X\" must be an object of datatype, shape and data, not a number"
        );
        assert_eq!(
            error(r#"{"X": {"shape": [1], "data": [1]}}"#),
            "input \"X\" has no \"datatype\""
        );
        assert!(
            error(r#"{"X": {"datatype": "INT4", "shape": [1], "data": [1]}}"#)
                .contains("unknown datatype \"INT4\"")
        );
        assert!(
            error(r#"{"X": {"datatype": "INT8", "shape": [1.5], "data": [1]}}"#)
                .contains("array of integers")
        );
        assert_eq!(
            error(r#"{"X": {"datatype": "INT8", "shape": [2], "data": [1, 300]}}"#),
            "input \"X\": data[1] = 300 is not a valid INT8"
        );
        assert_eq!(
            error(r#"{"X": {"datatype": "UINT8", "shape": [1], "data": [-1]}}"#),
            "input \"X\": data[0] = -1 is not a valid UINT8"
        );
        assert_eq!(
            error(r#"{"X": {"datatype": "BYTES", "shape": [1], "data": [7]}}"#),
            "input \"X\": data[0] = 7 is not a valid BYTES"
        );
    }

    #[test]
    fn configs_print_with_proto_field_names() {
        let config = ModelConfig {
            name: "simple".into(),
            max_batch_size: 8,
            ..Default::default()
        };
        let printed: Value = serde_json::from_str(&config_to_json(&config).unwrap()).unwrap();
        assert_eq!(printed, json!({"name": "simple", "max_batch_size": 8}));
    }

    #[test]
    fn non_utf8_bytes_print_as_byte_values() {
        let response = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "S".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_output_contents: vec![b"\x02\0\0\0\xff\x00".to_vec().into()],
            ..Default::default()
        };
        let printed = result_to_json(&response.into()).unwrap();
        assert_eq!(printed["outputs"]["S"]["data"], json!([[255, 0]]));
    }
}
