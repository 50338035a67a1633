//! An inference request body to the gRPC `ModelInferRequest`, and the `ModelInferResponse` back to a body.
//!
//! Every input becomes an entry of `raw_input_contents`: binary inputs as slices of the received body, JSON
//! inputs as the raw bytes their `data` converts to; inputs in shared memory keep their `shared_memory_*`
//! parameters and have no entry, as over gRPC. The shared core then validates names, datatypes, shapes,
//! byte sizes and regions once for both protocols. This layer checks only what the core cannot see: the JSON's
//! structure, the JSON elements and the binary sizes. It runs once the core has resolved the model, so its
//! refusals count as failed requests of the model, as the core's own do.

use std::collections::HashMap;

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse, infer_parameter,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    binary::{self, BinaryTail, ChunkedBody},
    json::{access, infer_parameter, infer_parameters_json, triton_json},
    tensor::{JsonTensor, json_to_raw, kind},
};
use crate::{
    DataType, Error,
    shm::{self, TensorRegion},
};

/// A REST inference request translated for the core, with what the core does not need: how to send each
/// output back.
#[derive(Debug, Clone, PartialEq)]
pub struct RestInferRequest {
    /// The request for the core ([`InferenceService::infer_with`](crate::core::InferenceService::infer_with)).
    pub request: ModelInferRequest,
    /// Which outputs go back as binary data.
    pub outputs: OutputForms,
}

/// Which outputs the response carries as binary data rather than JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputForms {
    /// The request-level `binary_data_output`: the form of outputs without their own `binary_data`.
    pub default_binary: bool,
    /// Each output's own `binary_data`, which overrides the default.
    pub per_output: HashMap<String, bool>,
}

impl OutputForms {
    /// Whether output `name` is sent as binary data.
    pub fn is_binary(&self, name: &str) -> bool {
        self.per_output.get(name).copied().unwrap_or(self.default_binary)
    }
}

/// Translates the body of `POST /v2/models/{model}[/versions/{version}]/infer`, already inflated when it
/// came compressed (`super::encoding`).
///
/// Mistakes Triton's REST front end also catches get its status and text (`EVBufferToInput`,
/// `ParseJsonTritonRequestID`, `ParseJsonTritonParams` and `ParseJsonTritonIO` in its `http_server.cc`), in
/// its order, with Ferry's detail after `"; "`. Its JSON reader's errors are `INTERNAL` there, so 500.
pub fn parse_request(
    model: &str,
    version: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<RestInferRequest, Error> {
    let (json, tail) = match binary::header_length(headers, body.len())? {
        None => (body, BinaryTail::new(Bytes::new(), model)),
        Some(0) => {
            return Err(Error::invalid(
                "Inference-Header-Content-Length 0 (a raw binary request without a JSON header) is not supported; \
                 send a JSON header that names the input and gives its binary_data_size",
            ));
        }
        Some(length) => (body.slice(..length), BinaryTail::new(body.slice(length..), model)),
    };
    let value = super::json::parse_json(&json, "inference request header")?;
    // Triton reads members of a request that is no object as missing: `inputs` is the first it requires.
    let mut object = match value {
        Value::Object(object) => object,
        other => {
            return Err(unable(
                "inputs",
                access::missing("inputs"),
                &format!("the inference request is {}, not a JSON object", kind(&other)),
            ));
        }
    };
    let id = match object.remove("id") {
        None => String::new(),
        Some(Value::String(id)) => id,
        Some(other) => return Err(unable("id", access::STRING, &format!("'id' is {}", kind(&other)))),
    };
    let mut forms = OutputForms::default();
    let mut parameters = HashMap::new();
    let request_parameters = match object.remove("parameters") {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(triton_json(format!(
                "failed to get request params.: {}; 'parameters' is {}",
                access::MEMBERS,
                kind(&other)
            )));
        }
    };
    for (key, value) in request_parameters {
        match key.as_str() {
            "binary_data_output" => {
                forms.default_binary = boolean(&value, "binary_data_output", "Unable to parse")?
            }
            // Triton's REST front end reads these as unsigned integers before the core sees them.
            "priority" | "timeout" => {
                if !value.is_u64() {
                    return Err(unable(&key, access::UINT, &format!("'{key}' is {value}")));
                }
                parameters.insert(key.clone(), infer_parameter(&key, &value)?);
            }
            _ => {
                parameters.insert(key.clone(), infer_parameter(&key, &value)?);
            }
        }
    }
    let (inputs, raw_input_contents) = parse_inputs(object.remove("inputs"), tail)?;
    let outputs = parse_outputs(object.remove("outputs"), &mut forms)?;
    Ok(RestInferRequest {
        request: ModelInferRequest {
            model_name: model.to_owned(),
            model_version: version.to_owned(),
            id,
            parameters,
            inputs,
            outputs,
            raw_input_contents,
        },
        outputs: forms,
    })
}

