//! Protobuf messages and parameters as Triton's REST JSON.
//!
//! Triton's REST answers for metadata, config, statistics and the repository index are the JSON form of the
//! same protobuf messages gRPC sends, with the `.proto` field names, every field present, 64-bit integers as
//! numbers and enums by name. Converting through `prost-reflect` and the embedded descriptor set gives that
//! form for every message without a hand-written mirror that could drift from the protos.

use std::collections::HashMap;

use ferry_proto::inference::{
    InferParameter, ModelRepositoryParameter, infer_parameter, model_repository_parameter,
};
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Map, Value};

use super::tensor::kind;
use crate::Error;

/// The most values (numbers, strings, arrays, objects...) a REST request's JSON may hold: parsed, each takes
/// some 32 to 80 bytes, so this bounds a parse at a few hundred megabytes however the body is made (64 MB of
/// `0,0,0,...` would otherwise take 1 GB). Tensors beyond it go in the binary tensor extension.
pub const MAX_JSON_VALUES: usize = 1 << 23;

/// Parses a request body (or the JSON header of a binary one) as JSON, refusing one that holds more than
/// [`MAX_JSON_VALUES`] values before parsing it. `what` names the body in messages.
///
/// A body that is not JSON gets the text of Triton's `TritonJson::Value::Parse` (`triton_json.h` in
/// `triton-inference-server/common`): rapidjson's English message for the error and its byte offset, then
/// Ferry's own detail. Triton's HTTP front end includes that header with `TRITONJSON_STATUSRETURN` building an
/// `INTERNAL` error, which its `HttpCodeFromError` answers with 500.
pub fn parse_json(body: &[u8], what: &str) -> Result<Value, Error> {
    // Every value but the first follows a ',' or opens a container: an upper bound, strings included.
    let values = 1 + body.iter().filter(|b| matches!(b, b',' | b'[' | b'{')).count();
    if values > MAX_JSON_VALUES {
        return Err(Error::TooLarge(format!(
            "the {what} holds up to {values} JSON values, more than the {MAX_JSON_VALUES} a request may \
                 hold; send large tensors with the binary tensor data extension"
        )));
    }
    serde_json::from_slice(body).map_err(|error| {
        let (text, offset) = rapidjson_error(body, &error);
        triton_json(format!(
            "failed to parse the request JSON buffer: {text} at {offset}; the {what} is not valid JSON: {error}"
        ))
    })
}

/// rapidjson's message (`GetParseError_En`) and byte offset for the error serde_json found in `body`. Both
/// parsers stop at the same byte for the errors a client makes; rapidjson reports an end of input at the
/// body's length and any other error at the offending byte.
fn rapidjson_error(body: &[u8], error: &serde_json::Error) -> (&'static str, usize) {
    if body.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return ("The document is empty.", body.len());
    }
    let offset = if error.is_eof() {
        body.len()
    } else {
        let line_start: usize = body
            .split(|b| *b == b'\n')
            .take(error.line().saturating_sub(1))
            .map(|line| line.len() + 1)
            .sum();
        (line_start + error.column()).saturating_sub(1).min(body.len())
    };
    let message = error.to_string();
    // At the end of input rapidjson expects what the last byte calls for: a value after '[' or ',' in an
    // array, a member name after '{' or ',' in an object.
    let last = body.iter().rev().find(|b| !b.is_ascii_whitespace());
    let after_opening = matches!(last, Some(b'[' | b','));
    let text = if error.is_eof() && message.starts_with("EOF while parsing a list") && after_opening {
        "Invalid value."
    } else if error.is_eof()
        && message.starts_with("EOF while parsing an object")
        && matches!(last, Some(b'{' | b','))
    {
        "Missing a name for object member."
    } else if message.starts_with("EOF while parsing a value") || message.starts_with("expected value") {
        "Invalid value."
    } else if message.starts_with("EOF while parsing a list") || message.starts_with("expected `,` or `]`") {
        "Missing a comma or ']' after an array element."
    } else if message.starts_with("EOF while parsing an object") || message.starts_with("expected `,` or `}`")
    {
        "Missing a comma or '}' after an object member."
    } else if message.starts_with("key must be a string") {
        "Missing a name for object member."
    } else if message.starts_with("expected `:`") {
        "Missing a colon after a name of object member."
    } else if message.starts_with("EOF while parsing a string") {
        "Missing a closing quotation mark in string."
    } else if message.starts_with("trailing characters") {
        "The document root must not be followed by other values."
    } else if message.starts_with("invalid escape") {
        "Invalid escape character in string."
    } else {
        "Unspecific syntax error."
    };
    (text, offset)
}

