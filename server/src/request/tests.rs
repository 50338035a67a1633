//! Tests of the parse as a whole: the order of the checks, Triton's texts, and what a valid request becomes;
//! and the helpers the other modules' tests build requests with.

use std::time::Duration;

use bytes::Bytes;
use ferry_proto::inference::{
    InferParameter, InferTensorContents, ModelInferRequest,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};

use super::{InferRequest, TensorData, shape::BATCH_NOTE};
use crate::{
    DataType, Error,
    config::{InstancePlan, ModelSpec, TensorSpec, VersionPolicy},
};

pub(super) fn tensor(name: &str, data_type: DataType, dims: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        data_type,
        dims: dims.to_vec(),
        reshape: None,
        optional: false,
    }
}

pub(super) fn spec(max_batch_size: usize, inputs: Vec<TensorSpec>) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        max_batch_size,
        inputs,
        outputs: vec![
            tensor("out", DataType::Fp32, &[-1]),
            tensor("aux", DataType::Int64, &[1]),
        ],
        version_policy: VersionPolicy::Latest(1),
        instances: InstancePlan {
            session: Default::default(),
            count: 1,
            intra_op_threads: None,
            inter_op_threads: None,
            placement: Default::default(),
            tensorrt: None,
        },
        model_filename: "model.onnx".into(),
        batching: ferry_batching::BatchingPolicy::unbatched(None),
        max_request_bytes: 1 << 20,
        config: Default::default(),
        labels: Default::default(),
        response_cache: false,
        lone_requests_on_worker: None,
        drift: Default::default(),
        payload_log: Default::default(),
        quality: Default::default(),
        ensemble: None,
        sequence: None,
        variable_lengths: Default::default(),
    }
}

pub(super) fn wire(
    name: &str,
    datatype: DataType,
    shape: &[i64],
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.wire_name().into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents,
    }
}

pub(super) fn raw_request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        id: "id-7".into(),
        inputs,
        raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
        ..Default::default()
    }
}

pub(super) fn message(result: Result<InferRequest, Error>) -> String {
    match result {
        Err(Error::InvalidRequest(message)) => message,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[test]
fn batching_models_take_the_batch_from_the_first_dimension() {
    let spec = spec(4, vec![tensor("x", DataType::Fp32, &[2])]);
    let parsed = InferRequest::parse(
        raw_request(vec![wire("x", DataType::Fp32, &[3, 2], None)], vec![vec![0; 24]]),
        &spec,
    )
    .expect("valid");
    assert_eq!(parsed.batch_size, 3);
    assert_eq!(parsed.id, "id-7");
    assert_eq!(parsed.outputs, [0, 1], "all outputs when none is requested");
    let message = message(InferRequest::parse(
        raw_request(vec![wire("x", DataType::Fp32, &[0, 2], None)], vec![vec![]]),
        &spec,
    ));
    assert!(message.contains("batch-size is 0"), "{message}");
}

#[test]
fn reshaped_inputs_reach_the_model_in_their_model_shape() {
    let mut scalar = tensor("x", DataType::Fp32, &[1]);
    scalar.reshape = Some(vec![]);
    let spec = spec(4, vec![scalar]);
    let parsed = InferRequest::parse(
        raw_request(vec![wire("x", DataType::Fp32, &[2, 1], None)], vec![vec![0; 8]]),
        &spec,
    )
    .expect("valid");
    assert_eq!(parsed.inputs[0].shape, [2, 1]);
    assert_eq!(parsed.inputs[0].model_shape, [2]);
}

#[test]
fn optional_inputs_may_be_left_out() {
    let mut optional = tensor("b", DataType::Fp32, &[1]);
    optional.optional = true;
    let spec = spec(0, vec![tensor("a", DataType::Fp32, &[1]), optional]);
    let parsed = InferRequest::parse(
        raw_request(vec![wire("a", DataType::Fp32, &[1], None)], vec![vec![0; 4]]),
        &spec,
    )
    .expect("b is optional");
    assert_eq!(parsed.inputs.len(), 1);
}

#[test]
fn inputs_are_put_in_spec_order_and_scheduling_parameters_are_read() {
    let spec = spec(
        0,
        vec![
            tensor("a", DataType::Fp32, &[1]),
            tensor("b", DataType::Fp32, &[1]),
        ],
    );
    let mut request = raw_request(
        vec![
            wire("b", DataType::Fp32, &[1], None),
            wire("a", DataType::Fp32, &[1], None),
        ],
        vec![vec![0; 4], vec![1; 4]],
    );
    let int = |value| InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(value)),
    };
    request.parameters.insert("priority".into(), int(2));
    request.parameters.insert("timeout".into(), int(1500));
    let parsed = InferRequest::parse(request.clone(), &spec).expect("valid");
    assert_eq!(parsed.inputs.iter().map(|i| i.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(parsed.inputs[0].data, TensorData::Fixed(Bytes::from(vec![1; 4])));
    assert_eq!(parsed.priority, 2);
    assert_eq!(parsed.timeout, Some(Duration::from_micros(1500)));
    request.parameters.insert("priority".into(), int(-1));
    assert!(message(InferRequest::parse(request.clone(), &spec)).contains("'priority'"));
    request.parameters.insert(
        "timeout".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::StringParam("soon".into())),
        },
    );
    request.parameters.remove("priority");
    assert!(message(InferRequest::parse(request, &spec)).contains("'timeout'"));
}