/// Triton's `RETURN_MSG_IF_ERR(..., "Unable to parse '<field>'")` around a `TritonJson` error, then
/// Ferry's detail.
fn unable(field: &str, error: impl std::fmt::Display, detail: &str) -> Error {
    triton_json(format!("Unable to parse '{field}': {error}; {detail}"))
}

fn parse_inputs(
    inputs: Option<Value>,
    mut tail: BinaryTail,
) -> Result<(Vec<InferInputTensor>, Vec<Bytes>), Error> {
    let inputs = match inputs {
        Some(Value::Array(inputs)) => inputs,
        Some(other) => {
            return Err(unable(
                "inputs",
                access::ARRAY,
                &format!("'inputs' is {}", kind(&other)),
            ));
        }
        None => {
            return Err(unable(
                "inputs",
                access::missing("inputs"),
                "the inference request has no 'inputs' array",
            ));
        }
    };
    let mut tensors = Vec::with_capacity(inputs.len());
    let mut contents = Vec::with_capacity(inputs.len());
    for (position, input) in inputs.into_iter().enumerate() {
        // Triton checks where the data is before anything else; an input that is no object has none.
        let mut input = match input {
            Value::Object(input) => input,
            other => {
                return Err(one_source_of_data(
                    &format!("inputs[{position}], {}", kind(&other)),
                    false,
                    false,
                    false,
                ));
            }
        };
        let (has_binary, has_region) = match input.get("parameters") {
            Some(Value::Object(parameters)) => (
                parameters.contains_key("binary_data_size"),
                parameters.contains_key(shm::REGION),
            ),
            _ => (false, false),
        };
        if usize::from(input.contains_key("data")) + usize::from(has_binary) + usize::from(has_region) != 1 {
            let who = match input.get("name") {
                Some(Value::String(name)) => format!("'{name}'"),
                _ => format!("inputs[{position}]"),
            };
            return Err(one_source_of_data(
                &who,
                input.contains_key("data"),
                has_binary,
                has_region,
            ));
        }
        let name = string(input.remove("name"), &format!("inputs[{position}]"), "name")?;
        let datatype_name = string(input.remove("datatype"), &format!("input '{name}'"), "datatype")?;
        let shape = parse_shape(input.remove("shape"), &name)?;
        let datatype = DataType::from_wire_name(&datatype_name).ok_or_else(|| {
            Error::invalid(format!("input '{name}' has unknown datatype '{datatype_name}'"))
        })?;
        let mut binary_size = None;
        let mut parameters = HashMap::new();
        for (key, value) in optional_object(
            input.remove("parameters"),
            &format!("input '{name}' 'parameters'"),
        )? {
            match key.as_str() {
                "binary_data_size" => {
                    binary_size = Some(value.as_u64().ok_or_else(|| {
                        unable(
                            "binary_data_size",
                            access::UINT,
                            &format!("input '{name}' binary_data_size is {value}"),
                        )
                    })?);
                }
                _ => {
                    parameters.insert(key.clone(), infer_parameter(&key, &value)?);
                }
            }
        }
        // The same parse as the gRPC path's; the core reads the region when it parses the request.
        TensorRegion::from_parameters(&parameters, &name)?;
        let raw = match (input.remove("data"), binary_size) {
            (Some(data), _) => Some(Bytes::from(json_to_raw(
                &name,
                datatype,
                &data,
                elements(&shape, &name)?,
            )?)),
            (None, Some(size)) => Some(tail.take(&name, size)?),
            // As in gRPC, an input in shared memory has no entry among the raw contents.
            (None, None) => None,
        };
        tensors.push(InferInputTensor {
            name,
            datatype: datatype_name,
            shape,
            parameters,
            contents: None,
        });
        contents.extend(raw);
    }
    tail.finish()?;
    Ok((tensors, contents))
}