/// An error Triton's HTTP front end gets from its JSON reader (`TritonJson` in `triton_json.h`): an
/// `INTERNAL` error there, so HTTP 500 through `HttpCodeFromError`, however much it is the client's mistake.
pub fn triton_json(message: impl Into<String>) -> Error {
    Error::MalformedJson(message.into())
}

/// `TritonJson`'s texts for a member or element of the wrong JSON type, and for a missing member.
pub mod access {
    /// A value read as a string (`AsString`, `MemberAsString`).
    pub const STRING: &str = "attempt to access JSON non-string as string";
    /// A value read as a boolean (`AsBool`, `MemberAsBool`).
    pub const BOOL: &str = "attempt to access JSON non-boolean as boolean";
    /// A value read as an unsigned integer (`AsUInt`, `MemberAsUInt`, `IndexAsUInt`).
    pub const UINT: &str = "attempt to access JSON non-unsigned-integer as unsigned-integer";
    /// A value read as a signed integer (`AsInt`).
    pub const INT: &str = "attempt to access JSON non-signed-integer as signed-integer";
    /// A value read as a double (`AsDouble`).
    pub const NUMBER: &str = "attempt to access JSON non-number as double";
    /// A member read as an array (`MemberAsArray`).
    pub const ARRAY: &str = "attempt to access JSON non-array as array";
    /// The members of a value that is not an object (`Members`).
    pub const MEMBERS: &str = "attempt to get members for non-object";

    /// A member read from an object that lacks it, or from a value that is no object.
    pub fn missing(name: &str) -> String {
        format!("attempt to access non-existing object member '{name}'")
    }
}

/// `message`, whose protobuf full name is `full_name` (such as `inference.ModelConfig`), as Triton's JSON.
pub fn proto_to_json(message: &impl prost::Message, full_name: &str) -> Result<Value, Error> {
    let pool = crate::config::model_config_descriptor().parent_pool();
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| Error::Internal(format!("{full_name} is not in the embedded descriptor set")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|error| Error::Internal(format!("cannot re-read {full_name}: {error}")))?;
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_proto_field_name(true)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|error| Error::Internal(format!("cannot write {full_name} as JSON: {error}")))
}

/// A request or tensor `parameters` value as the protobuf parameter: strings, booleans, integers (`uint64`
/// beyond the `int64` range) and other numbers (`double`). `key` names the parameter in errors.
pub fn infer_parameter(key: &str, value: &Value) -> Result<InferParameter, Error> {
    use infer_parameter::ParameterChoice;
    let choice = match value {
        Value::String(text) => ParameterChoice::StringParam(text.clone()),
        Value::Bool(flag) => ParameterChoice::BoolParam(*flag),
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                ParameterChoice::Int64Param(int)
            } else if let Some(uint) = number.as_u64() {
                ParameterChoice::Uint64Param(uint)
            } else {
                // serde_json holds every other number as a finite f64.
                ParameterChoice::DoubleParam(number.as_f64().unwrap_or_default())
            }
        }
        // Triton's text (`SetTritonParameterFromJsonParameter` in its `http_server.cc`), then the type given.
        other => {
            return Err(Error::invalid(format!(
                "parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'.; got {}",
                kind(other)
            )));
        }
    };
    Ok(InferParameter {
        parameter_choice: Some(choice),
    })
}

/// A protobuf parameter as its JSON value; an unset one is `null`.
pub fn infer_parameter_json(parameter: &InferParameter) -> Value {
    use infer_parameter::ParameterChoice;
    match &parameter.parameter_choice {
        Some(ParameterChoice::StringParam(text)) => Value::from(text.clone()),
        Some(ParameterChoice::BoolParam(flag)) => Value::from(*flag),
        Some(ParameterChoice::Int64Param(int)) => Value::from(*int),
        Some(ParameterChoice::Uint64Param(uint)) => Value::from(*uint),
        Some(ParameterChoice::DoubleParam(double)) => Value::from(*double),
        None => Value::Null,
    }
}

/// A map of protobuf parameters as a JSON object.
pub fn infer_parameters_json(parameters: &HashMap<String, InferParameter>) -> Map<String, Value> {
    parameters
        .iter()
        .map(|(key, parameter)| (key.clone(), infer_parameter_json(parameter)))
        .collect()
}

