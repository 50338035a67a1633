//! Inputs in shared memory: their `shared_memory_*` parameters, read before anything else about the data,
//! and their bytes, copied out of the region once the shape is known to be right.

use ferry_proto::inference::model_infer_request::InferInputTensor;

use super::{
    Context, TensorData,
    raw::{check_byte_size, raw_data},
};
use crate::{
    DataType, Error,
    shm::{SharedMemoryRegistry, TensorRegion},
};

/// Where each input is in shared memory, as its parameters say; `None` for an input not in shared memory.
pub(super) fn input_regions(wire_inputs: &[InferInputTensor]) -> Result<Vec<Option<TensorRegion>>, Error> {
    wire_inputs
        .iter()
        .map(|wire| {
            if wire.parameters.is_empty() {
                Ok(None)
            } else {
                TensorRegion::from_parameters(&wire.parameters, &wire.name)
            }
        })
        .collect()
}

/// Copies an input's bytes out of its shared memory region, once. The region, the bounds and (for
/// fixed-size types) the size are checked first, so a bad request costs no copy; BYTES inputs are split
/// like raw contents.
pub(super) fn shared_memory_data(
    name: &str,
    region: &TensorRegion,
    regions: &SharedMemoryRegistry,
    data_type: DataType,
    elements: usize,
    at: &Context,
) -> Result<TensorData, Error> {
    let bytes = regions.read_input(region, |given| match data_type.element_size() {
        Some(size) => check_byte_size(given, name, elements * size, at),
        None => Ok(()),
    })?;
    raw_data(bytes, name, data_type, elements, at)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferry_proto::inference::{InferParameter, InferTensorContents, infer_parameter::ParameterChoice};

    use super::*;
    use crate::{
        request::{
            InferRequest,
            tests::{message, raw_request, spec, tensor, wire},
        },
        shm::testing::Object,
    };

    /// A `/dev/shm` object holding `contents`, registered in `registry` as region `name`.
    fn register(registry: &SharedMemoryRegistry, name: &str, contents: &[u8]) -> Object {
        let object = Object::new(&format!("request_{name}"), contents);
        registry
            .register(name, &object.key, 0, contents.len() as u64)
            .expect("register");
        object
    }

    fn in_region(mut input: InferInputTensor, region: &str, offset: i64, byte_size: i64) -> InferInputTensor {
        let int = |value| InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(value)),
        };
        input.parameters.insert(
            "shared_memory_region".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(region.into())),
            },
        );
        input
            .parameters
            .insert("shared_memory_offset".into(), int(offset));
        input
            .parameters
            .insert("shared_memory_byte_size".into(), int(byte_size));
        input
    }

    #[test]
    fn inputs_in_shared_memory_are_copied_out_and_raw_entries_skip_them() {
        let registry = SharedMemoryRegistry::default();
        let mut contents = vec![0u8; 4];
        contents.extend([1, 0, 0, 0, 2, 0, 0, 0, b'x', b'y']);
        let _object = register(&registry, "in", &contents);
        let spec = spec(
            0,
            vec![
                tensor("a", DataType::Fp32, &[1]),
                tensor("b", DataType::Int32, &[1]),
                tensor("s", DataType::Bytes, &[-1]),
            ],
        );
        let request = raw_request(
            vec![
                in_region(wire("s", DataType::Bytes, &[1], None), "in", 8, 6),
                wire("a", DataType::Fp32, &[1], None),
                in_region(wire("b", DataType::Int32, &[1], None), "in", 4, 4),
            ],
            vec![vec![0, 0, 128, 63]],
        );
        let parsed =
            InferRequest::parse_with_shared_memory(request.clone(), &spec, &registry).expect("valid");
        assert_eq!(
            parsed.inputs[0].data,
            TensorData::Fixed(Bytes::from(vec![0, 0, 128, 63]))
        );
        assert_eq!(
            parsed.inputs[1].data,
            TensorData::Fixed(Bytes::from(vec![1, 0, 0, 0]))
        );
        assert_eq!(
            parsed.inputs[2].data,
            TensorData::Strings(vec![Bytes::from_static(b"xy")])
        );
        // Without the registry the region is unknown.
        match InferRequest::parse(request, &spec) {
            Err(Error::NotFound(message)) => {
                assert_eq!(message, "Unable to find shared memory region: 'in'")
            }
            other => panic!("expected NOT_FOUND, got {other:?}"),
        }
    }

    #[test]
    fn bad_shared_memory_inputs_are_refused() {
        let registry = SharedMemoryRegistry::default();
        let _object = register(&registry, "bad", &[0; 16]);
        let spec = spec(0, vec![tensor("a", DataType::Fp32, &[2])]);
        let parse = |input: InferInputTensor, raw: Vec<Vec<u8>>| {
            InferRequest::parse_with_shared_memory(raw_request(vec![input], raw), &spec, &registry)
        };
        let a = || wire("a", DataType::Fp32, &[2], None);
        let size = message(parse(in_region(a(), "bad", 0, 12), vec![]));
        assert_eq!(
            size,
            "[request id: id-7] input byte size mismatch for input 'a' for model 'm'. Expected 8, got 12"
        );
        let bounds = message(parse(in_region(a(), "bad", 12, 8), vec![]));
        assert!(
            bounds.starts_with("Invalid offset + byte size for shared memory region: 'bad'; ")
                && bounds.contains("holds 16 bytes"),
            "{bounds}"
        );
        let raw_too = message(parse(in_region(a(), "bad", 0, 8), vec![vec![0; 8]]));
        assert!(
            raw_too.contains("1 entries") && raw_too.contains("0 inputs not in shared memory"),
            "{raw_too}"
        );
        let contents = InferTensorContents {
            fp32_contents: vec![1.0, 2.0],
            ..Default::default()
        };
        let typed = message(parse(
            in_region(wire("a", DataType::Fp32, &[2], Some(contents)), "bad", 0, 8),
            vec![],
        ));
        assert_eq!(
            typed,
            "unexpected 'content' provided when using shared memory for input tensor 'a' for model 'm'"
        );
        let mut no_size = in_region(a(), "bad", 0, 8);
        no_size.parameters.remove("shared_memory_byte_size");
        assert!(message(parse(no_size, vec![])).contains("shared_memory_byte_size"));
    }
}