/// Triton's error for an input that does not take its data from exactly one place (`ValidateInputContentType`
/// in its `http_server.cc`), naming the input (`who`) after Triton's text.
fn one_source_of_data(who: &str, data: bool, binary: bool, shared_memory: bool) -> Error {
    let set: Vec<&str> = [
        (data, "'data'"),
        (binary, "'binary_data_size'"),
        (shared_memory, "'shared_memory_region'"),
    ]
    .into_iter()
    .filter_map(|(present, field)| present.then_some(field))
    .collect();
    let which = if set.is_empty() {
        " no field is set".to_owned()
    } else {
        format!(" set {}", set.join(" "))
    };
    Error::invalid(format!(
        "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', \
         'shared_memory_region' in 'parameters'. But{which}; input {who}"
    ))
}

/// The shape, read as Triton does (`IndexAsUInt` on each dimension of `MemberAsArray("shape")`).
fn parse_shape(shape: Option<Value>, name: &str) -> Result<Vec<i64>, Error> {
    let dims = match shape {
        Some(Value::Array(dims)) => dims,
        Some(other) => {
            return Err(unable(
                "shape",
                access::ARRAY,
                &format!("input '{name}' shape is {}", kind(&other)),
            ));
        }
        None => {
            return Err(unable(
                "shape",
                access::missing("shape"),
                &format!("input '{name}' has no 'shape' array"),
            ));
        }
    };
    dims.iter()
        .map(|dim| {
            dim.as_u64().and_then(|d| i64::try_from(d).ok()).ok_or_else(|| {
                unable(
                    "shape",
                    access::UINT,
                    &format!(
                        "input '{name}' shape {} holds {dim}; dimensions are non-negative integers",
                        Value::Array(dims.clone())
                    ),
                )
            })
        })
        .collect()
}

/// The element count of `shape`, refusing shapes whose product overflows.
fn elements(shape: &[i64], name: &str) -> Result<usize, Error> {
    shape
        .iter()
        .try_fold(1usize, |count, dim| {
            count.checked_mul(usize::try_from(*dim).ok()?)
        })
        .ok_or_else(|| Error::invalid(format!("input '{name}' shape {shape:?} is too large")))
}

fn parse_outputs(
    outputs: Option<Value>,
    forms: &mut OutputForms,
) -> Result<Vec<InferRequestedOutputTensor>, Error> {
    let outputs = match outputs {
        None => return Ok(Vec::new()),
        Some(Value::Array(outputs)) => outputs,
        Some(other) => {
            return Err(unable(
                "outputs",
                access::ARRAY,
                &format!("'outputs' is {}", kind(&other)),
            ));
        }
    };
    let mut requested = Vec::with_capacity(outputs.len());
    for (position, output) in outputs.into_iter().enumerate() {
        // Triton reads the members of an output that is no object as missing: `name` first.
        let mut output = match output {
            Value::Object(output) => output,
            other => {
                return Err(unable(
                    "name",
                    access::missing("name"),
                    &format!("outputs[{position}] is {}, not a JSON object", kind(&other)),
                ));
            }
        };
        // Triton ignores `parameters` that are no object.
        let output_parameters = match output.remove("parameters") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        check_shared_memory_output(&output_parameters, &format!("outputs[{position}]"))?;
        let name = string(output.remove("name"), &format!("outputs[{position}]"), "name")?;
        let mut parameters = HashMap::new();
        for (key, value) in output_parameters {
            match key.as_str() {
                "binary_data" => {
                    let binary = boolean(&value, "binary_data", "Unable to parse")?;
                    forms.per_output.insert(name.clone(), binary);
                }
                "classification" => {
                    if let Some(count) = classification_count(&value)? {
                        parameters.insert(key.clone(), count);
                    }
                }
                _ => {
                    parameters.insert(key.clone(), infer_parameter(&key, &value)?);
                }
            }
        }
        requested.push(InferRequestedOutputTensor { name, parameters });
    }
    Ok(requested)
}