/// A model-control (`load`, `unload`) parameter: `config` and other strings stay strings, except that
/// `file:<path>` values are base64 as in Triton and are decoded to bytes; booleans and integers pass as such.
pub fn repository_parameter(key: &str, value: &Value) -> Result<ModelRepositoryParameter, Error> {
    use base64::Engine as _;
    use model_repository_parameter::ParameterChoice;
    let choice = match value {
        Value::String(text) if key.starts_with("file:") => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|error| Error::invalid(format!("parameter '{key}' is not valid base64: {error}")))?;
            ParameterChoice::BytesParam(bytes.into())
        }
        Value::String(text) => ParameterChoice::StringParam(text.clone()),
        Value::Bool(flag) => ParameterChoice::BoolParam(*flag),
        Value::Number(number) if number.is_i64() => {
            ParameterChoice::Int64Param(number.as_i64().unwrap_or_default())
        }
        other => {
            return Err(Error::invalid(format!(
                "parameter '{key}' is {}; model control parameters must be strings, booleans or integers",
                kind(other)
            )));
        }
    };
    Ok(ModelRepositoryParameter {
        parameter_choice: Some(choice),
    })
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::{ModelConfig, ModelInput};
    use serde_json::json;

    use super::*;

    /// 64 MB of `0,` used to take about 1 GB once parsed.
    #[test]
    fn json_with_too_many_values_is_refused_before_parsing() {
        let mut body = b"[".to_vec();
        body.extend(std::iter::repeat_n(&b"0,"[..], MAX_JSON_VALUES).flatten());
        body.extend_from_slice(b"0]");
        let error = parse_json(&body, "test body").expect_err("too many values");
        assert_eq!(error.http_status(), http::StatusCode::BAD_REQUEST);
        assert!(error.to_string().contains("binary tensor data"), "{error}");
        let fine = parse_json(b"{\"inputs\": [1, 2, 3]}", "test body").expect("small");
        assert_eq!(fine["inputs"][2], 3);
        let broken = parse_json(b"{", "test body").expect_err("not JSON");
        assert!(
            broken.to_string().contains("test body is not valid JSON"),
            "{broken}"
        );
    }

    #[test]
    fn messages_use_proto_names_numbers_and_enum_names() {
        let config = ModelConfig {
            name: "m".into(),
            max_batch_size: 8,
            input: vec![ModelInput {
                name: "x".into(),
                data_type: crate::DataType::Fp32.to_config() as i32,
                dims: vec![-1, 16],
                ..Default::default()
            }],
            ..Default::default()
        };
        let value = proto_to_json(&config, "inference.ModelConfig").expect("converts");
        assert_eq!(value["name"], "m");
        assert_eq!(value["max_batch_size"], 8);
        assert_eq!(value["input"][0]["dims"], json!([-1, 16]));
        assert_eq!(value["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(value["platform"], "", "fields at their default are present");
        assert!(proto_to_json(&config, "inference.Nope").is_err());
    }

    #[test]
    fn parameters_keep_their_json_type() {
        use infer_parameter::ParameterChoice;
        let choice = |v: Value| infer_parameter("k", &v).expect("valid").parameter_choice;
        assert_eq!(choice(json!("s")), Some(ParameterChoice::StringParam("s".into())));
        assert_eq!(choice(json!(true)), Some(ParameterChoice::BoolParam(true)));
        assert_eq!(choice(json!(-3)), Some(ParameterChoice::Int64Param(-3)));
        assert_eq!(
            choice(json!(u64::MAX)),
            Some(ParameterChoice::Uint64Param(u64::MAX))
        );
        assert_eq!(choice(json!(0.5)), Some(ParameterChoice::DoubleParam(0.5)));
        let error = infer_parameter("k", &json!([1])).expect_err("arrays are not parameters");
        assert!(error.to_string().contains("'k'"), "{error}");
        for v in [json!("s"), json!(true), json!(-3), json!(u64::MAX), json!(0.5)] {
            assert_eq!(infer_parameter_json(&infer_parameter("k", &v).expect("valid")), v);
        }
    }

    #[test]
    fn files_are_base64_and_become_bytes() {
        use model_repository_parameter::ParameterChoice;
        let file = repository_parameter("file:1/model.onnx", &json!("aGk=")).expect("valid");
        assert_eq!(
            file.parameter_choice,
            Some(ParameterChoice::BytesParam(b"hi".to_vec().into()))
        );
        let config = repository_parameter("config", &json!("{}")).expect("valid");
        assert_eq!(
            config.parameter_choice,
            Some(ParameterChoice::StringParam("{}".into()))
        );
        let flag = repository_parameter("unload_dependents", &json!(true)).expect("valid");
        assert_eq!(flag.parameter_choice, Some(ParameterChoice::BoolParam(true)));
        let error = repository_parameter("file:1/model.onnx", &json!("!!")).expect_err("not base64");
        assert!(error.to_string().contains("base64"), "{error}");
        assert!(repository_parameter("k", &json!(null)).is_err());
    }
}
