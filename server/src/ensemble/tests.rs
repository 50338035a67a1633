//! Load errors of ensembles, one per rule, each naming the step and the tensor. The rules are Triton's
//! (core `ensemble_utils.cc`, `ValidateEnsembleConfig` and `ValidateTensorConsistency`: every member
//! known, batch sizes, maps naming existing tensors, every member input fed, one type and compatible
//! shapes along an edge, each tensor produced once, no cycle, every output produced).

use std::{collections::BTreeMap, sync::Arc};

use super::check_members;
use crate::{
    Error,
    config::{
        ConfigSource, MAX_ENSEMBLE_STEPS, MAX_ENSEMBLE_TENSORS, ModelSpec, complete_config,
        parse_model_config,
    },
};

fn spec(name: &str, text: &str) -> Result<ModelSpec, Error> {
    let path = format!("{name}/config.pbtxt");
    let mut config = parse_model_config(text, &path)?;
    complete_config(&mut config, None, &path)?;
    ModelSpec::from_config(
        config,
        name,
        ConfigSource {
            path: &path,
            text: Some(text),
        },
    )
}

fn config_error(text: &str) -> String {
    match spec("e", text) {
        Err(Error::Config { message, .. }) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Members: `pre` and `model` FP32 [batch, 4] x -> y, `post` FP32 [batch, 4] x -> INT64 [batch, 1] y,
/// `join` (a, b) -> sum, `flat` without batching.
fn members() -> BTreeMap<&'static str, Arc<ModelSpec>> {
    let one = |name: &'static str, batch: u32, inputs: &str, output: &str| {
        let text = format!(
            "platform: \"onnxruntime_onnx\"\nmax_batch_size: {batch}\ninput [ {inputs} ]\noutput [ {output} ]\n"
        );
        (name, Arc::new(spec(name, &text).expect("member spec")))
    };
    let x = "{ name: \"x\", data_type: TYPE_FP32, dims: [ 4 ] }";
    let y = "{ name: \"y\", data_type: TYPE_FP32, dims: [ 4 ] }";
    BTreeMap::from([
        one("pre", 8, x, y),
        one("model", 8, x, y),
        one(
            "post",
            8,
            x,
            "{ name: \"y\", data_type: TYPE_INT64, dims: [ 1 ] }",
        ),
        one(
            "join",
            8,
            "{ name: \"a\", data_type: TYPE_FP32, dims: [ 4 ] }, { name: \"b\", data_type: TYPE_FP32, dims: [ 4 ] }",
            "{ name: \"sum\", data_type: TYPE_FP32, dims: [ 4 ] }",
        ),
        one("flat", 0, x, y),
    ])
}

/// An ensemble of max batch size 8 with input X FP32 [4], output `output` and `steps` (pbtxt).
fn ensemble(output: &str, steps: &str) -> String {
    format!(
        "platform: \"ensemble\"\nmax_batch_size: 8\n\
         input [ {{ name: \"X\", data_type: TYPE_FP32, dims: [ 4 ] }} ]\n\
         output [ {output} ]\n\
         ensemble_scheduling {{ step [ {steps} ] }}\n"
    )
}

const OUT4: &str = "{ name: \"OUT\", data_type: TYPE_FP32, dims: [ 4 ] }";

fn step(model: &str, inputs: &[(&str, &str)], outputs: &[(&str, &str)]) -> String {
    let maps = |kind: &str, pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{kind} {{ key: \"{k}\" value: \"{v}\" }} "))
            .collect::<String>()
    };
    format!(
        "{{ model_name: \"{model}\" model_version: -1 {}{}}}",
        maps("input_map", inputs),
        maps("output_map", outputs)
    )
}

/// The member check's error for the ensemble `text`, which must pass the config check.
fn member_error(text: &str) -> String {
    let spec = spec("e", text).expect("a valid ensemble config");
    let steps = spec.ensemble.clone().expect("an ensemble");
    let members = members();
    check_members(&spec, &steps, &|name, _| {
        members
            .get(name)
            .cloned()
            .ok_or_else(|| format!("model '{name}' is not loaded"))
    })
    .expect_err("the members do not fit")
}

fn pipeline() -> String {
    ensemble(
        OUT4,
        &[
            step("pre", &[("x", "X")], &[("y", "t")]),
            step("model", &[("x", "t")], &[("y", "OUT")]),
        ]
        .join(", "),
    )
}