/// An output's `classification` parameter as Triton's REST front end reads it (`CheckClassificationOutput`
/// in its `http_server.cc`): an unsigned JSON integer, where 0 asks for the raw tensor. The count goes on as
/// the gRPC parameter the shared core reads.
fn classification_count(value: &Value) -> Result<Option<InferParameter>, Error> {
    let count = value.as_u64().ok_or_else(|| {
        triton_json(format!(
            "Unable to set 'classification': {}; got {value}",
            access::UINT
        ))
    })?;
    // Counts beyond int64 ask for every class, as any count above the class count does.
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    Ok((count > 0).then_some(InferParameter {
        parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(count)),
    }))
}

/// Refuses what Triton refuses with an output in shared memory (`ValidateOutputParameter` in its
/// `http_server.cc`): classification, which is computed from the output, and binary data, which would send
/// it in the body too. Triton's texts, then the output (`who`).
fn check_shared_memory_output(parameters: &Map<String, Value>, who: &str) -> Result<(), Error> {
    if !parameters.contains_key(shm::REGION) {
        return Ok(());
    }
    let other = if parameters.contains_key("classification") {
        "classification"
    } else if let Some(binary) = parameters.get("binary_data") {
        if !boolean(binary, "binary_data", "Unable to set")? {
            return Ok(());
        }
        "binary_data"
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!(
        "Output can't set both 'shared_memory_region' and '{other}'; output {who}"
    )))
}

/// A required string field `field` of `owner`, read as Triton's `MemberAsString`.
fn string(value: Option<Value>, owner: &str, field: &str) -> Result<String, Error> {
    match value {
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(unable(
            field,
            access::STRING,
            &format!("{owner} '{field}' is {}", kind(&other)),
        )),
        None => Err(unable(
            field,
            access::missing(field),
            &format!("{owner} has no '{field}'"),
        )),
    }
}

/// A boolean parameter `key`, read as Triton's `AsBool` under `prefix` ("Unable to parse", "Unable to set").
fn boolean(value: &Value, key: &str, prefix: &str) -> Result<bool, Error> {
    value
        .as_bool()
        .ok_or_else(|| triton_json(format!("{prefix} '{key}': {}; got {}", access::BOOL, kind(value))))
}

