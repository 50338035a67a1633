//! The `sequence_batching` config checks: defaults, each invalid field named, control and state tensors
//! against the model, and auto-complete leaving them to Ferry.

use super::*;
use crate::config::{
    ModelSpec, ModelTensor, complete_config, parse_model_config,
    testing::{config_error, spec_from},
};

const X: &str = "max_batch_size: 2\ninput [ { name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n";

fn with_sequence(sequence: &str) -> String {
    format!(
        "{X}output [ {{ name: \"y\", data_type: TYPE_FP32, dims: [ 4 ] }} ]\nsequence_batching {{ {sequence} }}\n"
    )
}

#[test]
fn an_empty_sequence_batching_takes_triton_defaults() {
    let spec = spec_from(&with_sequence("")).expect("valid");
    let sequence = spec.sequence.expect("a sequence spec");
    assert_eq!(sequence.idle_timeout, DEFAULT_SEQUENCE_IDLE);
    assert_eq!(
        sequence.strategy,
        SequenceStrategyConfig::Direct {
            minimum_slot_utilization: 0.0
        }
    );
    assert!(!spec.response_cache);
}

#[test]
fn invalid_sequence_settings_fail_the_load_naming_the_field() {
    let cases = [
        (
            "control_input [ { name: \"x\", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] } ]",
            "'x' is a control or state input",
        ),
        (
            "control_input [ { name: \"S\", control [ { kind: CONTROL_SEQUENCE_START } ] } ]",
            "exactly one of int32_false_true",
        ),
        (
            "control_input [ { name: \"S\", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0 ] } ] } ]",
            "must be 2",
        ),
        (
            "control_input [ { name: \"C\", control [ { kind: CONTROL_SEQUENCE_CORRID, data_type: TYPE_FP32 } ] } ]",
            "TYPE_FP32",
        ),
        (
            "control_input [ { name: \"S\", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] }, \
             { name: \"T\", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] } ]",
            "repeats the name or the kind",
        ),
        (
            "oldest { max_candidate_sequences: 0 }",
            "max_candidate_sequences must be 1",
        ),
        (
            "oldest { max_candidate_sequences: 2, preferred_batch_size: [ 3 ] }",
            "preferred_batch_size must be 1 to 2",
        ),
        (
            "direct { minimum_slot_utilization: 1.5 }",
            "minimum_slot_utilization",
        ),
        (
            "state [ { input_name: \"h\", output_name: \"h2\", data_type: TYPE_FP32, dims: [ -1 ] } ]",
            "fixed, positive dimensions",
        ),
        (
            "state [ { input_name: \"h\", output_name: \"h2\", data_type: TYPE_STRING, dims: [ 2 ] } ]",
            "fixed-size data_type",
        ),
        (
            "state [ { input_name: \"h\", output_name: \"h2\", data_type: TYPE_FP32, dims: [ 2 ], \
             initial_state { data_type: TYPE_FP32, dims: [ 2 ], data_file: \"../secret\" } } ]",
            "data_file naming a file",
        ),
        ("max_sequence_idle_microseconds: 86400000001", "at most"),
        ("iterative_sequence: true", "iterative_sequence"),
    ];
    for (sequence, expected) in cases {
        let (line, message) = config_error(&with_sequence(sequence));
        assert!(message.contains(expected), "{sequence}: {message}");
        assert!(message.starts_with("sequence_batching: "), "{message}");
        assert!(line >= 4, "{sequence}: line {line}");
    }
}

