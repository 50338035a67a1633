//! Parsing `config.pbtxt` (protobuf text format) into `inference.ModelConfig`.
//!
//! Parsing goes through `prost-reflect` against the `ModelConfig` descriptor compiled from Ferry's own
//! protos, so any field a Triton user may set is understood and an unknown one is an error. Two gaps are
//! closed here: the list form without a colon (`input [ { .. } ]`), which most Triton configs use and
//! `prost-reflect` rejects, and errors that carry a byte offset but no line number.

use std::sync::OnceLock;

use ferry_proto::{FILE_DESCRIPTOR_SET, inference::ModelConfig};
use miette::Diagnostic;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use crate::Error;

/// The `inference.ModelConfig` descriptor, decoded once from the embedded descriptor set.
pub fn model_config_descriptor() -> &'static MessageDescriptor {
    static DESCRIPTOR: OnceLock<MessageDescriptor> = OnceLock::new();
    DESCRIPTOR.get_or_init(|| {
        // The descriptor set is generated at build time from protos in this repository: failing to decode it
        // is a build defect, not a runtime condition.
        #[allow(clippy::expect_used)]
        let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("embedded descriptor set is valid");
        #[allow(clippy::expect_used)]
        pool.get_message_by_name("inference.ModelConfig")
            .expect("inference.ModelConfig is in the embedded descriptor set")
    })
}

/// Parses the text of a `config.pbtxt`; `path` only names the file in errors.
pub fn parse_model_config(text: &str, path: &str) -> Result<ModelConfig, Error> {
    let normalized = insert_list_colons(text);
    let message = DynamicMessage::parse_text_format(model_config_descriptor().clone(), &normalized).map_err(
        |error| {
            let offset = error
                .labels()
                .and_then(|mut labels| labels.next())
                .map(|label| label.offset());
            Error::Config {
                path: path.to_owned(),
                line: offset.map_or(0, |offset| line_of_offset(&normalized, offset)),
                message: error.to_string(),
            }
        },
    )?;
    message
        .transcode_to::<ModelConfig>()
        .map_err(|error| Error::Config {
            path: path.to_owned(),
            line: 0,
            message: error.to_string(),
        })
}

/// The 1-based line that holds byte `offset` of `text`.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Rewrites `field [` as `field: [` wherever a field name is directly followed by a list, leaving strings and
/// comments alone. The colon is inserted on the same line, so line numbers in errors stay true.
fn insert_list_colons(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    // Whether the last significant token was a ':' (then an identifier is a value, such as an enum name).
    let mut after_colon = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                out.push_str(&text[i..end]);
                i = end;
            }
            b'"' | b'\'' => {
                let end = string_end(bytes, i);
                out.push_str(&text[i..end]);
                i = end;
                after_colon = false;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let end = i + bytes[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'.')
                    .count();
                out.push_str(&text[i..end]);
                let next = next_significant(bytes, end);
                if !after_colon && next.is_some_and(|n| bytes[n] == b'[') {
                    out.push(':');
                }
                after_colon = false;
                i = end;
            }
            b if b.is_ascii_whitespace() => {
                out.push(b as char);
                i += 1;
            }
            _ => {
                let len = utf8_len(b);
                out.push_str(&text[i..i + len]);
                after_colon = b == b':';
                i += len;
            }
        }
    }
    out
}

/// The index just past the string literal that starts at `start`, honouring backslash escapes.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            b'\n' => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index of the next byte that is neither whitespace nor inside a comment.
fn next_significant(bytes: &[u8], mut i: usize) -> Option<usize> {
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => return Some(i),
        }
    }
    None
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::inference::{
        DataType, model_config::SchedulingChoice, model_version_policy::PolicyChoice,
    };

    use super::*;

    const TRITON_STYLE: &str = r#"
name: "simple"   # the model's name
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "INPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1, 3 ] } ]
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { specific: { versions: [ 1, 3 ] } }
parameters { key: "intra_op_thread_count" value { string_value: "1" } }
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
"#;

    #[test]
    fn parses_lists_without_colons() {
        let config = parse_model_config(TRITON_STYLE, "config.pbtxt").expect("valid config");
        assert_eq!(config.name, "simple");
        assert_eq!(config.max_batch_size, 8);
        assert_eq!(config.input.len(), 2);
        assert_eq!(config.input[1].data_type(), DataType::TypeInt32);
        assert_eq!(config.output[0].dims, [-1, 3]);
        assert_eq!(config.instance_group[0].count, 2);
        assert_eq!(config.parameters["intra_op_thread_count"].string_value, "1");
        match &config.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(batching)) => {
                assert_eq!(batching.preferred_batch_size, [4, 8])
            }
            other => panic!("unexpected scheduling {other:?}"),
        }
        match config.version_policy.and_then(|p| p.policy_choice) {
            Some(PolicyChoice::Specific(specific)) => assert_eq!(specific.versions, [1, 3]),
            other => panic!("unexpected policy {other:?}"),
        }
    }

    #[test]
    fn parses_lists_with_colons_the_same() {
        let with_colons = TRITON_STYLE
            .replace("input [", "input: [")
            .replace("output [", "output: [")
            .replace("instance_group [", "instance_group: [");
        assert_eq!(
            parse_model_config(&with_colons, "c").ok(),
            parse_model_config(TRITON_STYLE, "c").ok()
        );
    }

    #[test]
    fn leaves_strings_and_comments_alone() {
        let text = "name: \"a [ b\" # input [ not a field\nmax_batch_size: 2\n";
        assert_eq!(insert_list_colons(text), text);
        let config = parse_model_config(text, "c").expect("valid");
        assert_eq!(config.name, "a [ b");
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "name: \"m\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_sise: 4\n";
        let error = parse_model_config(text, "/repo/m/config.pbtxt").expect_err("unknown field");
        let Error::Config { path, line, message } = &error else {
            panic!("unexpected error {error:?}");
        };
        assert_eq!(path, "/repo/m/config.pbtxt");
        assert_eq!(*line, 3);
        assert!(message.contains("max_batch_sise"), "{message}");
        assert!(error.to_string().starts_with("/repo/m/config.pbtxt:3: "));
    }

    #[test]
    fn unknown_enum_value_is_named_with_its_line() {
        let text = "input [\n  {\n    name: \"x\"\n    data_type: TYPE_FP33\n  }\n]\n";
        let Err(Error::Config { line, message, .. }) = parse_model_config(text, "c") else {
            panic!("TYPE_FP33 must be rejected");
        };
        assert_eq!(line, 4);
        assert!(message.contains("TYPE_FP33"), "{message}");
    }

    #[test]
    fn wrong_value_type_is_rejected() {
        let text = "max_batch_size: \"eight\"\n";
        let Err(Error::Config { line, .. }) = parse_model_config(text, "c") else {
            panic!("a string for an int32 must be rejected");
        };
        assert_eq!(line, 1);
    }

    #[test]
    fn out_of_range_value_is_rejected() {
        assert!(parse_model_config("max_batch_size: 99999999999\n", "c").is_err());
    }

    #[test]
    fn unbalanced_braces_are_rejected() {
        assert!(parse_model_config("input [ { name: \"x\" ]\n", "c").is_err());
    }

    #[test]
    fn empty_text_is_an_empty_config() {
        assert_eq!(parse_model_config("", "c").ok(), Some(ModelConfig::default()));
    }
}