/// An optional JSON object; `what` names it in the error when it is something else.
fn optional_object(value: Option<Value>, what: &str) -> Result<Map<String, Value>, Error> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(Error::invalid(format!(
            "{what} must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

#[derive(Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    outputs: Vec<OutputHeader<'a>>,
}

#[derive(Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Map::is_empty")]
    parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonTensor<'a>>,
}

/// The REST answer to `response`: JSON alone, or when any output is binary, the JSON header followed by the
/// binary outputs in order, with `Inference-Header-Content-Length` and `application/octet-stream` as Triton
/// sends them.
pub fn build_response(response: &ModelInferResponse, forms: &OutputForms) -> Result<Response, Error> {
    if response.raw_output_contents.len() != response.outputs.len() {
        return Err(Error::Internal(format!(
            "the response has {} outputs but {} raw contents",
            response.outputs.len(),
            response.raw_output_contents.len()
        )));
    }
    let mut blobs = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut any_binary = false;
    for (tensor, raw) in response.outputs.iter().zip(&response.raw_output_contents) {
        if tensor.parameters.contains_key(shm::REGION) {
            // Written into its region: Triton's REST answer gives the name, datatype and shape, nothing else.
            outputs.push(OutputHeader {
                name: &tensor.name,
                datatype: &tensor.datatype,
                shape: &tensor.shape,
                parameters: Map::new(),
                data: None,
            });
            continue;
        }
        let mut parameters = infer_parameters_json(&tensor.parameters);
        let data = if forms.is_binary(&tensor.name) {
            any_binary = true;
            parameters.insert("binary_data_size".into(), Value::from(raw.len()));
            blobs.push(raw.clone());
            None
        } else {
            let datatype = DataType::from_wire_name(&tensor.datatype).ok_or_else(|| {
                Error::Internal(format!(
                    "output '{}' has unknown datatype '{}'",
                    tensor.name, tensor.datatype
                ))
            })?;
            Some(JsonTensor::new(&tensor.name, datatype, raw)?)
        };
        outputs.push(OutputHeader {
            name: &tensor.name,
            datatype: &tensor.datatype,
            shape: &tensor.shape,
            parameters,
            data,
        });
    }
    let header = ResponseHeader {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: &response.id,
        parameters: infer_parameters_json(&response.parameters),
        outputs,
    };
    let json = serde_json::to_vec(&header)
        .map_err(|error| Error::Internal(format!("cannot write the response as JSON: {error}")))?;
    if !any_binary {
        let mut reply = (StatusCode::OK, json).into_response();
        reply
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(reply);
    }
    let json_length = HeaderValue::from(json.len());
    let body = ChunkedBody::new(std::iter::once(Bytes::from(json)).chain(blobs));
    let mut reply = Response::new(Body::new(body));
    let headers = reply.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(binary::HEADER_LENGTH, json_length);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::{infer_parameter::ParameterChoice, model_infer_response::InferOutputTensor};
    use serde_json::json;

    use super::*;

    fn headers(length: Option<usize>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(length) = length {
            headers.insert(binary::HEADER_LENGTH, HeaderValue::from(length));
        }
        headers
    }

    fn parse(body: Value) -> Result<RestInferRequest, String> {
        let body = Bytes::from(body.to_string());
        parse_request("m", "", &headers(None), body).map_err(|e| e.to_string())
    }

    fn with_binary(header: Value, blobs: &[&[u8]]) -> (HeaderMap, Bytes) {
        let json = header.to_string();
        let mut body = json.clone().into_bytes();
        for blob in blobs {
            body.extend_from_slice(blob);
        }
        (headers(Some(json.len())), Bytes::from(body))
    }

    #[test]
    fn json_inputs_become_raw_contents() {
        let parsed = parse(json!({
            "id": "r1",
            "parameters": {"priority": 1, "binary_data_output": true},
            "inputs": [{"name": "a", "shape": [2], "datatype": "INT16", "data": [1, -1], "parameters": {"p": "q"}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": false}}]
        }))
        .expect("valid");
        let request = parsed.request;
        assert_eq!(request.model_name, "m");
        assert_eq!(request.id, "r1");
        assert_eq!(request.inputs[0].shape, [2]);
        assert_eq!(request.inputs[0].datatype, "INT16");
        assert!(request.inputs[0].parameters.contains_key("p"));
        assert_eq!(request.raw_input_contents, [Bytes::from(vec![1, 0, 255, 255])]);
        assert_eq!(
            request
                .parameters
                .get("priority")
                .and_then(|p| p.parameter_choice.clone()),
            Some(ParameterChoice::Int64Param(1))
        );
        assert!(!request.parameters.contains_key("binary_data_output"));
        assert_eq!(request.outputs[0].name, "y");
        assert!(parsed.outputs.is_binary("other"));
        assert!(!parsed.outputs.is_binary("y"));
    }

    #[test]
    fn binary_inputs_are_slices_of_the_body() {
        let (headers, body) = with_binary(
            json!({"inputs": [
                {"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
                {"name": "b", "shape": [1], "datatype": "INT8", "data": [7]},
                {"name": "c", "shape": [2], "datatype": "FP16", "parameters": {"binary_data_size": 4}}
            ]}),
            &[&[1, 2, 3, 4], &[5, 6, 7, 8]],
        );
        let parsed = parse_request("m", "2", &headers, body.clone()).expect("valid");
        let raw = &parsed.request.raw_input_contents;
        assert_eq!(raw[0], Bytes::from_static(&[1, 2, 3, 4]));
        assert_eq!(raw[0].as_ptr(), body[body.len() - 8..].as_ptr(), "no copy");
        assert_eq!(raw[1], Bytes::from_static(&[7]));
        assert_eq!(raw[2], Bytes::from_static(&[5, 6, 7, 8]));
        assert_eq!(parsed.request.model_version, "2");
    }

    #[test]
    fn inputs_in_shared_memory_keep_their_parameters_and_have_no_raw_entry() {
        let parsed = parse(json!({"inputs": [
            {"name": "a", "shape": [1], "datatype": "INT32", "data": [3]},
            {"name": "b", "shape": [1], "datatype": "INT32", "parameters": {
                "shared_memory_region": "r", "shared_memory_offset": 8, "shared_memory_byte_size": 4}},
        ], "outputs": [{"name": "y", "parameters": {"shared_memory_region": "o", "shared_memory_byte_size": 4}}]}))
        .expect("valid");
        let request = parsed.request;
        assert_eq!(
            request.raw_input_contents,
            [Bytes::from(3i32.to_le_bytes().to_vec())]
        );
        let region = TensorRegion::from_parameters(&request.inputs[1].parameters, "b").expect("valid");
        assert_eq!(
            region,
            Some(TensorRegion {
                region: "r".into(),
                offset: 8,
                byte_size: 4
            })
        );
        let output = TensorRegion::from_parameters(&request.outputs[0].parameters, "y").expect("valid");
        assert_eq!(output.map(|o| o.region), Some("o".into()));
    }

    #[test]
    fn malformed_requests_name_what_is_wrong() {
        let input = |extra: Value| {
            let mut input = json!({"name": "a", "shape": [1], "datatype": "INT32", "data": [1]});
            for (k, v) in extra.as_object().expect("object") {
                if v.is_null() {
                    input.as_object_mut().expect("object").remove(k);
                } else {
                    input[k] = v.clone();
                }
            }
            json!({"inputs": [input]})
        };
        // (body, Triton's text that starts the message, HTTP status): Triton's `ParseJsonTritonRequestID`,
        // `ParseJsonTritonParams`, `ParseJsonTritonIO`, `ValidateInputContentType`,
        // `ValidateOutputParameter`, `CheckClassificationOutput` in its `http_server.cc`, with `TritonJson`'s
        // texts; its JSON reader's errors are INTERNAL (500), its own checks INVALID_ARG (400).
        let uint = "attempt to access JSON non-unsigned-integer as unsigned-integer";
        let cases = [
            (json!([1]), "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'; ".to_owned(), 500),
            (json!({}), "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'; ".into(), 500),
            (json!({"inputs": {}}), "Unable to parse 'inputs': attempt to access JSON non-array as array; ".into(), 500),
            (json!({"inputs": [3]}), "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But no field is set; input inputs[0], a number".into(), 400),
            (json!({"id": 5, "inputs": []}), "Unable to parse 'id': attempt to access JSON non-string as string; ".into(), 500),
            (json!({"parameters": [], "inputs": []}), "failed to get request params.: attempt to get members for non-object; ".into(), 500),
            (json!({"parameters": {"binary_data_output": 1}, "inputs": []}), "Unable to parse 'binary_data_output': attempt to access JSON non-boolean as boolean; ".into(), 500),
            (json!({"parameters": {"priority": -1}, "inputs": []}), format!("Unable to parse 'priority': {uint}; "), 500),
            (json!({"parameters": {"timeout": "1"}, "inputs": []}), format!("Unable to parse 'timeout': {uint}; "), 500),
            (json!({"parameters": {"k": null}, "inputs": []}), "parameter 'k' has invalid type. It should be either 'int', 'bool', or 'string'.; got null".into(), 400),
            (input(json!({"name": null})), "Unable to parse 'name': attempt to access non-existing object member 'name'; inputs[0] has no 'name'".into(), 500),
            (input(json!({"name": 3})), "Unable to parse 'name': attempt to access JSON non-string as string; ".into(), 500),
            (input(json!({"datatype": null})), "Unable to parse 'datatype': attempt to access non-existing object member 'datatype'; ".into(), 500),
            (input(json!({"datatype": "FP99"})), "input 'a' has unknown datatype 'FP99'".into(), 400),
            (input(json!({"shape": null})), "Unable to parse 'shape': attempt to access non-existing object member 'shape'; ".into(), 500),
            (input(json!({"shape": 1})), "Unable to parse 'shape': attempt to access JSON non-array as array; ".into(), 500),
            (input(json!({"shape": [-1]})), format!("Unable to parse 'shape': {uint}; "), 500),
            (input(json!({"shape": [1.5]})), format!("Unable to parse 'shape': {uint}; "), 500),
            (input(json!({"shape": [u64::MAX]})), format!("Unable to parse 'shape': {uint}; "), 500),
            (input(json!({"shape": [i64::MAX, i64::MAX]})), "input 'a' shape".into(), 400),
            (input(json!({"data": null})), "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But no field is set; input 'a'".into(), 400),
            (input(json!({"parameters": {"binary_data_size": 4}})), "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But set 'data' 'binary_data_size'; input 'a'".into(), 400),
            (input(json!({"data": null, "parameters": {"binary_data_size": -4}})), format!("Unable to parse 'binary_data_size': {uint}; "), 500),
            (input(json!({"data": null, "parameters": {"binary_data_size": 4}})), "unexpected size for input 'a', expecting 4 additional bytes for model 'm'; ".into(), 400),
            (input(json!({"parameters": {"shared_memory_region": "r"}})), "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But set 'data' 'shared_memory_region'; input 'a'".into(), 400),
            (input(json!({"data": null, "parameters": {"shared_memory_region": "r"}})), "'shared_memory_byte_size' must be specified along with 'shared_memory_region'".into(), 400),
            (input(json!({"data": null, "parameters": {"shared_memory_region": 3, "shared_memory_byte_size": 4}})), "invalid value type for 'shared_memory_region' parameter for tensor 'a', expected string_param".into(), 400),
            (json!({"inputs": [], "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r", "binary_data": true}}]}), "Output can't set both 'shared_memory_region' and 'binary_data'; output outputs[0]".into(), 400),
            (json!({"inputs": [], "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r", "binary_data": 1}}]}), "Unable to set 'binary_data': attempt to access JSON non-boolean as boolean; ".into(), 500),
            (json!({"inputs": [], "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r", "classification": 2}}]}), "Output can't set both 'shared_memory_region' and 'classification'; output outputs[0]".into(), 400),
            (input(json!({"data": [1, 2]})), "Unable to parse 'data': Shape does not match true shape of 'data' field; input 'a' has 2 values".into(), 500),
            (json!({"inputs": [], "outputs": {}}), "Unable to parse 'outputs': attempt to access JSON non-array as array; ".into(), 500),
            (json!({"inputs": [], "outputs": ["y"]}), "Unable to parse 'name': attempt to access non-existing object member 'name'; outputs[0] is a string".into(), 500),
            (json!({"inputs": [], "outputs": [{}]}), "Unable to parse 'name': attempt to access non-existing object member 'name'; outputs[0] has no 'name'".into(), 500),
            (json!({"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}), "Unable to parse 'binary_data': attempt to access JSON non-boolean as boolean; ".into(), 500),
            (json!({"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": -2}}]}), format!("Unable to set 'classification': {uint}; got -2"), 500),
            (json!({"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": "2"}}]}), format!("Unable to set 'classification': {uint}; "), 500),
        ];
        for (body, prefix, status) in cases {
            let error =
                parse_request("m", "", &headers(None), Bytes::from(body.to_string())).expect_err(&prefix);
            assert!(
                error.to_string().starts_with(&prefix),
                "{body}: '{error}' does not start with '{prefix}'"
            );
            assert_eq!(error.http_status().as_u16(), status, "{body}: {error}");
        }
        for (body, prefix) in [
            (
                &b"{\"inputs\": ["[..],
                "failed to parse the request JSON buffer: Invalid value. at 12; ",
            ),
            (
                b"{inputs",
                "failed to parse the request JSON buffer: Missing a name for object member. at 1; ",
            ),
            (
                b"",
                "failed to parse the request JSON buffer: The document is empty. at 0; ",
            ),
            (
                b"{} x",
                "failed to parse the request JSON buffer: The document root must not be followed by other values. at 3; ",
            ),
            (
                b"{\"a\" 1}",
                "failed to parse the request JSON buffer: Missing a colon after a name of object member. at 5; ",
            ),
            (
                b"[1 2]",
                "failed to parse the request JSON buffer: Missing a comma or ']' after an array element. at 3; ",
            ),
        ] {
            let error =
                parse_request("m", "", &headers(None), Bytes::from_static(body)).expect_err("bad JSON");
            assert!(
                error.to_string().starts_with(prefix),
                "{}: {error}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                error.http_status().as_u16(),
                500,
                "Triton's JSON reader errs INTERNAL"
            );
        }
    }

    /// Triton's REST front end reads `classification` as an unsigned integer and treats 0 as no
    /// classification (`CheckClassificationOutput` and `OutputInfo::class_cnt_` in its `http_server.cc`).
    #[test]
    fn classification_counts_become_the_grpc_parameter() {
        let count = |value: Value| {
            let parsed = parse(json!({"inputs": [], "outputs": [
                {"name": "y", "parameters": {"classification": value, "binary_data": true}}
            ]}))
            .expect("valid");
            parsed.request.outputs[0]
                .parameters
                .get("classification")
                .and_then(|p| p.parameter_choice.clone())
        };
        assert_eq!(count(json!(3)), Some(ParameterChoice::Int64Param(3)));
        assert_eq!(count(json!(0)), None, "0 asks for the raw tensor");
        assert_eq!(
            count(json!(u64::MAX)),
            Some(ParameterChoice::Int64Param(i64::MAX))
        );
    }

    #[test]
    fn binary_sizes_must_add_up() {
        let header = |size: u64| json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": size}}]});
        let (h, body) = with_binary(header(8), &[&[0; 4]]);
        let error = parse_request("m", "", &h, body).expect_err("overrun");
        assert!(
            error.to_string().contains("binary_data_size 8") && error.to_string().contains("4 bytes"),
            "{error}"
        );
        let (h, body) = with_binary(header(4), &[&[0; 6]]);
        let error = parse_request("m", "", &h, body).expect_err("left over");
        assert!(
            error.to_string().contains("6 bytes") && error.to_string().contains("add up to 4"),
            "{error}"
        );
        let (_, body) = with_binary(header(4), &[&[0; 4]]);
        let error = parse_request("m", "", &headers(Some(0)), body.clone()).expect_err("raw binary");
        assert!(error.to_string().contains("not supported"), "{error}");
        let error = parse_request("m", "", &headers(Some(3)), body).expect_err("JSON cut short");
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }

    fn response() -> ModelInferResponse {
        let output = |name: &str, datatype: &str| InferOutputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![2],
            parameters: HashMap::new(),
            contents: None,
        };
        ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            parameters: HashMap::new(),
            outputs: vec![output("a", "INT32"), output("b", "BOOL")],
            raw_output_contents: vec![
                Bytes::from(
                    [5i32, -6]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect::<Vec<u8>>(),
                ),
                Bytes::from_static(&[1, 0]),
            ],
        }
    }

    async fn body_of(reply: Response) -> (HeaderMap, Vec<u8>) {
        let (parts, body) = reply.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn json_responses_carry_data() {
        let (headers, body) =
            body_of(build_response(&response(), &OutputForms::default()).expect("builds")).await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(headers.get(binary::HEADER_LENGTH).is_none());
        let value: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            value,
            json!({"model_name": "m", "model_version": "1", "outputs": [
                {"name": "a", "datatype": "INT32", "shape": [2], "data": [5, -6]},
                {"name": "b", "datatype": "BOOL", "shape": [2], "data": [true, false]}
            ]})
        );
    }

    /// Triton's `FinalizeResponse` writes nothing but the name, datatype and shape of an output it wrote
    /// into shared memory, whatever form the other outputs take.
    #[tokio::test]
    async fn outputs_in_shared_memory_have_neither_data_nor_parameters() {
        let mut response = response();
        response.outputs[1].parameters = TensorRegion {
            region: "o".into(),
            offset: 0,
            byte_size: 2,
        }
        .parameters();
        response.raw_output_contents[1] = Bytes::new();
        for default_binary in [false, true] {
            let forms = OutputForms {
                default_binary,
                per_output: HashMap::new(),
            };
            let reply = build_response(&response, &forms).expect("builds");
            let (headers, body) = body_of(reply).await;
            let length = headers.get(binary::HEADER_LENGTH).map_or(body.len(), |l| {
                l.to_str().expect("ASCII").parse().expect("number")
            });
            let value: Value = serde_json::from_slice(&body[..length]).expect("JSON");
            assert_eq!(
                value["outputs"][1],
                json!({"name": "b", "datatype": "BOOL", "shape": [2]})
            );
            assert_eq!(body.len() - length, if default_binary { 8 } else { 0 });
        }
    }

    #[tokio::test]
    async fn binary_outputs_follow_the_json_header() {
        let mut forms = OutputForms::default();
        forms.per_output.insert("b".into(), true);
        let (headers, body) = body_of(build_response(&response(), &forms).expect("builds")).await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
        let length: usize = headers[binary::HEADER_LENGTH]
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("number");
        let value: Value = serde_json::from_slice(&body[..length]).expect("JSON header");
        assert_eq!(value["outputs"][0]["data"], json!([5, -6]));
        assert_eq!(value["outputs"][1]["parameters"], json!({"binary_data_size": 2}));
        assert!(value["outputs"][1].get("data").is_none());
        assert_eq!(&body[length..], &[1, 0]);
    }
}