/// The spec of `text` checked against a model with input x, output y, and the given extra tensors.
fn checked(
    text: &str,
    inputs: &[(&str, DataType, &[i64])],
    outputs: &[(&str, DataType, &[i64])],
) -> Result<ModelSpec, Error> {
    let tensor = |(name, data_type, shape): &(&str, DataType, &[i64])| ModelTensor {
        name: (*name).to_owned(),
        data_type: Some(*data_type),
        shape: shape.to_vec(),
        form: crate::config::TensorForm::Tensor,
    };
    let signature = ModelSignature {
        inputs: [("x", DataType::Fp32, &[-1, 4][..])]
            .iter()
            .chain(inputs)
            .map(tensor)
            .collect(),
        outputs: [("y", DataType::Fp32, &[-1, 4][..])]
            .iter()
            .chain(outputs)
            .map(tensor)
            .collect(),
    };
    let mut config = parse_model_config(text, "m/config.pbtxt")?;
    complete_config(&mut config, Some(&signature), "m/config.pbtxt")?;
    let spec = ModelSpec::from_config(
        config,
        "m",
        ConfigSource {
            path: "m/config.pbtxt",
            text: Some(text),
        },
    )?;
    spec.check_signature(&signature, "m/1/model.onnx")?;
    Ok(spec)
}

#[test]
fn control_and_state_tensors_are_checked_against_the_model() {
    let start = "control_input [ { name: \"S\", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] } ]";
    let state = "state [ { input_name: \"h\", output_name: \"h_next\", data_type: TYPE_FP32, dims: [ 3 ] } ]";
    let good_start = [("S", DataType::Int32, &[-1, 1][..])];
    let good_state_in = [("h", DataType::Fp32, &[-1, 3][..])];
    let good_state_out = [("h_next", DataType::Fp32, &[-1, 3][..])];
    checked(&with_sequence(start), &good_start, &[]).expect("a fitting control");
    checked(&with_sequence(state), &good_state_in, &good_state_out).expect("a fitting state");
    let failures = [
        (
            checked(&with_sequence(start), &[], &[]),
            "control input 'S' is not an input of the model",
        ),
        (
            checked(&with_sequence(start), &[("S", DataType::Fp32, &[-1, 1][..])], &[]),
            "TYPE_INT32 in the config but TYPE_FP32 in the model",
        ),
        (
            checked(&with_sequence(state), &good_state_in, &[]),
            "state output_name 'h_next' is not an output of the model",
        ),
        (
            checked(
                &with_sequence(state),
                &[("h", DataType::Fp32, &[-1, 5][..])],
                &good_state_out,
            ),
            "needs shape [-1] + [3]",
        ),
    ];
    for (result, expected) in failures {
        let error = result.expect_err(expected);
        assert!(
            matches!(&error, Error::ModelLoad(m) if m.contains(expected)),
            "{error}"
        );
    }
}

#[test]
fn auto_complete_leaves_control_and_state_tensors_to_ferry() {
    let text = "sequence_batching { control_input [ { name: \"S\", control [ { kind: CONTROL_SEQUENCE_READY, \
                bool_false_true: [ false, true ] } ] } ] state [ { input_name: \"h\", output_name: \"h_next\", \
                data_type: TYPE_FP32, dims: [ 3 ] } ] }\n";
    let spec = checked(
        text,
        &[
            ("S", DataType::Bool, &[-1, 1][..]),
            ("h", DataType::Fp32, &[-1, 3][..]),
        ],
        &[("h_next", DataType::Fp32, &[-1, 3][..])],
    )
    .expect("completed");
    let names = |tensors: &[TensorSpec]| tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&spec.inputs), ["x"]);
    assert_eq!(names(&spec.outputs), ["y"]);
    // A state output the config lists (without its type and dims) is the client's, completed as usual.
    let listed = text.replace(
        "sequence_batching",
        "max_batch_size: 2\noutput [ { name: \"h_next\" } ]\nsequence_batching",
    );
    let spec = checked(
        &listed,
        &[
            ("S", DataType::Bool, &[-1, 1][..]),
            ("h", DataType::Fp32, &[-1, 3][..]),
        ],
        &[("h_next", DataType::Fp32, &[-1, 3][..])],
    )
    .expect("completed");
    assert_eq!(names(&spec.outputs), ["h_next"]);
    assert_eq!(spec.outputs[0].dims, [3]);
    assert_eq!(spec.outputs[0].data_type, DataType::Fp32);
}
