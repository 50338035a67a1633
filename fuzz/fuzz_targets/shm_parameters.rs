//! The shared memory parameters of a tensor (`shared_memory_region`, `shared_memory_offset`,
//! `shared_memory_byte_size`) as an arbitrary parameter map, read as an input's and as an output's, then
//! resolved against registered regions of the fuzzer's own and used to copy bytes out and in.

#![no_main]

use arbitrary::Arbitrary;
use ferry_fuzz::{OFFSET_REGION, Parameters, REGION, shared_memory};
use ferry_proto::inference::{
    InferParameter, infer_parameter::ParameterChoice, model_infer_request::InferRequestedOutputTensor,
};
use ferry_server::shm::{BYTE_SIZE, OFFSET, OutputRegions, REGION as REGION_KEY, TensorRegion};
use libfuzzer_sys::fuzz_target;

/// A parameter name: one of the three shared memory keys most of the time, or any other.
#[derive(Debug, Arbitrary)]
enum Key {
    Region,
    Offset,
    ByteSize,
    Other(String),
}

/// A parameter value, as the protobuf oneof carries it; region names lean towards the registered ones.
#[derive(Debug, Arbitrary)]
enum Value {
    Unset,
    Bool(bool),
    Int64(i64),
    Uint64(u64),
    Double(f64),
    String(String),
    Registered(bool),
}

#[derive(Debug, Arbitrary)]
struct Input {
    parameters: Vec<(Key, Value)>,
    data: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut parameters = Parameters::new();
    for (key, value) in input.parameters {
        let key = match key {
            Key::Region => REGION_KEY.to_owned(),
            Key::Offset => OFFSET.to_owned(),
            Key::ByteSize => BYTE_SIZE.to_owned(),
            Key::Other(key) => key,
        };
        let choice = match value {
            Value::Unset => None,
            Value::Bool(v) => Some(ParameterChoice::BoolParam(v)),
            Value::Int64(v) => Some(ParameterChoice::Int64Param(v)),
            Value::Uint64(v) => Some(ParameterChoice::Uint64Param(v)),
            Value::Double(v) => Some(ParameterChoice::DoubleParam(v)),
            Value::String(v) => Some(ParameterChoice::StringParam(v)),
            Value::Registered(offset) => Some(ParameterChoice::StringParam(
                (if offset { OFFSET_REGION } else { REGION }).to_owned(),
            )),
        };
        parameters.insert(
            key,
            InferParameter {
                parameter_choice: choice,
            },
        );
    }
    let registry = shared_memory();
    let owner = "x";
    if let Ok(Some(tensor)) = TensorRegion::from_parameters(&parameters, owner) {
        if let Ok(slice) = registry.slice(&tensor) {
            // What a response echoes for a tensor in a region reads back as the same place. (Only then: a
            // size or offset beyond i64::MAX, which no region holds, is echoed as i64::MAX.)
            assert_eq!(
                TensorRegion::from_parameters(&tensor.parameters(), owner)
                    .ok()
                    .flatten()
                    .as_ref(),
                Some(&tensor)
            );
            assert_eq!(slice.byte_size(), tensor.byte_size);
            let copied = slice
                .to_bytes()
                .expect("the fuzzer's own objects are never truncated");
            assert_eq!(copied.len(), tensor.byte_size);
            let fits = slice.check_fits(input.data.len(), owner).is_ok();
            assert_eq!(slice.write(&input.data, owner).is_ok(), fits);
            assert_eq!(fits, input.data.len() <= tensor.byte_size);
        }
    }
    let outputs = [InferRequestedOutputTensor {
        name: "y".to_owned(),
        parameters,
    }];
    if let Ok(resolved) = OutputRegions::resolve(&registry, &outputs) {
        let fits = resolved.check_fits("y", input.data.len()).is_ok();
        match resolved.write("y", &input.data) {
            Ok(echoed) => assert!(fits || echoed.is_none()),
            Err(_) => assert!(!fits),
        }
        assert_eq!(resolved.write("not an output", &input.data).ok(), Some(None));
    }
});