#[test]
fn a_valid_pipeline_and_diamond_pass_both_checks() {
    let members = members();
    let lookup = |name: &str, _| {
        members
            .get(name)
            .cloned()
            .ok_or_else(|| format!("model '{name}' is not loaded"))
    };
    let linear = spec("e", &pipeline()).expect("valid");
    assert_eq!(linear.config.platform, "ensemble");
    assert!(linear.config.backend.is_empty());
    check_members(&linear, linear.ensemble.as_ref().expect("steps"), &lookup).expect("members fit");
    // Listed join first: the order of the steps in the config does not matter.
    let diamond = ensemble(
        OUT4,
        &[
            step("join", &[("a", "l"), ("b", "r")], &[("sum", "OUT")]),
            step("pre", &[("x", "X")], &[("y", "top")]),
            step("model", &[("x", "top")], &[("y", "l")]),
            step("pre", &[("x", "top")], &[("y", "r")]),
        ]
        .join(", "),
    );
    let spec = spec("e", &diamond).expect("valid");
    assert_eq!(spec.ensemble.as_ref().expect("steps").len(), 4);
    check_members(&spec, spec.ensemble.as_ref().expect("steps"), &lookup).expect("members fit");
}

#[test]
fn an_unknown_member_is_named_with_its_step() {
    let text = ensemble(OUT4, &step("nowhere", &[("x", "X")], &[("y", "OUT")]));
    let message = member_error(&text);
    assert_eq!(message, "step 0 (model 'nowhere'): model 'nowhere' is not loaded");
}

#[test]
fn a_type_mismatch_from_an_ensemble_input_names_the_step_and_tensor() {
    let text = ensemble(OUT4, &step("pre", &[("x", "X")], &[("y", "OUT")])).replace(
        "name: \"X\", data_type: TYPE_FP32",
        "name: \"X\", data_type: TYPE_INT32",
    );
    let message = member_error(&text);
    assert!(
        message.contains("step 0 (model 'pre')")
            && message.contains("tensor 'X' (ensemble input 'X') is INT32 [-1, 4]")
            && message.contains("input 'x' of model 'pre' takes FP32 [-1, 4]"),
        "{message}"
    );
}

#[test]
fn a_mismatch_between_two_steps_names_both() {
    let text = ensemble(
        OUT4,
        &[
            step("post", &[("x", "X")], &[("y", "t")]),
            step("model", &[("x", "t")], &[("y", "OUT")]),
        ]
        .join(", "),
    );
    let message = member_error(&text);
    assert!(
        message.contains(
            "step 1 (model 'model'): tensor 't' (output 'y' of step 0 (model 'post')) is INT64 [-1, 1]"
        ),
        "{message}"
    );
}

#[test]
fn a_mismatch_with_an_ensemble_output_names_it() {
    let text = ensemble(
        "{ name: \"OUT\", data_type: TYPE_FP32, dims: [ 5 ] }",
        &step("pre", &[("x", "X")], &[("y", "OUT")]),
    );
    let message = member_error(&text);
    assert!(
        message.contains("ensemble output 'OUT' is FP32 [-1, 5]")
            && message.contains("output 'y' of step 0 (model 'pre') gives FP32 [-1, 4]"),
        "{message}"
    );
}

#[test]
fn member_tensors_must_exist_and_every_input_be_fed() {
    let message = member_error(&ensemble(OUT4, &step("pre", &[("z", "X")], &[("y", "OUT")])));
    assert!(
        message.contains("step 0 (model 'pre'): input 'x' of model 'pre' is fed by no input_map entry"),
        "{message}"
    );
    let message = member_error(&ensemble(
        OUT4,
        &step("pre", &[("x", "X"), ("extra", "X")], &[("y", "OUT")]),
    ));
    assert!(message.contains("input_map names input 'extra'"), "{message}");
    let message = member_error(&ensemble(OUT4, &step("pre", &[("x", "X")], &[("nope", "OUT")])));
    assert!(message.contains("output_map names output 'nope'"), "{message}");
}

#[test]
fn a_member_that_batches_less_than_the_ensemble_is_refused() {
    let message = member_error(&ensemble(OUT4, &step("flat", &[("x", "X")], &[("y", "OUT")])));
    assert!(
        message.contains(
            "step 0 (model 'flat'): ensemble 'e' allows maximum batch size 8, but model 'flat' only allows 0"
        ),
        "{message}"
    );
}

#[test]
fn a_cycle_is_refused() {
    let message = config_error(&ensemble(
        OUT4,
        &[
            step("pre", &[("x", "X")], &[("y", "OUT")]),
            step("join", &[("a", "X"), ("b", "loop_b")], &[("sum", "loop_a")]),
            step("model", &[("x", "loop_a")], &[("y", "loop_b")]),
        ]
        .join(", "),
    ));
    assert!(
        message.contains("the steps form a cycle: step 1 (model 'join')"),
        "{message}"
    );
}