/// Each check's text is Triton's word for word (`infer_handler.cc` for the parameters and data sources,
/// core's `infer_request.cc` `Normalize` and `ValidateRequestInputs` for the rest), with the request tag
/// where Triton's core adds it.
#[test]
fn messages_are_tritons() {
    let batching = spec(
        8,
        vec![
            tensor("INPUT0", DataType::Int32, &[16]),
            tensor("INPUT1", DataType::Int32, &[16]),
        ],
    );
    let int = |name: &str, shape: &[i64]| wire(name, DataType::Int32, shape, None);
    let parse = |inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>| {
        message(InferRequest::parse(raw_request(inputs, raw), &batching))
    };
    let ok = vec![0u8; 64];
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, 16]), int("INPUT0", &[1, 16])],
            vec![ok.clone(); 2]
        ),
        "[request id: id-7] input 'INPUT0' already exists in request"
    );
    assert_eq!(
        parse(vec![int("INPUT0", &[1, 16])], vec![ok.clone()]),
        "[request id: id-7] expected 2 inputs but got 1 inputs for model 'm'. Got inputs ['INPUT0'], but \
         missing required inputs ['INPUT1']. Please provide all required inputs."
    );
    assert_eq!(
        parse(
            vec![
                int("INPUT0", &[1, 16]),
                int("INPUT1", &[1, 16]),
                int("X", &[1, 16])
            ],
            vec![ok.clone(); 3]
        ),
        "[request id: id-7] expected 2 inputs but got 3 inputs for model 'm'. Got inputs \
         ['INPUT0','INPUT1','X'], but missing required inputs ]. Please provide all required inputs."
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, 16]), int("X", &[1, 16])],
            vec![ok.clone(); 2]
        ),
        "unexpected inference input 'X' for model 'm'"
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, 16]), int("INPUT1", &[2, 16])],
            vec![ok.clone(); 2]
        ),
        "[request id: id-7] input 'INPUT1' batch size does not match other inputs for 'm'"
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[9, 16]), int("INPUT1", &[9, 16])],
            vec![vec![0; 576]; 2]
        ),
        "[request id: id-7] inference request batch-size must be <= 8 for 'm'"
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[]), int("INPUT1", &[1, 16])],
            vec![ok.clone(); 2]
        ),
        "[request id: id-7] input 'INPUT0' has no shape but model requires batch dimension for 'm'"
    );
    let fp32 = wire("INPUT1", DataType::Fp32, &[1, 16], None);
    assert_eq!(
        parse(vec![int("INPUT0", &[1, 16]), fp32], vec![ok.clone(); 2]),
        "[request id: id-7] inference input 'INPUT1' data-type is 'FP32', but model 'm' expects 'INT32'"
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, 17]), int("INPUT1", &[1, 16])],
            vec![ok.clone(); 2]
        ),
        format!(
            "[request id: id-7] unexpected shape for input 'INPUT0' for model 'm'. Expected [-1,16], got \
             [1,17]. {BATCH_NOTE}"
        )
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, -1]), int("INPUT1", &[1, 16])],
            vec![ok.clone(); 2]
        ),
        "[request id: id-7] All input dimensions should be specified for input 'INPUT0' for model 'm', got \
         [1,-1]"
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, 16]), int("INPUT1", &[1, 16])],
            vec![ok.clone(), vec![0; 60]]
        ),
        "[request id: id-7] input byte size mismatch for input 'INPUT1' for model 'm'. Expected 64, got 60"
    );
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, 16]), int("INPUT1", &[1, 16])],
            vec![ok.clone()]
        ),
        "unable to find data for input tensor 'INPUT1' for model 'm' in request."
    );
    let typed = |values: InferTensorContents| wire("INPUT1", DataType::Int32, &[1, 16], Some(values));
    let floats = InferTensorContents {
        fp32_contents: vec![0.0; 16],
        ..Default::default()
    };
    assert_eq!(
        parse(
            vec![int("INPUT0", &[1, 16]), typed(floats.clone())],
            vec![ok.clone()]
        ),
        "contents field must not be specified when using raw_input_contents for 'INPUT1' for model 'm'"
    );
    let mut request = raw_request(vec![typed(floats.clone())], vec![]);
    request.inputs.insert(
        0,
        wire(
            "INPUT0",
            DataType::Int32,
            &[1, 16],
            Some(InferTensorContents {
                int_contents: vec![0; 16],
                ..Default::default()
            }),
        ),
    );
    assert_eq!(
        message(InferRequest::parse(request.clone(), &batching)),
        "unexpected explicit tensor data for input tensor 'INPUT1' for model 'm' of type 'FP32', expected \
         datatype 'INT32'"
    );
    let mut both = floats;
    both.int_contents = vec![0; 16];
    request.inputs[1] = typed(both);
    assert_eq!(
        message(InferRequest::parse(request.clone(), &batching)),
        "unexpected explicit tensor data for input tensor 'INPUT1' for model 'm', binary data was already \
         supplied."
    );
    request.inputs[1] = typed(InferTensorContents {
        int_contents: vec![0; 15],
        ..Default::default()
    });
    assert_eq!(
        message(InferRequest::parse(request.clone(), &batching)),
        "[request id: id-7] input byte size mismatch for input 'INPUT1' for model 'm'. Expected 64, got 60"
    );
    request.outputs = vec![InferRequestedOutputTensor {
        name: "nope".into(),
        parameters: Default::default(),
    }];
    assert_eq!(
        message(InferRequest::parse(request.clone(), &batching)),
        "unexpected inference output 'nope' for model 'm'"
    );
    let parameter = |choice| InferParameter {
        parameter_choice: Some(choice),
    };
    request
        .parameters
        .insert("priority".into(), parameter(ParameterChoice::Int64Param(-1)));
    assert_eq!(
        message(InferRequest::parse(request.clone(), &batching)),
        "invalid value for 'priority', expected value >= 0."
    );
    request
        .parameters
        .insert("priority".into(), parameter(ParameterChoice::BoolParam(true)));
    assert_eq!(
        message(InferRequest::parse(request.clone(), &batching)),
        "invalid value type for 'priority' parameter, expected int64_param or uint64_param."
    );
    request.parameters.remove("priority");
    request.parameters.insert(
        "timeout".into(),
        parameter(ParameterChoice::StringParam("1".into())),
    );
    assert_eq!(
        message(InferRequest::parse(request, &batching)),
        "invalid value type for 'timeout' parameter, expected int64_param."
    );
    // A model that does not batch: the shape has no batch dimension and no note, and no request id
    // tags the message as `<id_unknown>`.
    let plain = spec(0, vec![tensor("x", DataType::Fp32, &[2])]);
    let mut request = raw_request(vec![wire("x", DataType::Fp32, &[3], None)], vec![vec![0; 12]]);
    request.id.clear();
    assert_eq!(
        message(InferRequest::parse(request, &plain)),
        "[request id: <id_unknown>] unexpected shape for input 'x' for model 'm'. Expected [2], got [3]. "
    );
}