#[test]
fn a_tensor_consumed_but_never_produced_is_named() {
    let message = config_error(&ensemble(
        OUT4,
        &step("pre", &[("x", "missing")], &[("y", "OUT")]),
    ));
    assert!(
        message.contains("step 0 (model 'pre'): input 'x' reads tensor 'missing'"),
        "{message}"
    );
}

#[test]
fn an_ensemble_output_never_produced_is_named() {
    let message = config_error(&ensemble(OUT4, &step("pre", &[("x", "X")], &[("y", "other")])));
    assert_eq!(
        message,
        "ensemble output 'OUT' is produced by no step's output_map"
    );
}

#[test]
fn a_tensor_produced_twice_is_refused() {
    let message = config_error(&ensemble(
        OUT4,
        &[
            step("pre", &[("x", "X")], &[("y", "OUT")]),
            step("model", &[("x", "X")], &[("y", "OUT")]),
        ]
        .join(", "),
    ));
    assert!(
        message.contains("step 1 (model 'model'): tensor 'OUT' is already produced by step 0"),
        "{message}"
    );
    let message = config_error(&ensemble(OUT4, &step("pre", &[("x", "X")], &[("y", "X")])));
    assert!(
        message.contains("output_map writes 'X', which is an ensemble input"),
        "{message}"
    );
}

#[test]
fn the_scheduling_block_is_checked() {
    let message = config_error(&ensemble(OUT4, ""));
    assert!(message.contains("at least one step"), "{message}");
    let message =
        config_error(&ensemble(OUT4, &step("pre", &[("x", "X")], &[("y", "OUT")])).replace("-1", "0"));
    assert!(
        message.contains("model_version must be -1 (latest) or 1 or more, got 0"),
        "{message}"
    );
    let message = config_error(
        "platform: \"ensemble\"\ninput [ { name: \"X\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n\
         output [ { name: \"Y\", data_type: TYPE_FP32, dims: [ 4 ] } ]\n",
    );
    assert!(
        message.contains("needs an ensemble_scheduling block"),
        "{message}"
    );
    let message = config_error(&format!(
        "{}instance_group [ {{ count: 2 }} ]\n",
        ensemble(OUT4, &step("pre", &[("x", "X")], &[("y", "OUT")]))
    ));
    assert!(message.contains("an ensemble has no instance_group"), "{message}");
    let message = config_error(
        &ensemble(OUT4, &step("pre", &[("x", "X")], &[("y", "OUT")])).replace("platform: \"ensemble\"", ""),
    );
    assert!(
        message.contains("ensemble_scheduling needs platform 'ensemble'"),
        "{message}"
    );
    let message = config_error(&format!(
        "{}response_cache {{ enable: true }}\n",
        ensemble(OUT4, &step("pre", &[("x", "X")], &[("y", "OUT")]))
    ));
    assert!(
        message.contains("response_cache on an ensemble is not supported"),
        "{message}"
    );
    // An unknown field of a step is refused by the parser, as any unknown field.
    let text = ensemble(OUT4, "{ model_name: \"pre\" model_version: -1 colour: \"red\" }");
    assert!(matches!(spec("e", &text), Err(Error::Config { message, .. }) if message.contains("colour")));
}

#[test]
fn the_step_count_is_bounded() {
    let steps: Vec<String> = (0..=MAX_ENSEMBLE_STEPS)
        .map(|i| step("pre", &[("x", "X")], &[("y", &format!("t{i}"))]))
        .collect();
    let message = config_error(&ensemble(OUT4, &steps.join(", ")));
    assert!(
        message.contains(&format!(
            "at most {MAX_ENSEMBLE_STEPS} steps, got {}",
            MAX_ENSEMBLE_STEPS + 1
        )),
        "{message}"
    );
}

#[test]
fn the_tensor_count_is_bounded() {
    let outputs: Vec<(String, String)> = (0..MAX_ENSEMBLE_TENSORS)
        .map(|i| (format!("y{i}"), format!("t{i}")))
        .collect();
    let pairs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let message = config_error(&ensemble(OUT4, &step("pre", &[("x", "X")], &pairs)));
    // X, OUT and the step's outputs.
    assert!(
        message.contains(&format!(
            "at most {MAX_ENSEMBLE_TENSORS} distinct tensors, got {}",
            MAX_ENSEMBLE_TENSORS + 2
        )),
        "{message}"
    );
}
